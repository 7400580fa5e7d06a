"""The one module that reads and writes native Tradovate JSON.

Tradovate's enums are capitalised (reference §4.9) and its fields camelCase; everything
past this module is our snake_case domain. Unknown enum values parse without crashing
(reference §5.2) and surface as ``OrderStatus.UNKNOWN`` or the raw reason string.
"""

from __future__ import annotations

import json
from datetime import datetime
from decimal import Decimal
from typing import Annotated, Any, Literal, TypeVar

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError
from pydantic.alias_generators import to_camel

from tradebridge.domain.commands import ModifyOrder, SubmitOrder
from tradebridge.domain.enums import OrderStatus, OrderType, Side, TimeInForce
from tradebridge.errors import BrokerError, InvalidOrder

# --- enum table (ours -> Tradovate's) ------------------------------------------------------
SIDES: dict[Side, str] = {Side.BUY: "Buy", Side.SELL: "Sell"}
ORDER_TYPES: dict[OrderType, str] = {
    OrderType.MARKET: "Market",
    OrderType.LIMIT: "Limit",
    OrderType.STOP: "Stop",
    OrderType.STOP_LIMIT: "StopLimit",
}
TIFS: dict[TimeInForce, str] = {
    TimeInForce.DAY: "Day",
    TimeInForce.GTC: "GTC",
    TimeInForce.IOC: "IOC",
    TimeInForce.FOK: "FOK",
    TimeInForce.GTD: "GTD",
}
# Tradovate's ordStatus -> ours. ``Working`` becomes PARTIALLY_FILLED when fills exist and
# ``Completed`` FILLED or CANCELLED by the filled quantity (see ``order_status``).
ORD_STATUSES: dict[str, OrderStatus] = {
    "PendingNew": OrderStatus.WORKING,
    "Working": OrderStatus.WORKING,
    "Suspended": OrderStatus.WORKING,  # bracket legs waiting for their entry
    "PendingCancel": OrderStatus.PENDING_CANCEL,
    "PendingReplace": OrderStatus.PENDING_REPLACE,
    "Filled": OrderStatus.FILLED,
    "Canceled": OrderStatus.CANCELLED,
    "Rejected": OrderStatus.REJECTED,
    "Expired": OrderStatus.EXPIRED,
    "Completed": OrderStatus.FILLED,
    "Unknown": OrderStatus.UNKNOWN,
}
SIDES_FROM_WIRE = {v: k for k, v in SIDES.items()}
ORDER_TYPES_FROM_WIRE = {v: k for k, v in ORDER_TYPES.items()}
SUCCESS = "Success"
# failureReasons after which the order may exist: look it up (reference §6.3).
UNKNOWN_OUTCOME_REASONS = frozenset({"RiskCheckTimeout", "ExecutionProviderUnavailable"})


def _to_decimal(value: Any) -> Any:
    # JSON numbers arrive as floats: go through their shortest repr, not the binary value.
    if isinstance(value, float | int) and not isinstance(value, bool):
        return Decimal(repr(value))
    return value


WireDecimal = Annotated[Decimal, BeforeValidator(_to_decimal)]


class _Wire(BaseModel):
    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, extra="ignore", frozen=True
    )


class WireAccount(_Wire):
    """``account`` entity."""

    id: int
    name: str
    user_id: int | None = None
    active: bool = True
    readonly: bool = False


class WireContract(_Wire):
    """``contract`` entity."""

    id: int
    name: str


class WireOrder(_Wire):
    """``order`` entity; prices and quantities live on ``WireOrderVersion``."""

    id: int
    account_id: int
    contract_id: int
    timestamp: datetime | None = None
    action: str
    ord_status: str
    parent_id: int | None = None
    oco_id: int | None = None


class WireOrderVersion(_Wire):
    """``orderVersion`` entity."""

    id: int
    order_id: int
    order_qty: int
    order_type: str
    price: WireDecimal | None = None
    stop_price: WireDecimal | None = None
    time_in_force: str | None = None
    text: str | None = None


class WireFill(_Wire):
    """``fill`` entity."""

    id: int
    order_id: int
    contract_id: int
    timestamp: datetime
    action: str
    qty: int
    price: WireDecimal
    active: bool = True


class WirePosition(_Wire):
    """``position`` entity."""

    id: int | None = None
    account_id: int
    contract_id: int
    net_pos: int
    net_price: WireDecimal | None = None


class WireCashSnapshot(_Wire):
    """Answer of ``cashBalance/getcashbalancesnapshot`` (reference §4.8)."""

    total_cash_value: WireDecimal | None = None
    open_pnl: WireDecimal | None = Field(None, alias="openPnL")
    net_liq: WireDecimal | None = None
    error_text: str | None = None


class WireCommand(_Wire):
    """``command`` entity: carries our ``clOrdId``."""

    id: int
    order_id: int
    cl_ord_id: str | None = None
    command_type: str | None = None
    timestamp: datetime | None = None


class WireExecutionReport(_Wire):
    """``executionReport`` entity (for rejection reasons)."""

    id: int
    order_id: int
    exec_type: str | None = None
    ord_status: str | None = None
    reject_reason: str | None = None
    text: str | None = None


class WirePlaceResult(_Wire):
    """``PlaceOrderResult`` / ``PlaceOsoResult``."""

    order_id: int | None = None
    oso1_id: int | None = None
    oso2_id: int | None = None
    failure_reason: str | None = None
    failure_text: str | None = None

    @property
    def failed(self) -> bool:
        """Return whether Tradovate refused the request."""
        return self.failure_reason not in (None, "", SUCCESS)


class WireOrderStrategy(_Wire):
    """``orderStrategy`` entity (reference §5.8; fields from the old Swagger spec)."""

    id: int
    account_id: int
    contract_id: int | None = None
    timestamp: datetime | None = None
    action: str | None = None
    order_strategy_type_id: int | None = None
    params: str | None = None
    uuid: str | None = None
    status: str | None = None
    failure_message: str | None = None


class WireOrderStrategyLink(_Wire):
    """``orderStrategyLink`` entity: one order of a strategy, with its label."""

    id: int
    order_strategy_id: int
    order_id: int
    label: str | None = None


class WireStrategyResult(_Wire):
    """``OrderStrategyStatusResponse`` of ``startorderstrategy``."""

    order_strategy: WireOrderStrategy | None = None
    error_text: str | None = None
    failure_reason: str | None = None
    failure_text: str | None = None


# Client ids given to the legs of a strategy in reports and events (the tracker skips them).
STRATEGY_LEG_SUFFIX = "-leg"
# Strategy statuses after which nothing of the strategy works any more (unverified).
STRATEGY_FAILED = frozenset({"ExecutionFailed", "NotEnoughLiquidity"})
STRATEGY_DONE = frozenset(
    {"ExecutionFailed", "ExecutionFinished", "ExecutionInterrupted", "NotEnoughLiquidity",
     "StoppedByUser", "InactiveStrategy"}
)  # fmt: skip


class WireCommandResult(_Wire):
    """``CommandResult`` (modify, cancel)."""

    command_id: int | None = None
    failure_reason: str | None = None
    failure_text: str | None = None

    @property
    def failed(self) -> bool:
        """Return whether Tradovate refused the request."""
        return self.failure_reason not in (None, "", SUCCESS)


M = TypeVar("M", bound=_Wire)


def parse(model: type[M], body: Any, what: str) -> M:
    """Parse one object; ``BrokerError`` if its shape is not what the reference says."""
    try:
        return model.model_validate(body)
    except ValidationError as e:
        raise BrokerError(f"{what}: unexpected answer shape ({e.error_count()} errors)") from e


def parse_list(model: type[M], body: Any, what: str) -> list[M]:
    """Parse a list of entities (``list``/``deps`` answers)."""
    if not isinstance(body, list):
        raise BrokerError(f"{what}: expected a JSON list, got {type(body).__name__}")
    return [parse(model, item, what) for item in body]


# --- our enums from the wire -----------------------------------------------------------------
def side_from_wire(action: str) -> Side:
    """Return our side of a Tradovate ``action``."""
    try:
        return SIDES_FROM_WIRE[action]
    except KeyError as e:
        raise BrokerError(f"unknown action {action!r}") from e


def order_type_from_wire(order_type: str) -> OrderType:
    """Return our order type of a Tradovate ``orderType`` (MARKET for types we do not place)."""
    return ORDER_TYPES_FROM_WIRE.get(order_type, OrderType.MARKET)


def unplaced_order_type(order_type: str) -> str | None:
    """Return a Tradovate ``orderType`` we do not place (``TrailingStop``, ``MIT`` …), else
    None: such an order is modified by its quantity alone, under its own type."""
    return order_type if order_type and order_type not in ORDER_TYPES_FROM_WIRE else None


def order_status(ord_status: str, filled_qty: int = 0, quantity: int = 0) -> OrderStatus:
    """Return our status of a Tradovate ``ordStatus`` given the filled quantity."""
    status = ORD_STATUSES.get(ord_status, OrderStatus.UNKNOWN)
    if status is OrderStatus.WORKING and filled_qty > 0:
        return OrderStatus.PARTIALLY_FILLED
    if ord_status == "Completed" and quantity > 0 and filled_qty < quantity:
        return OrderStatus.CANCELLED
    return status


# --- request bodies ----------------------------------------------------------------------------
def _num(value: Decimal) -> float | int:
    # JSON numbers; prices are whole ticks, so the float's repr is the decimal itself.
    return int(value) if value == value.to_integral_value() else float(value)


def _iso(moment: datetime) -> str:
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def place_order_body(command: SubmitOrder, account_id: int, symbol: str) -> dict[str, Any]:
    """Return the ``order/placeorder`` body (reference §5.1)."""
    body: dict[str, Any] = {
        "accountSpec": command.account,
        "accountId": account_id,
        "action": SIDES[command.side],
        "symbol": symbol,
        "orderQty": command.quantity,
        "orderType": ORDER_TYPES[command.order_type],
        "timeInForce": TIFS[command.tif],
        "clOrdId": command.client_order_id,
        # The client order id again, as a second correlation key (reference §11.2).
        "text": _text(command),
        "isAutomated": True,  # exchange policy for any order not placed by a human
    }
    if command.limit_price is not None:
        body["price"] = _num(command.limit_price)
    if command.stop_price is not None:
        body["stopPrice"] = _num(command.stop_price)
    if command.expire_time is not None:
        body["expireTime"] = _iso(command.expire_time)
    return body


def _text(command: SubmitOrder) -> str:
    return f"{command.client_order_id} {command.text}".strip()[:64]


def place_oso_body(command: SubmitOrder, account_id: int, symbol: str) -> dict[str, Any]:
    """Return the ``order/placeoso`` body: stop loss as ``Stop``, take profit as ``Limit``."""
    bracket = command.bracket
    if not bracket:
        raise InvalidOrder("an OSO needs a stop loss or a take profit", field="bracket")
    body = place_order_body(command, account_id, symbol)
    exit_side = SIDES[command.side.opposite]
    # The legs' own time in force ([orders] leg_time_in_force; by default the entry's).
    duration: dict[str, Any] = {"timeInForce": TIFS[command.leg_tif]}
    if command.leg_tif is TimeInForce.GTD and command.expire_time is not None:
        duration["expireTime"] = _iso(command.expire_time)
    legs: list[dict[str, Any]] = []
    if bracket.stop_loss is not None:
        legs.append(
            {
                "action": exit_side,
                "orderType": "Stop",
                "stopPrice": _num(bracket.stop_loss),
                **duration,
                "clOrdId": f"{command.client_order_id}-sl",
            }
        )
    if bracket.take_profit is not None:
        legs.append(
            {
                "action": exit_side,
                "orderType": "Limit",
                "price": _num(bracket.take_profit),
                **duration,
                "clOrdId": f"{command.client_order_id}-tp",
            }
        )
    body["bracket1"] = legs[0]
    if len(legs) > 1:
        body["bracket2"] = legs[1]  # two brackets: Tradovate links them OCO
    return body


def strategy_distance(ticks: int, tick: Decimal, units: Literal["points", "ticks"]) -> Decimal:
    """Return a leg distance in the strategy's unit (reference §5.8: unverified)."""
    return Decimal(ticks) if units == "ticks" else ticks * tick


def start_strategy_body(
    command: SubmitOrder,
    account_id: int,
    symbol: str,
    *,
    type_id: int,
    units: Literal["points", "ticks"],
    breakeven_key: str = "breakeven",
) -> dict[str, Any]:
    """Return the ``orderStrategy/startorderstrategy`` body: the built-in Bracket strategy.

    ``params`` is a JSON *string* (reference §5.8): the entry, then one bracket per target
    with the distances from the fill, the target positive and the stop negative. ``uuid``
    carries our client order id, so a lost answer can be looked up exactly.
    """
    bracket = command.bracket
    if bracket is None or not bracket.relative:
        raise InvalidOrder("a bracket strategy needs legs given as distances", field="bracket")
    tick = command.contract.product.tick_size
    entry: dict[str, Any] = {
        "orderId": 0,
        "orderQty": command.quantity,
        "orderType": ORDER_TYPES[command.order_type],
        "timeInForce": TIFS[command.tif],
    }
    if command.limit_price is not None:
        entry["price"] = _num(command.limit_price)
    if command.stop_price is not None:
        entry["stopPrice"] = _num(command.stop_price)
    if command.expire_time is not None:
        entry["expireTime"] = _iso(command.expire_time)
    brackets: list[dict[str, Any]] = []
    for qty, target in bracket.plan(command.quantity):
        leg: dict[str, Any] = {"qty": qty}
        if target is not None:
            leg["profitTarget"] = _num(strategy_distance(target, tick, units))
        if bracket.stop_loss_ticks is not None:
            leg["stopLoss"] = -_num(strategy_distance(bracket.stop_loss_ticks, tick, units))
        leg["trailingStop"] = bracket.trailing
        if bracket.breakeven:
            leg[breakeven_key] = True  # the key is unverified (reference §5.8)
        brackets.append(leg)
    params = {"entryVersion": entry, "brackets": brackets}
    return {
        "accountId": account_id,
        "accountSpec": command.account,
        "symbol": symbol,
        "action": SIDES[command.side],
        "orderStrategyTypeId": type_id,
        "params": json.dumps(params, separators=(",", ":")),
        "uuid": command.client_order_id,
    }


def modify_order_body(command: ModifyOrder) -> dict[str, Any]:
    """Return the ``order/modifyorder`` body (reference §5.5).

    An order of a type we do not place keeps its type and changes its quantity alone: a
    trailing stop's other fields may not be modified (``TrailingStopNonOrderQtyModify``).
    """
    if command.broker_order_type is not None:
        return {
            "orderId": int(command.broker_order_id),
            "orderQty": command.quantity,
            "orderType": command.broker_order_type,
            "isAutomated": True,
        }
    body: dict[str, Any] = {
        "orderId": int(command.broker_order_id),
        "orderQty": command.quantity,
        "orderType": ORDER_TYPES[command.order_type],
        "isAutomated": True,
    }
    if command.limit_price is not None:
        body["price"] = _num(command.limit_price)
    if command.stop_price is not None:
        body["stopPrice"] = _num(command.stop_price)
    return body


def cancel_order_body(broker_order_id: str) -> dict[str, Any]:
    """Return the ``order/cancelorder`` body (reference §5.6)."""
    return {"orderId": int(broker_order_id), "isAutomated": True}


def liquidate_body(account_id: int, contract_id: int) -> dict[str, Any]:
    """Return the ``order/liquidateposition`` body; ``admin`` is for broker staff only."""
    return {"accountId": account_id, "contractId": contract_id, "admin": False, "isAutomated": True}

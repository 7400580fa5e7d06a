"""The TradingView bridge's wire format, and the only module that knows it.

Forms go out (``application/x-www-form-urlencoded``, lowercase ``side``/``type``), JSON comes
back inside the ``{s, d, errmsg}`` envelope (reference §9.2, §9.7). Everything here is pure:
the broker module does the I/O. The native dialect has its own serializer with capitalised
enums; the two never share a table (reference §9.7: "keep two separate serializers").
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any, Final, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from tradebridge.domain.commands import ModifyOrder, SubmitOrder
from tradebridge.domain.enums import OrderStatus, OrderType, Side, TimeInForce
from tradebridge.domain.ids import AccountName, BrokerOrderId, ClientOrderId
from tradebridge.domain.reports import FillReport, OrderStatusReport, PositionReport
from tradebridge.errors import BrokerRejected, BrokerUnavailable, InvalidOrder

SIDE_TO_WIRE: Final[Mapping[Side, str]] = {Side.BUY: "buy", Side.SELL: "sell"}
TYPE_TO_WIRE: Final[Mapping[OrderType, str]] = {
    OrderType.MARKET: "market",
    OrderType.LIMIT: "limit",
    OrderType.STOP: "stop",
    OrderType.STOP_LIMIT: "stoplimit",
}
SIDE_FROM_WIRE: Final[Mapping[str, Side]] = {v: k for k, v in SIDE_TO_WIRE.items()}
TYPE_FROM_WIRE: Final[Mapping[str, OrderType]] = {v: k for k, v in TYPE_TO_WIRE.items()}

# TradingView's statuses (reference §9.9). ``placing`` is the broker's own in-flight state;
# ``inactive`` is a bracket leg waiting for its parent: it rests at the broker, so it is open.
STATUS_FROM_WIRE: Final[Mapping[str, OrderStatus]] = {
    "placing": OrderStatus.SUBMITTED,
    "inactive": OrderStatus.WORKING,
    "working": OrderStatus.WORKING,
    "rejected": OrderStatus.REJECTED,
    "filled": OrderStatus.FILLED,
    "canceled": OrderStatus.CANCELLED,
    "cancelled": OrderStatus.CANCELLED,
}

# Our time in force -> the duration id we look for (case-insensitively) among the ids the
# server advertises in /config; the id is then sent with the server's own case.
TIF_TO_DURATION: Final[Mapping[TimeInForce, str]] = {
    TimeInForce.DAY: "day",
    TimeInForce.GTC: "gtc",
    TimeInForce.IOC: "ioc",
    TimeInForce.FOK: "fok",
    TimeInForce.GTD: "gtd",
}

FORM_CONTENT_TYPE: Final = "application/x-www-form-urlencoded"
DOCTOR_HINT: Final = "run `tradebridge doctor --account NAME` to find which part is wrong"
TOO_LATE: Final = "TooLate"

_T = TypeVar("_T")
_SAFE_REQUEST_ID = re.compile(r"^[A-Za-z0-9_-]{1,32}$")


class UnparseableAnswer(BrokerUnavailable):
    """The bridge answered something that is not its envelope (a proxy page, bad JSON)."""


def request_id_for(client_order_id: str) -> str:
    """Return the bridge ``requestId`` of a client order id: short, ASCII, stable."""
    if _SAFE_REQUEST_ID.match(client_order_id):
        return client_order_id
    digest = hashlib.sha256(client_order_id.encode()).hexdigest()[:20]
    return f"tb{digest}"


def wire_decimal(value: Decimal) -> str:
    """Return a price as plain decimal text (no exponent, no trailing zeros)."""
    text = format(value.normalize(), "f")
    return text if text != "-0" else "0"


def unwrap(doc: Any) -> Any:
    """Return ``d`` of a parsed 200 answer; raise ``BrokerRejected`` on ``s:"error"``."""
    if isinstance(doc, bytes | str):
        try:
            doc = json.loads(doc)
        except (ValueError, UnicodeDecodeError) as e:
            raise UnparseableAnswer("the bridge answered something that is not JSON") from e
    if not isinstance(doc, dict) or "s" not in doc:
        raise UnparseableAnswer("the bridge answered without the {s, d} envelope")
    status = doc["s"]
    if status == "ok":
        return doc.get("d")
    if status == "error":
        text = str(doc.get("errmsg") or "")
        reason = TOO_LATE if text.strip().lower().rstrip(".") == "too late" else "error"
        raise BrokerRejected(f"the bridge refused the request: {text or 'no errmsg'}",
                             reason=reason, text=text)  # fmt: skip
    raise UnparseableAnswer(f"the bridge answered an unknown envelope status s={status!r}")


def error_text(doc: Any) -> str:
    """Return the ``errmsg`` of a non-200 body if there is one (404s sometimes carry it)."""
    if isinstance(doc, dict):
        return str(doc.get("errmsg") or "")
    return ""


# --- what comes back -----------------------------------------------------------------


class _Wire(BaseModel):
    model_config = ConfigDict(extra="ignore", populate_by_name=True)


def _to_datetime(value: Any) -> datetime | None:
    if value is None or value == "":
        return None
    if isinstance(value, int | float) or (isinstance(value, str) and value.isdigit()):
        number = float(value)
        # TradingView uses milliseconds in some places and seconds in others.
        return datetime.fromtimestamp(number / 1000 if number > 1e11 else number, UTC)
    if isinstance(value, str):
        parsed = datetime.fromisoformat(value)
        return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
    return None


class WireAccount(_Wire):
    """One entry of ``GET /accounts``."""

    id: str
    name: str
    currency: str | None = None


class WireDuration(_Wire):
    """One duration the server advertises in ``/config``."""

    id: str
    title: str = ""


class WireConfig(_Wire):
    """The part of ``GET /config`` we use."""

    durations: list[WireDuration] = Field(default_factory=list)


class WireInstrument(_Wire):
    """One entry of ``/accounts/{id}/instruments``."""

    name: str
    description: str = ""


class WireOrder(_Wire):
    """One order of ``/orders`` or ``/ordersHistory``."""

    id: str
    instrument: str
    qty: Decimal
    side: str
    type: str
    status: str
    filled_qty: Decimal = Field(Decimal(0), alias="filledQty")
    avg_price: Decimal | None = Field(None, alias="avgPrice")
    limit_price: Decimal | None = Field(None, alias="limitPrice")
    stop_price: Decimal | None = Field(None, alias="stopPrice")
    parent_id: str | None = Field(None, alias="parentId")
    request_id: str | None = Field(None, alias="requestId")
    stop_loss: Decimal | None = Field(None, alias="stopLoss")
    take_profit: Decimal | None = Field(None, alias="takeProfit")
    message: str = ""
    ts_created: datetime | None = None

    @field_validator("id", "parent_id", mode="before")
    @classmethod
    def _text_id(cls, value: Any) -> Any:
        return None if value is None else str(value)

    @classmethod
    def parse(cls, raw: Mapping[str, Any]) -> WireOrder:
        """Parse one order; the creation time comes from whichever key the server uses."""
        order = cls.model_validate(raw)
        for key in ("createTime", "createdAt", "creationTime", "time", "updateTime"):
            if raw.get(key) not in (None, ""):
                order = order.model_copy(update={"ts_created": _to_datetime(raw[key])})
                break
        msg = raw.get("message")
        if isinstance(msg, dict):  # TradingView's {text, type} message object
            order = order.model_copy(update={"message": str(msg.get("text", ""))})
        return order


class WirePosition(_Wire):
    """One entry of ``/positions``."""

    id: str
    instrument: str
    qty: Decimal
    side: str
    avg_price: Decimal | None = Field(None, alias="avgPrice")
    unrealized_pl: Decimal | None = Field(None, alias="unrealizedPl")

    @field_validator("id", mode="before")
    @classmethod
    def _text_id(cls, value: Any) -> Any:
        return str(value)


class WireState(_Wire):
    """``d`` of ``/accounts/{id}/state`` (TradingView's AccountState: balance, open P&L)."""

    balance: Decimal
    unrealized_pl: Decimal = Field(Decimal(0), alias="unrealizedPl")


class WireExecution(_Wire):
    """One entry of ``/executions``."""

    id: str = ""
    instrument: str
    price: Decimal
    qty: Decimal
    side: str
    time: Any = None
    order_id: str = Field("", alias="orderId")

    @field_validator("id", "order_id", mode="before")
    @classmethod
    def _text_id(cls, value: Any) -> Any:
        return "" if value is None else str(value)


class WireQuote(_Wire):
    """One ``v`` of ``/quotes``."""

    bid: Decimal | None = None
    ask: Decimal | None = None
    lp: Decimal | None = None


def _items(data: Any, what: str) -> list[Mapping[str, Any]]:
    if not isinstance(data, list) or not all(isinstance(x, dict) for x in data):
        raise UnparseableAnswer(f"the bridge's {what} list is not a list of objects")
    return data


def _validated(parse: Callable[[Any], _T], items: Iterable[Any], what: str) -> list[_T]:
    try:
        return [parse(x) for x in items]
    except (ValidationError, ValueError, InvalidOperation) as e:
        raise UnparseableAnswer(f"the bridge's {what} did not parse: {e}") from e


def parse_accounts(data: Any) -> list[WireAccount]:
    """Parse ``d`` of ``GET /accounts``."""
    return _validated(WireAccount.model_validate, _items(data, "accounts"), "accounts")


def parse_config(data: Any) -> WireConfig:
    """Parse ``d`` of ``GET /config``."""
    if not isinstance(data, dict):
        raise UnparseableAnswer("the bridge's /config is not an object")
    return _validated(WireConfig.model_validate, [data], "/config")[0]


def parse_instruments(data: Any) -> list[WireInstrument]:
    """Parse ``d`` of ``/instruments`` (a list of objects, or of bare names)."""
    if isinstance(data, list) and all(isinstance(x, str) for x in data):
        return [WireInstrument(name=x) for x in data]
    return _validated(WireInstrument.model_validate, _items(data, "instruments"), "instruments")


def parse_orders(data: Any) -> list[WireOrder]:
    """Parse ``d`` of ``/orders`` or ``/ordersHistory``."""
    return _validated(WireOrder.parse, _items(data, "orders"), "orders")


def parse_order(data: Any) -> WireOrder:
    """Parse ``d`` of ``GET /orders/{id}``."""
    if not isinstance(data, dict):
        raise UnparseableAnswer("the bridge's order is not an object")
    return _validated(WireOrder.parse, [data], "order")[0]


def parse_positions(data: Any) -> list[WirePosition]:
    """Parse ``d`` of ``/positions``."""
    return _validated(WirePosition.model_validate, _items(data, "positions"), "positions")


def parse_state(data: Any) -> WireState:
    """Parse ``d`` of ``/accounts/{id}/state``."""
    if not isinstance(data, dict):
        raise UnparseableAnswer("the bridge's account state is not an object")
    return _validated(WireState.model_validate, [data], "account state")[0]


def parse_executions(data: Any) -> list[WireExecution]:
    """Parse ``d`` of ``/executions``."""
    return _validated(WireExecution.model_validate, _items(data, "executions"), "executions")


def parse_placed(data: Any) -> BrokerOrderId:
    """Return the ``orderId`` of a place-order answer (a string on the bridge)."""
    if isinstance(data, dict) and data.get("orderId") not in (None, ""):
        return BrokerOrderId(str(data["orderId"]))
    raise UnparseableAnswer("the bridge accepted the order but sent no orderId")


def parse_quote(data: Any, instrument: str) -> WireQuote:
    """Return the quote of ``instrument`` from ``d`` of ``/quotes``."""
    for item in _items(data, "quotes"):
        if item.get("n") == instrument and item.get("s", "ok") == "ok":
            return _validated(WireQuote.model_validate, [item.get("v") or {}],
                                         "quote")[0]  # fmt: skip
    raise UnparseableAnswer(f"the bridge sent no quote for {instrument}")


# --- what goes out -------------------------------------------------------------------


def duration_id(tif: TimeInForce, advertised: Iterable[str]) -> str:
    """Return the advertised duration id for ``tif`` in the server's case, or refuse."""
    ids = list(advertised)
    wanted = TIF_TO_DURATION[tif]
    for candidate in ids:
        if candidate.lower() == wanted:
            return candidate
    raise InvalidOrder(
        f"time in force {tif.value!r} is not offered by this bridge; "
        f"it advertises the durations {', '.join(ids) or '(none)'}",
        field="tif",
    )


def order_form(
    command: SubmitOrder,
    *,
    duration: str,
    bid_ask: tuple[Decimal, Decimal] | None,
) -> dict[str, str]:
    """Build the form of ``POST /accounts/{id}/orders`` (reference §9.7)."""
    form = {
        "instrument": command.contract.name,
        "qty": str(command.quantity),
        "side": SIDE_TO_WIRE[command.side],
        "type": TYPE_TO_WIRE[command.order_type],
        "durationType": duration,
    }
    if command.limit_price is not None:
        form["limitPrice"] = wire_decimal(command.limit_price)
    if command.stop_price is not None:
        form["stopPrice"] = wire_decimal(command.stop_price)
    if command.tif is TimeInForce.GTD and command.expire_time is not None:
        form["durationDateTime"] = str(int(command.expire_time.timestamp()))
    if command.bracket is not None:
        if command.bracket.stop_loss is not None:
            form["stopLoss"] = wire_decimal(command.bracket.stop_loss)
        if command.bracket.take_profit is not None:
            form["takeProfit"] = wire_decimal(command.bracket.take_profit)
    if bid_ask is not None:
        form["currentBid"] = wire_decimal(bid_ask[0])
        form["currentAsk"] = wire_decimal(bid_ask[1])
    return form


def modify_form(command: ModifyOrder) -> dict[str, str]:
    """Build the form of ``PUT /accounts/{id}/orders/{orderId}``."""
    form = {"qty": str(command.quantity)}
    if command.limit_price is not None:
        form["limitPrice"] = wire_decimal(command.limit_price)
    if command.stop_price is not None:
        form["stopPrice"] = wire_decimal(command.stop_price)
    return form


def query(request_id: str | None = None, **extra: str) -> dict[str, str]:
    """Return the query string every bridge call carries: ``locale=en`` (+ ``requestId``)."""
    params = {"locale": "en", **extra}
    if request_id is not None:
        params["requestId"] = request_id
    return params


# --- wire -> our reports ---------------------------------------------------------------


def _whole(value: Decimal, what: str) -> int:
    if value != value.to_integral_value():
        raise UnparseableAnswer(f"the bridge sent a fractional {what}: {value}")
    return int(value)


def to_status(order: WireOrder) -> OrderStatus:
    """Map a bridge status (and fill progress) to ours."""
    try:
        status = STATUS_FROM_WIRE[order.status.lower()]
    except KeyError:
        raise UnparseableAnswer(
            f"the bridge sent an unknown order status {order.status!r}"
        ) from None
    if status is OrderStatus.WORKING and order.filled_qty > 0:
        return OrderStatus.PARTIALLY_FILLED
    return status


def to_side(text: str) -> Side:
    """Map a bridge side to ours (lenient on case: reading is not sending)."""
    try:
        return SIDE_FROM_WIRE[text.lower()]
    except KeyError:
        raise UnparseableAnswer(f"the bridge sent an unknown side {text!r}") from None


def to_order_type(text: str) -> OrderType:
    """Map a bridge order type to ours."""
    try:
        return TYPE_FROM_WIRE[text.lower().replace("_", "")]
    except KeyError:
        raise UnparseableAnswer(f"the bridge sent an unknown order type {text!r}") from None


def to_order_report(
    order: WireOrder, account: AccountName, client_order_id: ClientOrderId | None
) -> OrderStatusReport:
    """Translate one bridge order to our report."""
    return OrderStatusReport(
        broker_order_id=BrokerOrderId(order.id),
        account=account,
        contract=order.instrument,
        side=to_side(order.side),
        order_type=to_order_type(order.type),
        quantity=_whole(order.qty, "qty"),
        status=to_status(order),
        filled_qty=_whole(order.filled_qty, "filledQty"),
        avg_fill_price=order.avg_price if order.filled_qty > 0 else None,
        limit_price=order.limit_price,
        stop_price=order.stop_price,
        client_order_id=client_order_id,
        reason=order.message,
        ts_created=order.ts_created,
        parent_id=None if order.parent_id is None else BrokerOrderId(order.parent_id),
    )


def to_position_report(position: WirePosition, account: AccountName) -> PositionReport:
    """Translate one bridge position to our report (``qty`` is unsigned, ``side`` signs it)."""
    sign = to_side(position.side).sign
    return PositionReport(
        account=account,
        contract=position.instrument,
        net_qty=sign * abs(_whole(position.qty, "qty")),
        avg_price=position.avg_price,
        open_pnl=position.unrealized_pl or Decimal(0),
    )


def to_fill_report(execution: WireExecution, account: AccountName, now: datetime) -> FillReport:
    """Translate one bridge execution to our report."""
    return FillReport(
        fill_id=execution.id,
        broker_order_id=BrokerOrderId(execution.order_id),
        account=account,
        contract=execution.instrument,
        side=to_side(execution.side),
        qty=_whole(execution.qty, "qty"),
        price=execution.price,
        ts_event=_to_datetime(execution.time) or now,
    )

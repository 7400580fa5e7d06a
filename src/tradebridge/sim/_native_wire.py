"""Native wire shapes of the simulator's entities (reference §4): camelCase, capitalised enums.

Shared by the native REST dialect and the WebSocket (snapshots and ``props`` events), so an
entity looks the same on both. Optional fields whose value is unknown are left out, as
Tradovate leaves them out. Timestamps are ISO-8601 UTC with milliseconds and ``Z``;
prices are JSON numbers.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

from tradebridge.domain.enums import OrderType, Side, TimeInForce
from tradebridge.domain.products import PRODUCTS, Product
from tradebridge.sim.engine import (
    SimAccount,
    SimCashBalance,
    SimCommand,
    SimContract,
    SimExecutionReport,
    SimFill,
    SimOrder,
    SimOrderStrategy,
    SimOrderStrategyLink,
    SimOrderVersion,
    SimPosition,
)

ACTIONS: dict[Side, str] = {Side.BUY: "Buy", Side.SELL: "Sell"}
ORDER_TYPES: dict[OrderType, str] = {
    OrderType.MARKET: "Market",
    OrderType.LIMIT: "Limit",
    OrderType.STOP: "Stop",
    OrderType.STOP_LIMIT: "StopLimit",
}
TIMES_IN_FORCE: dict[TimeInForce, str] = {
    TimeInForce.DAY: "Day",
    TimeInForce.GTC: "GTC",
    TimeInForce.IOC: "IOC",
    TimeInForce.FOK: "FOK",
    TimeInForce.GTD: "GTD",
}
# Ids of the reference entities the simulator does not model in full.
CURRENCY_USD = 1
EXCHANGE_IDS: dict[str, int] = {"CME": 1, "CBOT": 2, "NYMEX": 3, "COMEX": 4}
PRODUCT_IDS: dict[str, int] = {root: index for index, root in enumerate(PRODUCTS, start=1)}

# The CME trade date rolls at 17:00 Chicago time (the start of the next session).
_CHICAGO = ZoneInfo("America/Chicago")
_SESSION_START_HOUR = 17


def iso(ts: datetime) -> str:
    """Format a timestamp as Tradovate does: UTC, milliseconds, ``Z``."""
    ts = ts.astimezone(UTC)
    return ts.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ts.microsecond // 1000:03d}Z"


def number(value: Decimal | int) -> float | int:
    """Return a JSON number for a price or amount."""
    if isinstance(value, int):
        return value
    return int(value) if value == value.to_integral_value() else float(value)


def trade_date(ts: datetime) -> date:
    """Return the CME trade date of a moment (evening sessions count for the next day)."""
    local = ts.astimezone(_CHICAGO)
    day = local.date()
    return day + timedelta(days=1) if local.hour >= _SESSION_START_HOUR else day


def trade_date_wire(ts: datetime) -> dict[str, int]:
    """Return Tradovate's ``tradeDate`` object of a moment."""
    day = trade_date(ts)
    return {"year": day.year, "month": day.month, "day": day.day}


def _put(body: dict[str, Any], key: str, value: Any) -> None:
    if value is None:
        return
    if isinstance(value, Decimal):
        body[key] = number(value)
    elif isinstance(value, datetime):
        body[key] = iso(value)
    else:
        body[key] = value


def order_wire(order: SimOrder) -> dict[str, Any]:
    """Return an ``order`` entity."""
    body: dict[str, Any] = {
        "id": order.id,
        "accountId": order.account_id,
        "contractId": order.contract_id,
        "timestamp": iso(order.timestamp),
        "action": ACTIONS[order.action],
        "ordStatus": str(order.ord_status),
        "admin": False,
    }
    _put(body, "ocoId", order.oco_id)
    _put(body, "parentId", order.parent_id)
    _put(body, "linkedId", order.linked_id)
    return body


def order_version_wire(version: SimOrderVersion) -> dict[str, Any]:
    """Return an ``orderVersion`` entity."""
    body: dict[str, Any] = {
        "id": version.id,
        "orderId": version.order_id,
        "orderQty": version.order_qty,
        "orderType": ORDER_TYPES[version.order_type],
        "timeInForce": TIMES_IN_FORCE[version.time_in_force],
    }
    _put(body, "price", version.price)
    _put(body, "stopPrice", version.stop_price)
    _put(body, "expireTime", version.expire_time)
    if version.text:
        body["text"] = version.text
    return body


def execution_report_wire(report: SimExecutionReport) -> dict[str, Any]:
    """Return an ``executionReport`` entity."""
    body: dict[str, Any] = {
        "id": report.id,
        "accountId": report.account_id,
        "contractId": report.contract_id,
        "orderId": report.order_id,
        "timestamp": iso(report.timestamp),
        "tradeDate": trade_date_wire(report.timestamp),
        "execType": report.exec_type,
        "execRefId": str(report.id),
        "ordStatus": str(report.ord_status),
        "action": ACTIONS[report.action],
        "cumQty": report.cum_qty,
        "exchangeOrderId": str(report.order_id),
    }
    _put(body, "commandId", report.command_id)
    _put(body, "avgPx", report.avg_px)
    _put(body, "lastQty", report.last_qty)
    _put(body, "lastPx", report.last_px)
    _put(body, "rejectReason", report.reject_reason)
    if report.text:
        body["text"] = report.text
    return body


def fill_wire(fill: SimFill) -> dict[str, Any]:
    """Return a ``fill`` entity."""
    return {
        "id": fill.id,
        "orderId": fill.order_id,
        "contractId": fill.contract_id,
        "timestamp": iso(fill.timestamp),
        "tradeDate": trade_date_wire(fill.timestamp),
        "action": ACTIONS[fill.action],
        "qty": fill.qty,
        "price": number(fill.price),
        "active": fill.active,
        "finallyPaired": 0,
    }


def position_wire(position: SimPosition) -> dict[str, Any]:
    """Return a ``position`` entity (``prevPos`` is 0: the simulator has no prior session)."""
    body: dict[str, Any] = {
        "id": position.id,
        "accountId": position.account_id,
        "contractId": position.contract_id,
        "timestamp": iso(position.timestamp),
        "tradeDate": trade_date_wire(position.timestamp),
        "netPos": position.net_pos,
        "bought": position.bought,
        "boughtValue": number(position.bought_value),
        "sold": position.sold,
        "soldValue": number(position.sold_value),
        "prevPos": 0,
    }
    _put(body, "netPrice", position.net_price)
    return body


def command_wire(command: SimCommand) -> dict[str, Any]:
    """Return a ``command`` entity; ``clOrdId`` is where a client finds its order id again."""
    body: dict[str, Any] = {
        "id": command.id,
        "orderId": command.order_id,
        "timestamp": iso(command.timestamp),
        "commandType": command.command_type,
        "commandStatus": command.command_status,
        "isAutomated": command.is_automated,
    }
    _put(body, "clOrdId", command.cl_ord_id)
    return body


def order_strategy_wire(strategy: SimOrderStrategy) -> dict[str, Any]:
    """Return an ``orderStrategy`` entity (fields of the old Swagger spec)."""
    body: dict[str, Any] = {
        "id": strategy.id,
        "accountId": strategy.account_id,
        "timestamp": iso(strategy.timestamp),
        "contractId": strategy.contract_id,
        "orderStrategyTypeId": strategy.order_strategy_type_id,
        "action": ACTIONS[strategy.action],
        "params": strategy.params,
        "status": strategy.status,
    }
    _put(body, "uuid", strategy.uuid)
    _put(body, "failureMessage", strategy.failure_message)
    return body


def order_strategy_link_wire(link: SimOrderStrategyLink) -> dict[str, Any]:
    """Return an ``orderStrategyLink`` entity."""
    return {
        "id": link.id,
        "orderStrategyId": link.order_strategy_id,
        "orderId": link.order_id,
        "label": link.label,
    }


def cash_balance_wire(balance: SimCashBalance) -> dict[str, Any]:
    """Return a ``cashBalance`` entity."""
    return {
        "id": balance.id,
        "accountId": balance.account_id,
        "timestamp": iso(balance.timestamp),
        "tradeDate": trade_date_wire(balance.timestamp),
        "currencyId": CURRENCY_USD,
        "amount": number(balance.amount),
        "realizedPnL": number(balance.realized_pnl),
        "weekRealizedPnL": number(balance.realized_pnl),
    }


def account_wire(account: SimAccount) -> dict[str, Any]:
    """Return an ``account`` entity."""
    return {
        "id": account.id,
        "name": account.name,
        "userId": account.user_id,
        "accountType": "Customer",
        "active": account.active,
        "clearingHouseId": 1,
        "riskCategoryId": 1,
        "autoLiqProfileId": 1,
        "marginAccountType": "Speculator",
        "legalStatus": "Individual",
        "archived": False,
        "readonly": account.readonly,
    }


def contract_wire(contract: SimContract) -> dict[str, Any]:
    """Return a ``contract`` entity (its product is reached through its maturity)."""
    return {
        "id": contract.id,
        "name": contract.name,
        "contractMaturityId": contract.maturity_id,
        "status": "DefinitionChecked",
        "providerTickSize": number(contract.product.tick_size),
    }


def contract_maturity_wire(contract: SimContract, *, is_front: bool) -> dict[str, Any]:
    """Return the ``contractMaturity`` entity of a contract."""
    symbol = contract.symbol
    expiry = datetime.combine(symbol.expiry(), datetime.min.time(), tzinfo=UTC)
    return {
        "id": contract.maturity_id,
        "productId": PRODUCT_IDS[symbol.root],
        "expirationMonth": symbol.year * 100 + symbol.month,
        "expirationDate": iso(expiry),
        "archived": False,
        "seqNo": 1,
        "isFront": is_front,
    }


def product_wire(product: Product) -> dict[str, Any]:
    """Return a ``product`` entity."""
    return {
        "id": PRODUCT_IDS[product.root],
        "name": product.root,
        "currencyId": CURRENCY_USD,
        "productType": "Futures",
        "description": product.description,
        "exchangeId": EXCHANGE_IDS.get(product.exchange, 0),
        "contractGroupId": 1,
        "status": "Verified",
        "months": product.listed_months,
        "isSecured": False,
        "valuePerPoint": number(product.value_per_point),
        "priceFormatType": "Decimal",
        "priceFormat": -_decimals(product.tick_size),
        "tickSize": number(product.tick_size),
    }


def _decimals(tick: Decimal) -> int:
    exponent = tick.normalize().as_tuple().exponent
    return -exponent if isinstance(exponent, int) and exponent < 0 else 0


WireEntity = (
    SimOrder
    | SimOrderVersion
    | SimFill
    | SimPosition
    | SimExecutionReport
    | SimCommand
    | SimCashBalance
    | SimAccount
    | SimContract
    | SimOrderStrategy
    | SimOrderStrategyLink
)


def to_wire(entity: WireEntity) -> dict[str, Any]:
    """Return the native JSON shape of any engine entity."""
    match entity:
        case SimOrder():
            return order_wire(entity)
        case SimOrderVersion():
            return order_version_wire(entity)
        case SimFill():
            return fill_wire(entity)
        case SimPosition():
            return position_wire(entity)
        case SimExecutionReport():
            return execution_report_wire(entity)
        case SimCommand():
            return command_wire(entity)
        case SimCashBalance():
            return cash_balance_wire(entity)
        case SimAccount():
            return account_wire(entity)
        case SimContract():
            return contract_wire(entity)
        case SimOrderStrategy():
            return order_strategy_wire(entity)
        case SimOrderStrategyLink():
            return order_strategy_link_wire(entity)

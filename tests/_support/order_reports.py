"""Order reports as an adapter returns them, for the pure tests of legs and risk: one order,
and a filled entry with its two one-cancels-other legs."""

from __future__ import annotations

from decimal import Decimal

from tradebridge.domain.enums import OrderStatus, OrderType, Side
from tradebridge.domain.ids import AccountName, BrokerOrderId
from tradebridge.domain.reports import OrderStatusReport

ACCOUNT = AccountName("A1")
MNQ = "MNQZ6"


def order_report(
    oid: int,
    side: Side,
    qty: int,
    status: OrderStatus = OrderStatus.WORKING,
    *,
    parent: int | None = None,
    kind: OrderType = OrderType.MARKET,
    filled: int = 0,
    contract: str = MNQ,
) -> OrderStatusReport:
    """One order of ``ACCOUNT`` (a limit at 21100, a stop at 20900)."""
    return OrderStatusReport(
        BrokerOrderId(str(oid)), ACCOUNT, contract, side, kind, qty, status, filled_qty=filled,
        limit_price=Decimal(21100) if kind is OrderType.LIMIT else None,
        stop_price=Decimal(20900) if kind is OrderType.STOP else None,
        parent_id=None if parent is None else BrokerOrderId(str(parent)),
    )  # fmt: skip


def bracket(entry: int, qty: int, side: Side = Side.BUY) -> list[OrderStatusReport]:
    """A filled entry and its two working OCO legs (a stop and a target)."""
    return [
        order_report(entry, side, qty, OrderStatus.FILLED, filled=qty),
        order_report(entry + 1, side.opposite, qty, parent=entry, kind=OrderType.STOP),
        order_report(entry + 2, side.opposite, qty, parent=entry, kind=OrderType.LIMIT),
    ]

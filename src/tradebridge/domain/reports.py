"""Broker reports: what the broker says exists, as read back (lists, lookups, sync snapshots)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from tradebridge.domain.enums import OrderStatus, OrderType, Side
from tradebridge.domain.ids import AccountName, BrokerOrderId, ClientOrderId


@dataclass(frozen=True, slots=True)
class OrderStatusReport:
    """One order as the broker reports it."""

    broker_order_id: BrokerOrderId
    account: AccountName
    contract: str
    side: Side
    order_type: OrderType
    quantity: int
    status: OrderStatus
    filled_qty: int = 0
    avg_fill_price: Decimal | None = None
    limit_price: Decimal | None = None
    stop_price: Decimal | None = None
    client_order_id: ClientOrderId | None = None
    reason: str = ""
    ts_created: datetime | None = None


@dataclass(frozen=True, slots=True)
class FillReport:
    """One execution."""

    fill_id: str
    broker_order_id: BrokerOrderId
    account: AccountName
    contract: str
    side: Side
    qty: int
    price: Decimal
    ts_event: datetime


@dataclass(frozen=True, slots=True)
class PositionReport:
    """The net position of an account in one contract."""

    account: AccountName
    contract: str
    net_qty: int
    avg_price: Decimal | None
    realized_pnl: Decimal = Decimal(0)
    open_pnl: Decimal = Decimal(0)


@dataclass(frozen=True, slots=True)
class LookupResult:
    """The answer to "did this client order id reach the broker?"."""

    client_order_id: ClientOrderId
    found: OrderStatusReport | None
    probable: bool = False  # matched by shape and time, not by id: adopt, flag for review

    @property
    def absent(self) -> bool:
        """Return whether the broker has no such order."""
        return self.found is None

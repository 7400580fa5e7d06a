"""Broker reports: what the broker says exists, as read back (lists, lookups, sync snapshots)."""

from __future__ import annotations

from collections.abc import Iterable
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
    # The entry a bracket leg belongs to (native and bridge legs are child orders).
    parent_id: BrokerOrderId | None = None
    # The native order strategy the order belongs to (an entry or a leg of a bracket
    # strategy), and the one-cancels-other pair of a leg: legs that share it close the same
    # contracts, at most one of them fills.
    strategy_id: str | None = None
    oco_id: str | None = None
    # The broker's own name of an order type tradebridge does not place (native
    # ``TrailingStop``, ``TrailingStopLimit``, ``MIT``: ``order_type`` reads MARKET then).
    broker_order_type: str | None = None


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
class BalanceReport:
    """An account's money as the broker reports it: cash, open P&L and their sum."""

    account: AccountName
    cash: Decimal  # realized: the cash balance
    open_pnl: Decimal

    @property
    def net_liq(self) -> Decimal:
        """Return the net liquidation value: cash plus open P&L."""
        return self.cash + self.open_pnl


@dataclass(frozen=True, slots=True)
class LookupBaseline:
    """The account's orders just before a submit: what a lookup may NOT adopt.

    ``order_ids`` are the ids the broker listed; ``high_water`` is the largest numeric id
    seen (Tradovate ids grow, so an order at or below it existed before, even one that had
    already left the current list). Stored with the ``submitted`` event as JSON.
    """

    order_ids: frozenset[str]
    high_water: int | None = None

    def existed_before(self, order_id: str) -> bool:
        """Return whether ``order_id`` was (provably) there before the submit."""
        if order_id in self.order_ids:
            return True
        return (
            self.high_water is not None and order_id.isdigit() and int(order_id) <= self.high_water
        )

    def to_json(self) -> dict[str, object]:
        """Return the baseline as JSON data."""
        return {"order_ids": sorted(self.order_ids), "high_water": self.high_water}

    @classmethod
    def from_json(cls, data: object) -> LookupBaseline | None:
        """Rebuild a baseline written by ``to_json`` (None for anything else)."""
        if not isinstance(data, dict) or not isinstance(data.get("order_ids"), list):
            return None
        high = data.get("high_water")
        return cls(
            frozenset(str(i) for i in data["order_ids"]),
            int(high) if isinstance(high, int | str) and str(high).isdigit() else None,
        )

    @classmethod
    def of(cls, order_ids: Iterable[str]) -> LookupBaseline:
        """Return the baseline of a list of order ids."""
        ids = frozenset(order_ids)
        numeric = [int(i) for i in ids if i.isdigit()]
        return cls(ids, max(numeric) if numeric else None)


@dataclass(frozen=True, slots=True)
class LookupResult:
    """The answer to "did this client order id reach the broker?"."""

    client_order_id: ClientOrderId
    found: OrderStatusReport | None
    probable: bool = False  # matched by shape and time, not by id: adopt, flag for review
    # What the lookup saw, for the row's history: orders considered and why each was not ours.
    evidence: tuple[str, ...] = ()

    @property
    def absent(self) -> bool:
        """Return whether the broker has no such order."""
        return self.found is None

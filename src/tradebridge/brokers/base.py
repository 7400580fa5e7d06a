"""The ``Broker`` protocol every adapter implements, and what flows through it.

Commands go in (``SubmitOrder``, ``CancelOrder``, ...), reports come back from reads, and
past-tense order events arrive on ``events()``. Errors are the ``errors.py`` tree only:

* ``submit`` raises ``BrokerRejected`` when the broker said no, ``OutcomeUnknown`` when the
  request was sent and its answer lost (then call ``lookup``; never resubmit blindly),
  ``InvalidInput`` when the command cannot be expressed in the dialect (nothing was sent);
* reads, cancels and modifies retry transient failures themselves, within caps; a flatten
  retries only what is proven not sent (it may close a position: a lost answer is unknown,
  and its rerun reads the position first).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from tradebridge.domain.commands import (
    CancelOrder,
    FlattenPosition,
    InterruptStrategy,
    ModifyOrder,
    SubmitOrder,
)
from tradebridge.domain.enums import Dialect
from tradebridge.domain.ids import AccountName, BrokerOrderId, ClientOrderId
from tradebridge.domain.orders import OrderEvent
from tradebridge.domain.reports import (
    BalanceReport,
    FillReport,
    LookupBaseline,
    LookupResult,
    OrderStatusReport,
    PositionReport,
)


@dataclass(frozen=True, slots=True)
class BrokerCapabilities:
    """What an adapter can do; callers check these instead of the adapter's class."""

    brackets: bool  # SL/TP attached to the entry, OCO-linked
    modify: bool
    flatten: bool
    push_events: bool  # events arrive from a stream (WebSocket) rather than by polling
    lookup_by_client_order_id: bool  # the broker echoes our id, so lookups are exact
    quotes: bool = False  # quote(instrument) reads the market (the bridge's /quotes)
    # Bracket legs carry a time in force of their own; else they take the entry's.
    leg_time_in_force: bool = False
    # Bracket legs given as distances are priced by the broker from the entry's real fill
    # (native order strategies); elsewhere route prices them at submit time.
    brackets_from_fill: bool = False


@dataclass(frozen=True, slots=True)
class AccountInfo:
    """One account as the broker lists it, with every identifier the dialects use."""

    name: AccountName
    native_id: int | None  # the native API's ``accountId``
    bridge_id: str | None  # the TradingView bridge's ``D...`` id
    active: bool = True
    readonly: bool = False


@dataclass(frozen=True, slots=True)
class BrokerOrderEvent:
    """An order event the broker reported, keyed by the broker's and (if known) our id."""

    account: AccountName
    broker_order_id: BrokerOrderId
    client_order_id: ClientOrderId | None
    event: OrderEvent
    # A bracket leg's entry order, where the broker links them (``parentId``).
    parent_order_id: BrokerOrderId | None = None


class Broker(Protocol):
    """One Tradovate dialect, behind one interface."""

    dialect: Dialect
    capabilities: BrokerCapabilities

    async def connect(self) -> None:
        """Open connections and check the token; idempotent."""
        ...

    async def close(self) -> None:
        """Close every connection; idempotent."""
        ...

    async def accounts(self) -> list[AccountInfo]:
        """Return the accounts the token's user can trade."""
        ...

    async def submit(self, command: SubmitOrder) -> BrokerOrderId:
        """Send one order exactly once; return the broker's id for it."""
        ...

    async def lookup_baseline(self, command: SubmitOrder) -> LookupBaseline | None:
        """Return what a later lookup needs to know of the account before this submit.

        Called before the row is committed ``submitted`` and stored with it, so whoever
        resolves the row (maybe another process after a crash) can tell an order that
        appeared after the submit from one that was there before. None: the dialect's
        client id is enough (native ``clOrdId``).
        """
        ...

    async def lookup(
        self,
        command: SubmitOrder,
        ts_sent: datetime,
        *,
        baseline: LookupBaseline | None = None,
        exclude: frozenset[str] = frozenset(),
    ) -> LookupResult:
        """Tell whether a submit whose outcome is unknown reached the broker.

        Adopts only what can be this submit's own order: its client id, or (by shape, where
        the dialect has no client id) an order absent from ``baseline``, not in ``exclude``
        (orders other ledger rows own), unknown to this process, matching every field and
        the bracket. Raises ``LookupAmbiguous`` rather than guess.
        """
        ...

    async def cancel(self, command: CancelOrder) -> None:
        """Cancel a working order."""
        ...

    async def modify(self, command: ModifyOrder) -> None:
        """Change a working order."""
        ...

    async def flatten(self, command: FlattenPosition) -> None:
        """Cancel working orders on a contract and close its position."""
        ...

    async def interrupt_strategy(self, command: InterruptStrategy) -> None:
        """Stop an order strategy (native); ``InvalidInput`` where the dialect has none."""
        ...

    async def order_reports(self, account: AccountName) -> list[OrderStatusReport]:
        """Return the account's orders as the broker reports them."""
        ...

    async def working_orders(self, account: AccountName) -> list[OrderStatusReport]:
        """Return the account's orders that may still fill (open, or submitted), as cheaply
        as the dialect can: native from the user-sync socket when it is current (no
        request), none while the socket cannot tell, as ``order_reports`` where no socket
        follows the account; the bridge from ``/orders`` alone."""
        ...

    async def order_report(
        self, account: AccountName, broker_order_id: BrokerOrderId
    ) -> OrderStatusReport:
        """Return one order; ``NotFound`` if the broker has no such order."""
        ...

    async def fill_reports(self, account: AccountName) -> list[FillReport]:
        """Return the account's fills."""
        ...

    async def position_reports(
        self, account: AccountName, *, fresh: bool = False
    ) -> list[PositionReport]:
        """Return the account's positions; ``fresh``: as the broker's REST API has them now,
        never from a stream that may lag behind it (an exit sized from them)."""
        ...

    async def balance(self, account: AccountName) -> BalanceReport:
        """Return the account's cash and open P&L (the pre-trade P&L rules read it)."""
        ...

    def events(self) -> AsyncIterator[BrokerOrderEvent]:
        """Return the stream of order events (pushed, or polled by the adapter)."""
        ...

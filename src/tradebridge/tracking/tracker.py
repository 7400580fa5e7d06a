"""The tracker: broker order events become row statuses (the only live writer of broker truth).

It consumes ``Broker.events()`` of every adapter in the pool (native: the user-sync
WebSocket; bridge: polling) and finds the row by our client order id (exact: bracket legs
carry ``-sl``/``-tp`` suffixes and never match), else by the broker's order id among open
rows. Fills are incremental and may arrive twice (several workers, a resync), so each fill id
is applied once per row (an ``order_history`` ``fill`` event records it, in the same
statement as the move); one a broker's total written on the row counted already (reconcile's
net, an adoption: ``EventRow.by_total``) is recorded, not added (docs/ledger.md, "Filled
quantity"). An event costs one read and at most one write, guarded by what was
read (the row's status and filled quantity): a row that moved in between is read again under
its lock. Statuses never move backwards: the ledger refuses, and the tracker only asks for
moves the lifecycle allows. Events of different orders are applied side by side (at most 8
at once: a fan-out's fills then share statements), those of one order one after the other,
in the order they came. Events that find no row yet (the answer to the submit is
still on its way) are retried once after ``dispatcher.event_retry_s``; what still finds
nothing is dropped, left to reconcile, counted in ``tradebridge_tracker_events_dropped_total``
and logged as ``tracker_event_dropped``: a warning, or info where nothing is lost (a late event
of a finished row, a bracket leg's event). Several processes following the same streams apply
each event once more at most, not once each: see ``Tracker.of_record``.

Every fill (a bracket leg's too) of an account under a P&L rule also has its balance read
(``Ledger.raise_high_water``, docs/risk.md): the intraday high water follows fills as they
arrive, not only the checks of entries. One read per account at a time; fills arriving
meanwhile ask for one more.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter, deque
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from tradebridge._aio import reraise_if_cancelling
from tradebridge.brokers.base import Broker, BrokerOrderEvent
from tradebridge.brokers.budget import mark_background
from tradebridge.brokers.pool import BrokerPool
from tradebridge.config import Settings
from tradebridge.domain.ids import AccountName, entry_client_id
from tradebridge.domain.lifecycle import (
    FINAL_STATUSES,
    Filled,
    SignalStatus,
    apply_fill,
    check_move,
)
from tradebridge.domain.orders import (
    OrderAccepted,
    OrderCancelled,
    OrderExpired,
    OrderFilled,
    OrderRejected,
)
from tradebridge.errors import IllegalTransition
from tradebridge.obs import metrics
from tradebridge.obs.logging import bind_order, get_logger, order_context
from tradebridge.obs.metrics import TRACKER_EVENTS_DROPPED
from tradebridge.pipeline.risk import RulesBook
from tradebridge.store.ledger import EventRow, Ledger, LedgerRow, database_unavailable

_log = get_logger("tradebridge.tracking.tracker")
_HARMLESS_DROPS = frozenset({"row_final", "bracket_leg"})
# Rows that ended without filling in full: a fill of theirs arriving later was never counted.
_ENDED_SHORT = frozenset({SignalStatus.CANCELLED, SignalStatus.EXPIRED, SignalStatus.REJECTED})
# Events of different orders are applied side by side, at most this many at once (fewer than
# the ledger pool's 10 connections: the dispatcher's statements never queue behind a burst of
# the tracker's reads; moves beyond two in flight wait in a batch, holding none); those of one
# order one after the other, in the order they came.
_SIDE_BY_SIDE = 8
# Namespace of the session locks naming the tracker of record of a set of event streams
# (two-int form, apart from the worker liveness locks 0x7463).
TRACKING_LOCK_NAMESPACE = 0x7464
# A process that is not the tracker of record keeps the events it left to it for this long
# (at most this many): it applies them if it takes over, the holder having died.
_LEFT_KEPT_S = 10.0
_LEFT_KEPT = 10_000


@dataclass(slots=True)
class _Share:
    """One event stream this process follows, and the events it left to the tracker of
    record (see ``Tracker.of_record``)."""

    broker: Broker
    # The events left (when, what), oldest first, at most _LEFT_KEPT (the oldest go first);
    # and how many of each order's are among them (every event applied at once asks).
    left: deque[tuple[float, BrokerOrderEvent]] = field(default_factory=deque)
    _orders: Counter[str] = field(default_factory=Counter)

    def leave(self, event: BrokerOrderEvent) -> None:
        """Leave ``event`` to the tracker of record."""
        if len(self.left) >= _LEFT_KEPT:
            _, oldest = self.left.popleft()
            self._count(str(oldest.broker_order_id), -1)
        self.left.append((time.monotonic(), event))
        self._count(str(event.broker_order_id), 1)

    def take_left(self, order_id: str) -> list[BrokerOrderEvent]:
        """Remove and return the events of ``order_id`` left to the tracker of record."""
        if not self._orders[order_id]:
            return []
        del self._orders[order_id]
        taken = [e for _, e in self.left if str(e.broker_order_id) == order_id]
        kept = [(at, e) for at, e in self.left if str(e.broker_order_id) != order_id]
        self.left.clear()
        self.left.extend(kept)
        return taken

    def hand_over(self, since: float) -> list[BrokerOrderEvent]:
        """Remove every event left; return those left since ``since`` (monotonic)."""
        events = [e for at, e in self.left if at >= since]
        self.left.clear()
        self._orders.clear()
        return events

    def _count(self, order_id: str, by: int) -> None:
        self._orders[order_id] += by
        if self._orders[order_id] <= 0:
            del self._orders[order_id]


class Tracker:
    """Applies broker order events to the ledger."""

    def __init__(self, settings: Settings, ledger: Ledger, brokers: BrokerPool) -> None:
        self.settings = settings
        self.ledger = ledger
        self.brokers = brokers
        self.retry_s = settings.dispatcher.event_retry_s
        self._retries: set[asyncio.Task[None]] = set()
        self._rules = RulesBook(settings)
        # Balance marks after fills: the read in flight per account, and accounts whose fills
        # came in during it.
        self._marking: dict[str, asyncio.Task[None]] = {}
        self._mark_again: set[str] = set()
        # Events being applied: at most _SIDE_BY_SIDE, and per broker order id the last one
        # (the next event of that order waits for it).
        self._slots = asyncio.Semaphore(_SIDE_BY_SIDE)
        self._applying: set[asyncio.Task[None]] = set()
        self._last_of: dict[str, asyncio.Task[None]] = {}
        # Others' events the tracker of record applies later: (when, event, its stream's
        # adapter), in the order they came.
        self._later: deque[tuple[float, BrokerOrderEvent, Broker]] = deque()
        self._later_added = asyncio.Event()
        # Per broker order id, its events put off (in _later) or waiting to be tried again:
        # the next events of that order go behind them, never past them (a cancel applied
        # before an earlier fill would leave the fill on a finished row, lost).
        self._behind: Counter[str] = Counter()
        self._shares: list[_Share] = []
        # Whether this process is the tracker of record of its streams (the lock held), or
        # another is (refused); neither: not known yet.
        self._held = asyncio.Event()
        self._elsewhere = asyncio.Event()

    def of_record(self) -> bool | None:
        """Return whether this process is the tracker of record of the event streams it
        follows (None: not known yet, or its lock's connection is being taken anew).

        Every process that follows a stream (one Tradovate user's socket, or the same
        accounts' polls) gets every event; each applied by every process would cost N reads
        of its row and N racing writes. One process is the tracker of record of a set of
        streams (it holds their session lock): it applies the events of orders it placed at
        once and the others' after ``dispatcher.event_retry_s`` (their placers' trackers
        will have applied them: its read then writes nothing; one whose placer died or
        forgot it is its to apply). The other processes apply only the events of orders
        they placed (no read: they wrote the row), and keep the rest for a while, to apply
        them if they take over. Until it is known who holds the lock (starting, or the
        lock's connection lost), every event is applied, as with one process.
        """
        return True if self._held.is_set() else False if self._elsewhere.is_set() else None

    async def run(self) -> None:
        """Follow every adapter's events until cancelled; restart a stream that fails."""
        mark_background()  # its reads queue behind those an order waits for
        try:
            async with asyncio.TaskGroup() as group:
                group.create_task(self._apply_later(), name="track-later")
                for name, broker in await self.brokers.brokers():
                    share = _Share(broker)
                    self._shares.append(share)
                    group.create_task(self._follow(name, broker, share), name=f"track-{name}")
                # One lock for the streams followed (one connection): processes configured
                # alike share it; others follow other streams and hold a lock of their own.
                group.create_task(
                    self.ledger.hold_lock(TRACKING_LOCK_NAMESPACE, self.brokers.tracking_key(),
                                          self._held, elsewhere=self._elsewhere),
                    name="track-lock",
                )  # fmt: skip
                group.create_task(self._take_over(), name="track-over")
        finally:
            # Retries waiting for their turn would outlive the tracker (and the ledger pool).
            retries = [*self._applying, *self._retries, *self._marking.values()]
            for task in retries:
                task.cancel()
            await asyncio.gather(*retries, return_exceptions=True)

    async def _follow(self, name: str, broker: Broker, share: _Share | None = None) -> None:
        delay = 0.5
        while True:
            try:
                async for event in broker.events():
                    delay = 0.5
                    for now in [event] if share is None else self._route(share, event):
                        await self._take(now, broker)
            except asyncio.CancelledError:
                raise
            except Exception as e:  # noqa: BLE001 - the stream restarts with backoff
                # A stream torn down by our own cancellation may surface as another error;
                # going round again would leave the tracker, and shutdown, hanging.
                reraise_if_cancelling()
                _log.warning("event_stream_failed", account=name, error=str(e))
            reraise_if_cancelling()
            await asyncio.sleep(delay)
            delay = min(delay * 2, 30.0)

    def _route(self, share: _Share, event: BrokerOrderEvent) -> list[BrokerOrderEvent]:
        """Return the events to apply now, in order: ``event``, after any of its order's
        events this process left to the tracker of record; none if it is put off or left.

        One order's events are applied in the order they came, whoever's they are: an event
        whose order has events put off (or waiting to be tried again) is put off behind them.
        """
        if share.left and self._held.is_set():
            self._hand_over(share)  # just took over: what was left goes first
        order_id = str(event.broker_order_id)
        if self._behind[order_id]:
            self._apply_soon([event], share.broker)
            return []
        if not self._now(share, event):
            return []
        return [*share.take_left(order_id), event]

    def _now(self, share: _Share, event: BrokerOrderEvent) -> bool:
        """Return whether this process applies ``event`` now; else it is applied later (by
        the tracker of record) or left to the tracker of record (see ``of_record``)."""
        if not (self._held.is_set() or self._elsewhere.is_set()):
            return True  # who holds the stream is not known: apply, as with one process
        cid = str(event.client_order_id) if event.client_order_id else None
        parent = None if event.parent_order_id is None else str(event.parent_order_id)
        if self.ledger.ours(str(event.broker_order_id), cid, parent, str(event.account)):
            return True
        if not _for_the_record(event):
            return False
        if self._held.is_set():
            self._apply_soon([event], share.broker)
        else:
            share.leave(event)
        return False

    def _apply_soon(self, events: list[BrokerOrderEvent], broker: Broker) -> None:
        """Apply others' ``events`` after ``event_retry_s`` (their placers' go first)."""
        due = time.monotonic() + self.retry_s
        for event in events:
            self._behind[str(event.broker_order_id)] += 1
            self._later.append((due, event, broker))
        self._later_added.set()

    def _caught_up(self, order_id: str) -> None:
        """One event of ``order_id`` put off is now in its order's turn (or dropped)."""
        self._behind[order_id] -= 1
        if self._behind[order_id] <= 0:
            del self._behind[order_id]

    async def _apply_later(self) -> None:
        """Apply the events put off by ``_apply_soon`` when due, in the order they came."""
        while True:
            while not self._later:
                self._later_added.clear()
                await self._later_added.wait()
            due, event, broker = self._later[0]
            wait = due - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
                continue
            self._later.popleft()
            try:
                await self._take(event, broker)  # in its order's turn once this returns
            finally:
                self._caught_up(str(event.broker_order_id))

    async def _take_over(self) -> None:
        """Each time this process becomes the tracker of record, apply the events it left
        to the one before in the last ``_LEFT_KEPT_S`` (it may have died first)."""
        while True:
            await self._held.wait()
            for share in self._shares:
                self._hand_over(share)
            await self._elsewhere.wait()  # held by another again: leaving starts anew

    def _hand_over(self, share: _Share) -> None:
        """Put off, to apply them, the events of the last ``_LEFT_KEPT_S`` left to the
        tracker of record before this process became it."""
        self._apply_soon(share.hand_over(time.monotonic() - _LEFT_KEPT_S), share.broker)

    async def _take(self, event: BrokerOrderEvent, broker: Broker) -> None:
        """Apply ``event`` in the background once a slot is free (a fill: and mark the
        account's balance, for the P&L rules)."""
        if isinstance(event.event, OrderFilled):
            self._mark_balance_soon(event.account, broker)
        await self._slots.acquire()
        self._start_applying(event)

    def _start_applying(self, event: BrokerOrderEvent, *, last_try: bool = False) -> None:
        """Apply ``event`` in the background (a slot taken), after its order's previous one.

        Side by side, a burst's events (a fan-out's fills) share statements (the ledger
        batches moves that wait on a busy database) and one event waiting for its row (the
        answer to its submit still being written) holds up no other order's.
        """
        key = str(event.broker_order_id)
        task = asyncio.ensure_future(
            self._apply_in_turn(event, self._last_of.get(key), last_try=last_try)
        )
        self._last_of[key] = task
        self._applying.add(task)

        def done(finished: asyncio.Task[None]) -> None:
            self._applying.discard(finished)
            self._slots.release()
            if self._last_of.get(key) is finished:
                del self._last_of[key]

        task.add_done_callback(done)

    async def _apply_in_turn(
        self, event: BrokerOrderEvent, previous: asyncio.Task[None] | None, *, last_try: bool
    ) -> None:
        """Apply ``event`` after ``previous``; finding no row, try once more ``event_retry_s``
        later (``last_try``: drop it, logged and counted)."""
        if previous is not None:
            await asyncio.wait([previous])  # its order's earlier event first, however it ended
        try:
            if await self.apply(event):
                return
            if not last_try:
                self._retry_later(event)
                return
            reason, signal_id = await self._unmatched(event)
            self._drop(event, reason, signal_id=signal_id)
        except Exception as e:  # noqa: BLE001 - one bad event must not stop tracking
            reraise_if_cancelling()
            if last_try:
                self._drop(event, "error", error=f"{type(e).__name__}: {e}")
                return
            if not database_unavailable(e):
                _log.exception("event_failed", account=event.account)
                return
            # The database is away: try once more later (reconcile has the rest).
            _log.warning("event_failed", account=event.account, error=type(e).__name__)
            self._retry_later(event)

    def _mark_balance_soon(self, account: str, broker: Broker) -> None:
        """Read and mark the balance of ``account`` after a fill, if a P&L rule needs it."""
        strategies = (None, *self.settings.risk.strategies)
        if not any(self._rules.of(account, s).balance for s in strategies):
            return
        if account in self._marking:
            self._mark_again.add(account)
            return
        task = asyncio.ensure_future(self._mark_balance(account, broker))
        self._marking[account] = task
        task.add_done_callback(lambda _: self._marking.pop(account, None))

    async def _mark_balance(self, account: str, broker: Broker) -> None:
        while True:
            self._mark_again.discard(account)
            try:
                report = await broker.balance(AccountName(account))
                await self.ledger.raise_high_water(account, report.net_liq)
            except Exception as e:  # noqa: BLE001 - the next entry's check reads it anyway
                reraise_if_cancelling()
                _log.warning("balance_mark_failed", account=account, error=str(e)[:200])
                return
            if account not in self._mark_again:
                return

    def _retry_later(self, event: BrokerOrderEvent) -> None:
        self._behind[str(event.broker_order_id)] += 1  # its order's next events wait for it
        task = asyncio.ensure_future(self._retry(event))
        self._retries.add(task)
        task.add_done_callback(self._retries.discard)

    async def _retry(self, event: BrokerOrderEvent) -> None:
        """Apply an event once more, in its order's turn, ``event_retry_s`` later; if it still
        finds no row, it is dropped, logged and counted (``_apply_in_turn``)."""
        try:
            try:
                await asyncio.sleep(self.retry_s)
                await self._slots.acquire()
            except asyncio.CancelledError:
                self._drop(event, "shutdown")
                raise
            self._start_applying(event, last_try=True)
        finally:
            self._caught_up(str(event.broker_order_id))

    def _drop(
        self,
        event: BrokerOrderEvent,
        reason: str,
        *,
        signal_id: str | None = None,
        error: str | None = None,
    ) -> None:
        TRACKER_EVENTS_DROPPED.labels(reason=reason).inc()
        # A late event of a finished row or a bracket leg's event loses nothing: no warning.
        level = logging.INFO if reason in _HARMLESS_DROPS else logging.WARNING
        _log.log(
            level,
            "tracker_event_dropped",
            kind=type(event.event).__name__,
            broker_order_id=str(event.broker_order_id),
            client_order_id=event.client_order_id,
            signal_id=signal_id,
            account=event.account,
            reason=reason,
            error=error,
            retry_s=self.retry_s,
        )

    async def _unmatched(self, event: BrokerOrderEvent) -> tuple[str, str | None]:
        """Return why an event matched no row, and the signal id of the row it names, if any."""
        cid = str(event.client_order_id) if event.client_order_id else None
        row = await self.ledger.row_named_by(
            str(event.broker_order_id), cid, account=str(event.account)
        )
        if row is not None and row["tradovate_order_id"] == str(event.broker_order_id):
            # The broker's id is looked up among open rows only: this row had left them.
            # (A fill here cannot be told from a replay of one recorded: no fill_after_end.)
            final = SignalStatus(row["status"]) in FINAL_STATUSES
            return ("row_final" if final else "row_not_open"), str(row["signal_id"])
        if row is not None:
            return "other_order", str(row["signal_id"])
        if _is_leg(event, cid):
            return "bracket_leg", None
        return "no_row", None

    async def apply(self, event: BrokerOrderEvent) -> bool:
        """Apply one event; return False when no row matches it (yet).

        One unlocked read and at most one write, guarded by what was read (status, filled
        quantity); a row that moved between the two is read again under its lock.
        """
        cid = str(event.client_order_id) if event.client_order_id else None
        with order_context(client_order_id=cid, broker_order_id=str(event.broker_order_id),
                           account=str(event.account)):  # fmt: skip
            return await self._apply(event, cid)

    async def _apply(self, event: BrokerOrderEvent, cid: str | None) -> bool:
        if _is_leg(event, cid):
            return await self._apply_leg(event, cid)
        # The broker reports an order as the answer to its submit arrives: let this process's
        # dispatcher write that outcome first, rather than race it for the row (or, without
        # our id on the event, find no row yet and try again later).
        await self.ledger.wait_sent(cid, str(event.account), self.retry_s)
        if isinstance(event.event, OrderAccepted) and self.ledger.placed_here(
            str(event.broker_order_id), cid
        ):
            # This process wrote the row placed with this order (the dispatcher's outcome):
            # it is working or beyond, and an acceptance moves only rows before that.
            return True
        fill = event.event if isinstance(event.event, OrderFilled) else None
        fill_id = fill.fill_id if fill is not None else None
        # A row this process placed and has moved since is known without a read; the guarded
        # write below finds out if anyone else moved it meanwhile.
        row = self.ledger.known_event_row(
            str(event.broker_order_id), cid, fill_id, account=str(event.account)
        )
        if row is None:
            row = await self.ledger.event_row(
                cid, str(event.broker_order_id), account=str(event.account), fill_id=fill_id,
                ordered_qty=fill is not None,
            )  # fmt: skip
        if row is None:
            return False
        bind_order(signal_id=row.signal_id)
        change = _change(row, event)
        if change is None:
            if (reason := _never_taken(row, event)) is not None:
                self._drop(event, reason, signal_id=row.signal_id)
            return True
        if change.covered:
            return await self._apply_locked(event, cid)
        moved = await self.ledger.move_if(
            row.signal_id, change.new, expected=SignalStatus(row.status),
            filled_was=row.filled_qty, event=change.event, detail=change.detail,
            account=str(event.account), **change.fields,
        )  # fmt: skip
        if moved is None:
            return await self._apply_locked(event, cid)
        count_verdict(change.new, moved)
        return True

    async def _apply_leg(self, event: BrokerOrderEvent, cid: str | None) -> bool:
        """Write a bracket leg's fill onto its entry's row (reconcile's position check counts
        it); a leg's other events change no row. Return False when no row is the entry yet."""
        fill = event.event
        if not isinstance(fill, OrderFilled):
            return False  # dropped as a bracket leg's after the retry: nothing to write
        fill_id = fill.fill_id or f"{event.broker_order_id}@{fill.ts_event.isoformat()}"
        qty, price = fill.qty, fill.price
        if fill.total_qty is not None:
            # A running total: written as one (the position check takes a leg's largest
            # "cum@N", never a sum of overlapping spans).
            fill_id, qty, price = f"cum@{fill.total_qty}", fill.total_qty, fill.total_avg or price
        written = await self.ledger.record_leg_fill(
            account=str(event.account),
            entry_client_id=entry_client_id(cid),
            entry_order_id=None if event.parent_order_id is None else str(event.parent_order_id),
            leg_order_id=str(event.broker_order_id),
            fill_id=fill_id,
            qty=qty,
            price=price,
        )
        if written is None:
            return False
        signal_id, new = written
        bind_order(signal_id=signal_id)
        if new:
            _log.info("leg_filled", signal_id=signal_id, broker_order_id=str(event.broker_order_id),
                      qty=qty, price=str(price))  # fmt: skip
        return True

    async def _apply_locked(self, event: BrokerOrderEvent, cid: str | None) -> bool:
        """Apply one event under its row's lock (after the row moved under a guarded write)."""
        fill = event.event if isinstance(event.event, OrderFilled) else None
        async with self.ledger.transaction() as conn:
            record = await self.ledger.lock_row_for_event(
                conn, cid, str(event.broker_order_id), account=str(event.account)
            )
            if record is None:
                return False
            signal_id = str(record["signal_id"])
            seen = bool(
                fill is not None
                and fill.fill_id
                and await self.ledger.fill_seen(conn, signal_id, fill.fill_id)
            )
            ordered, by_total = None, Decimal(0)
            if fill is not None and not seen:
                ordered = await self.ledger.ordered_qty(conn, signal_id)
                filled = record["filled_qty"]
                by_total = await self.ledger.by_total(
                    conn, signal_id, None if filled is None else Decimal(str(filled))
                )
            row = EventRow.from_record(
                record, fill_seen=seen, ordered_qty=ordered, by_total=by_total
            )
            change = _change(row, event)
            moved = None
            if change is not None:
                moved = await self.ledger.transition(
                    signal_id, change.new, expected=SignalStatus(row.status), event=change.event,
                    detail=change.detail, conn=conn, **change.fields,
                )  # fmt: skip
        if change is not None:
            count_verdict(change.new, moved)
        elif (reason := _never_taken(row, event)) is not None:
            self._drop(event, reason, signal_id=signal_id)
        return True


def _for_the_record(event: BrokerOrderEvent) -> bool:
    """Return whether the tracker of record applies ``event`` of another process's order.

    Not an acceptance without our client id: it finds its row only by the broker's order id,
    which only the placer's written answer (then the row is placed already) or an adoption
    gives the row. Without that answer (the placer died sending) the row is reconcile's:
    its lookup adopts the order.
    """
    return event.client_order_id is not None or not isinstance(event.event, OrderAccepted)


def _is_leg(event: BrokerOrderEvent, cid: str | None) -> bool:
    """Return whether ``event`` is a bracket leg's: by our client id's suffix, or the broker's
    link to its entry."""
    return event.parent_order_id is not None or entry_client_id(cid) is not None


# The broker's verdicts the tracker writes, as ``tradebridge_signals_outcome_total`` counts
# them (the submit's outcome is the dispatcher's: placed, rejected, unknown).
_OUTCOMES = {
    SignalStatus.FILLED: "filled",
    SignalStatus.CANCELLED: "cancelled",
    SignalStatus.EXPIRED: "expired",
    SignalStatus.REJECTED: "rejected",
}


def count_verdict(status: SignalStatus, row: LedgerRow | None) -> None:
    """Count a broker's verdict written to a row (by the tracker, or reconcile's net under
    it: whoever's guarded move wins counts it, once)."""
    outcome = _OUTCOMES.get(status)
    if outcome is not None:
        metrics.SIGNALS_OUTCOME.labels(outcome=outcome).inc()
    if status is SignalStatus.FILLED and row is not None and row.ts_final is not None:
        # The row's own timestamps (the database's clock): the answer (ts_accepted, when the
        # row went working) to this fill, and the insert to it.
        if row.ts_accepted is not None:
            metrics.observe_step("filled", (row.ts_final - row.ts_accepted).total_seconds())
        if row.created_at is not None:
            metrics.observe_step("end_to_end", (row.ts_final - row.created_at).total_seconds())


def _beyond_recorded(
    row: EventRow, total: int, total_avg: Decimal | None, price: Decimal
) -> tuple[Decimal, Decimal] | None:
    """Return the part of a running total the row has not recorded: its quantity and average
    price (from the two averages where the broker gives one, else ``price``), or None."""
    have = row.filled_qty or Decimal(0)
    qty = Decimal(total) - have
    if qty <= 0:
        return None
    if total_avg is None:
        return qty, price
    return qty, (total_avg * total - (row.avg_fill_price or Decimal(0)) * have) / qty


@dataclass(frozen=True, slots=True)
class _Change:
    """The move an event asks of its row: new status, event, its detail, columns to set."""

    new: SignalStatus
    event: str
    detail: dict[str, Any]
    fields: dict[str, Any]
    # A fill counted (in part) in a broker's total: written under the row's lock only (its
    # record may leave the status and filled quantity, the guard of a move, unchanged).
    covered: bool = False


def _after_fill(row: EventRow, qty: Decimal, price: Decimal) -> Filled:
    """Return the row's fill state after ``qty`` more traded at ``price`` (none: a fill a
    total counted already; the row is partially filled at least, filled if all traded)."""
    filled = row.filled_qty or Decimal(0)
    if qty > 0:
        return apply_fill(filled, row.avg_fill_price, qty, price, row.ordered_qty)
    done = row.ordered_qty is not None and filled >= row.ordered_qty
    status = SignalStatus.FILLED if done else SignalStatus.PARTIALLY_FILLED
    return Filled(filled, price if row.avg_fill_price is None else row.avg_fill_price, status)


def _never_taken(row: EventRow, event: BrokerOrderEvent) -> str | None:
    """Return why ``event`` is a fill its final row never took, or None.

    ``fill_after_end``: the row ended (cancelled, expired, rejected) first.
    ``fill_beyond_order``: the row filled what it ordered and the broker traded more (its
    quantity was raised at the broker, by hand). Either way the ledger shows less than the
    broker traded: said at WARNING (reconcile compares open rows only; docs/operations.md).
    A fill recorded already (by its id, or counted in a broker's total) is neither.
    """
    fill = event.event
    if not isinstance(fill, OrderFilled) or (fill.fill_id and row.fill_seen):
        return None
    status = SignalStatus(row.status)
    if status in _ENDED_SHORT:
        return "fill_after_end"
    if status is not SignalStatus.FILLED:
        return None
    filled = row.filled_qty or Decimal(0)
    if fill.total_qty is not None:
        beyond = Decimal(fill.total_qty) > filled
    else:
        beyond = fill.fill_id is not None and Decimal(fill.qty) > row.by_total
    return "fill_beyond_order" if beyond else None


def _change(row: EventRow, event: BrokerOrderEvent) -> _Change | None:
    """Return the move ``event`` asks of ``row``, or None (nothing to do, or backwards)."""
    status = SignalStatus(row.status)
    if status in FINAL_STATUSES:
        return None
    order_id = str(event.broker_order_id)
    on_order = {"tradovate_order_id": order_id}
    match event.event:
        case OrderAccepted():
            # needs_review too: an event under our client id is the exact evidence it
            # waits for (a row is found by client id first).
            if status not in (
                SignalStatus.SUBMITTED,
                SignalStatus.UNKNOWN,
                SignalStatus.NEEDS_REVIEW,
            ):
                return None
            change = _Change(SignalStatus.WORKING, "accepted", {"broker_order_id": order_id},
                             on_order)  # fmt: skip
        case OrderFilled(
            qty=fill_qty, price=price, fill_id=fill_id, total_qty=total, total_avg=total_avg
        ):
            if fill_id and row.fill_seen:
                return None  # applied once per fill id
            qty, covered = Decimal(fill_qty), Decimal(0)
            if total is not None:
                beyond = _beyond_recorded(row, total, total_avg, price)
                if beyond is None:
                    return None  # another poller's span recorded it already
                qty, price = beyond
            else:
                # Counted already by a broker's total written without fill ids (reconcile's
                # net, an adoption): recorded, not added again.
                covered = min(qty, row.by_total)
            after = _after_fill(row, qty - covered, price)
            detail = {"fill_id": fill_id, "qty": int(qty), "price": str(price),
                      "filled_qty": str(after.filled_qty)}  # fmt: skip
            if covered:
                detail["covered"] = int(covered)
            change = _Change(
                after.status,
                "fill",
                detail,
                {**on_order, "filled_qty": after.filled_qty,
                 "avg_fill_price": after.avg_fill_price},
                covered=bool(covered),
            )  # fmt: skip
        case OrderCancelled(reason=reason):
            change = _Change(SignalStatus.CANCELLED, "cancelled", {"reason": reason}, on_order)
        case OrderExpired():
            change = _Change(SignalStatus.EXPIRED, "expired", {}, on_order)
        case OrderRejected(reason=reason, text=text):
            message = (
                f"rejected by the broker: {reason}: {text}"
                if text
                else (f"rejected by the broker: {reason}")
            )
            change = _Change(SignalStatus.REJECTED, "rejected", {"reason": reason, "text": text},
                             {**on_order, "error_message": message})  # fmt: skip
        case _:
            return None
    try:
        check_move(row.signal_id, status, change.new)
    except IllegalTransition:
        return None  # an older event after a newer one: never backwards
    return change

"""Reconcile: bring rows left behind to the broker's truth (startup, timer, unknown rows).

Each round (``reconcile_once``):

1. **Dead workers.** A live dispatcher holds an advisory lock on its worker id; a worker id
   in ``claimed_by`` whose lock is free belongs to a dead process. Its rows are recovered at
   once: ``processing`` → ``pending`` (nothing was sent), ``submitted`` → ``unknown``.
   A restart of the database ends every session and frees every lock at once, so for
   ``dispatcher.liveness_grace_s`` after the server started (or after this process got the
   database back) no worker is read as dead: live workers take their locks again within a
   second or so (``Ledger.hold_lock``). A worker of this process is never dead to it.
   Rows claimed more than ``dispatcher.stale_after_s`` ago are recovered the same way
   whatever the lock says (``Ledger.requeue_stale``), a fallback for a hung worker.
2. **Unknown rows** of dead workers, and those untouched for a reconcile interval, are
   looked up (``Placer.resolve``): found → adopted, absent → resent with the same id (only by
   whoever wins the version-checked ``unknown → submitted``), lookup failing → left for the
   next round. Meanwhile the row holds back only its account's position-based intents, and
   only for ``dispatcher.unknown_bound_s``: past it the row is escalated to ``needs_review``
   (or ``failed`` when proven absent), and the account moves on.
   **needs_review rows** are looked up again and adopt what is provably theirs (never resent).
3. **Open rows** (``working``, ``partially_filled``) not updated for a reconcile interval are
   compared with the broker's order reports (one read per account): missed fills, cancels and
   expiries are written. Events do this live; this is the net under them. The broker's
   filled total only ever raises the row's (``_sync_row``; docs/ledger.md, "Filled
   quantity").
4. **Positions**, every ``dispatcher.position_check_s`` per account between all workers: the
   broker's net positions against the signed fills of tradebridge's orders
   (``dispatch/positions.py``); what nothing explains is a divergence, announced by the
   notifier, never acted on.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

from tradebridge._aio import reraise_if_cancelling
from tradebridge.brokers.base import Broker
from tradebridge.brokers.budget import mark_background
from tradebridge.brokers.pool import BrokerPool
from tradebridge.config import Settings
from tradebridge.dispatch import positions as positions_check
from tradebridge.dispatch.liveness import LivenessLock
from tradebridge.dispatch.placement import (
    WORKER_LOCK_NAMESPACE,
    Placer,
    ledger_status,
    lookup_window_s,
)
from tradebridge.domain.ids import (
    AccountName,
    BrokerOrderId,
    client_order_id_for,
    entry_client_id,
)
from tradebridge.domain.lifecycle import FINAL_STATUSES, SignalStatus
from tradebridge.domain.reports import OrderStatusReport
from tradebridge.errors import ConfigError, IllegalTransition, NotFound
from tradebridge.obs import metrics
from tradebridge.obs.logging import get_logger, order_context
from tradebridge.store.ledger import Ledger, LedgerRow, PositionTurn, database_unavailable
from tradebridge.tracking.tracker import count_verdict

_log = get_logger("tradebridge.dispatch.reconcile")

# Worker ids whose dispatcher runs in this process: never dead to this process's reconcile,
# whatever their lock says while it is being taken again after a reconnect.
_LOCAL_WORKERS: Counter[str] = Counter()
# Times one open row's sync reads it again after its guarded move was refused (the tracker
# moving it meanwhile); then the next round looks again.
_SYNC_TRIES = 3
# Orders of open rows missing from an account's order lists read one by one per round
# (``_read_missing``): an order the broker lost for good costs a read a round, bounded.
_MISSING_READS = 20
# An open row's order the broker answers "no such order" for (``LostOrder``) is read again
# after a wait that doubles from the reconcile interval up to this (a lost order no longer
# costs a read every round, for good), and is reported to the notifier from its
# ``_LOST_AFTER``-th answer in a row (one answer may be a broker's hiccup).
_LOST_READ_MAX_S = 600.0
_LOST_AFTER = 3
# Statuses of rows whose order rests (what ``Ledger.open_orders_idle`` lists).
_RESTING_ROWS = frozenset({SignalStatus.WORKING, SignalStatus.PARTIALLY_FILLED})


@dataclass(slots=True)
class LostOrder:
    """An open row whose order the broker has answered "no such order" for, in a row."""

    account: str
    order_id: str
    signal_id: str
    first_at: datetime  # the first such answer
    misses: int = 1
    next_read: float = 0.0  # monotonic: not read again before


@contextlib.contextmanager
def local_worker(worker_id: str) -> Iterator[None]:
    """Count ``worker_id`` as running in this process while inside."""
    _LOCAL_WORKERS[worker_id] += 1
    try:
        yield
    finally:
        _LOCAL_WORKERS[worker_id] -= 1
        if _LOCAL_WORKERS[worker_id] <= 0:
            del _LOCAL_WORKERS[worker_id]


def local_workers() -> frozenset[str]:
    """Return the worker ids running in this process."""
    return frozenset(_LOCAL_WORKERS)


@dataclass
class ReconcileReport:
    """What one round did."""

    dead_workers: list[str] = field(default_factory=list)
    requeued: list[str] = field(default_factory=list)
    marked_unknown: list[str] = field(default_factory=list)
    resolved: dict[str, str] = field(default_factory=dict)  # signal id -> new status
    still_unknown: list[str] = field(default_factory=list)
    reviewed: dict[str, str] = field(default_factory=dict)  # needs_review rows that resolved
    synced: dict[str, str] = field(default_factory=dict)  # open rows moved by reports
    diverged: list[str] = field(default_factory=list)  # "account contract" found diverged


def dead_worker_hold_floor(settings: Settings) -> float:
    """Return the shortest safe ``dispatcher.dead_worker_hold_s`` (dispatch/liveness.py): a
    fenced send leaves within ``liveness_fresh_s`` and shows at the broker within the longer
    of the request timeout and the lookup window."""
    shows = max(settings.tradovate.request_timeout_s, lookup_window_s(settings))
    return settings.dispatcher.liveness_fresh_s + shows


class Reconciler:
    """Recovers and reconciles ledger rows; any number may run (moves are guarded)."""

    def __init__(
        self,
        settings: Settings,
        ledger: Ledger,
        brokers: BrokerPool,
        *,
        today: Callable[[], date] | None = None,
        liveness: LivenessLock | None = None,
        now_s: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings
        self.config = settings.dispatcher
        self.ledger = ledger
        self.brokers = brokers
        # ``liveness``: the lock of the worker this reconciler runs beside; its resends are
        # that worker's claims, fenced by its lock (dispatch/liveness.py).
        self.placer = Placer(
            ledger, self.config, lookup_window_s=lookup_window_s(settings), liveness=liveness
        )
        self._today = today or (lambda: datetime.now(UTC).date())
        shortest = dead_worker_hold_floor(settings)
        if self.config.dead_worker_hold_s < shortest:
            _log.warning(
                "dead_worker_hold_short", hold_s=self.config.dead_worker_hold_s,
                safe_from_s=round(shortest, 3),
                note="a dead worker's last send may not show at the broker when its rows are "
                "looked up, and be sent again",
            )  # fmt: skip
        # Health: the last round's error (None once a round succeeds again).
        self.last_error: str | None = None
        # Liveness grace: the server start seen last, and when the database came back.
        self._server_started: datetime | None = None
        self._back_at: float | None = None
        self._lost = False
        # Open rows' orders the broker does not know, by (account, broker order id); when
        # each is read again, on ``now_s``'s clock.
        self._not_found: dict[tuple[str, str], LostOrder] = {}
        self._now_s = now_s
        # Whether a round has read the open rows' orders yet (lost_orders_judging).
        self._open_read = False

    def lost_orders(self) -> list[LostOrder]:
        """Return the open rows whose order the broker has said it does not know
        ``_LOST_AFTER`` times in a row (the notifier's ``reconcile_divergence``)."""
        return [lost for lost in self._not_found.values() if lost.misses >= _LOST_AFTER]

    def lost_orders_judging(self) -> frozenset[str] | None:
        """Return the accounts with an order the broker has said it does not know fewer than
        ``_LOST_AFTER`` times so far (not reported yet, maybe reported before a restart);
        None while no round has read the open rows' orders yet (anything may be)."""
        if not self._open_read:
            return None
        return frozenset(
            lost.account for lost in self._not_found.values() if lost.misses < _LOST_AFTER
        )

    async def run(self) -> None:
        """Reconcile now and then every ``dispatcher.reconcile_interval_s`` until cancelled."""
        mark_background()  # its reads queue behind those an order waits for
        while True:
            try:
                await self.reconcile_once()
                self.last_error = None
            except asyncio.CancelledError:
                raise
            except Exception as e:  # noqa: BLE001 - the next round tries again
                reraise_if_cancelling()
                self.last_error = f"{type(e).__name__}: {e}"[:200]
                if database_unavailable(e):
                    self._lost = True
                    _log.warning("reconcile_failed", error=type(e).__name__, database="unreachable")
                else:
                    _log.exception("reconcile_failed")
            reraise_if_cancelling()  # a cancel lost inside the round (see _aio)
            await asyncio.sleep(self.config.reconcile_interval_s)

    async def _liveness_settled(self) -> bool:
        """Return whether free liveness locks may be read as dead workers now.

        Not within ``liveness_grace_s`` of the server's start (a restart frees every lock at
        once), nor of this reconciler getting the database back: live workers are still
        taking their locks again.
        """
        started, up = await self.ledger.server_uptime()
        now = time.monotonic()
        restarted = self._server_started is not None and started != self._server_started
        if self._lost or restarted:
            self._back_at = now
        self._lost, self._server_started = False, started
        back = now - self._back_at if self._back_at is not None else math.inf
        since = min(up.total_seconds(), back)
        grace = self.config.liveness_grace_s
        if since < grace:
            _log.info("dead_worker_check_deferred", since_s=round(since, 3), grace_s=grace)
            return False
        return True

    async def dead_workers(self) -> list[str]:
        """Return the worker ids holding rows in flight whose liveness lock is free.

        Empty while the liveness grace runs (see ``_liveness_settled``); never a worker id
        of this process.
        """
        found = await self._workers()
        return [] if found is None else found[0]

    async def _workers(self) -> tuple[list[str], list[str]] | None:
        """Return the other processes' workers holding rows in flight, (dead, live) by their
        liveness lock; None while the liveness grace runs (who lives is not known yet)."""
        if not await self._liveness_settled():
            return None
        return await self.ledger.worker_liveness(
            WORKER_LOCK_NAMESPACE, besides=set(local_workers())
        )

    async def reconcile_once(self) -> ReconcileReport:
        """Run one round; return what it did."""
        report = ReconcileReport()
        # The queue's depth and oldest age for /metrics: one read per round, not per row.
        depth, oldest = await self.ledger.queue_backlog()
        metrics.QUEUE_DEPTH.set(depth)
        metrics.QUEUE_OLDEST_AGE.set(max(oldest, 0.0))
        workers = await self._workers()
        if workers is not None:  # during the grace who lives is unknown: next round
            dead, live = workers
            # Their locks held for dead_worker_hold_s before their rows move (one transaction,
            # dispatch/liveness.py); one whose lock was taken again meanwhile lives.
            recovered = await self.ledger.recover_workers(
                WORKER_LOCK_NAMESPACE, dead, hold_s=self.config.dead_worker_hold_s
            )
            for worker in dead:
                result = recovered.get(worker)
                if result is None:
                    live.append(worker)
                    continue
                report.dead_workers.append(worker)
                report.requeued += result.requeued
                report.marked_unknown += result.marked_unknown
            # Old claims of no live worker (ours or another's, by its lock): a live worker's
            # request may still be on its way (waiting in the request budget), and a lookup
            # before it leaves finds nothing.
            result = await self.ledger.requeue_stale(
                older_than=timedelta(seconds=self.config.stale_after_s),
                spare=[*live, *local_workers()],
            )
            report.requeued += result.requeued
            report.marked_unknown += result.marked_unknown
        await self._resolve_unknown(report)
        await self._review(report)
        await self._sync_open(report)
        self._open_read = True
        await self._check_positions(report)
        if (
            report.requeued
            or report.marked_unknown
            or report.resolved
            or report.synced
            or report.reviewed
        ):
            _log.info(
                "reconciled",
                dead_workers=report.dead_workers,
                requeued=len(report.requeued),
                marked_unknown=len(report.marked_unknown),
                resolved=len(report.resolved),
                still_unknown=len(report.still_unknown),
                reviewed=len(report.reviewed),
                synced=len(report.synced),
            )
        if report.still_unknown:
            # Never silent: rows the lookups could not settle this round, by id.
            _log.warning("rows_still_unknown", signal_ids=report.still_unknown[:20],
                         count=len(report.still_unknown))  # fmt: skip
        return report

    async def _resolve_unknown(self, report: ReconcileReport) -> None:
        idle = timedelta(seconds=self.config.reconcile_interval_s)
        by_account: dict[str, list[str]] = defaultdict(list)
        for signal_id, account in await self.ledger.unknown_to_resolve(
            dead_workers=report.dead_workers, idle=idle
        ):
            by_account[account].append(signal_id)

        async def account_rows(account: str, signal_ids: list[str]) -> None:
            try:
                broker = await self.brokers.get(account)
            except ConfigError as e:
                for signal_id in signal_ids:
                    await self._escalate_if_past_bound(signal_id, f"no broker: {e}", report)
                return
            for signal_id in signal_ids:  # oldest first; each is settled on its own
                try:
                    with order_context(signal_id=signal_id, account=account,
                                       client_order_id=client_order_id_for(signal_id)):  # fmt: skip
                        status = await self.placer.resolve(signal_id, broker, today=self._today())
                except Exception as e:  # noqa: BLE001 - one row must not stop the others
                    reraise_if_cancelling()
                    _log.warning("resolve_failed", signal_id=signal_id, error=str(e)[:300])
                    report.still_unknown.append(signal_id)
                    continue
                if status is SignalStatus.UNKNOWN:
                    report.still_unknown.append(signal_id)
                    continue
                report.resolved[signal_id] = status.value

        async with asyncio.TaskGroup() as group:
            for account, signal_ids in by_account.items():
                group.create_task(account_rows(account, signal_ids))

    async def _escalate_if_past_bound(
        self, signal_id: str, why: str, report: ReconcileReport
    ) -> None:
        row = await self.ledger.get(signal_id)
        if row is not None and row.status is SignalStatus.UNKNOWN and self.placer.past_bound(row):
            status = await self.placer.escalate(signal_id, "bound", why, {"error": why})
            report.resolved[signal_id] = status.value
        else:
            report.still_unknown.append(signal_id)

    async def _review(self, report: ReconcileReport) -> None:
        """Look ``needs_review`` rows up again; adopt what is provably theirs."""
        for signal_id, account in await self.ledger.needing_review():
            try:
                broker = await self.brokers.get(account)
                status = await self.placer.review(signal_id, broker, today=self._today())
            except Exception as e:  # noqa: BLE001 - the next round tries again
                reraise_if_cancelling()
                _log.warning("review_lookup_failed", signal_id=signal_id, error=str(e))
                continue
            if status is not SignalStatus.NEEDS_REVIEW:
                report.reviewed[signal_id] = status.value

    async def _check_positions(self, report: ReconcileReport) -> None:
        every = self.config.position_check_s
        if every <= 0:
            return
        turns = await self.ledger.take_position_turns(
            [a.name for a in self.settings.accounts], every
        )
        for account, turn in turns.items():
            try:
                await self._check_account_positions(account, turn, report)
            except Exception as e:  # noqa: BLE001 - one account must not stop the others
                reraise_if_cancelling()
                _log.warning("position_check_failed", account=account,
                             error=f"{type(e).__name__}: {e}"[:300])  # fmt: skip
        # Whoever checked: the gauge of every process that reconciles says the ledger's word.
        for check in await self.ledger.position_checks():
            metrics.POSITION_UNEXPLAINED.labels(
                account=check.account_name, contract=check.contract
            ).set(float(check.unexplained) if check.diverged_since is not None else 0.0)

    async def _check_account_positions(
        self, account: str, turn: PositionTurn, report: ReconcileReport
    ) -> None:
        settle_s = self.config.position_settle_s
        if not await self.ledger.account_quiet(account, settle_s):
            return
        stored = {c.contract: c for c in await self.ledger.position_checks(account)}
        ours = await self.ledger.our_positions(account)
        broker = await self.brokers.get(account)
        positions: dict[str, Decimal] = defaultdict(Decimal)
        for p in await broker.position_reports(AccountName(account)):
            positions[p.contract] += p.net_qty
        if positions_check.unexplained(stored, positions, ours) and await self._legs_from_reports(
            account, broker
        ):
            ours = await self.ledger.our_positions(account)
        # A fill that landed between the reads: judged at the next turn, not now.
        if await self.ledger.our_positions(account) != ours or not await self.ledger.account_quiet(
            account, settle_s
        ):
            return
        since = max((c.checked_at for c in stored.values() if c.checked_at), default=None)
        flattened = since is not None and await self.ledger.flattened_since(account, since)
        checks = positions_check.judge(account, stored, positions, ours,
                                       baselined=turn.baselined, flattened=flattened)  # fmt: skip
        await self.ledger.save_position_checks(checks, read=stored)
        if not turn.baselined:
            await self.ledger.mark_baselined(account)
        for check in checks:
            if check.diverged_since is None:
                continue
            report.diverged.append(f"{account} {check.contract}")
            before = stored.get(check.contract)
            if before is None or before.diverged_since is None:
                _log.warning(
                    "position_diverged", account=account, contract=check.contract,
                    broker_net=str(check.broker_net), ours=str(check.ours),
                    accepted=str(check.accepted), unexplained=str(check.unexplained),
                )  # fmt: skip

    async def _legs_from_reports(self, account: str, broker: Broker) -> bool:
        """Write the bracket legs' fills the broker's order reports show beyond what their
        events wrote (an event lost while the socket was down); return whether any was."""
        wrote = False
        for order in await broker.order_reports(AccountName(account)):
            entry_cid = entry_client_id(order.client_order_id)
            if (order.parent_id is None and entry_cid is None) or order.filled_qty <= 0:
                continue
            written = await self.ledger.record_leg_fill(
                account=account,
                entry_client_id=entry_cid,
                entry_order_id=None if order.parent_id is None else str(order.parent_id),
                leg_order_id=str(order.broker_order_id),
                fill_id=f"cum@{order.filled_qty}", qty=order.filled_qty,
                price=order.avg_fill_price or Decimal(0),
            )  # fmt: skip
            wrote = wrote or bool(written and written[1])
        return wrote

    async def _sync_open(self, report: ReconcileReport) -> None:
        idle = timedelta(seconds=self.config.reconcile_interval_s)
        by_account: dict[str, list[tuple[str, SignalStatus, str, Decimal | None]]] = defaultdict(
            list
        )
        for signal_id, account, status, order_id, filled in await self.ledger.open_orders_idle(
            idle
        ):
            by_account[account].append((signal_id, status, order_id, filled))
        for account, open_rows in by_account.items():
            try:
                # Not captured: these reads belong to no single signal (nor are their large
                # answers redacted for nothing, BrokerHttp).
                broker = await self.brokers.get(account)
                reports = await broker.order_reports(AccountName(account))
            except Exception as e:  # noqa: BLE001 - the next round tries again
                _log.warning("reconcile_read_failed", account=account, error=str(e))
                continue
            by_id = {str(r.broker_order_id): r for r in reports}
            now = self._now_s()
            missing = [
                (order_id, signal_id) for signal_id, _, order_id, _ in open_rows
                if order_id not in by_id and self._due(account, order_id, now)
            ]  # fmt: skip
            by_id.update(await self._read_missing(broker, account, missing))
            for signal_id, status, order_id, filled in open_rows:
                found = by_id.get(order_id)
                if found is None:
                    continue
                self._not_found.pop((account, order_id), None)
                synced = await self._sync_row(signal_id, order_id, status, filled, found)
                if synced is not None:
                    new, moved = synced
                    count_verdict(new, moved)  # a fill or cancel no event brought counts too
                    report.synced[signal_id] = new.value
        # A row that closed (an event, a human) is no longer followed here. One the round
        # did not list may only have been touched lately: its row says.
        listed = {(a, order_id) for a, rows in by_account.items() for _, _, order_id, _ in rows}
        for key in self._not_found.keys() - listed:
            state = await self.ledger.order_state(self._not_found[key].signal_id)
            if state is None or state[0] not in _RESTING_ROWS or state[1] != key[1]:
                del self._not_found[key]

    def _due(self, account: str, order_id: str, now: float) -> bool:
        lost = self._not_found.get((account, order_id))
        return lost is None or now >= lost.next_read

    async def _read_missing(
        self, broker: Broker, account: str, orders: list[tuple[str, str]]
    ) -> dict[str, OrderStatusReport]:
        """Read the orders (broker order id, signal id) of open rows that the account's lists
        left out, one by one (at most ``_MISSING_READS`` a round), by broker order id.

        The lists do not show every order that ended: the bridge keeps a finished order in
        ``/orders`` for about a minute, then in ``/ordersHistory`` only among the newest
        ``history_max_count``. An order that ended while no process followed it, pushed out
        of that history, was never compared again and its row stayed open for good.
        """
        found: dict[str, OrderStatusReport] = {}
        for order_id, signal_id in orders[:_MISSING_READS]:
            try:
                found[order_id] = await broker.order_report(
                    AccountName(account), BrokerOrderId(order_id)
                )
            except NotFound:
                # Not guessed: the row stays open, read again later (LostOrder).
                await self._not_known(account, order_id, signal_id)
            except Exception as e:  # noqa: BLE001 - the next round tries again
                reraise_if_cancelling()
                _log.warning("reconcile_read_failed", account=account, broker_order_id=order_id,
                             error=str(e))  # fmt: skip
        return found

    async def _not_known(self, account: str, order_id: str, signal_id: str) -> None:
        """Count the broker's "no such order" for an open row's order; note the first on the
        row's history, and read it again after a wait that doubles each time."""
        lost = self._not_found.get((account, order_id))
        if lost is None:
            # Since the note a process before this one wrote (a restart), else noted now.
            first_at = await self._noted_lost(signal_id, order_id)
            if first_at is None:
                # Noted first: a note that fails is tried again with the next round's answer.
                await self.ledger.add_event(signal_id, "order_not_found", {
                    "broker_order_id": order_id,
                    "note": "the broker answers that it has no such order; the row stays open "
                            "(check the account: tradebridge orders, tradebridge trace)",
                })  # fmt: skip
                first_at = datetime.now(UTC)
            lost = LostOrder(account, order_id, signal_id, first_at)
            self._not_found[account, order_id] = lost
        else:
            lost.misses += 1
        wait = min(self.config.reconcile_interval_s * 2 ** (lost.misses - 1), _LOST_READ_MAX_S)
        lost.next_read = self._now_s() + wait
        _log.warning(
            "open_order_not_found", account=account, broker_order_id=order_id,
            signal_id=signal_id, answers=lost.misses, next_read_s=round(wait, 3),
        )  # fmt: skip

    async def _noted_lost(self, signal_id: str, order_id: str) -> datetime | None:
        """Return when the row's history last noted ``order_id`` unknown to the broker, if
        nothing happened to the row since (the same loss, seen by a process before this
        one); else None."""
        events = await self.ledger.history(signal_id)
        if not events or events[-1].event != "order_not_found":
            return None
        detail = events[-1].detail  # decoded by the pool's jsonb codec
        if not isinstance(detail, dict) or str(detail.get("broker_order_id")) != order_id:
            return None
        return events[-1].created_at

    async def _sync_row(
        self,
        signal_id: str,
        order_id: str,
        status: SignalStatus,
        filled: Decimal | None,
        found: OrderStatusReport,
    ) -> tuple[SignalStatus, LedgerRow] | None:
        """Write what the broker's report of a row's order says beyond the row (read as
        ``status`` and ``filled``); return the new status and the row, or None.

        The filled quantity is only ever raised to the broker's running total, never
        lowered: the move is guarded by the status and filled quantity read, and when the
        row moved meanwhile (the tracker applied fills) it is read again and the report
        compared with that (docs/ledger.md, "Filled quantity").
        """
        for _ in range(_SYNC_TRIES):
            new = ledger_status(found.status)
            total = Decimal(found.filled_qty)
            have = filled or Decimal(0)
            raised = total > have
            if new is SignalStatus.WORKING or (new is status and not raised):
                return None
            if have > total and new in FINAL_STATUSES:
                _log.warning(
                    "filled_beyond_broker", signal_id=signal_id, broker_order_id=order_id,
                    ledger_filled=str(have), broker_filled=str(total),
                    broker_status=found.status.value,
                )  # fmt: skip
            try:
                moved = await self.ledger.move_if(
                    signal_id, new, expected=status, filled_was=filled, event="reconciled",
                    detail={"broker_status": found.status.value, "ledger_status": status.value,
                            "broker_filled": found.filled_qty},
                    filled_qty=total if raised else None,
                    avg_fill_price=found.avg_fill_price if raised else None,
                    error_message=(f"broker: {found.reason}" if found.reason
                                   and new is SignalStatus.REJECTED else None),
                )  # fmt: skip
            except IllegalTransition:
                return None
            if moved is not None:
                return new, moved
            # The row moved since it was read: compare the report with it as it is now.
            state = await self.ledger.order_state(signal_id)
            if state is None or state[1] != order_id:
                return None
            status, _, filled = state
        _log.info("reconcile_sync_deferred", signal_id=signal_id, broker_order_id=order_id)
        return None

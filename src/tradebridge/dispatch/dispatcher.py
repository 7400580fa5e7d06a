"""The dispatcher: claims ledger rows and places each one on the broker exactly once.

One loop per worker: NOTIFY wakes it, a timer wakes it (``dispatcher.drain_interval_s``),
the listener's (re)connect wakes it, and an account whose claimed rows are done wakes it (its
next rows may now be claimable; not when it provably left none, ``_run_account``). Each wake
claims, in one statement, the oldest pending rows (up to ``dispatcher.claim_batch`` each) of
as many idle accounts as there are free slots (``dispatcher.max_accounts``, by default every
configured account); one task per account places its rows one after the other, in
insertion order, so accounts run in parallel and one account's rows in sequence.

Per row: validate → broker facts (position, working orders, quote: only what routing needs)
→ route → risk (the kill switches as read after the row's claim, ``store/kill.py``; then the
rules of ``pipeline/risk.py``, with the account's activity from the ledger and its balance
from the broker where a rule needs them) → protective legs cut (exits, reversals, target
moves: ``tracking._legs``) → ``submitted`` committed → send → outcome
(``tracking._placement``).

No error of ours ends a row: an unexpected exception before the write-ahead sends the row
back to ``pending`` after a growing wait (``dispatcher.error_retry_s`` up to
``error_retry_max_s``; logged, counted in ``tradebridge_row_errors_total``, shown by
``/healthz``), one after it makes the row ``unknown`` (it may have left: reconcile looks it
up), and a database lost mid-row is waited out, then the row is recovered the same way. A
move refused because the row was taken over meanwhile leaves it to its new owner.

The worker holds a PostgreSQL advisory lock on its id while it runs, on a connection of its
own that is opened again, and the lock taken again, after the database restarts
(``Ledger.hold_lock``), so reconcile can tell a dead worker's rows from a live one's
(docs/dispatcher.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any, TypeVar

from tradebridge._aio import cancel_and_wait, reraise_if_cancelling
from tradebridge.brokers.base import AccountInfo, Broker
from tradebridge.brokers.pool import BrokerPool, capture
from tradebridge.config import Settings
from tradebridge.dispatch._legs import PositionMoved, fit_legs
from tradebridge.dispatch.liveness import LivenessLock
from tradebridge.dispatch.placement import (
    WORKER_LOCK_NAMESPACE,
    Placer,
    lookup_window_s,
    plan_to_json,
)
from tradebridge.dispatch.reconcile import Reconciler, local_worker
from tradebridge.domain.calls import BrokerCall
from tradebridge.domain.clock import Clock, utcnow
from tradebridge.domain.enums import OrderStatus, OrderType
from tradebridge.domain.ids import AccountName, client_order_id_for
from tradebridge.domain.kill import KillSwitches
from tradebridge.domain.lifecycle import SignalStatus
from tradebridge.domain.reports import BalanceReport, LookupBaseline, OrderStatusReport
from tradebridge.domain.sessions import trading_day, trading_day_start
from tradebridge.errors import (
    AuthError,
    BrokerError,
    IllegalTransition,
    InvalidInput,
    Lockout,
)
from tradebridge.obs import metrics
from tradebridge.obs.logging import get_logger, order_context
from tradebridge.pipeline.kill import with_kill_switch
from tradebridge.pipeline.market import Market
from tradebridge.pipeline.risk import (
    AccountState,
    OrderFacts,
    RiskDenied,
    RiskLimits,
    Rules,
    RulesBook,
    Verdict,
    assess,
    check_order,
    denial,
    working_ahead,
)
from tradebridge.pipeline.route import (
    BrokerView,
    Needs,
    PlaceOrder,
    entry_reference,
    needs,
    route,
)
from tradebridge.pipeline.validate import Denied, Intent, RawSignal, ValidSignal, validate
from tradebridge.store.kill import KillSwitchWatch
from tradebridge.store.ledger import Ledger, LedgerRow, RiskActivity, database_unavailable
from tradebridge.tracking.tracker import Tracker

_log = get_logger("tradebridge.dispatch.dispatcher")
_T = TypeVar("_T")
# A row left in one of these by _handle keeps the rest of its batch from being placed
# (pending: it was handed back after an error, and goes first again).
_STILL_SENDING = frozenset({SignalStatus.PROCESSING, SignalStatus.SUBMITTED, SignalStatus.PENDING})
# Waits between tries while the database is away.
_DATABASE_RETRY_MAX_S = 1.0


def root_map(settings: Settings) -> dict[str, str]:
    """Return the symbol root map (``[webhook] symbol_map``) if the settings have one."""
    section = getattr(settings, "webhook", None)
    mapping = getattr(section, "symbol_map", None)
    return {str(k).upper(): str(v).upper() for k, v in (mapping or {}).items()}


class Dispatcher:
    """Claims pending rows and places them; one per worker id."""

    def __init__(
        self,
        settings: Settings,
        ledger: Ledger,
        brokers: BrokerPool,
        *,
        worker_id: str,
        today: Callable[[], date] | None = None,
        tracking: bool | None = None,
        kill: KillSwitchWatch | None = None,
        clock: Clock | None = None,
    ) -> None:
        self.settings = settings
        # Whether run() also runs the tracker and reconcile; None: the first dispatcher of
        # the pool does (one tracker per process is enough; more would only repeat work).
        self._tracking = tracking
        self.config = settings.dispatcher
        self.ledger = ledger
        self.brokers = brokers
        self.worker_id = worker_id
        self.limits = RiskLimits.from_config(settings.risk)
        # The process's watch (runtime/serve.py), else one of our own that reads on demand.
        self.kill = kill or KillSwitchWatch(
            ledger, forced=settings.risk.kill_switch, poll_s=settings.serve.kill_switch_poll_s
        )
        self.rules = RulesBook(settings)
        # The time the rules judge by (sessions, the trading day, rates); tests set it.
        self._clock = clock or utcnow
        # This worker's liveness lock as its sends' fences see it (dispatch/liveness.py).
        # An order that may open a position is also stopped there by a kill switch thrown
        # after its write-ahead (docs/kill-switch.md).
        self._liveness = LivenessLock(
            worker_id, ledger, fresh_s=self.config.liveness_fresh_s, kill=self.kill
        )
        self.placer = Placer(
            ledger, self.config, lookup_window_s=lookup_window_s(settings), liveness=self._liveness
        )
        self._today = today or (lambda: datetime.now(UTC).date())
        self._root_map = root_map(settings)
        self._calendar = settings.contracts.calendar()
        self._accounts = frozenset(a.name for a in settings.accounts)
        # A fan-out to every configured account must not wait for slots (issue 12): by
        # default there is one per account; the request budget bounds what reaches Tradovate.
        self._max_accounts = self.config.accounts_at_once(len(self._accounts))
        self._preconnects: set[asyncio.Task[None]] = set()
        self._wake = asyncio.Event()
        # Set once the listener has LISTENed (a notification from then on wakes the loop).
        self.listening = asyncio.Event()
        # Notifications received (rows inserted): an account's task that ends with none since
        # its claim, and a batch not full, left no row of its account behind to claim.
        self._notices = 0
        self._active: dict[str, asyncio.Task[None]] = {}
        self._claim_lock = asyncio.Lock()
        self._bound = timedelta(seconds=self.config.unknown_bound_s)
        self._blocks_all = self.config.unknown_blocks == "all"
        # Health: the last claim's error (None once a claim succeeds again), the
        # reconciler this dispatcher runs, if any, and the rows being retried after an
        # internal error (signal id -> (error, tries, monotonic time of the last)).
        self.claim_error: str | None = None
        self.reconciler: Reconciler | None = None
        # Set once run() has decided whether this dispatcher runs the tracker and reconcile.
        self.tracking_decided = False
        self.retrying: dict[str, tuple[str, int, float]] = {}
        # Set while this worker holds its liveness lock (and whether it ever did).
        self.live = self._liveness.live
        self._was_live = False
        self._stopping = False
        # Rows inside _handle, by signal id (a row requeued and claimed again by this worker
        # may briefly be in two tasks: only the newer claim acts on it).
        self._in_hand: dict[str, int] = {}
        # Rows claimed and given to an account's task, until it ends (by signal id: count).
        self._held: dict[str, int] = {}
        # Set when rows may have been claimed that no task holds (a claim whose answer was
        # lost, an account's task that failed): the next claim hands them back first.
        self._sweep = False

    @property
    def liveness_lock(self) -> LivenessLock:
        """Return this worker's liveness lock as its sends' fences see it."""
        return self._liveness

    @property
    def liveness_lost(self) -> bool:
        """Return whether the liveness lock, once held, is not held now (being retaken)."""
        return self._was_live and not self.live.is_set()

    def retrying_rows(self) -> dict[str, tuple[str, int]]:
        """Return the rows this worker retries after internal errors: (error type, tries).

        A row not tried here for twice the longest wait went on elsewhere: it is forgotten.
        """
        horizon = time.monotonic() - 2 * self.config.error_retry_max_s
        for signal_id in [k for k, (_, _, at) in self.retrying.items() if at < horizon]:
            del self.retrying[signal_id]
        return {k: (error.split(":")[0], tries) for k, (error, tries, _) in self.retrying.items()}

    def wake(self) -> None:
        """Ask the loop to drain (a notification, a timer, a finished row)."""
        self._wake.set()

    # --- the loop ----------------------------------------------------------------------

    async def run(self) -> None:
        """Place rows until cancelled; on cancel, hand back claimed rows that were not sent."""
        async with self.liveness():
            listener = asyncio.create_task(self._listen(), name=f"listen-{self.worker_id}")
            timer = asyncio.create_task(self._timer(), name=f"drain-timer-{self.worker_id}")
            # The caches the first order needs (account lists) fill while the loop starts;
            # a row claimed meanwhile joins the same listing (single flight), never repeats it.
            warm = asyncio.create_task(self._warm(), name=f"warm-{self.worker_id}")
            side = [listener, timer, warm]
            if self._tracking or (self._tracking is None and self.brokers.claim_tracking(self)):
                tracker = Tracker(self.settings, self.ledger, self.brokers)
                reconciler = Reconciler(
                    self.settings, self.ledger, self.brokers, today=self._today,
                    liveness=self._liveness,
                )  # fmt: skip
                self.reconciler = reconciler
                side.append(asyncio.create_task(tracker.run(), name="tracker"))
                side.append(asyncio.create_task(reconciler.run(), name="reconcile"))
            self.tracking_decided = True
            try:
                self.wake()
                while True:
                    await self._wake.wait()
                    self._wake.clear()
                    # Rows are claimed only under the liveness lock (retaken after a restart).
                    await self.live.wait()
                    try:
                        await self._fill_slots()
                        self.claim_error = None
                        reraise_if_cancelling()  # a cancel lost inside the claim (see _aio)
                    except Exception as e:  # noqa: BLE001 - the claim loop must never stop
                        reraise_if_cancelling()
                        # It may have committed and lost its answer: rows claimed that no
                        # task holds, which nobody else takes from a live worker.
                        self._sweep = True
                        self.claim_error = f"{type(e).__name__}: {e}"[:200]
                        if database_unavailable(e):
                            _log.warning("claim_failed", worker=self.worker_id, error=str(e))
                        else:
                            _log.exception("claim_failed", worker=self.worker_id)
                        await asyncio.sleep(min(self.config.drain_interval_s, 1.0))
                        self.wake()
            finally:
                for task in side:
                    task.cancel()
                await self._stop_rows()
                await cancel_and_wait(*side)

    async def _warm(self) -> None:
        """Fill the broker caches the first orders need: the account lists, and the contracts
        of what the accounts traded in the last week (a restart's first alert looks up
        nothing it traded before)."""
        since = self._clock() - timedelta(days=7)
        try:
            recent = await self.ledger.recent_instruments(self.brokers.account_names(), since)
        except Exception as e:  # noqa: BLE001 - best effort: the order path looks them up
            reraise_if_cancelling()
            _log.warning("warm_read_failed", worker=self.worker_id, error=type(e).__name__)
            recent = {}
        await self.brokers.warm(recent)

    async def drain_once(self) -> int:
        """Claim what is claimable now, place it to its outcome; return the rows claimed."""
        started, claimed = await self._fill_slots()
        if started:
            await asyncio.gather(*started, return_exceptions=True)
        return claimed

    async def _listen(self) -> None:
        async def on_connect() -> None:
            self.listening.set()
            self.wake()  # drain what was missed while the listener was away

        await self.ledger.listen(lambda _signal_id: self._notified(), on_connect=on_connect)

    def _notified(self) -> None:
        self._notices += 1
        self.wake()

    async def _timer(self) -> None:
        while True:
            await asyncio.sleep(self.config.drain_interval_s)
            self.wake()

    async def _fill_slots(self) -> tuple[list[asyncio.Task[None]], int]:
        started: list[asyncio.Task[None]] = []
        claimed = 0
        async with self._claim_lock:
            if self._sweep:
                await self._hand_back_strays()
            while (free := self._max_accounts - len(self._active)) > 0:
                notices = self._notices  # before the claim: a row inserted after it notifies
                claim = await self.ledger.claim(
                    self.worker_id, free, per_account=self.config.claim_batch,
                    unknown_bound=self._bound, unknown_blocks_all=self._blocks_all,
                )  # fmt: skip
                rows = claim.rows
                if not rows:
                    break
                # Risk judges these rows by the kill switches as the claim itself saw them.
                self.kill.observe(claim.kill)
                claimed += len(rows)
                metrics.SIGNALS_CLAIMED.inc(len(rows))
                _observe_claims(rows)
                queues: dict[str, list[LedgerRow]] = {}
                for row in rows:  # in insertion order, so each queue is too
                    # Rows without an account are heads of their own (each is denied).
                    key = row.account_name if row.account_name is not None else f"\0{row.signal_id}"
                    queues.setdefault(key, []).append(row)
                # Each account's first order leaves after its write-ahead: its connection to
                # the broker opens meanwhile (by the time of an alert after a quiet spell,
                # the broker has closed the idle ones).
                self._preconnect([k for k in queues if k in self._accounts])
                # Fewer accounts than free slots: nothing else was claimable then.
                drained = len(queues) < free
                for row in rows:
                    self._held[row.signal_id] = self._held.get(row.signal_id, 0) + 1
                for key, queue in queues.items():
                    task = asyncio.create_task(
                        self._run_account(key, queue, claim.kill, notices if drained else None),
                        name=f"account-{key}",
                    )
                    self._active[key] = task
                    started.append(task)
                if len(queues) < free:
                    break
        return started, claimed

    async def _hand_back_strays(self) -> None:
        """Hand back the rows claimed by this worker that no task holds (under the claim
        lock: no claim is in flight). Rows still ``processing`` only: nothing of them left."""
        mine = await self.ledger.claimed_rows(self.worker_id)
        strays = [signal_id for signal_id in mine if signal_id not in self._held]
        if strays:
            back = await self.ledger.hand_back(
                self.worker_id, strays, "claimed, but no task of this worker held it"
            )
            _log.warning("stray_claims_handed_back", worker=self.worker_id, signal_ids=back[:20],
                         count=len(back))  # fmt: skip
        self._sweep = False

    def _preconnect(self, accounts: list[str]) -> None:
        """Open the accounts' connections to the broker beside their write-aheads."""
        if accounts:
            task = asyncio.create_task(self._preconnect_now(accounts), name="preconnect")
            self._preconnects.add(task)
            task.add_done_callback(self._preconnects.discard)

    async def _preconnect_now(self, accounts: list[str]) -> None:
        try:
            await self.brokers.preconnect(accounts)
        except Exception as e:  # noqa: BLE001 - best effort: each request connects anyway
            reraise_if_cancelling()
            _log.debug("preconnect_failed", error=f"{type(e).__name__}: {e}"[:200])

    async def _stop_rows(self) -> None:
        tasks = [*self._active.values(), *self._preconnects]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)

    @contextlib.asynccontextmanager
    async def liveness(self) -> AsyncIterator[None]:
        """Hold this worker's advisory lock (proof of life for reconcile) while inside.

        Enters once the lock is taken; after a lost connection (a database restart) the lock
        is taken again in the background and ``live`` is clear meanwhile.
        """
        holder = asyncio.create_task(
            self.ledger.hold_lock(
                WORKER_LOCK_NAMESPACE,
                self.worker_id,
                self.live,
                on_confirm=self._liveness.confirmed,
                keepalive_s=self.config.liveness_keepalive_s,
                # Probed often enough that a send rarely finds its confirmation stale.
                check_every_s=min(2.0, self.config.liveness_fresh_s / 2.5),
            ),
            name=f"liveness-{self.worker_id}",
        )
        holder.add_done_callback(self._holder_stopped)
        try:
            with local_worker(self.worker_id):
                taken = asyncio.ensure_future(self.live.wait())
                try:
                    await asyncio.wait({taken, holder}, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    taken.cancel()
                if holder.done():
                    holder.result()  # raises what stopped it
                self._was_live = True
                yield
        finally:
            self._stopping = True
            await cancel_and_wait(holder)

    def _holder_stopped(self, task: asyncio.Task[None]) -> None:
        # hold_lock runs until cancelled: anything else leaves the worker without proof of
        # life (its rows would be recovered by others), which must not pass silently.
        if task.cancelled() and not self._stopping:
            _log.error("liveness_holder_stopped", worker=self.worker_id, error="cancelled")
        elif not task.cancelled() and task.exception() is not None:
            _log.error("liveness_holder_stopped", worker=self.worker_id,
                       error=repr(task.exception()))  # fmt: skip

    # --- one row -------------------------------------------------------------------------

    async def _run_account(
        self,
        key: str,
        rows: list[LedgerRow],
        switches: KillSwitches,
        notices: int | None = None,
    ) -> None:
        """Place one account's claimed rows in insertion order; hand back what is not sent.

        ``switches``: the kill switches as the claim saw them (each row is judged by them,
        or by the process's watch where it knows a later change).
        ``notices``: the notifications counted before a claim that left nothing claimable
        (None: it may have). Ending with every row placed, a batch not full and no
        notification since, the account left nothing to claim: the loop is not woken for it
        (one empty claim per alert saved at low rates; the drain timer still runs).
        """
        waiting = [row.signal_id for row in rows]
        nothing_left = requeued = unknown = False
        try:
            for row in rows:
                held = functools.partial(self._held_back, row, after_unknown=unknown)
                if await self._until_reachable(held):
                    await self._hand_back(waiting, "held back by an unknown row of its account")
                    return
                started = time.perf_counter()
                status = await self._handle(row, switches)
                _count_outcome(status, time.perf_counter() - started)
                requeued = requeued or status is SignalStatus.PENDING
                unknown = unknown or status is SignalStatus.UNKNOWN
                waiting.remove(row.signal_id)
                if status in _STILL_SENDING and waiting:
                    # The row's send did not finish (reconcile takes it from here), or it went
                    # back to pending after an error: the rows behind it go back, untouched.
                    await self._hand_back(waiting, "account waits on an unresolved row")
                    return
                # An unknown row (reconcile resolves it) holds back only the rows that depend
                # on it: each next row asks _held_back before it is placed.
            # (A row back to pending after an error is to be claimed again.)
            nothing_left = (
                notices == self._notices and len(rows) < self.config.claim_batch and not requeued
            )
        except asyncio.CancelledError:
            # Only rows still 'processing' under our claim go back: nothing of theirs left.
            await self._hand_back_now(waiting, "worker stopping")
            raise
        except Exception:  # noqa: BLE001 - a task that dies must not strand its rows
            reraise_if_cancelling()
            _log.exception("account_task_failed", account=key, worker=self.worker_id,
                           signal_ids=waiting[:20])  # fmt: skip
            # Handed back at the next claim (one is due: the loop is woken below), with any
            # other row of this worker that no task holds.
            self._sweep = True
        finally:
            for row in rows:
                left = self._held.get(row.signal_id, 0) - 1
                if left > 0:
                    self._held[row.signal_id] = left
                else:
                    self._held.pop(row.signal_id, None)
            if self._active.get(key) is asyncio.current_task():
                del self._active[key]
            if not nothing_left:
                self.wake()

    async def _held_back(self, row: LedgerRow, *, after_unknown: bool = True) -> bool:
        """Return whether an unknown row of the account holds this row back (the bound rule).

        A plain order passes unknown rows (unless ``unknown_blocks = "all"``), but for an
        unknown flatten (run again, it would close what the order opens); an intent that
        depends on the position or working orders waits until they resolve or escalate,
        and while another row's order is on its way (a resend after a lookup proved it
        absent: read beside it, the position would not show it).
        ``after_unknown``: a row claimed with this one went unknown since the claim (which
        checked the rest).
        """
        if row.account_name is None:
            return False
        plain = (row.intent or "order") == "order" and not self._blocks_all
        if plain and not after_unknown:
            # The claim held it back from unknown flattens; none of its batch went unknown
            # since (a plain order's check costs no statement then).
            return False
        holding = await self.ledger.held_back(
            row.account_name, unknown_bound=self._bound, besides=row.signal_id,
            flattens_only=plain,
        )  # fmt: skip
        if holding:
            _log.info("row_held_back", signal_id=row.signal_id, by=holding[:5])
        return bool(holding)

    async def _until_reachable(self, call: Callable[[], Awaitable[_T]]) -> _T:
        """Return ``call()``, trying again while the database is unreachable (never giving up:
        the rows in hand are ours, under the liveness lock, until they are recorded)."""
        delay, tries = 0.05, 0
        while True:
            try:
                result = await call()
            except Exception as e:
                if not database_unavailable(e):
                    raise
                reraise_if_cancelling()
                if not tries:
                    _log.warning("database_unavailable", worker=self.worker_id,
                                 error=type(e).__name__)  # fmt: skip
                tries += 1
                await asyncio.sleep(delay)
                delay = min(delay * 2, _DATABASE_RETRY_MAX_S)
                continue
            if tries:
                _log.info("database_back", worker=self.worker_id, tries=tries)
            return result

    async def _handle(self, row: LedgerRow, switches: KillSwitches) -> SignalStatus | None:
        # Every line about this row, ours or a library's, carries its ids (STYLE.md 7).
        with order_context(
            signal_id=row.signal_id, client_order_id=client_order_id_for(row.signal_id),
            account=row.account_name, broker_order_id=row.tradovate_order_id,
        ):  # fmt: skip
            return await self._handle_row(row, switches)

    async def _handle_row(self, row: LedgerRow, switches: KillSwitches) -> SignalStatus | None:
        signal_id = row.signal_id
        self._in_hand[signal_id] = self._in_hand.get(signal_id, 0) + 1
        try:
            try:
                status = await self._process(row, switches)
            except Exception as e:  # noqa: BLE001 - no error of ours may end an accepted row
                reraise_if_cancelling()
                return await self._recover(signal_id, e)
            self.retrying.pop(signal_id, None)
            return status
        finally:
            left = self._in_hand[signal_id] - 1
            if left:
                self._in_hand[signal_id] = left
            else:
                del self._in_hand[signal_id]

    async def _recover(self, signal_id: str, error: Exception) -> SignalStatus | None:
        """Bring a row whose placement an exception interrupted to a state someone acts on.

        Never ``failed``: a row still ``processing`` under our claim goes back to
        ``pending`` (after a growing wait when the error is ours, a bug); one ``submitted``
        may have left and becomes ``unknown`` (reconcile looks it up); a row taken over
        meanwhile (``IllegalTransition``) is left to its new owner.
        """
        text = f"{type(error).__name__}: {error}"[:500]
        if isinstance(error, IllegalTransition):
            kind = "claim_lost"
            _log.warning("row_claim_lost", signal_id=signal_id, worker=self.worker_id, error=text)
        elif database_unavailable(error):
            kind = "database"
            _log.warning("row_interrupted", signal_id=signal_id, worker=self.worker_id,
                         error=type(error).__name__)  # fmt: skip
        else:
            kind = "internal"
            _log.exception("row_internal_error", signal_id=signal_id, worker=self.worker_id)
        metrics.ROW_ERRORS.labels(kind=kind).inc()
        return await self._until_reachable(lambda: self._settle(signal_id, kind, text))

    async def _settle(self, signal_id: str, kind: str, text: str) -> SignalStatus | None:
        current = await self.ledger.get(signal_id)
        if current is None:
            return None
        ours = current.claimed_by == self.worker_id and self._in_hand.get(signal_id, 0) == 1
        if not ours or current.status not in (SignalStatus.PROCESSING, SignalStatus.SUBMITTED):
            # Moved on (an outcome written before the error), or another claim's now.
            return current.status
        if current.status is SignalStatus.SUBMITTED:
            try:
                await self.ledger.transition(
                    signal_id, SignalStatus.UNKNOWN, expected=SignalStatus.SUBMITTED,
                    owner=self.worker_id,
                    error_message=f"outcome unknown after an interruption ({kind}): {text}",
                    detail={"error": text, "kind": kind},
                )  # fmt: skip
            except IllegalTransition:
                moved = await self.ledger.get(signal_id)
                return moved.status if moved else None
            return SignalStatus.UNKNOWN
        if kind == "internal":
            _, tries, _ = self.retrying.get(signal_id, ("", 0, 0.0))
            wait = min(self.config.error_retry_s * 2**tries, self.config.error_retry_max_s)
            self.retrying[signal_id] = (text, tries + 1, time.monotonic())
            _log.warning("row_retry_after_error", signal_id=signal_id, tries=tries + 1,
                         wait_s=wait)  # fmt: skip
            await asyncio.sleep(wait)
        await self.ledger.hand_back(self.worker_id, [signal_id], f"retry after {kind}: {text}")
        return SignalStatus.PENDING

    async def _hand_back(self, signal_ids: list[str], reason: str) -> None:
        await self._until_reachable(
            lambda: self.ledger.hand_back(self.worker_id, signal_ids, reason)
        )

    async def _hand_back_now(self, signal_ids: list[str], reason: str) -> None:
        # Stopping: one try; what stays 'processing' is recovered by reconcile once the lock
        # of this worker is gone.
        with contextlib.suppress(Exception):
            await asyncio.shield(self.ledger.hand_back(self.worker_id, signal_ids, reason))

    async def _deny(self, signal_id: str, denied: Denied) -> SignalStatus:
        detail: dict[str, Any] = {"field": denied.field}
        if isinstance(denied, RiskDenied):  # the rule and every verdict, as on the row
            detail.update(denied.detail(), reason=denied.reason)
            metrics.RISK_DENIALS.labels(rule=denied.rule, stage="dispatch").inc()
        await self.ledger.transition(
            signal_id, SignalStatus.DENIED, expected=SignalStatus.PROCESSING, owner=self.worker_id,
            error_message=denied.reason, detail=detail,
        )  # fmt: skip
        _log.info("row_denied", signal_id=signal_id, reason=denied.reason)
        return SignalStatus.DENIED

    def _validate(self, row: LedgerRow, today: date) -> ValidSignal | Denied:
        """Validate ``row``; a row validation cannot even check is denied, not retried: the
        same columns would raise again on every try and hold back the account's queue."""
        try:
            return validate(RawSignal.of(row), today=today, accounts=self._accounts,
                            root_map=self._root_map, calendar=self._calendar)  # fmt: skip
        except Exception as e:  # noqa: BLE001 - a row's own columns, never a passing outage
            _log.exception("row_check_failed", signal_id=row.signal_id)
            return Denied(f"the row could not be checked: {type(e).__name__}: {e}; "
                          "correct its columns and insert it again")  # fmt: skip

    async def _process(self, row: LedgerRow, switches: KillSwitches) -> SignalStatus:
        """Place one claimed row; return its status afterwards (in flight: the account waits)."""
        today = self._today()
        checked = self._validate(row, today)
        if isinstance(checked, Denied):
            return await self._deny(row.signal_id, checked)
        broker = await self.brokers.get(checked.account)
        begun = datetime.now(UTC)  # the baseline is read after this (_placement._rivals)
        prepared = await self._prepare(
            row.signal_id, checked, broker, today, switches, since=row.created_at
        )
        if isinstance(prepared, SignalStatus):
            return prepared
        plan, account_id, baseline, verdicts, opens = prepared
        detail = plan_to_json(plan)
        if verdicts:
            detail["risk"] = [v.to_json() for v in verdicts]
            detail["entry"] = verdicts[0].rule != "reduces_only"
        if baseline is not None:
            detail["baseline"] = baseline.to_json()
            detail["baseline_after"] = begun.isoformat()
        # Taken before the write-ahead: the send leaves only while the lock that was held
        # then still is (dispatch/liveness.py).
        fence = self._liveness.fence(
            row.signal_id, account=checked.account, opens=opens, judged=switches
        )
        submitted = await self.ledger.transition(
            row.signal_id, SignalStatus.SUBMITTED, expected=SignalStatus.PROCESSING,
            owner=self.worker_id,
            client_order_id=client_order_id_for(row.signal_id), account_id=account_id,
            detail=detail,
        )  # fmt: skip
        if fence is not None:
            fence.written(submitted.placement_attempts)
        _observe_between("submitted", submitted.ts_claimed, submitted.ts_submitted)
        # From here the request may leave: finish the send even if we are being stopped,
        # within handback_timeout_s, so the row records the broker's answer.
        send = asyncio.ensure_future(
            self.placer.send(row.signal_id, plan, broker, owner=self.worker_id, fence=fence)
        )
        try:
            status = await asyncio.shield(send)
        except asyncio.CancelledError:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(send, self.config.handback_timeout_s)
            raise
        if status is SignalStatus.UNKNOWN:
            return await self.placer.resolve(row.signal_id, broker, today=today)
        return status

    async def _prepare(
        self,
        signal_id: str,
        signal: ValidSignal,
        broker: Broker,
        today: date,
        switches: KillSwitches,
        since: datetime | None = None,
    ) -> _Prepared | SignalStatus:
        """Read broker facts and route; deny (returning the row's status) or return the plan
        to send, with the risk verdicts and whether it may open a position.

        For an order, also the lookup baseline (the account's orders before the submit), so
        that a lost answer can later be told from other orders (``Broker.lookup_baseline``).
        Reads that fail are tried again, but not past ``dispatcher.unknown_bound_s`` after the
        row was created (``since``) for want of a usable token: the row then fails, never sent
        late, as a submit refused for the same reason would (``tracking._placement``).
        """
        try:
            for plans in range(1, _PLANS + 1):
                try:
                    return await self._prepare_once(
                        signal_id, signal, broker, today, switches, since
                    )
                except PositionMoved as e:
                    _log.warning("position_moved_before_send", signal_id=signal_id,
                                 before=e.before, now=e.now)  # fmt: skip
                    await self.ledger.add_event(
                        signal_id, "position_moved", {"before": e.before, "now": e.now}
                    )
                    if plans == _PLANS:
                        await self._deny(signal_id, Denied(
                            f"not sent: the position kept moving while the order was planned "
                            f"({e}, {plans} plans); send it again once it settles", "intent",
                        ))  # fmt: skip
            return SignalStatus.DENIED
        except _NotSentLate as e:
            await self.ledger.transition(
                signal_id, SignalStatus.FAILED, expected=SignalStatus.PROCESSING,
                owner=self.worker_id,
                error_message=(
                    f"not placed: it was never sent (no usable token to read the account: "
                    f"{e.error}); it is older than dispatcher.unknown_bound_s "
                    f"({self.config.unknown_bound_s:g}s), so it is not sent late"
                )[:500],
                detail={"error": type(e.error).__name__, "not_sent": True},
            )  # fmt: skip
            return SignalStatus.FAILED

    def _retry_read(self, error: BrokerError, since: datetime | None) -> None:
        """Raise ``_NotSentLate`` if a read refused for want of a token has kept the row past
        the bound; otherwise return (the read is tried again)."""
        if not isinstance(error, AuthError | Lockout) or since is None:
            return
        if (datetime.now(UTC) - since).total_seconds() > self.config.unknown_bound_s:
            raise _NotSentLate(error)

    async def _prepare_once(
        self,
        signal_id: str,
        signal: ValidSignal,
        broker: Broker,
        today: date,
        switches: KillSwitches,
        since: datetime | None,
    ) -> _Prepared | SignalStatus:
        from_fill = broker.capabilities.brackets_from_fill
        marketable = self.settings.orders.marketable_limit
        rules = self.rules.of(signal.account, signal.strategy_name)
        need = needs(
            signal, position_for_risk=rules.position, brackets_from_fill=from_fill,
            marketable_limit=marketable,
        )  # fmt: skip

        async def read() -> tuple[AccountInfo, BrokerView, Any, LookupBaseline | None] | None:
            info = await self.brokers.account_info(signal.account)
            if info is None:
                return None
            view = await self._view(broker, signal, need)
            plan = route(signal, view, client_order_id_for(signal_id), today=today,
                         legs=self.settings.orders.leg_time_in_force,
                         brackets_from_fill=from_fill, marketable_limit=marketable,
                         calendar=self._calendar)  # fmt: skip
            baseline = None
            if isinstance(plan, PlaceOrder):
                baseline = await broker.lookup_baseline(plan.command)
            return info, view, plan, baseline

        try:
            found = await self._broker_read(signal_id, read, since=since)
        except InvalidInput as e:
            await self._deny(signal_id, Denied(str(e), e.field))
            return SignalStatus.DENIED
        if found is None:
            await self._deny(signal_id, Denied(
                f"account {signal.account!r} is not among the accounts the broker lists for "
                "its token", "account_name"))  # fmt: skip
            return SignalStatus.DENIED
        info, view, plan, baseline = found
        if isinstance(plan, Denied):
            await self._deny(signal_id, plan)
            return SignalStatus.DENIED
        verdicts: list[Verdict] = []
        opens = False
        if isinstance(plan, PlaceOrder):
            await self._note_limit(signal_id, signal, plan, view, marketable)
            # The claim's snapshot, or the process's watch if it knows a later change: rows
            # claimed in one batch are judged one after the other, and a row's reads may be
            # retried long after its claim (free while the watch runs, as in `serve`).
            switches = switches.newest(await self.kill.state())
            limits = with_kill_switch(self.limits, switches, signal.account)
            # What the rules judge on the position read. An order on a continuous symbol
            # reads it for the roll alone (route.needs): with the rules off that judges
            # nothing, and its resend need not wait for the very same position.
            judged = need.position and (rules.position or signal.intent is not Intent.ORDER)
            facts = OrderFacts(
                plan.command, self._clock(),
                position=plan.position_before if judged else None,
                positions=_nets(view) if judged else None,
                entry_price=entry_reference(signal, view.quote),
            )  # fmt: skip
            activity = None
            if judged and not plan.fit_legs:
                # A plain order: the account's open orders on its side may fill first (two
                # resting sells of a long 1 each "reduce" it; three limit buys of 2 each
                # pass a limit of 2). The ledger's rows, read with the counts in the same
                # statement, and the broker's other working orders (placed by hand, by
                # another tool; the legs of brackets), read with the position.
                activity = await self._activity(signal_id, facts, rules, ahead=True)
                command = plan.command
                outside = working_ahead(
                    view.working, command.contract.name, command.side, activity.ours
                )
                facts = replace(facts, ahead=activity.ahead + outside)
            opens = not facts.reduces
            if limits.kill_switch and not facts.reduces:
                # Stopped by a switch: nothing else is read or judged.
                verdicts = assess(facts, AccountState(), rules, limits, only=())
                denied = denial(verdicts)
            else:
                state = AccountState()
                if not facts.reduces:
                    state = await self._risk_state(
                        signal_id, facts, rules, broker, since, activity=activity
                    )
                verdicts, denied = check_order(facts, state, rules, limits)
            if denied is not None:
                await self._deny(signal_id, denied)
                return SignalStatus.DENIED
            if judged and not plan.fit_legs:
                # Judged on the position read: a resend (its answer lost, the order proved
                # absent) goes only on that very position (``placement.still_fits``).
                plan = replace(plan, exact=True)
            if plan.fit_legs:
                seen = await self._fit_legs(signal_id, plan, broker)
                if seen != plan.position_before:
                    # Sized from a position a leg (or anything) has changed since: an exit
                    # of the old size would open one. Planned again from fresh reads.
                    raise PositionMoved(plan.position_before, seen)
        account_id = info.native_id if info.native_id is not None else info.bridge_id
        return plan, None if account_id is None else str(account_id), baseline, verdicts, opens

    async def _risk_state(
        self,
        signal_id: str,
        facts: OrderFacts,
        rules: Rules,
        broker: Broker,
        since: datetime | None = None,
        *,
        activity: RiskActivity | None = None,
    ) -> AccountState:
        """Read what the rules in force need: the ledger's counts (``activity`` if read
        already), the broker's balance."""
        account, now = facts.command.account, facts.now
        zone = rules.zone
        values: dict[str, Any] = {}
        if rules.counts:
            if activity is None:
                activity = await self._activity(signal_id, facts, rules)
            values.update(open_orders=activity.open_orders,
                          orders_last_minute=activity.orders_last_minute,
                          orders_today=activity.orders_today,
                          last_entry=activity.last_entry)  # fmt: skip
        if rules.balance:
            report = await self._read_balance(signal_id, broker, account, since)
            if report is not None:
                day = trading_day(now, zone, rules.day_reset)
                marks = await self.ledger.mark_balance(account, day, report.net_liq)
                high = marks.high_water_eod if rules.trailing_mode == "eod" else (
                    marks.high_water_intraday)  # fmt: skip
                values.update(balance=report.net_liq, day_start_balance=marks.day_start_balance,
                              high_water=high)  # fmt: skip
        return AccountState(**values)

    async def _activity(
        self, signal_id: str, facts: OrderFacts, rules: Rules, *, ahead: bool = False
    ) -> RiskActivity:
        """Return the account's activity in the ledger (``ahead``: with what its open orders
        on the order's contract and side have still to fill); one statement."""
        command, now = facts.command, facts.now
        return await self.ledger.risk_activity(
            command.account, besides=signal_id, minute_since=now - timedelta(seconds=60),
            day_since=trading_day_start(now, rules.zone, rules.day_reset),
            root=command.contract.root if rules.cooldown_s is not None else None,
            entry_since=now - timedelta(seconds=rules.cooldown_s or 0),
            ahead_of=(command.contract.name, command.side.value) if ahead else None,
        )  # fmt: skip

    async def _read_balance(
        self, signal_id: str, broker: Broker, account: str, since: datetime | None = None
    ) -> BalanceReport | None:
        """Return the account's balance; retry while the broker fails; None if it has none."""
        try:
            return await self._broker_read(
                signal_id, lambda: broker.balance(AccountName(account)), since=since
            )
        except InvalidInput as e:
            _log.warning("balance_unavailable", signal_id=signal_id, error=str(e))
            return None

    async def _fit_legs(self, signal_id: str, plan: PlaceOrder, broker: Broker) -> int:
        """Cut the protective legs before the order is sent; retry until the broker answers
        (nothing of the order was sent; cancels and modifies are safe to repeat); return the
        position they leave."""
        return await self._broker_read(
            signal_id, lambda: fit_legs(self.ledger, self.config, signal_id, plan, broker),
            event="fit_legs_failed",
        )  # fmt: skip

    async def _broker_read(
        self,
        signal_id: str,
        read: Callable[[], Awaitable[_T]],
        *,
        since: datetime | None = None,
        event: str = "broker_read_failed",
    ) -> _T:
        """Return what ``read`` returns, asking again after a growing wait while the broker
        fails (nothing was sent: the row keeps its account); every call it made is recorded
        on the row. Refused for want of a token past the bound after ``since``: the row is
        not sent late (``_retry_read``). Other errors are the caller's."""
        delay = self.config.lookup_backoff_s
        while True:
            calls: list[BrokerCall] = []
            try:
                with capture() as calls:
                    return await read()
            except BrokerError as e:
                self._retry_read(e, since)
                _log.warning(event, signal_id=signal_id, error=str(e))
                await asyncio.sleep(delay)
                delay = min(max(delay * 2, 0.05), self.config.lookup_backoff_max_s)
            finally:
                for call in calls:
                    await self.ledger.record_broker_call(call, signal_id)

    async def _note_limit(
        self,
        signal_id: str,
        signal: ValidSignal,
        plan: PlaceOrder,
        view: BrokerView,
        marketable: str,
    ) -> None:
        """Log what routing changed (``orders.marketable_limit`` on a limit entry, the month
        of an order on a continuous symbol), or that a limit entry could not be judged (no
        quote from this broker, no reference_price): it then goes as given."""
        if plan.note is not None:
            _log.info("route_note", signal_id=signal_id, note=plan.note)
            return
        unjudged = (
            marketable != "fill"
            and plan.command.order_type is OrderType.LIMIT
            and signal.order_type is OrderType.LIMIT
            and view.market is None
            and signal.reference_price is None
        )
        if unjudged:
            why = (
                f"orders.marketable_limit = {marketable}: no quote from this account's broker "
                "and no reference_price on the row, so the limit goes as given"
            )
            _log.warning("limit_entry_unjudged", signal_id=signal_id, reason=why)
            await self.ledger.add_event(signal_id, "limit_unjudged", {"reason": why})

    async def _view(self, broker: Broker, signal: ValidSignal, need: Needs) -> BrokerView:
        account = AccountName(signal.account)
        working: list[OrderStatusReport] = []
        if need.orders:
            positions = await broker.position_reports(account) if need.position else []
            working = [o for o in await broker.order_reports(account) if o.status.is_open
                       or o.status is OrderStatus.SUBMITTED]  # fmt: skip
        elif need.working:
            # Side by side: no wait beyond the position's (native: both from the socket).
            positions, working = await asyncio.gather(
                broker.position_reports(account), broker.working_orders(account)
            )
        else:
            positions = await broker.position_reports(account) if need.position else []
        quote, market = None, None
        can = broker.capabilities
        if need.quote and can.quotes and signal.contract is not None:
            quote, market = await _quote(broker, signal.contract.name)
        return BrokerView(positions=positions, working=working, quote=quote, market=market,
                          leg_time_in_force=can.leg_time_in_force)  # fmt: skip


# Plans of one row whose position moved before its send, the last one denied.
_PLANS = 3


class _NotSentLate(Exception):
    """A read kept failing for want of a token past the bound: the row fails, never sent."""

    def __init__(self, error: BrokerError) -> None:
        super().__init__(str(error))
        self.error = error


# A row ready to send: its plan, the account's broker id, the lookup baseline, the risk
# verdicts, and whether the order may open a position (what a kill switch stops).
_Prepared = tuple[Any, str | None, LookupBaseline | None, list[Verdict], bool]


def _nets(view: BrokerView) -> dict[str, int]:
    """Return the account's net position per contract."""
    nets: dict[str, int] = {}
    for position in view.positions:
        nets[position.contract] = nets.get(position.contract, 0) + position.net_qty
    return nets


async def _quote(broker: Broker, instrument: str) -> tuple[Decimal | None, Market | None]:
    """Return the last (else mid) price and the bid/ask (each side else the last) where the
    adapter offers quotes (the bridge does)."""
    reader = getattr(broker, "quote", None)
    if reader is None:
        return None, None
    quote = await reader(instrument)
    raw = {name: getattr(quote, name, None) for name in ("lp", "bid", "ask")}
    last, bid, ask = (None if v is None else Decimal(str(v)) for v in raw.values())
    bid, ask = bid if bid is not None else last, ask if ask is not None else last
    market = Market(bid, ask) if bid is not None and ask is not None else None
    if last is None and market is not None:
        last = (market.bid + market.ask) / 2
    return last, market


# What a row's status right after placement means for /metrics.
_OUTCOMES: dict[SignalStatus, str] = {
    SignalStatus.WORKING: "placed",
    SignalStatus.PARTIALLY_FILLED: "placed",
    SignalStatus.FILLED: "placed",
    SignalStatus.DENIED: "denied",
    SignalStatus.REJECTED: "rejected",
    SignalStatus.UNKNOWN: "unknown",
    SignalStatus.SUBMITTED: "unknown",
    SignalStatus.NEEDS_REVIEW: "unknown",
    SignalStatus.FAILED: "failed",
}


def _count_outcome(status: SignalStatus | None, seconds: float) -> None:
    outcome = _OUTCOMES.get(status) if status is not None else None
    if outcome is not None:
        metrics.SIGNALS_OUTCOME.labels(outcome=outcome).inc()
    if outcome == "placed":
        metrics.PLACEMENT_SECONDS.observe(seconds)
    if status is SignalStatus.FILLED:  # filled by the submit's own answer: no event will say so
        metrics.SIGNALS_FILLED.inc()


def _observe_between(step: str, start: datetime | None, end: datetime | None) -> None:
    """Observe ``step`` from two timestamps of a row (the database's clock on both ends)."""
    if start is not None and end is not None:
        metrics.observe_step(step, (end - start).total_seconds())


def _observe_claims(rows: list[LedgerRow]) -> None:
    for row in rows:
        _observe_between("claimed", row.created_at, row.ts_claimed)

"""A worker's liveness lock as its sends see it, and the fence each send passes.

A worker holds ``pg_advisory_lock(0x7463, hashtext(worker_id))`` on a connection of its own
(``Ledger.hold_lock``), probed every couple of seconds. Reconcile reads a worker whose lock
it can take as dead and recovers its rows: ``submitted`` ones become ``unknown``, are looked
up and, when absent, sent again. Before that it holds the lock itself for
``dispatcher.dead_worker_hold_s`` (``Ledger.recover_worker``).

A worker that is not dead but lost its lock's connection (a dropped connection, a pooler
restart, a network cut) must then not send a row it wrote ``submitted`` before: its
request would meet the resend. So each send is fenced (``SendFence``, checked by
``BrokerHttp.request`` right before an order request leaves): it passes while the lock is
held by the session that held it at the write-ahead and was confirmed within
``dispatcher.liveness_fresh_s``. Otherwise it waits until the lock is held and confirmed again
and re-reads the row: still ``submitted``, still this worker's, not sent again meanwhile, it
goes; anything else, it is not sent (``SendFenced``).

The same fence is the last check of the kill switch: an order that may open a position
(judged when the row was planned, or, for a resend, from the position then) is not sent
(``KilledBeforeSend``) if, when it is about to leave, the process's switches stop its
account (docs/kill-switch.md). Exits, cancels and flattens are never stopped there.

Why that is enough: a lock lost at t0 was last confirmed at or before t0, so a fenced send
leaves by t0 + ``liveness_fresh_s``. Reconcile can take the lock at t1 >= t0 and moves the
rows at t1 + ``dead_worker_hold_s``, by which time that request has left and been answered or
timed out (``request_timeout_s``) and shows at the broker (the lookup window), so the lookup
finds it. A send that waited past its freshness re-reads the row after the lock is held
again, which is after reconcile's move committed (it held the lock until then).
"""

from __future__ import annotations

import asyncio
import math
import time

from tradebridge.domain.kill import KillSwitches
from tradebridge.domain.lifecycle import SignalStatus
from tradebridge.errors import KilledBeforeSend, SendFenced
from tradebridge.obs.logging import get_logger
from tradebridge.store.kill import KillSwitchWatch
from tradebridge.store.ledger import Ledger

_log = get_logger("tradebridge.dispatch")


class LivenessLock:
    """Whether this worker holds its liveness lock, since when, and how recently confirmed.

    ``Ledger.hold_lock`` sets and clears ``live`` and calls ``confirmed`` when it takes the
    lock (a new ``epoch``: a new session) and after each probe answered.
    """

    def __init__(
        self,
        worker_id: str,
        ledger: Ledger,
        *,
        fresh_s: float,
        kill: KillSwitchWatch | None = None,
    ) -> None:
        self.worker_id = worker_id
        self.ledger = ledger
        self.fresh_s = fresh_s
        # The process's kill switches, as the last check before an order that may open a
        # position leaves sees them (None: not checked there).
        self.kill = kill
        self.live = asyncio.Event()
        self.epoch = 0
        self._confirmed_at = -math.inf
        self._confirmation = asyncio.Event()  # set and replaced at each confirmation

    def confirmed(self, taken: bool, at: float) -> None:
        """Record that the lock was held at ``at`` (monotonic; ``taken``: anew)."""
        if taken:
            self.epoch += 1
        self._confirmed_at = at
        confirmation, self._confirmation = self._confirmation, asyncio.Event()
        confirmation.set()

    def fresh(self, epoch: int) -> bool:
        """Return whether the session of ``epoch`` holds the lock, confirmed recently."""
        return (
            self.live.is_set()
            and self.epoch == epoch
            and time.monotonic() - self._confirmed_at <= self.fresh_s
        )

    async def wait_fresh(self) -> int:
        """Wait until the lock is held and recently confirmed; return its epoch."""
        while not self.fresh(self.epoch):
            await self._confirmation.wait()
        return self.epoch

    def fence(
        self,
        signal_id: str,
        *,
        account: str | None = None,
        opens: bool = False,
        judged: KillSwitches | None = None,
    ) -> SendFence | None:
        """Return the fence of a send whose write-ahead is about to be written; None if the
        lock was never taken (a dispatcher driven without ``run``, as tests do).

        ``opens``: the order may open a position (what a kill switch stops), on ``account``,
        judged by the switches ``judged`` (None: by the process's watch alone): the fence
        also refuses it if, by the time it leaves, ``kill`` knows a switch that stops it.
        """
        if not self.epoch:
            return None
        return SendFence(self, signal_id, account=account if opens else None, judged=judged)


class SendFence:
    """May the order of one row still leave? (``brokers.fence``; the module's docstring).

    Made before the row's write-ahead (``submitted``); ``written`` records the attempt the
    write-ahead made.
    """

    def __init__(
        self,
        lock: LivenessLock,
        signal_id: str,
        *,
        account: str | None = None,
        judged: KillSwitches | None = None,
    ) -> None:
        self._lock = lock
        self._epoch = lock.epoch
        self.signal_id = signal_id
        self.attempts: int | None = None
        self._account = account  # set: an order that may open a position there
        self._judged = judged

    def written(self, attempts: int) -> None:
        """Record the row's ``placement_attempts`` as its write-ahead left them."""
        self.attempts = attempts

    async def check(self) -> None:
        """Return when the order may leave; raise ``SendFenced`` or ``KilledBeforeSend``
        when it must not."""
        await self._check_liveness()
        await self._check_kill()

    async def _check_kill(self) -> None:
        watch = self._lock.kill
        if self._account is None or watch is None:
            return
        switches = await watch.state()
        if self._judged is not None:
            switches = self._judged.newest(switches)
        stopping = switches.stopping(self._account)
        if stopping is not None:
            raise KilledBeforeSend(
                f"not sent: a kill switch was thrown after this order was written ahead and "
                f"before it left ({stopping})"
            )

    async def _check_liveness(self) -> None:
        if self._lock.fresh(self._epoch):
            return
        _log.warning("send_waits_for_liveness", signal_id=self.signal_id,
                     worker=self._lock.worker_id)  # fmt: skip
        epoch = await self._lock.wait_fresh()
        if epoch == self._epoch:
            return  # the same session held the lock throughout: a late probe
        row = await self._lock.ledger.get(self.signal_id)
        if (
            row is not None
            and row.status is SignalStatus.SUBMITTED
            and row.claimed_by == self._lock.worker_id
            and self.attempts is not None
            and row.placement_attempts == self.attempts
        ):
            self._epoch = epoch
            _log.info("send_resumes_after_liveness", signal_id=self.signal_id)
            return
        raise SendFenced(
            f"row {self.signal_id}: not sent; this worker's liveness lock lapsed after its "
            f"write-ahead and the row moved on meanwhile "
            f"({row.status.value if row else 'gone'}, claimed by "
            f"{row.claimed_by if row else None}): its recovery is another worker's"
        )

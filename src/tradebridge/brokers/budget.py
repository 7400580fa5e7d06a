"""The client-side request budget of a Tradovate user: sliding windows, orders first.

Tradovate limits each user with sliding windows (reference §7): officially 1,000/s,
5,000/min and 5,000/h on general endpoints; in the field, 80/min and 5,000/h counting
place, modify and cancel. A breach costs a 429 and an hour without trading, so the client
keeps under them itself. ``UserBudget`` admits one request at a time through several
sliding windows (a log of admission times per window, no refill arithmetic):

* every request (orders, reads, logins): ``requests_per_second`` and ``requests_per_hour``;
* orders (place, modify, cancel, liquidate, strategies: every non-GET that is not a login):
  ``orders_per_minute`` as well;
* reads: ``reads_per_minute`` as well, so that reads alone can never use up the hour and
  leave orders waiting (``reads_per_minute`` times 60 < ``requests_per_hour``).

Orders and logins go first: a read waits while any order or login is queued, and an order
never waits behind a read (a login is what an order waits for, so it shares the orders'
queue). Within a queue it is first come, first served, except that the reads of work nobody
waits on (reconcile and the tracker mark their tasks: ``mark_background()``) queue
behind every read an order waits for: after a restart, reconcile's reads of twenty accounts
fill the reads window for two minutes, and the position or contract an alert needs must not
wait behind them. Logins keep their own caps besides (``tokens.max_logins_per_hour``, in
``auth``).

``RequestBudget`` keeps these windows in process memory: two processes using the same user
would each have the whole budget and together double what Tradovate sees. It is the budget
of a single process (``tradovate.budget = "local"``, ``up`` against the simulator, one-off
tools without Redis). Every process that shares a Redis shares the windows through it
instead (``redis_budget.RedisBudget``, the default): the same windows, limits and queues,
the counting done atomically in Redis.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterator
from contextvars import ContextVar
from dataclasses import dataclass
from enum import Enum
from typing import Any

from tradebridge.config import TradovateConfig

__all__ = [
    "BudgetLimits",
    "RequestBudget",
    "RequestKind",
    "UserBudget",
    "Window",
    "foreground",
    "is_background",
    "mark_background",
]

# Set in the tasks of work no order waits on: their reads queue behind the others'.
_BACKGROUND: ContextVar[bool] = ContextVar("tradebridge_background_reads", default=False)


def mark_background() -> None:
    """Mark the rest of the current task (and the tasks it starts) as work no order waits
    on: its reads queue behind the others' (the first line of a loop's task)."""
    _BACKGROUND.set(True)


@contextlib.contextmanager
def foreground() -> Iterator[None]:
    """Count the block's reads as reads an order waits for, whichever task runs them.

    For a read whose answer orders share (a user's account list, a contract): the first
    caller may be background work (the tracker starting its sockets), and the orders that
    join its read would wait in the background share, used up after a restart by reconcile's
    look-ups (a cold fan-out round waited 19 s, the next 38 s).
    """
    token = _BACKGROUND.set(False)
    try:
        yield
    finally:
        _BACKGROUND.reset(token)


def is_background() -> bool:
    """Return whether the current task is marked as background work."""
    return _BACKGROUND.get()


class RequestKind(Enum):
    """What a request is, for the budget: its windows and its queue."""

    ORDER = "order"  # place, modify, cancel, liquidate, strategies
    READ = "read"
    AUTH = "auth"  # logins and renewals: the orders' queue, not their windows


@dataclass(frozen=True, slots=True)
class BudgetLimits:
    """The windows of one user's budget (requests per rolling second, minute, hour)."""

    requests_per_second: int
    requests_per_hour: int
    orders_per_minute: int
    reads_per_minute: int
    # Of reads_per_minute, what background reads (reconcile's, the tracker's) leave to the
    # others: they are admitted only while the window holds fewer than the difference.
    reads_reserved: int = 0

    @classmethod
    def of(cls, config: TradovateConfig) -> BudgetLimits:
        """Return the limits ``[tradovate]`` sets."""
        return cls(
            requests_per_second=config.requests_per_second,
            requests_per_hour=config.requests_per_hour,
            orders_per_minute=config.orders_per_minute,
            reads_per_minute=config.reads_per_minute,
            reads_reserved=config.reads_reserved_per_minute,
        )

    def reads_limit(self, *, background: bool) -> int:
        """Return the reads a minute a read may find in the window (background: fewer by
        the reserve, at least one)."""
        if not background:
            return self.reads_per_minute
        return self.reads_per_minute - min(self.reads_reserved, self.reads_per_minute - 1)

    @classmethod
    def unlimited(cls) -> BudgetLimits:
        """Return limits no test or benchmark reaches."""
        big = 1_000_000_000
        return cls(big, big, big, big)


class Window:
    """A sliding window: at most ``limit`` admissions in any ``span_s`` seconds, of which
    background admissions leave ``reserved`` to the others (at most ``limit - 1``)."""

    __slots__ = ("_times", "limit", "reserved", "span_s")

    def __init__(self, limit: int, span_s: float, reserved: int = 0) -> None:
        self.limit = limit
        self.span_s = span_s
        self.reserved = min(reserved, limit - 1)
        self._times: deque[float] = deque()

    def wait_s(self, now: float, *, background: bool = False) -> float:
        """Return how long until one more admission fits (0: now)."""
        times = self._times
        while times and times[0] <= now - self.span_s:
            times.popleft()
        limit = self.limit - self.reserved if background else self.limit
        if len(times) < limit:
            return 0.0
        return times[len(times) - limit] + self.span_s - now

    def admit(self, now: float) -> None:
        """Record one admission at ``now``."""
        self._times.append(now)

    def used(self, now: float) -> int:
        """Return the admissions inside the window at ``now``."""
        self.wait_s(now)
        return len(self._times)


Sleep = Callable[[float], Awaitable[None]]


class _Waiter:
    __slots__ = ("background", "granted", "kind")

    def __init__(self, kind: RequestKind) -> None:
        self.kind = kind
        self.background = kind is RequestKind.READ and is_background()
        # Admitted by the head of its queue together with its own admission (a batch).
        self.granted = False


def _in_line(queue: deque[_Waiter]) -> _Waiter | None:
    """Return the first waiter of ``queue`` not granted yet (None: nobody)."""
    return next((w for w in queue if not w.granted), None)


class UserBudget:
    """One user's windows and its two queues (orders and logins first, then reads)."""

    def __init__(
        self,
        limits: BudgetLimits,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        self.limits = limits
        self._clock = clock
        self._sleep = sleep
        per_second = Window(limits.requests_per_second, 1.0)
        per_hour = Window(limits.requests_per_hour, 3600.0)
        reads = Window(limits.reads_per_minute, 60.0, reserved=limits.reads_reserved)
        self.windows: dict[RequestKind, tuple[Window, ...]] = {
            RequestKind.ORDER: (per_second, per_hour, Window(limits.orders_per_minute, 60.0)),
            RequestKind.READ: (per_second, per_hour, reads),
            RequestKind.AUTH: (per_second, per_hour),
        }
        self._first: deque[_Waiter] = deque()  # orders and logins
        self._reads: deque[_Waiter] = deque()
        self._changed = asyncio.Event()

    def _queue(self, kind: RequestKind) -> deque[_Waiter]:
        return self._reads if kind is RequestKind.READ else self._first

    def _enqueue(self, waiter: _Waiter) -> deque[_Waiter]:
        """Queue ``waiter`` (a read an order waits for: ahead of the background reads);
        return its queue."""
        queue = self._queue(waiter.kind)
        if waiter.kind is RequestKind.READ and not waiter.background:
            # A background head asking Redis meanwhile is admitted all the same (its answer
            # ends its wait wherever it stands); the next admission is this one's.
            ahead = next((i for i, w in enumerate(queue) if w.background), len(queue))
            queue.insert(ahead, waiter)
        else:
            queue.append(waiter)
        return queue

    def _is_next(self, waiter: _Waiter) -> bool:
        # Waiters already granted (by their batch's head) are on their way out: not in line.
        if waiter.kind is RequestKind.READ:
            return _in_line(self._first) is None and _in_line(self._reads) is waiter
        return _in_line(self._first) is waiter

    def wait_s(self, kind: RequestKind, *, background: bool = False) -> float:
        """Return how long a request of ``kind`` would wait for its windows now."""
        now = self._clock()
        return max(w.wait_s(now, background=background) for w in self.windows[kind])

    def queued(self) -> tuple[int, int]:
        """Return the requests waiting: (orders and logins, reads)."""
        return len(self._first), len(self._reads)

    async def acquire(self, kind: RequestKind = RequestKind.READ) -> float:
        """Wait until a request of ``kind`` may leave and count it; return the seconds waited."""
        started = self._clock()
        waiter = _Waiter(kind)
        queue = self._enqueue(waiter)
        try:
            while True:
                delay: float | None = None
                if self._is_next(waiter):
                    delay = self.wait_s(kind, background=waiter.background)
                    if delay <= 0:
                        now = self._clock()
                        for window in self.windows[kind]:
                            window.admit(now)
                        return now - started
                await self._wait(delay)
        finally:
            queue.remove(waiter)
            self._notify()

    def _notify(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    async def _wait(self, delay: float | None) -> None:
        """Wait until the queues change, or ``delay`` seconds (None: until they change)."""
        changed = asyncio.ensure_future(self._changed.wait())
        waits: set[asyncio.Future[Any]] = {changed}
        timer = None
        if delay is not None:
            timer = asyncio.ensure_future(self._sleep(delay))
            waits.add(timer)
        try:
            await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        finally:
            changed.cancel()
            if timer is not None:
                timer.cancel()


class RequestBudget:
    """A process's request budgets: one ``UserBudget`` per key (a Tradovate user)."""

    def __init__(
        self,
        limits: BudgetLimits | TradovateConfig,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        self.limits = limits if isinstance(limits, BudgetLimits) else BudgetLimits.of(limits)
        self._clock = clock
        self._sleep = sleep
        self._users: dict[str, UserBudget] = {}

    def bucket(self, key: str) -> UserBudget:
        """Return the budget of ``key`` (created on first use)."""
        budget = self._users.get(key)
        if budget is None:
            budget = self._users[key] = UserBudget(
                self.limits, clock=self._clock, sleep=self._sleep
            )
        return budget

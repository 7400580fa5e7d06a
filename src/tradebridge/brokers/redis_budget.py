"""The request budget of a Tradovate user, shared by every process through Redis.

Tradovate counts a user's requests whichever process sends them (reference §7): two workers
that each keep the whole budget in memory (``budget.RequestBudget``) together send twice the
limits and invite a 429 and an hour without trading. ``RedisBudget`` keeps the same windows
with the same limits (``requests_per_second``, ``requests_per_hour``, ``orders_per_minute``,
``reads_per_minute``) in Redis, per user, so that N processes on any number of hosts send
what one would:

* Each window is a sorted set of admissions, ``budget:{<user>}:<window>``, scored by the time
  Redis gave them (``TIME`` inside the script: the hosts' clocks never matter). The braces
  put all of a user's keys in one Redis Cluster slot. Every key expires once idle.
* Admission is one Lua script, atomic on the server: it drops what has left each window,
  admits as many of the requests asked for as every window of their kind still holds, and
  otherwise answers how long until the oldest admission leaves the fullest window. A window
  holds at most ``limit`` entries (~100 bytes each): ~0.5 MB per user with the defaults.
* Nothing blocks in Redis: a denied request sleeps the answered wait (at most
  ``_MAX_SLEEP_S``, then asks again) holding no connection; one round trip is capped at
  ``tradovate.budget_redis_timeout_s``.

In each process the queues are those of ``UserBudget``: orders and logins first, first come
first served. Only the head of a queue asks Redis, and for the run of waiters of its kind
behind it at once (up to ``_MAX_BATCH``), so a 20-order fan-out is one round trip, not 20.

Background reads (reconcile's, the tracker's: ``budget.mark_background``) ask with the
reads window's limit lowered by ``reads_reserved``, so across processes they leave that many
reads a minute to the reads an order waits for.

Orders go ahead of reads **across** processes through a per-user set of processes with
orders waiting, ``budget:{<user>}:orders_waiting``: a process whose order is denied adds
itself, scored by when it expects to retry, and leaves once its queued orders are admitted;
a read is denied while the set holds anyone. Chosen over keeping headroom for orders in each
window because headroom either wastes capacity when no order comes or is too small for a
fan-out, and because it gives the one rule a single process has (a read waits while any
order is queued). An entry expires ``hold_s`` after its expected retry, so a process that
died with orders queued holds reads back for seconds, not forever.

Redis unreachable (refused, timed out, an error): for ``budget_redis_retry_s`` the process
does not ask it again and, by ``tradovate.budget_on_redis_error``:

* ``local`` (default): admits from a local share of each window, the limit divided by the
  processes Redis last showed using the user in the past hour (at least
  ``budget_fallback_processes``), less that share of what the windows held at the last
  answer. Trading goes on at a fraction of the budget: the alternative stops every order
  for as long as Redis is down, which costs traders more than the risk of a 429 this keeps
  small. What was admitted meanwhile is charged to Redis when it answers again, so the
  windows after the outage still count it. Unverified assumption: that the processes Redis
  saw are all there are (a process idle for over an hour is not counted).
* ``refuse``: raises ``BrokerUnavailable`` (nothing was sent); a submit then goes to lookup.
"""

from __future__ import annotations

import asyncio
import itertools
import math
import os
import secrets
import socket
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from tradebridge.brokers.budget import (
    BudgetLimits,
    RequestBudget,
    RequestKind,
    Sleep,
    UserBudget,
    Window,
    _Waiter,
)
from tradebridge.config import TradovateConfig
from tradebridge.errors import BrokerUnavailable
from tradebridge.obs import metrics
from tradebridge.obs.logging import get_logger

__all__ = ["AdmitListener", "RedisBudget", "RedisUserBudget", "Spans", "budget_keys"]

_log = get_logger("tradebridge.brokers.redis_budget")

_MAX_BATCH = 64  # waiters of one kind admitted in one round trip
_MAX_SLEEP_S = 5.0  # a denied head asks Redis again at least this often
_WINDOW_MARGIN_S = 0.001  # after the answered wait, so the oldest admission has left
_ORDERS_WAITING_FLOOR_S = 0.02  # a read held back by another process's orders asks again
_WINDOWS = ("second", "hour", "orders:minute", "reads:minute")

# Listener of admissions: user, kind, how many, and Redis's time of the admission (seconds;
# the local clock's for admissions of the fallback).
AdmitListener = Callable[[str, RequestKind, int, float], None]

# KEYS: 1 second, 2 hour, 3 orders:minute, 4 reads:minute, 5 orders_waiting, 6 processes.
# ARGV: 1 kind (order|read|auth), 2 how many, 3 force (1: count them, whatever the windows
# hold; the fallback's admissions), 4 this process, 5 a nonce for the members, 6-9 the limits
# of keys 1-4, 10-13 their spans (µs), 14 hold (µs), 15 more orders queued in this process
# after these (1/0).
# Reply: admitted, wait (µs), held back by orders waiting (1/0), Redis time (µs), processes
# seen in the last hour, then what windows 1-4 hold after this admission.
_ADMIT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local kind, n, force = ARGV[1], tonumber(ARGV[2]), ARGV[3] == '1'
local process, nonce = ARGV[4], ARGV[5]
local limits = {tonumber(ARGV[6]), tonumber(ARGV[7]), tonumber(ARGV[8]), tonumber(ARGV[9])}
local spans = {tonumber(ARGV[10]), tonumber(ARGV[11]), tonumber(ARGV[12]), tonumber(ARGV[13])}
local hold, more = tonumber(ARGV[14]), ARGV[15] == '1'
local counts = {}
for i = 1, 4 do
  redis.call('ZREMRANGEBYSCORE', KEYS[i], '-inf', now - spans[i])
  counts[i] = redis.call('ZCARD', KEYS[i])
end
redis.call('ZADD', KEYS[6], now, process)
redis.call('ZREMRANGEBYSCORE', KEYS[6], '-inf', now - spans[2])
redis.call('PEXPIRE', KEYS[6], math.floor(spans[2] / 1000) + 1000)
local processes = redis.call('ZCARD', KEYS[6])
local function reply(admitted, wait, held)
  return {admitted, wait, held, now, processes, counts[1], counts[2], counts[3], counts[4]}
end
local mine = {1, 2}
if kind == 'order' then mine = {1, 2, 3} elseif kind == 'read' then mine = {1, 2, 4} end
if kind == 'read' and not force then
  redis.call('ZREMRANGEBYSCORE', KEYS[5], '-inf', now - hold)
  local first = redis.call('ZRANGE', KEYS[5], 0, 0, 'WITHSCORES')
  if #first > 0 then
    return reply(0, math.max(0, tonumber(first[2]) - now), 1)
  end
end
local admitted = n
if not force then
  for _, i in ipairs(mine) do
    admitted = math.min(admitted, limits[i] - counts[i])
  end
  admitted = math.max(admitted, 0)
end
for a = 1, admitted do
  for _, i in ipairs(mine) do
    redis.call('ZADD', KEYS[i], now, nonce .. ':' .. a)
  end
end
local wait = 0
for _, i in ipairs(mine) do
  counts[i] = counts[i] + admitted
  if admitted > 0 then
    redis.call('PEXPIRE', KEYS[i], math.floor(spans[i] / 1000) + 1000)
  end
  if admitted < n and counts[i] >= limits[i] then
    local rank = counts[i] - limits[i]
    local oldest = redis.call('ZRANGE', KEYS[i], rank, rank, 'WITHSCORES')
    wait = math.max(wait, tonumber(oldest[2]) + spans[i] - now)
  end
end
if kind ~= 'read' and not force then
  if admitted < n or more then
    redis.call('ZADD', KEYS[5], now + wait, process)
    local ttl = math.floor((wait + hold) / 1000) + 1000
    if redis.call('PTTL', KEYS[5]) < ttl then
      redis.call('PEXPIRE', KEYS[5], ttl)
    end
  else
    redis.call('ZREM', KEYS[5], process)
  end
end
return reply(admitted, wait, 0)
"""


@dataclass(frozen=True, slots=True)
class Spans:
    """The spans of the windows, in seconds: Tradovate's (tests shorten them)."""

    second: float = 1.0
    minute: float = 60.0
    hour: float = 3600.0

    def of_keys(self) -> tuple[float, float, float, float]:
        """Return the spans of the four windows in the order of ``budget_keys``."""
        return (self.second, self.hour, self.minute, self.minute)


def budget_keys(user: str) -> list[str]:
    """Return the Redis keys of ``user``'s budget: the four windows, orders waiting, processes."""
    tag = "{" + user + "}"
    return [f"budget:{tag}:{w}" for w in (*_WINDOWS, "orders_waiting", "processes")]


def _process_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"


class RedisBudget(RequestBudget):
    """The request budgets of every process sharing a Redis: one set of windows per user.

    Given ``[tradovate]`` (a ``TradovateConfig``), its ``budget_*`` settings replace
    ``timeout_s``, ``retry_s``, ``on_error`` and ``fallback_processes``.
    """

    def __init__(
        self,
        limits: BudgetLimits | TradovateConfig,
        redis: aioredis.Redis,
        *,
        timeout_s: float = 0.5,
        retry_s: float = 2.0,
        on_error: Literal["local", "refuse"] = "local",
        fallback_processes: int = 2,
        spans: Spans | None = None,
        hold_s: float = 10.0,
        listener: AdmitListener | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        if isinstance(limits, TradovateConfig):
            config = limits
            timeout_s = config.budget_redis_timeout_s
            retry_s = config.budget_redis_retry_s
            on_error = config.budget_on_redis_error
            fallback_processes = config.budget_fallback_processes
        super().__init__(limits, clock=clock, sleep=sleep)
        self.redis = redis
        self.timeout_s = timeout_s
        self.retry_s = retry_s
        self.on_error = on_error
        self.fallback_processes = fallback_processes
        self.spans = spans or Spans()
        self.hold_s = hold_s
        self.listener = listener
        self.process_id = _process_id()
        self._script = redis.register_script(_ADMIT)
        self._nonces = itertools.count()
        self._down_until: float | None = None  # Redis unreachable: not asked until then
        self._users_redis: dict[str, RedisUserBudget] = {}

    def bucket(self, key: str) -> RedisUserBudget:
        """Return the budget of ``key`` (created on first use)."""
        budget = self._users_redis.get(key)
        if budget is None:
            budget = self._users_redis[key] = RedisUserBudget(
                self, key, clock=self._clock, sleep=self._sleep
            )
        return budget

    @property
    def reachable(self) -> bool:
        """Return whether the budget is asking Redis (False: it is waiting to try again)."""
        return self._down_until is None or self._clock() >= self._down_until

    async def admit(
        self,
        user: str,
        kind: RequestKind,
        count: int,
        *,
        force: bool = False,
        more: bool = False,
        background: bool = False,
    ) -> list[int]:
        """Run the admission script once for ``count`` requests of ``user``; return its reply.

        ``background``: reads that leave ``reads_reserved`` of the reads window to others.

        ``RedisError``, ``OSError`` or ``TimeoutError`` (over ``timeout_s``) when Redis does
        not answer; the caller decides what that means.
        """
        limits = self.limits
        args: list[str | int | float] = [
            kind.value, count, int(force), self.process_id,
            f"{self.process_id}:{next(self._nonces)}",
            limits.requests_per_second, limits.requests_per_hour,
            limits.orders_per_minute, limits.reads_limit(background=background),
            *(round(span * 1e6) for span in self.spans.of_keys()),
            round(self.hold_s * 1e6), int(more),
        ]  # fmt: skip
        async with asyncio.timeout(self.timeout_s):
            reply = await self._script(keys=budget_keys(user), args=args)
        return [int(x) for x in reply]

    def mark_down(self, error: BaseException) -> None:
        """Stop asking Redis for ``retry_s`` after ``error`` (logged once per outage)."""
        first = self._down_until is None
        self._down_until = self._clock() + self.retry_s
        if first:
            reason = type(error).__name__ if isinstance(error, TimeoutError) else str(error)
            _log.warning(
                "budget_redis_unreachable",
                reason=reason[:200] or type(error).__name__,
                then=(
                    "admitting from this process's share of each window"
                    if self.on_error == "local"
                    else "refusing requests until Redis answers"
                ),
            )

    def mark_up(self) -> None:
        """Ask Redis again for every admission: it answered."""
        if self._down_until is not None:
            self._down_until = None
            _log.info("budget_redis_back")


class RedisUserBudget(UserBudget):
    """One user's windows in Redis, and this process's queues (orders and logins first).

    The inherited local windows (``windows``, ``wait_s``) are the fallback's while Redis is
    unreachable; otherwise Redis decides.
    """

    def __init__(
        self,
        owner: RedisBudget,
        user: str,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        super().__init__(owner.limits, clock=clock, sleep=sleep)
        self.owner = owner
        self.user = user
        self._fallback = False
        self._debt: Counter[RequestKind] = Counter()  # admitted by the fallback, not in Redis
        # The last answer: processes seen, window counts, and when (local clock).
        self._processes = 1
        self._counts: tuple[int, int, int, int] = (0, 0, 0, 0)
        self._counted_at: float | None = None

    async def acquire(self, kind: RequestKind = RequestKind.READ) -> float:
        """Wait until a request of ``kind`` may leave and count it; return the seconds waited."""
        started = self._clock()
        waiter = _Waiter(kind)
        queue = self._enqueue(waiter)
        try:
            # Let requests started in the same breath (a fan-out) queue up, so that the head
            # asks for all of them in one round trip.
            await asyncio.sleep(0)
            while not waiter.granted:
                delay: float | None = None
                if self._is_next(waiter):
                    delay = await self._admit_run(waiter, queue)
                    if delay <= 0:
                        break
                await self._wait(delay)
            return self._clock() - started
        finally:
            queue.remove(waiter)
            # A waiter its head granted leaves without waking the others: the head did as it
            # left (waking each queued task once per batch, not once per waiter of it).
            if not waiter.granted:
                self._notify()

    async def _admit_run(self, head: _Waiter, queue: deque[_Waiter]) -> float:
        """Admit ``head`` and the waiters of its kind behind it that fit; return 0, or the
        seconds to wait before asking again."""
        kind = head.kind
        run = [head]
        # The head is the first waiter not granted yet, not always the queue's first.
        behind = itertools.dropwhile(lambda w: w is not head, queue)
        for waiter in itertools.islice(behind, 1, None):
            if waiter.granted:
                continue
            if (
                waiter.kind is not kind
                or waiter.background is not head.background
                or len(run) >= _MAX_BATCH
            ):
                break
            run.append(waiter)
        more = kind is not RequestKind.READ and (sum(not w.granted for w in self._first) > len(run))
        admitted, delay = await self._admit(kind, len(run), more, head.background)
        for waiter in run[1:admitted]:
            waiter.granted = True  # a waiter cancelled meanwhile wastes its slot: safe side
        return 0.0 if admitted else delay

    async def _admit(
        self, kind: RequestKind, count: int, more: bool, background: bool = False
    ) -> tuple[int, float]:
        owner = self.owner
        if owner.reachable:
            try:
                await self._settle_debt()
                reply = await owner.admit(self.user, kind, count, more=more, background=background)
            except (RedisError, OSError, TimeoutError) as e:
                owner.mark_down(e)
            else:
                owner.mark_up()
                return self._answered(kind, reply)
        if owner.on_error == "refuse":
            raise BrokerUnavailable(
                f"request budget of {self.user}: Redis is unreachable and "
                "tradovate.budget_on_redis_error = refuse; nothing was sent"
            )
        return self._admit_locally(kind, count, background)

    def _answered(self, kind: RequestKind, reply: list[int]) -> tuple[int, float]:
        admitted, wait_us, held, now_us, processes, *counts = reply
        self._processes = processes
        self._counts = (counts[0], counts[1], counts[2], counts[3])
        self._counted_at = self._clock()
        if admitted:
            listener = self.owner.listener
            if listener is not None:
                listener(self.user, kind, admitted, now_us / 1e6)
            return admitted, 0.0
        if held:
            return 0, min(max(wait_us / 1e6, _ORDERS_WAITING_FLOOR_S), _MAX_SLEEP_S)
        return 0, min(wait_us / 1e6 + _WINDOW_MARGIN_S, _MAX_SLEEP_S)

    async def _settle_debt(self) -> None:
        """Charge to Redis what the fallback admitted while it was unreachable (once back)."""
        if not self._fallback:
            return
        for kind, count in list(self._debt.items()):
            await self.owner.admit(self.user, kind, count, force=True)
            del self._debt[kind]
        self._fallback = False
        _log.info("budget_fallback_ended", user=self.user)

    def _admit_locally(
        self, kind: RequestKind, count: int, background: bool = False
    ) -> tuple[int, float]:
        """Admit from this process's share of the windows; return (admitted, wait)."""
        if not self._fallback:
            self._start_fallback()
        now = self._clock()
        windows = self.windows[kind]
        admitted = 0
        while admitted < count:
            delay = max(w.wait_s(now, background=background) for w in windows)
            if delay > 0:
                break
            for window in windows:
                window.admit(now)
            admitted += 1
        if not admitted:
            return 0, min(delay, _MAX_SLEEP_S)
        self._debt[kind] += admitted
        metrics.BUDGET_FALLBACK_ADMISSIONS.inc(admitted)
        listener = self.owner.listener
        if listener is not None:
            listener(self.user, kind, admitted, time.time())
        return admitted, 0.0

    def _start_fallback(self) -> None:
        """Build the local share of each window from the last answer Redis gave."""
        owner, limits, spans = self.owner, self.limits, self.owner.spans
        share = max(owner.fallback_processes, self._processes)
        at = self._counted_at

        def window(limit: int, span: float, used: int, reserved: int = 0) -> Window:
            made = Window(max(1, limit // share), span, reserved=reserved // share)
            if at is not None and self._clock() - at < span:
                for _ in range(math.ceil(used / share)):
                    made.admit(at)  # as if admitted at the last answer: the safe side
            return made

        second, hour, orders, reads = self._counts
        per_second = window(limits.requests_per_second, spans.second, second)
        per_hour = window(limits.requests_per_hour, spans.hour, hour)
        self.windows = {
            RequestKind.ORDER: (
                per_second,
                per_hour,
                window(limits.orders_per_minute, spans.minute, orders),
            ),
            RequestKind.READ: (
                per_second,
                per_hour,
                window(limits.reads_per_minute, spans.minute, reads, limits.reads_reserved),
            ),
            RequestKind.AUTH: (per_second, per_hour),
        }
        self._fallback = True
        _log.warning("budget_fallback", user=self.user, share=f"1/{share}")

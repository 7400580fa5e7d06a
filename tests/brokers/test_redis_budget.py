"""The request budget shared through Redis: the same windows as one process's, counted by a
real Redis on its own clock, orders ahead of reads across processes, and what happens while
Redis is unreachable (reference §7; ``brokers/redis_budget.py``).

Two ``RedisBudget`` objects on one Redis stand for two processes (each has its own process
id and queues; ``test_redis_budget_processes.py`` runs real ones). Windows whose expiry a
test waits for are shortened through ``Spans``; nothing waits on a fixed sleep.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis

from _support.fixtures import private_redis, redis_client
from tradebridge.brokers.budget import (
    BudgetLimits,
    RequestBudget,
    RequestKind,
    _Waiter,
    mark_background,
)
from tradebridge.brokers.factory import build_account_tokens, request_budget
from tradebridge.brokers.redis_budget import RedisBudget, RedisUserBudget, Spans, budget_keys
from tradebridge.config import load_settings
from tradebridge.errors import BrokerUnavailable
from tradebridge.obs import metrics
from tradebridge.store.embedded import EmbeddedRedis, free_port

__all__ = ["private_redis", "redis_client"]  # fixtures

ORDER, READ, AUTH = RequestKind.ORDER, RequestKind.READ, RequestKind.AUTH
SECOND, HOUR, ORDERS_MINUTE, READS_MINUTE, ORDERS_WAITING, PROCESSES = budget_keys("alice")
WIDE = {"requests_per_second": 1000, "requests_per_hour": 100_000,
        "orders_per_minute": 1000, "reads_per_minute": 1000, "reads_reserved": 0}  # fmt: skip


def limits(**narrow: int) -> BudgetLimits:
    return BudgetLimits(**{**WIDE, **narrow})


Admission = tuple[str, RequestKind, int, float]


def make(redis: aioredis.Redis, seen: list[Admission] | None = None, **options: Any) -> RedisBudget:
    """Return a budget (one "process") on ``redis``; admissions go to ``seen``."""
    narrow = {k: options.pop(k) for k in list(options) if k in WIDE}
    listener = None if seen is None else lambda *admission: seen.append(admission)
    return RedisBudget(limits(**narrow), redis, listener=listener, **options)


async def until(condition: Callable[[], Awaitable[Any]], within_s: float = 20.0) -> None:
    """Wait until the async ``condition()`` holds; fail after ``within_s``."""
    deadline = time.monotonic() + within_s
    while not await condition():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


# The windows of each kind, with their limit's name and span (Spans(): 1 s, 1 min, 1 h).
WINDOWS = [
    pytest.param(ORDER, "requests_per_second", SECOND, 1.0, id="order-second"),
    pytest.param(READ, "requests_per_second", SECOND, 1.0, id="read-second"),
    pytest.param(AUTH, "requests_per_second", SECOND, 1.0, id="auth-second"),
    pytest.param(ORDER, "requests_per_hour", HOUR, 3600.0, id="order-hour"),
    pytest.param(READ, "requests_per_hour", HOUR, 3600.0, id="read-hour"),
    pytest.param(ORDER, "orders_per_minute", ORDERS_MINUTE, 60.0, id="order-minute"),
    pytest.param(READ, "reads_per_minute", READS_MINUTE, 60.0, id="read-minute"),
]


@pytest.mark.parametrize(("kind", "limit", "key", "span"), WINDOWS)
async def test_redis_budget_window_admits_below_and_at_its_limit_then_answers_the_wait(
    redis_client: aioredis.Redis, kind: RequestKind, limit: str, key: str, span: float
) -> None:
    budget = make(redis_client, **{limit: 5})

    below = await budget.admit("alice", kind, 4)
    at = await budget.admit("alice", kind, 1)
    above = await budget.admit("alice", kind, 1)

    assert (below[0], at[0], above[0]) == (4, 1, 0)
    assert 0 < above[1] <= span * 1e6  # µs until the oldest of the five leaves
    assert above[2] == 0  # the window, not another process's orders
    assert await redis_client.zcard(key) == 5


@pytest.mark.parametrize(("kind", "limit", "key", "span"), WINDOWS)
async def test_redis_budget_batch_larger_than_the_window_is_admitted_in_part(
    redis_client: aioredis.Redis, kind: RequestKind, limit: str, key: str, span: float
) -> None:
    budget = make(redis_client, **{limit: 3})

    admitted, wait_us, *_ = await budget.admit("alice", kind, 5)

    assert admitted == 3
    assert 0 < wait_us <= span * 1e6
    assert await redis_client.zcard(key) == 3


@pytest.mark.parametrize(
    ("kind", "narrow"),
    [
        (ORDER, "reads_per_minute"),
        (READ, "orders_per_minute"),
        (AUTH, "orders_per_minute"),
        (AUTH, "reads_per_minute"),
    ],
)
async def test_redis_budget_kind_ignores_the_other_kinds_minute_window(
    redis_client: aioredis.Redis, kind: RequestKind, narrow: str
) -> None:
    budget = make(redis_client, **{narrow: 1})

    admitted, *_ = await budget.admit("alice", kind, 3)

    assert admitted == 3


async def test_redis_budget_two_processes_share_one_users_windows(
    redis_client: aioredis.Redis,
) -> None:
    first, second = make(redis_client, orders_per_minute=3), make(redis_client, orders_per_minute=3)

    assert (await first.admit("alice", ORDER, 2))[0] == 2
    assert (await second.admit("alice", ORDER, 2))[0] == 1
    assert (await first.admit("alice", ORDER, 1))[0] == 0
    assert (await second.admit("alice", ORDER, 1))[4] == 2  # processes seen for alice


async def test_redis_budget_users_have_separate_windows(redis_client: aioredis.Redis) -> None:
    budget = make(redis_client, orders_per_minute=1)

    assert (await budget.admit("alice", ORDER, 1))[0] == 1
    assert (await budget.admit("bob", ORDER, 1))[0] == 1
    assert (await budget.admit("alice", ORDER, 1))[0] == 0


async def test_redis_budget_admission_leaves_the_window_after_its_span(
    redis_client: aioredis.Redis,
) -> None:
    seen: list[Admission] = []
    budget = make(redis_client, seen, orders_per_minute=2, spans=Spans(minute=0.5))
    user = budget.bucket("alice")
    await user.acquire(ORDER)
    await user.acquire(ORDER)

    await asyncio.wait_for(user.acquire(ORDER), 20)

    times = [at for *_, at in seen]
    assert times[2] - times[0] >= 0.5  # on Redis's clock: the first had left the minute
    inside = [at for at in times if at > times[2] - 0.5]  # the first is not among them
    assert await redis_client.zcard(ORDERS_MINUTE) == len(inside) < 3


async def test_redis_budget_keys_expire_once_idle(redis_client: aioredis.Redis) -> None:
    budget = make(redis_client)

    await budget.bucket("alice").acquire(ORDER)

    for key, span_ms in ((SECOND, 1000), (ORDERS_MINUTE, 60_000), (HOUR, 3_600_000)):
        assert 0 < await redis_client.pttl(key) <= span_ms + 1000


async def test_redis_budget_fanout_of_twenty_orders_is_one_round_trip(
    redis_client: aioredis.Redis,
) -> None:
    seen: list[Admission] = []
    user = make(redis_client, seen).bucket("alice")

    waited = await asyncio.wait_for(asyncio.gather(*(user.acquire(ORDER) for _ in range(20))), 20)

    assert len(waited) == 20
    assert [(kind, count) for _, kind, count, _ in seen] == [(ORDER, 20)]
    assert user.queued() == (0, 0)


async def test_redis_budget_a_read_behind_a_granted_batch_goes_once_the_batch_leaves(
    redis_client: aioredis.Redis,
) -> None:
    # The batch's waiters leave without waking anyone; the read behind them is woken by
    # the batch's head and must not take the granted orders still queued for its betters.
    seen: list[Admission] = []
    user = make(redis_client, seen).bucket("alice")

    orders = [asyncio.ensure_future(user.acquire(ORDER)) for _ in range(20)]
    await asyncio.sleep(0)
    read = asyncio.ensure_future(user.acquire(READ))
    await asyncio.wait_for(asyncio.gather(*orders, read), 20)

    assert [(kind, count) for _, kind, count, _ in seen] == [(ORDER, 20), (READ, 1)]
    assert user.queued() == (0, 0)


async def test_redis_budget_a_head_behind_granted_waiters_asks_for_itself_and_wakes_the_next(
    redis_client: aioredis.Redis,
) -> None:
    # Waiters of a batch granted but not yet gone stand ahead of the next head: the head's
    # run starts behind it (not at the queue's second place, which is itself), so it never
    # grants itself and leaves without waking the order that queued during its round trip.
    budget = make(redis_client)
    user = budget.bucket("alice")
    asked, answer = asyncio.Event(), asyncio.Event()
    admit = budget.admit

    async def held_admit(*args: Any, **kwargs: Any) -> list[int]:
        asked.set()
        await answer.wait()  # the round trip, held open while the next order queues
        return await admit(*args, **kwargs)

    budget.admit = held_admit  # type: ignore[method-assign]
    leaving = _Waiter(ORDER)
    leaving.granted = True
    user._first.append(leaving)  # a granted waiter that has not run yet
    try:
        head = asyncio.ensure_future(user.acquire(ORDER))
        await asyncio.wait_for(asyncio.shield(asyncio.ensure_future(asked.wait())), 10)
        behind = asyncio.ensure_future(user.acquire(ORDER))

        async def all_queued() -> bool:
            return user.queued()[0] == 3

        await until(all_queued)  # it queued behind the head, waiting for its turn
        answer.set()
        await asyncio.wait_for(asyncio.gather(head, behind), 10)
    finally:
        user._first.remove(leaving)


async def test_redis_budget_fanout_beyond_the_window_waits_for_the_rest(
    redis_client: aioredis.Redis,
) -> None:
    seen: list[Admission] = []
    user = make(redis_client, seen, orders_per_minute=3, spans=Spans(minute=0.5)).bucket("alice")

    await asyncio.wait_for(asyncio.gather(*(user.acquire(ORDER) for _ in range(5))), 20)

    assert [count for _, _, count, _ in seen] == [3, 2]
    assert seen[1][3] - seen[0][3] >= 0.5


async def test_redis_budget_a_read_an_order_waits_for_goes_ahead_of_background_reads(
    redis_client: aioredis.Redis,
) -> None:
    seen: list[str] = []
    user = make(redis_client, reads_per_minute=2, spans=Spans(minute=0.5)).bucket("alice")

    async def read(name: str, *, background: bool = False) -> None:
        if background:
            mark_background()  # as reconcile's task does
        await user.acquire(READ)
        seen.append(name)

    async def two_admitted() -> bool:
        return len(seen) == 2

    reconcile = [asyncio.ensure_future(read(f"reconcile{i}", background=True)) for i in range(4)]
    await until(two_admitted)  # the window is full; two wait behind it
    position = asyncio.ensure_future(read("position"))
    await asyncio.wait_for(asyncio.gather(*reconcile, position), 20)

    assert seen[:2] == ["reconcile0", "reconcile1"]
    assert seen[2] == "position"


async def test_redis_budget_background_reads_leave_the_reserved_reads_to_other_processes(
    redis_client: aioredis.Redis,
) -> None:
    # A restarted worker's reconcile fills its share of the reads window; another worker's
    # account list and position reads for a new alert still go at once.
    reconciling = make(redis_client, reads_per_minute=3, reads_reserved=2).bucket("alice")
    placing = make(redis_client, reads_per_minute=3, reads_reserved=2).bucket("alice")
    admitted: list[str] = []

    async def read(user: RedisUserBudget, name: str, *, background: bool = False) -> None:
        if background:
            mark_background()  # as reconcile's task does
        await user.acquire(READ)
        admitted.append(name)

    reconcile = [
        asyncio.ensure_future(read(reconciling, f"reconcile{i}", background=True)) for i in range(3)
    ]
    await until(lambda: redis_client.zcard(READS_MINUTE))
    await asyncio.wait_for(
        asyncio.gather(read(placing, "account list"), read(placing, "position")), 10
    )

    assert admitted == ["reconcile0", "account list", "position"]
    assert not any(task.done() for task in reconcile[1:])  # the window (one minute) is full
    assert await redis_client.zcard(READS_MINUTE) == 3
    for task in reconcile:
        task.cancel()
    await asyncio.gather(*reconcile, return_exceptions=True)


async def test_redis_budget_read_waits_for_orders_queued_in_another_process(
    redis_client: aioredis.Redis,
) -> None:
    seen: list[Admission] = []
    # Long enough for the second order to be told to wait, and for its waiting mark (stale
    # once its expected time is past) to outlast a loaded machine's stalls.
    spans = Spans(minute=8.0)
    orders_process = make(redis_client, seen, orders_per_minute=1, spans=spans).bucket("alice")
    reads_process = make(redis_client, seen, orders_per_minute=1, spans=spans).bucket("alice")
    await orders_process.acquire(ORDER)
    second_order = asyncio.ensure_future(orders_process.acquire(ORDER))
    await until(lambda: redis_client.zcard(ORDERS_WAITING))  # it told Redis it is waiting

    read = asyncio.ensure_future(reads_process.acquire(READ))  # its own windows have room
    await asyncio.wait_for(asyncio.gather(second_order, read), 20)

    # In the order Redis admitted them (its clock, in the script's answer): the listeners of
    # two answers arriving together may run in either order on a loaded machine.
    admitted = sorted(seen, key=lambda admission: admission[3])
    assert [kind for _, kind, _, _ in admitted] == [ORDER, ORDER, READ]
    assert await redis_client.zcard(ORDERS_WAITING) == 0  # it left once its order went


async def test_redis_budget_read_is_held_back_while_another_process_has_orders_waiting(
    redis_client: aioredis.Redis,
) -> None:
    budget = make(redis_client)
    (now_s, now_us) = await redis_client.time()
    await redis_client.zadd(ORDERS_WAITING, {"other:1": now_s * 1e6 + now_us + 2e6})

    admitted, wait_us, held, *_ = await budget.admit("alice", READ, 1)
    order, *_ = await budget.admit("alice", ORDER, 1)

    assert (admitted, held) == (0, 1)
    assert 0 < wait_us <= 2e6  # until that order expects to go
    assert order == 1  # orders are never held back by orders


async def test_redis_budget_orders_still_queued_after_an_admitted_run_keep_reads_back(
    redis_client: aioredis.Redis,
) -> None:
    orders, reads = make(redis_client), make(redis_client)

    await orders.admit("alice", ORDER, 1, more=True)  # a login queued behind it, say
    held_back = await reads.admit("alice", READ, 1)
    await orders.admit("alice", AUTH, 1)  # nothing more queued: it leaves the set
    admitted = await reads.admit("alice", READ, 1)

    assert (held_back[0], held_back[2]) == (0, 1)
    assert admitted[0] == 1


async def test_redis_budget_orders_waiting_of_a_dead_process_expire(
    redis_client: aioredis.Redis,
) -> None:
    budget = make(redis_client, hold_s=10.0)
    (now_s, now_us) = await redis_client.time()
    expected_retry = now_s * 1e6 + now_us - 11e6  # it should have retried 11 s ago: gone
    await redis_client.zadd(ORDERS_WAITING, {"dead:1": expected_retry})

    admitted, *_ = await budget.admit("alice", READ, 1)

    assert admitted == 1
    assert await redis_client.zcard(ORDERS_WAITING) == 0


async def test_redis_budget_orders_and_logins_share_this_processes_first_queue(
    redis_client: aioredis.Redis,
) -> None:
    seen: list[Admission] = []
    user = make(redis_client, seen, requests_per_second=2, spans=Spans(second=0.3)).bucket("alice")

    tasks = [user.acquire(READ), user.acquire(ORDER), user.acquire(AUTH), user.acquire(ORDER)]
    await asyncio.wait_for(asyncio.gather(*tasks), 20)

    kinds = [kind for _, kind, count, _ in seen for _ in range(count)]
    assert kinds == [ORDER, AUTH, ORDER, READ]


# Redis unreachable.


@pytest.fixture
async def lost_redis(private_redis: EmbeddedRedis) -> AsyncIterator[aioredis.Redis]:
    """A client of a Redis the test may stop and start."""
    client = aioredis.Redis.from_url(private_redis.url, socket_timeout=2)
    yield client
    await client.aclose()


async def test_redis_budget_redis_down_admits_from_this_processes_share(
    private_redis: EmbeddedRedis, lost_redis: aioredis.Redis
) -> None:
    seen: list[Admission] = []
    budget = make(lost_redis, seen, orders_per_minute=10, fallback_processes=2, retry_s=0.05)
    user = budget.bucket("alice")
    for _ in range(4):
        await user.acquire(ORDER)  # through Redis: 4 of 10 used
    private_redis.stop()
    before = metrics.BUDGET_FALLBACK_ADMISSIONS._value.get()

    for _ in range(3):
        await asyncio.wait_for(user.acquire(ORDER), 20)  # share 10 // 2, less 4 / 2 used

    assert user.wait_s(ORDER) > 50  # the fourth waits for the minute: none is left
    assert metrics.BUDGET_FALLBACK_ADMISSIONS._value.get() - before == 3
    assert not budget.reachable


async def test_redis_budget_redis_back_is_charged_what_the_share_admitted(
    private_redis: EmbeddedRedis, lost_redis: aioredis.Redis
) -> None:
    budget = make(lost_redis, fallback_processes=2, retry_s=0.05)
    user = budget.bucket("alice")
    private_redis.stop()
    for _ in range(3):
        await asyncio.wait_for(user.acquire(ORDER), 20)
    private_redis.start()  # back, and empty

    async def reachable() -> bool:
        return budget.reachable

    await until(reachable)

    await asyncio.wait_for(user.acquire(READ), 20)

    assert await lost_redis.zcard(ORDERS_MINUTE) == 3
    assert await lost_redis.zcard(SECOND) == 4


async def test_redis_budget_redis_that_never_answers_falls_back_after_the_timeout() -> None:
    held: list[asyncio.StreamWriter] = []

    async def swallow(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)
        await reader.read()  # reads the command and never answers

    server = await asyncio.start_server(swallow, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    client = aioredis.Redis(host="127.0.0.1", port=port)
    try:
        budget = make(client, timeout_s=0.2)
        started = time.monotonic()

        await asyncio.wait_for(budget.bucket("alice").acquire(ORDER), 20)

        assert time.monotonic() - started >= 0.2
        assert not budget.reachable
    finally:
        await client.aclose()
        for writer in held:
            writer.close()
        server.close()
        await server.wait_closed()


async def test_redis_budget_refuse_mode_raises_broker_unavailable_when_redis_is_down() -> None:
    client = aioredis.Redis(host="127.0.0.1", port=free_port())  # nothing listens
    try:
        budget = make(client, on_error="refuse")

        with pytest.raises(BrokerUnavailable, match="nothing was sent"):
            await asyncio.wait_for(budget.bucket("alice").acquire(ORDER), 20)
        assert budget.bucket("alice").queued() == (0, 0)
    finally:
        await client.aclose()


# Which budget a process gets.


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Run without tradebridge variables and away from any tradebridge.toml."""
    for name in list(os.environ):
        if name.startswith("TRADEBRIDGE_") or name in ("DATABASE_URL", "REDIS_URL"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)


@pytest.mark.usefixtures("clean_env")
def test_request_budget_is_shared_through_redis_by_default(redis_client: aioredis.Redis) -> None:
    settings = load_settings()

    assert isinstance(request_budget(settings, redis_client), RedisBudget)
    assert type(request_budget(settings)) is RequestBudget  # no Redis: this process's own


@pytest.mark.usefixtures("clean_env")
def test_request_budget_local_setting_keeps_it_in_the_process(
    redis_client: aioredis.Redis,
) -> None:
    settings = load_settings(tradovate={"budget": "local"})

    assert type(request_budget(settings, redis_client)) is RequestBudget


@pytest.mark.usefixtures("clean_env")
async def test_serve_token_sources_share_the_redis_budget(redis_client: aioredis.Redis) -> None:
    settings = load_settings(
        tradovate={"budget_on_redis_error": "refuse", "budget_fallback_processes": 3}
    )

    tokens = build_account_tokens(settings, redis_client)

    assert isinstance(tokens.budget, RedisBudget)
    assert (tokens.budget.on_error, tokens.budget.fallback_processes) == ("refuse", 3)
    await tokens.aclose()

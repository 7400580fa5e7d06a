"""Redis connections opened at start: a fan-out's rows each talk to Redis at once (token,
lockout, budget), and redis-py opens a connection for every command that finds none idle; the
first fan-out after a start opened 18 on the way of its orders (issue 12). Counted on the
Redis server's side (``INFO stats``), not on ours."""

from __future__ import annotations

import asyncio

import pytest
import redis.asyncio as aioredis
import structlog

from tradebridge.config import load_settings
from tradebridge.runtime.serve import redis_connections
from tradebridge.store.embedded import EmbeddedRedis, free_port
from tradebridge.store.tokens import open_connections


async def _received(redis: aioredis.Redis) -> int:
    """Return how many connections the server has accepted since it started."""
    stats = await redis.info("stats")
    return int(stats["total_connections_received"])


async def _burst(redis: aioredis.Redis, commands: int) -> None:
    """Send ``commands`` commands at once (none waits for another's connection)."""
    await asyncio.gather(*(redis.get(f"tb:burst:{i}") for i in range(commands)))


@pytest.mark.parametrize("opened", [0, 6])
async def test_a_burst_finds_the_connections_opened_at_start(
    redis_server: EmbeddedRedis, opened: int
) -> None:
    observer = aioredis.Redis.from_url(redis_server.url)
    client = aioredis.Redis.from_url(redis_server.url)
    try:
        assert await open_connections(client, opened) == opened
        before = await _received(observer)
        await _burst(client, 6)
        new = await _received(observer) - before
    finally:
        await client.aclose()
        await observer.aclose()
    # Opened beforehand, none is opened by the burst; else the burst opens its own.
    assert new == (0 if opened else 6)


async def test_open_connections_logs_and_returns_what_it_could_not_open() -> None:
    # Nothing listens there: serve goes on (the connections open on demand later, and
    # check_redis has already refused a Redis that does not answer at all).
    client = aioredis.Redis.from_url(
        f"redis://127.0.0.1:{free_port()}/0", socket_connect_timeout=1.0
    )
    try:
        with structlog.testing.capture_logs() as logs:
            assert await open_connections(client, 3) == 0
    finally:
        await client.aclose()
    warned = [e for e in logs if e["event"] == "redis_connections_not_opened"]
    assert len(warned) == 1
    assert (warned[0]["wanted"], warned[0]["opened"]) == (3, 0)
    assert warned[0]["reason"] == "connection refused"


def test_serve_opens_one_connection_per_account_placed_at_once_at_most_64() -> None:
    def settings(accounts: int, **sections: object) -> int:
        listed = [{"name": f"ACC{i}"} for i in range(accounts)]
        return redis_connections(load_settings(accounts=listed, **sections))  # type: ignore[arg-type]

    assert settings(20) == 20  # every account of a fan-out at once
    assert settings(3) == 16  # the dispatcher's floor of slots
    assert settings(20, dispatcher={"max_accounts": 8}) == 8
    assert settings(20, dispatcher={"workers": 2}) == 40
    assert settings(100) == 64
    assert settings(20, dispatcher={"workers": 0}) == 0  # intake only: it calls no broker
    assert settings(20, redis={"open_connections": 5}) == 5

"""Self-managed tokens after Redis restarted empty (issue 10, item 4): written back within
seconds, without a new login, and ``/healthz``'s tokens check is degraded until they are.

A private Redis of the test's own (the session's must stay up for the other tests) is stopped
and started again: it comes back empty (``--save ''``, no append-only file).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from _support.fixtures import private_redis
from _support.native import sim, sim_clock
from tradebridge.brokers.auth import AccountTokens
from tradebridge.brokers.factory import build_account_tokens
from tradebridge.config import Settings, load_settings
from tradebridge.domain.enums import Dialect
from tradebridge.obs.metrics import REGISTRY
from tradebridge.sim.server import SimServer
from tradebridge.store.embedded import EmbeddedRedis

__all__ = ["private_redis", "sim", "sim_clock"]  # fixtures

DEMO = ("DEMO0000001", "DEMO0000002")
KEYS = [f"token:{name}" for name in DEMO]
CREDENTIALS = {
    Dialect.NATIVE: {"native": {"name": "demo", "password": "demo", "app_id": "tests"}},
    Dialect.TVBRIDGE: {"bridge": {"login": "demo", "password": "demo"}},
}


@pytest.fixture
async def redis(private_redis: EmbeddedRedis) -> AsyncIterator[aioredis.Redis]:
    """Return a client of the private Redis (it reconnects after a restart)."""
    client = aioredis.Redis.from_url(private_redis.url)
    yield client
    await client.aclose()


def _settings(sim: SimServer, tmp_path: Path, dialect: Dialect) -> Settings:
    """The demo user's two accounts, self-managed in ``dialect``; Redis checked every 0.2 s."""
    return load_settings(
        data_dir=tmp_path,
        tradovate={"native_url": f"{sim.url}/v1", "bridge_url": sim.url, "ws_url": ""},
        tokens={**CREDENTIALS[dialect], "reseed_check_s": 0.2},
        accounts=[{"name": name, "dialect": dialect.value} for name in DEMO],
    )


async def _restart_empty(server: EmbeddedRedis) -> None:
    """Restart Redis without its data (no persistence): every key is gone."""
    await asyncio.to_thread(server.stop)
    await asyncio.to_thread(server.start)


async def _present(client: aioredis.Redis) -> int:
    return int(await client.exists(*KEYS))


async def _until(predicate: object, what: str, timeout: float = 15.0) -> float:
    """Wait until the coroutine function ``predicate`` returns true; return the seconds."""
    loop = asyncio.get_running_loop()
    started = loop.time()
    while not await predicate():  # type: ignore[operator]
        if loop.time() - started > timeout:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)
    return loop.time() - started


def _reseeded() -> float:
    return REGISTRY.get_sample_value("tradebridge_tokens_reseeded_total", {"user": "demo"}) or 0.0


@pytest.mark.parametrize("dialect", [Dialect.NATIVE, Dialect.TVBRIDGE])
async def test_keep_redis_restarted_empty_tokens_written_back_within_seconds_without_login(
    sim: SimServer,
    private_redis: EmbeddedRedis,
    redis: aioredis.Redis,
    tmp_path: Path,
    dialect: Dialect,
) -> None:
    tokens = build_account_tokens(_settings(sim, tmp_path, dialect), redis)
    stop = asyncio.Event()
    keeper = asyncio.create_task(tokens.keep(stop))
    try:
        await _until(lambda: _present_all(redis), "the first login's keys")
        before = (sim.ctx.auth.logins, _reseeded(), await redis.get(KEYS[0]))

        # No look at the empty Redis here: the keeper checks every 0.2 s and may have written
        # the keys back before this task runs again (a loaded machine); one reseed more,
        # asserted below, is what proves they were gone.
        await _restart_empty(private_redis)
        seconds = await _until(lambda: _present_all(redis), "the keys written back")
        after = (sim.ctx.auth.logins, _reseeded(), await redis.get(KEYS[0]))
    finally:
        stop.set()
        await keeper
        await tokens.aclose()

    assert after[0] == before[0] == 1  # the held token went back: no new login
    assert after[1] == before[1] + 1
    assert after[2] == before[2]
    assert seconds < 10


async def test_health_self_managed_token_lost_from_redis_degraded_until_written_back(
    sim: SimServer, private_redis: EmbeddedRedis, redis: aioredis.Redis, tmp_path: Path
) -> None:
    tokens: AccountTokens = build_account_tokens(_settings(sim, tmp_path, Dialect.NATIVE), redis)
    try:
        await tokens.token(DEMO[0])  # logs in, writes both keys
        await _restart_empty(private_redis)
        assert await _present(redis) == 0  # nothing here writes them back on its own

        lost = await tokens.health(list(DEMO))
        written = await tokens.managers[DEMO[0]].reseed()

        async def healthy() -> bool:
            return (await tokens.health(list(DEMO))).level == "ok"

        await _until(healthy, "the tokens check ok again")
    finally:
        await tokens.aclose()

    assert lost.level == "degraded"
    assert lost.detail["problems"] == list(DEMO)
    assert {a["state"] for a in lost.detail["accounts"].values()} == {"missing"}
    assert all(a["reseeding"] for a in lost.detail["accounts"].values())
    assert written == KEYS
    assert sim.ctx.auth.logins == 1


async def _present_all(client: aioredis.Redis) -> bool:
    return await _present(client) == len(KEYS)

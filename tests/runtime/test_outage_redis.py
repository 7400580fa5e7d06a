"""Redis restarted empty under the simulator's token writer (issue 10, item 4).

``up`` writes the simulator users' tokens to Redis (``seed_sim_tokens``, a ``TokenSeeder`` on the
simulator's loop). Before, the keys came back only at the next renewal, so a ``serve``
started after Redis restarted empty left its rows ``processing`` ("no token in Redis"). Now
the writer puts them back within seconds, and a ``serve`` started afterwards places rows.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
import redis.asyncio as aioredis

from _support.fixtures import private_redis
from _support.runtime import serve_settings, serving, until_final
from tradebridge.runtime.up import seed_sim_tokens
from tradebridge.sim.server import SimServer
from tradebridge.store.embedded import EmbeddedRedis
from tradebridge.store.ledger import Ledger

__all__ = ["private_redis"]  # fixtures

TEMPLATE = "token:{account_name}"


@pytest.fixture
async def redis(private_redis: EmbeddedRedis) -> AsyncIterator[aioredis.Redis]:
    """Return a client of the private Redis (it reconnects after a restart)."""
    client = aioredis.Redis.from_url(private_redis.url)
    yield client
    await client.aclose()


def _keys(sim: SimServer) -> list[str]:
    return [TEMPLATE.format(account_name=a.name) for u in sim.config.users for a in u.accounts]


async def test_redis_restarted_empty_simulator_tokens_back_and_later_serve_places_rows(
    sim: SimServer,
    fresh_db: str,
    private_redis: EmbeddedRedis,
    redis: aioredis.Redis,
    tmp_path: Path,
) -> None:
    keys = _keys(sim)
    async with contextlib.AsyncExitStack() as writer:
        await seed_sim_tokens(sim, private_redis.url, TEMPLATE, writer)
        before = await redis.mget(keys)

        await asyncio.to_thread(private_redis.stop)
        await asyncio.to_thread(private_redis.start)
        emptied = await redis.exists(*keys)
        loop = asyncio.get_running_loop()
        restarted = loop.time()
        while await redis.exists(*keys) < len(keys):
            assert loop.time() - restarted < 15, "the simulator's tokens were not written back"
            await asyncio.sleep(0.02)
        seconds = loop.time() - restarted
        after = await redis.mget(keys)

        settings = serve_settings(
            sim, fresh_db, private_redis.url, tmp_path, secret="outage-redis-secret"
        )
        async with serving(settings) as found, await Ledger.connect(fresh_db) as ledger:
            await ledger.insert_signal(
                signal_id="after-restart", instrument="MNQ1!", side="buy", quantity=1,
                account_name=sim.config.users[0].accounts[0].name,
            )  # fmt: skip
            row = await until_final(ledger, "after-restart")
            async with httpx.AsyncClient() as client:
                health = (await client.get(found.healthz_url)).json()

    assert all(before)
    assert emptied == 0
    assert all(after)
    assert seconds < 10
    assert row.status.value == "filled"
    assert health["checks"]["tokens"]["level"] == "ok"

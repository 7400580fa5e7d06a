"""Fixtures of the runtime tests: a fresh migrated database, a simulator with tokens in Redis."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest
import redis.asyncio as aioredis

from _support.database import fresh_database
from tradebridge.sim.config import SimConfig
from tradebridge.sim.seed import TokenSeeder
from tradebridge.sim.server import SimServer
from tradebridge.store.embedded import EmbeddedPostgres, EmbeddedRedis


@pytest.fixture
async def fresh_db(postgres_server: EmbeddedPostgres) -> AsyncIterator[str]:
    """Create a migrated database for one test; drop it afterwards."""
    async with fresh_database(postgres_server.url, prefix="rt") as url:
        yield url


@pytest.fixture
def sim() -> Iterator[SimServer]:
    """Run an in-process simulator on a free port."""
    server = SimServer(SimConfig(port=0)).start()
    yield server
    server.stop()


@pytest.fixture
async def sim_tokens(sim: SimServer, redis_server: EmbeddedRedis) -> AsyncIterator[SimServer]:
    """Write the simulator users' tokens into the session Redis (emptied first)."""
    client = aioredis.Redis.from_url(redis_server.url)
    await client.flushdb()
    # Once, before any traffic: the seeder touches only the simulator's token table.
    await TokenSeeder(sim.ctx, client).seed()
    yield sim
    await client.aclose()

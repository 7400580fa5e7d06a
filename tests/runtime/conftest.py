"""Fixtures of the runtime tests: a fresh migrated database, a simulator with tokens in Redis."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator, Iterator

import asyncpg
import pytest
import redis.asyncio as aioredis
from runtime_stack import database_url

from tradebridge.sim.config import SimConfig
from tradebridge.sim.seed import TokenSeeder
from tradebridge.sim.server import SimServer
from tradebridge.store.embedded import EmbeddedPostgres, EmbeddedRedis
from tradebridge.store.migrate import migrate


@pytest.fixture
async def fresh_db(postgres_server: EmbeddedPostgres) -> AsyncIterator[str]:
    """Create a migrated database for one test; drop it afterwards."""
    name = f"rt_{secrets.token_hex(6)}"
    admin = await asyncpg.connect(postgres_server.url)
    try:
        await admin.execute(f'create database "{name}"')
    finally:
        await admin.close()
    url = database_url(postgres_server.url, name)
    await migrate(url)
    yield url
    admin = await asyncpg.connect(postgres_server.url)
    try:
        await admin.execute(f'drop database if exists "{name}" with (force)')
    finally:
        await admin.close()


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

"""Fixtures of the chaos tests: stores they may break, a simulator, a serving bridge.

``rig`` starts what a chaos test breaks: a private Redis (restartable, and restartable
empty) with the simulator's token writer on it (it puts the keys back when Redis comes back
empty, and writes fresh ones after ``/_sim/tokens/expire``), and, in ``rig.serve()``, an
in-process ``serve`` on four simulator accounts, two per dialect, with alerts arriving at
its webhook. PostgreSQL is the session's, unless the test asks for ``private_postgres``.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from _support.chaos import TOKEN_KEY, Rig
from _support.database import fresh_database
from _support.fixtures import private_postgres, private_redis
from _support.runtime import fresh_db, sim
from tradebridge.runtime.up import seed_sim_tokens
from tradebridge.sim.server import SimServer
from tradebridge.store.embedded import EmbeddedPostgres, EmbeddedRedis

__all__ = ["fresh_db", "private_postgres", "private_redis", "sim"]  # fixtures


@pytest.fixture
async def rig(
    sim: SimServer, private_redis: EmbeddedRedis, fresh_db: str, tmp_path: Path
) -> AsyncIterator[Rig]:
    """Return the rig on a fresh database of the session PostgreSQL."""
    async with contextlib.AsyncExitStack() as stack:
        await seed_sim_tokens(sim, private_redis.url, TOKEN_KEY, stack)
        yield Rig(sim, private_redis, fresh_db, tmp_path)


@pytest.fixture
async def postgres_rig(
    sim: SimServer, private_redis: EmbeddedRedis, private_postgres: EmbeddedPostgres, tmp_path: Path
) -> AsyncIterator[Rig]:
    """Return the rig on a database of the private PostgreSQL (which the test may stop)."""
    async with (
        fresh_database(private_postgres.url, prefix="chaos") as url,
        contextlib.AsyncExitStack() as stack,
    ):
        await seed_sim_tokens(sim, private_redis.url, TOKEN_KEY, stack)
        yield Rig(sim, private_redis, url, tmp_path)

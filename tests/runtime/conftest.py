"""Fixtures of the runtime tests: a fresh migrated database, a simulator with tokens in Redis,
a client of the session Redis emptied for each test that asks for it."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import redis

from _support.runtime import fresh_db, sim, sim_tokens
from tradebridge.store.embedded import EmbeddedRedis

__all__ = ["fresh_db", "sim", "sim_tokens"]  # fixtures


@pytest.fixture
def rclient(redis_server: EmbeddedRedis) -> Iterator[redis.Redis]:
    """A client of the session Redis, emptied for this test (tokens, login counts)."""
    client = redis.Redis.from_url(redis_server.url)
    client.flushdb()
    yield client
    client.close()

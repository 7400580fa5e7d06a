"""Shared fixtures: real Redis and PostgreSQL on loopback, started once per test session."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tradebridge.store.embedded import EmbeddedPostgres, EmbeddedRedis


@pytest.fixture(scope="session")
def redis_server() -> Iterator[EmbeddedRedis]:
    """Start a private Redis for the whole session."""
    server = EmbeddedRedis().start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[EmbeddedPostgres]:
    """Start a private PostgreSQL for the whole session."""
    server = EmbeddedPostgres().start()
    yield server
    server.stop()

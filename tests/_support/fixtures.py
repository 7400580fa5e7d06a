"""Fixtures more than one test package uses."""

from __future__ import annotations

import contextlib
import io
import json
import logging
import shutil
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis
import structlog

from tradebridge.obs.logging import configure_logging
from tradebridge.store.embedded import EmbeddedPostgres, EmbeddedRedis


@contextlib.contextmanager
def logs_to(level: str | None) -> Iterator[io.StringIO]:
    """Send the structured logs to a buffer while inside (configured at ``level``, or left
    for the test to configure when None), then restore the defaults."""
    out = io.StringIO()
    root = logging.getLogger()
    handlers, old_level = root.handlers[:], root.level
    if level is not None:
        configure_logging(level, stream=out)
    try:
        yield out
    finally:
        structlog.reset_defaults()
        root.handlers, root.level = handlers, old_level


def log_records(out: io.StringIO) -> list[dict[str, Any]]:
    """Return the JSON log lines written to ``out``."""
    return [json.loads(line) for line in out.getvalue().splitlines() if line.startswith("{")]


@pytest.fixture
async def redis_client(redis_server: EmbeddedRedis) -> AsyncIterator[aioredis.Redis]:
    """Return a client of the session Redis, emptied for this test."""
    client = aioredis.Redis.from_url(redis_server.url)
    await client.flushdb()
    yield client
    await client.aclose()


@pytest.fixture
def private_redis() -> Iterator[EmbeddedRedis]:
    """Start a Redis of the test's own, which it may stop and start (it comes back empty)."""
    directory = Path(tempfile.mkdtemp(prefix="tradebridge-private-redis-"))
    server = EmbeddedRedis(directory=directory)
    try:
        yield server.start()
    finally:
        server.stop()
        shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture
def private_postgres() -> Iterator[EmbeddedPostgres]:
    """Start a PostgreSQL of the test's own, which it may stop and start."""
    directory = Path(tempfile.mkdtemp(prefix="tradebridge-private-pg-"))
    directory.chmod(0o755)  # the postgres user must reach it
    server = EmbeddedPostgres(directory=directory)
    try:
        yield server.start()
    finally:
        server.stop()
        shutil.rmtree(directory, ignore_errors=True)

"""Fixtures more than one test package uses."""

from __future__ import annotations

import contextlib
import io
import json
import logging
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
import redis.asyncio as aioredis
import structlog

from tradebridge.obs.logging import configure_logging
from tradebridge.store.embedded import EmbeddedRedis


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

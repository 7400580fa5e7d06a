"""A fresh database per test on the session's private PostgreSQL, migrated or empty."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from _support.database import fresh_database
from tradebridge.store.embedded import EmbeddedPostgres
from tradebridge.store.ledger import Ledger
from tradebridge.store.migrate import migrate


@pytest.fixture
async def empty_db(postgres_server: EmbeddedPostgres) -> AsyncIterator[str]:
    """Create an empty database for one test; drop it afterwards."""
    async with fresh_database(postgres_server.url, migrated=False) as url:
        yield url


@pytest.fixture
async def ledger_db(empty_db: str) -> str:
    """Return the URL of a fresh, migrated database."""
    await migrate(empty_db)
    return empty_db


@pytest.fixture
async def ledger(ledger_db: str) -> AsyncIterator[Ledger]:
    """Open a ledger on a fresh, migrated database."""
    opened = await Ledger.connect(ledger_db, min_size=1, max_size=8)
    try:
        yield opened
    finally:
        await opened.close()

"""A fresh database per test on the session's private PostgreSQL, migrated or empty."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest

from tradebridge.store.embedded import EmbeddedPostgres
from tradebridge.store.ledger import Ledger
from tradebridge.store.migrate import migrate


def database_url(server_url: str, name: str) -> str:
    """Return ``server_url`` pointing at database ``name``."""
    parts = urlsplit(server_url)
    return urlunsplit(parts._replace(path=f"/{name}"))


@pytest.fixture
async def empty_db(postgres_server: EmbeddedPostgres) -> AsyncIterator[str]:
    """Create an empty database for one test; drop it afterwards."""
    name = f"t_{secrets.token_hex(6)}"
    admin = await asyncpg.connect(postgres_server.url)
    try:
        await admin.execute(f'create database "{name}"')
    finally:
        await admin.close()
    yield database_url(postgres_server.url, name)
    admin = await asyncpg.connect(postgres_server.url)
    try:
        await admin.execute(f'drop database if exists "{name}" with (force)')
    finally:
        await admin.close()


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

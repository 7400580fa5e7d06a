"""Throwaway databases on the session's private PostgreSQL, one per test."""

from __future__ import annotations

import contextlib
import secrets
from collections.abc import AsyncIterator
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest

from tradebridge.store.ledger import Ledger
from tradebridge.store.migrate import migrate


def database_url(server_url: str, name: str) -> str:
    """Return ``server_url`` pointing at database ``name``."""
    return urlunsplit(urlsplit(server_url)._replace(path=f"/{name}"))


@contextlib.asynccontextmanager
async def fresh_database(
    server_url: str, *, prefix: str = "t", migrated: bool = True
) -> AsyncIterator[str]:
    """Create a database (migrated unless told otherwise), yield its URL, then drop it."""
    name = f"{prefix}_{secrets.token_hex(6)}"
    await admin_execute(server_url, f'create database "{name}"')
    url = database_url(server_url, name)
    if migrated:
        await migrate(url)
    yield url
    await admin_execute(server_url, f'drop database if exists "{name}" with (force)')


async def admin_execute(server_url: str, statement: str) -> None:
    """Run one statement on the server's maintenance database (create, drop)."""
    admin = await asyncpg.connect(server_url)
    try:
        await admin.execute(statement)
    finally:
        await admin.close()


async def set_status_behind_the_trigger(url: str, signal_id: str, status: str) -> None:
    """Set a row's status with the ledger's move trigger off, as no legal move could (to
    plant a row the trigger must then refuse to move on)."""
    conn = await asyncpg.connect(url)
    try:
        await conn.execute(
            "alter table trading_signals disable trigger tradebridge_signals_before_update"
        )
        await conn.execute(
            "update trading_signals set status = $1 where signal_id = $2", status, signal_id
        )
        await conn.execute(
            "alter table trading_signals enable trigger tradebridge_signals_before_update"
        )
    finally:
        await conn.close()


class MoveStatements:
    """The ledger's stateless pool, noting each move statement: a batch (its size) or one
    (``store/ledger/fast_moves.py``)."""

    def __init__(self, ledger: Ledger) -> None:
        self.inner = ledger._db
        self.sent: list[int] = []  # 1 per lone move, n per batch of n
        self.lazy: list[bool] = []
        self.fail_batches: Exception | None = None

    async def fetch(self, query: str, *args: object) -> list[asyncpg.Record]:
        batch = "with asked as" in query
        if batch or "with moved as" in query:
            self.sent.append(len(args[0]) if batch else 1)  # type: ignore[arg-type]
            self.lazy.append("'synchronous_commit', 'off', true" in query)
            if batch and self.fail_batches is not None:
                raise self.fail_batches
        return await self.inner.fetch(query, *args)

    def __getattr__(self, name: str) -> object:
        return getattr(self.inner, name)

    @classmethod
    def spy(cls, ledger: Ledger, monkeypatch: pytest.MonkeyPatch) -> MoveStatements:
        """Put a spy on ``ledger``'s stateless pool for the test; return it."""
        spy = cls(ledger)
        monkeypatch.setattr(ledger, "_db", spy)
        return spy

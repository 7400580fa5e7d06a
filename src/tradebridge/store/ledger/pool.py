"""The ledger's pool: its connections, transactions, JSON codec and per-account locks.

The hot paths (claim, moves, hand back) run one self-contained statement outside any
transaction (``fetch_stateless``); their connections skip asyncpg's reset on release.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator
from datetime import date, datetime
from decimal import Decimal
from enum import Enum
from typing import Any, Self, TypeAlias

import asyncpg
from asyncpg.pool import PoolConnectionProxy

from tradebridge.store.migrate import unavailable

# Namespace of the per-account advisory locks (two-int form, so it never meets the
# single-bigint migration lock).
ACCOUNT_LOCK_NAMESPACE = 0x7462  # 'tb'

# A connection of its own or one borrowed from the pool (a string: the runtime classes are
# not subscriptable, only their stubs are).
Conn: TypeAlias = "asyncpg.Connection[asyncpg.Record] | PoolConnectionProxy[asyncpg.Record]"


class LedgerPool:
    """The pool every part of the ledger runs its statements on."""

    def __init__(self, pool: asyncpg.Pool, url: str) -> None:
        self._pool = pool
        self._url = url

    async def close(self) -> None:
        """Close the pool."""
        await self._pool.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @property
    def pool(self) -> asyncpg.Pool:
        """Return the pool (for the dispatcher's own transactions)."""
        return self._pool

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[Conn]:
        """Open a transaction on a pooled connection (pass it as ``conn=`` to the methods)."""
        async with self._pool.acquire() as conn, conn.transaction():
            yield conn

    @contextlib.asynccontextmanager
    async def account_transaction(self, account_name: str) -> AsyncIterator[Conn]:
        """Open a transaction holding the account's advisory lock until it ends."""
        async with self._pool.acquire() as conn, conn.transaction():
            await lock_account(conn, account_name)
            yield conn


async def open_pool(
    url: str, *, min_size: int, max_size: int, connect_timeout_s: float
) -> asyncpg.Pool:
    """Open the ledger's pool on ``url``; ``DatabaseUnavailable`` if it cannot be reached."""
    try:
        return await asyncpg.create_pool(
            url,
            min_size=min_size,
            max_size=max_size,
            timeout=connect_timeout_s,
            init=_init_connection,
            connection_class=_LedgerConnection,
            reset=_reset_connection,
        )
    except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as e:
        raise unavailable(url, e) from None


class _LedgerConnection(asyncpg.Connection):
    """A pooled connection that knows when its last use left no session state behind."""

    __slots__ = ("_stateless",)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._stateless = False

    def mark_stateless(self) -> None:
        """Note that this use ran only self-contained statements (no reset on release)."""
        self._stateless = True

    def take_stateless(self) -> bool:
        """Return whether the use now ending was stateless, and forget it."""
        stateless, self._stateless = self._stateless, False
        return stateless


async def _reset_connection(conn: asyncpg.Connection) -> None:
    # asyncpg's default reset (advisory unlock all, close cursors, unlisten, reset GUCs) is a
    # round trip on every release; the hot paths (claim, moves, hand back) run one
    # self-contained statement outside any transaction, which leaves nothing to reset.
    # asyncpg still rolls back an open transaction before calling this.
    if isinstance(conn, _LedgerConnection) and conn.take_stateless():
        return
    query = conn.get_reset_query()
    if query:
        await conn.execute(query)


async def fetch_stateless(pool: asyncpg.Pool, query: str, *args: Any) -> list[asyncpg.Record]:
    """Run one self-contained statement (no SET, LISTEN, cursor or session lock) on the pool."""
    async with pool.acquire() as conn:
        records = await conn.fetch(query, *args)
        mark = getattr(conn, "mark_stateless", None)
        if mark is not None and not conn.is_in_transaction():
            mark()
    return records


async def lock_account(conn: Conn, account_name: str) -> None:
    """Take the account's advisory lock until the current transaction ends."""
    await conn.execute(
        "select pg_advisory_xact_lock($1, hashtext($2))", ACCOUNT_LOCK_NAMESPACE, account_name
    )


async def try_lock_account(conn: Conn, account_name: str) -> bool:
    """Take the account's transaction advisory lock if free; return whether it was taken."""
    taken = await conn.fetchval(
        "select pg_try_advisory_xact_lock($1, hashtext($2))", ACCOUNT_LOCK_NAMESPACE, account_name
    )
    return bool(taken)


async def _init_connection(conn: Conn) -> None:
    for kind in ("json", "jsonb"):
        await conn.set_type_codec(
            kind, encoder=dump_json, decoder=json.loads, schema="pg_catalog", format="text"
        )


def dump_json(value: Any) -> str:
    """Return ``value`` as compact JSON (decimals as strings, datetimes ISO, enums by value)."""
    return json.dumps(value, default=_json_default, separators=(",", ":"))


def _json_default(value: Any) -> Any:
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, Enum):
        return value.value
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")

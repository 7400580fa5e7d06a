"""The ledger's pool: its connections, transactions, JSON codec and per-account locks.

The ledger's own statements (``LedgerPool._db``, ``transaction``, ``account_transaction``)
leave no session state behind: no SET, LISTEN, cursor or session advisory lock (session
locks and LISTEN live on connections of their own, ``sessions.py``); transaction locks end
with their transaction. Their connections skip asyncpg's reset query on release (four
statements: unlock all, close cursors, unlisten, reset settings). A connection borrowed
from ``Ledger.pool`` directly, or whose use was cut short (cancelled, a lost connection,
an unexpected error), is still reset.
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

from tradebridge.errors import BridgeError
from tradebridge.store.migrate import malformed_url, unavailable

# Namespace of the per-account advisory locks (two-int form, so it never meets the
# single-bigint migration lock).
ACCOUNT_LOCK_NAMESPACE = 0x7462  # 'tb'

# Appended to a statement's condition, it commits that statement's transaction without
# waiting for the WAL flush (``synchronous_commit`` off for this transaction only: no session
# state is left, so poolers and the stateless pool are unaffected). For writes whose loss in
# a crash of the database server costs a lookup, never an order: the claim (the row goes back
# to pending) and the moves after the row's write-ahead, which was committed durably before
# the send (a lost answer or fill reads as a row still submitted or working, and reconcile
# reads it back from the broker). A later durable commit flushes them too: the WAL is one
# sequence. A crash of our own process loses nothing: the server has the commit.
LAZY_COMMIT = "set_config('synchronous_commit', 'off', true) is not null"

# A connection of its own or one borrowed from the pool (a string: the runtime classes are
# not subscriptable, only their stubs are).
Conn: TypeAlias = "asyncpg.Connection[asyncpg.Record] | PoolConnectionProxy[asyncpg.Record]"


class StatelessPool:
    """The pool's query methods for statements that leave no session state behind.

    The connection of each call skips asyncpg's reset query on release (``_reset_connection``).
    """

    __slots__ = ("_pool",)

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    @contextlib.asynccontextmanager
    async def acquire(self) -> AsyncIterator[Conn]:
        """Borrow a connection; released without the reset query unless the use was cut
        short (cancelled, a lost connection, an unexpected error)."""
        async with self._pool.acquire() as conn:
            try:
                yield conn
            except (BridgeError, asyncpg.PostgresError):
                # Refused by the server or by us: the session is as it was (a transaction
                # left open is rolled back on release).
                _mark_stateless(conn)
                raise
            _mark_stateless(conn)

    async def fetch(self, query: str, *args: Any) -> list[asyncpg.Record]:
        """Run one statement; return its records."""
        async with self.acquire() as conn:
            return await conn.fetch(query, *args)

    async def fetchrow(self, query: str, *args: Any) -> asyncpg.Record | None:
        """Run one statement; return its first record, if any."""
        async with self.acquire() as conn:
            return await conn.fetchrow(query, *args)

    async def fetchval(self, query: str, *args: Any) -> Any:
        """Run one statement; return the first column of its first record, if any."""
        async with self.acquire() as conn:
            return await conn.fetchval(query, *args)

    async def execute(self, query: str, *args: Any) -> str:
        """Run one statement; return its status tag."""
        async with self.acquire() as conn:
            return await conn.execute(query, *args)


class LedgerPool:
    """The pool every part of the ledger runs its statements on."""

    def __init__(self, pool: asyncpg.Pool, url: str) -> None:
        self._pool = pool
        # The ledger's own statements: no session state, so no reset query on release.
        self._db = StatelessPool(pool)
        self._url = url
        # Commit the claim and the moves after a durable write-ahead without waiting for the
        # WAL flush (``database.lazy_commits``; LAZY_COMMIT).
        self.lazy_commits = True

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
        """Open a transaction on a pooled connection (pass it as ``conn=`` to the methods).

        Only transaction-scoped state may be left on it (``pg_advisory_xact_lock``, ``SET
        LOCAL``): the connection goes back to the pool without asyncpg's reset query.
        """
        async with self._db.acquire() as conn, conn.transaction():
            yield conn

    @contextlib.asynccontextmanager
    async def account_transaction(self, account_name: str) -> AsyncIterator[Conn]:
        """Open a transaction holding the account's advisory lock until it ends."""
        async with self._db.acquire() as conn, conn.transaction():
            await lock_account(conn, account_name)
            yield conn


async def open_pool(
    url: str,
    *,
    min_size: int,
    max_size: int,
    connect_timeout_s: float,
    statement_timeout_s: float | None = None,
    warm: tuple[str, ...] = (),
) -> asyncpg.Pool:
    """Open the ledger's pool on ``url``; ``DatabaseUnavailable`` if it cannot be reached.

    ``warm``: statements each new connection prepares before its first use. A new
    PostgreSQL backend loads the catalog entries of every table, index and function a
    statement touches the first time it plans one: tens of milliseconds on the first alert,
    paid at start instead (with a pool floor, once per connection for the process's life).

    ``statement_timeout_s``: the longest any statement of the pool may take, waiting for the
    server included (asyncpg's ``command_timeout``): a statement over it raises
    ``TimeoutError`` (the database unavailable), and a connection whose statement cannot be
    cancelled within as long is closed. A connection a middlebox dropped without a word
    otherwise waits for its answer for good, and a live worker's row with it.
    """

    async def init(conn: Conn) -> None:
        await _init_connection(conn)
        prepared = []
        for statement in warm:
            try:
                prepared.append(await conn.prepare(statement))
            except asyncpg.PostgresError:
                # A ledger not migrated yet (serve --migrate prepares after migrating):
                # the statement is planned on first use, as without warming.
                break
        if isinstance(conn, _LedgerConnection):
            # Held for the connection's life: the server keeps them (pg_prepared_statements).
            conn.warmed = prepared

    try:
        return await asyncpg.create_pool(
            url,
            min_size=min_size,
            max_size=max_size,
            timeout=connect_timeout_s,
            command_timeout=statement_timeout_s,
            init=init if warm else _init_connection,
            connection_class=_LedgerConnection,
            reset=_reset_connection,
        )
    except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as e:
        raise unavailable(url, e) from None
    except ValueError:
        raise malformed_url() from None


class _LedgerConnection(asyncpg.Connection):
    """A pooled connection that knows when its last use left no session state behind."""

    __slots__ = ("_stateless", "warmed")

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._stateless = False
        self.warmed: list[Any] = []  # the statements prepared at its start (open_pool)

    def mark_stateless(self) -> None:
        """Note that this use ran only self-contained statements (no reset on release)."""
        self._stateless = True

    def take_stateless(self) -> bool:
        """Return whether the use now ending was stateless, and forget it."""
        stateless, self._stateless = self._stateless, False
        return stateless


async def _reset_connection(conn: asyncpg.Connection) -> None:
    # asyncpg's default reset (advisory unlock all, close cursors, unlisten, reset GUCs) is a
    # round trip of four statements on every release; the ledger's own uses leave nothing to
    # reset. asyncpg still rolls back an open transaction before calling this.
    if isinstance(conn, _LedgerConnection) and conn.take_stateless():
        return
    query = conn.get_reset_query()
    if query:
        await conn.execute(query)


def _mark_stateless(conn: Conn) -> None:
    # A transaction still open (not ours to end) is rolled back on release: reset it too.
    mark = getattr(conn, "mark_stateless", None)
    if mark is not None and not conn.is_in_transaction():
        mark()


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

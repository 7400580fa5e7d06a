"""supabase/tradebridge.sql on a local PostgreSQL with a stand-in for Supabase's auth schema.

App users (``authenticated``) insert their own pending signals and read their own statuses,
but cannot forge results, touch other users' rows, or read the broker audit.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest

from tradebridge.store.migrate import migrate

SUPABASE_SQL = (Path(__file__).parents[2] / "supabase" / "tradebridge.sql").read_text()
USER_A = str(uuid.UUID(int=1))
USER_B = str(uuid.UUID(int=2))

# What Supabase provides: the auth schema with auth.uid() reading the JWT's subject claim,
# and the API roles. Roles are per cluster, hence the guards.
SUPABASE_STAND_IN = """
do $$
begin
    if not exists (select 1 from pg_roles where rolname = 'authenticated') then
        create role authenticated nologin;
    end if;
    if not exists (select 1 from pg_roles where rolname = 'anon') then
        create role anon nologin;
    end if;
end
$$;
create schema auth;
create function auth.uid() returns uuid language sql stable as
    $$ select nullif(current_setting('request.jwt.claim.sub', true), '')::uuid $$;
grant usage on schema auth to authenticated, anon;
"""
APP_INSERT = """
insert into trading_signals (signal_id, strategy_name, instrument, side, order_type, quantity,
                             account_name, metadata)
values ($1, 'app', 'MNQZ6', 'buy', 'market', 1, 'ACC1', '{}')
"""


@pytest.fixture
async def supabase_db(empty_db: str) -> AsyncIterator[asyncpg.Connection]:
    """Return a superuser connection to a migrated database set up as on Supabase."""
    conn = await asyncpg.connect(empty_db)
    try:
        await conn.execute(SUPABASE_STAND_IN)
        await migrate(empty_db)
        await conn.execute(SUPABASE_SQL)
        yield conn
    finally:
        await conn.close()


async def _as_user(
    conn: asyncpg.Connection, user: str, sql: str, *args: object
) -> list[asyncpg.Record]:
    """Run ``sql`` as the ``authenticated`` role with ``user`` as the JWT subject."""
    async with conn.transaction():
        await conn.execute("set local role authenticated")
        await conn.execute("select set_config('request.jwt.claim.sub', $1, true)", user)
        return list(await conn.fetch(sql, *args))


async def test_app_user_inserts_own_signal_pending_and_owned(
    supabase_db: asyncpg.Connection,
) -> None:
    await _as_user(supabase_db, USER_A, APP_INSERT, "a-1")
    row = await supabase_db.fetchrow("select * from trading_signals where signal_id = 'a-1'")
    assert row["status"] == "pending"
    assert str(row["user_id"]) == USER_A


@pytest.mark.parametrize(
    ("column", "value"),
    [
        ("status", "'filled'"),
        ("tradovate_order_id", "'999'"),
        ("filled_qty", "1"),
        ("user_id", f"'{USER_B}'"),
        ("error_message", "''"),
    ],
)
async def test_app_user_cannot_insert_result_columns(
    supabase_db: asyncpg.Connection, column: str, value: str
) -> None:
    sql = (
        f"insert into trading_signals (signal_id, instrument, side, quantity, account_name, "
        f"{column}) values ('forged', 'MNQZ6', 'buy', 1, 'ACC1', {value})"
    )
    with pytest.raises(asyncpg.InsufficientPrivilegeError):
        await _as_user(supabase_db, USER_A, sql)
    assert await supabase_db.fetchval("select count(*) from trading_signals") == 0


async def test_app_user_without_identity_cannot_insert(supabase_db: asyncpg.Connection) -> None:
    with pytest.raises(asyncpg.InsufficientPrivilegeError, match="row-level security"):
        await _as_user(supabase_db, "", APP_INSERT, "anon-1")


@pytest.mark.parametrize(
    "sql",
    [
        "update trading_signals set status = 'cancelled'",
        "update trading_signals set quantity = 5",
        "delete from trading_signals",
        "select * from broker_calls",
        "insert into order_history (signal_id, event) values ('a-1', 'filled')",
    ],
)
async def test_app_user_cannot_change_rows_or_read_audit(
    supabase_db: asyncpg.Connection, sql: str
) -> None:
    await _as_user(supabase_db, USER_A, APP_INSERT, "a-1")
    with pytest.raises(asyncpg.InsufficientPrivilegeError):
        await _as_user(supabase_db, USER_A, sql)


async def test_app_user_reads_only_own_signals_and_history(
    supabase_db: asyncpg.Connection,
) -> None:
    await _as_user(supabase_db, USER_A, APP_INSERT, "a-1")
    await _as_user(supabase_db, USER_B, APP_INSERT, "b-1")
    await supabase_db.execute(
        "insert into order_history (signal_id, event) values ('a-1', 'claimed'), ('b-1', 'claimed')"
    )
    mine = await _as_user(supabase_db, USER_A, "select signal_id, status from trading_signals")
    history = await _as_user(supabase_db, USER_A, "select signal_id from order_history")
    assert [tuple(r) for r in mine] == [("a-1", "pending")]
    assert [tuple(r) for r in history] == [("a-1",)]


async def test_tradebridge_role_owns_tables_and_sees_every_row(
    supabase_db: asyncpg.Connection,
) -> None:
    await _as_user(supabase_db, USER_A, APP_INSERT, "a-1")
    await _as_user(supabase_db, USER_B, APP_INSERT, "b-1")
    owners = await supabase_db.fetch(
        "select tablename, tableowner from pg_tables where tablename in "
        "('trading_signals', 'order_history', 'broker_calls', 'tradebridge_schema_migrations')"
    )
    async with supabase_db.transaction():
        await supabase_db.execute("set local role tradebridge")
        updated = await supabase_db.execute(
            "update trading_signals set status = 'processing', claimed_by = 'w'"
        )
    assert {r["tableowner"] for r in owners} == {"tradebridge"}
    assert len(owners) == 4
    assert updated == "UPDATE 2"


async def test_supabase_sql_runs_twice(supabase_db: asyncpg.Connection) -> None:
    await supabase_db.execute(SUPABASE_SQL)
    policies = await supabase_db.fetchval(
        "select count(*) from pg_policies where policyname like 'tradebridge_%'"
    )
    assert policies == 3


async def test_supabase_sql_on_plain_postgres_skips_auth_parts(empty_db: str) -> None:
    await migrate(empty_db)
    conn = await asyncpg.connect(empty_db)
    try:
        await conn.execute(SUPABASE_SQL)
        rls = await conn.fetchval(
            "select relrowsecurity from pg_class where relname = 'trading_signals'"
        )
        policies = await conn.fetchval("select count(*) from pg_policies")
        default = await conn.fetchval(
            "select column_default from information_schema.columns "
            "where table_name = 'trading_signals' and column_name = 'user_id'"
        )
    finally:
        await conn.close()
    assert rls is True
    assert policies == 0
    assert default is None


async def test_supabase_sql_before_migrate_says_what_to_do(empty_db: str) -> None:
    conn = await asyncpg.connect(empty_db)
    try:
        with pytest.raises(asyncpg.RaiseError, match="run `tradebridge db migrate` first"):
            await conn.execute(SUPABASE_SQL)
    finally:
        await conn.close()

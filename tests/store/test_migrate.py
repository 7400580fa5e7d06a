"""Migrations: versioned, idempotent, serialised, and safe on a strategy's existing table."""

from __future__ import annotations

import asyncio
import hashlib
from decimal import Decimal
from pathlib import Path

import asyncpg
import pytest

from tradebridge.errors import MigrationFailed
from tradebridge.store import migrate as migrations
from tradebridge.store.adopt import AdoptionConflict
from tradebridge.store.migrate import load_migrations, migrate, status

# A strategy's own table, with exactly the documented columns and types it might pick.
STRATEGY_TABLE = """
create table trading_signals (
    id bigserial primary key,
    signal_id text unique not null,
    strategy_name text,
    instrument text,
    side text,
    order_type text,
    quantity integer,
    price double precision,
    stop_loss double precision,
    take_profit double precision,
    account_name text,
    metadata jsonb,
    account_id text,
    status text,
    tradovate_order_id text,
    error_message text,
    placement_attempts integer,
    last_attempt_at timestamptz,
    created_at timestamptz default now(),
    updated_at timestamptz
)
"""
STRATEGY_ROWS = """
insert into trading_signals (signal_id, strategy_name, instrument, side, order_type, quantity,
                             price, account_name, metadata, status)
values ('old-1', 'orb', 'MNQZ6', 'buy', 'limit', 2, 21000.25, 'ACC1', '{"a": 1}', 'pending'),
       ('old-2', 'orb', 'MNQZ6', 'sell', 'market', 1, null, 'ACC1', null, 'filled')
"""


async def _columns(conn: asyncpg.Connection, table: str) -> set[str]:
    rows = await conn.fetch(
        "select column_name from information_schema.columns where table_name = $1", table
    )
    return {r["column_name"] for r in rows}


async def test_migrate_empty_database_creates_ledger_tables(empty_db: str) -> None:
    states = await migrate(empty_db)
    assert [s.applied_now for s in states] == [True] * len(load_migrations())
    conn = await asyncpg.connect(empty_db)
    try:
        for table in ("trading_signals", "order_history", "broker_calls"):
            assert await conn.fetchval("select to_regclass($1)", table) is not None
        columns = await _columns(conn, "trading_signals")
        rows = await conn.fetch("select * from tradebridge_schema_migrations order by version")
    finally:
        await conn.close()
    assert {"filled_qty", "client_order_id", "ts_submitted", "group_id", "seq"} <= columns
    assert [(r["version"], r["name"]) for r in rows] == [
        (m.version, m.name) for m in load_migrations()
    ]


async def test_migrate_twice_second_run_is_a_no_op_with_same_checksums(empty_db: str) -> None:
    first = await migrate(empty_db)
    second = await migrate(empty_db)
    assert not any(s.applied_now for s in second)
    assert [(s.version, s.checksum, s.applied_at) for s in first] == [
        (s.version, s.checksum, s.applied_at) for s in second
    ]
    expected = [hashlib.sha256(m.sql.encode()).hexdigest() for m in load_migrations()]
    assert [s.checksum for s in second] == expected


async def test_migrate_on_strategy_table_keeps_rows_and_adds_columns(empty_db: str) -> None:
    conn = await asyncpg.connect(empty_db)
    try:
        await conn.execute(STRATEGY_TABLE)
        await conn.execute(STRATEGY_ROWS)
        await migrate(empty_db)
        rows = await conn.fetch("select * from trading_signals order by id")
        columns = await _columns(conn, "trading_signals")
        unvalidated = await conn.fetch(
            "select conname from pg_constraint "
            "where conrelid = 'trading_signals'::regclass and not convalidated"
        )
    finally:
        await conn.close()
    assert [r["signal_id"] for r in rows] == ["old-1", "old-2"]
    assert rows[0]["price"] == 21000.25
    assert rows[0]["metadata"] == '{"a": 1}'
    assert rows[1]["status"] == "filled"
    assert {"filled_qty", "ts_final", "claimed_by", "time_in_force", "source"} <= columns
    assert [r["seq"] for r in rows] == [1, 2]
    assert unvalidated == []  # the existing rows satisfy every check


async def test_migrate_on_table_with_unknown_status_stops_naming_rows_and_fix(
    empty_db: str,
) -> None:
    conn = await asyncpg.connect(empty_db)
    try:
        await conn.execute(STRATEGY_TABLE)
        await conn.execute(
            "insert into trading_signals (signal_id, side, order_type, status) "
            "values ('legacy', 'LONG', 'market', 'weird')"
        )
        with pytest.raises(AdoptionConflict) as raised:
            await migrate(empty_db)
        columns = await _columns(conn, "trading_signals")
        survivor = await conn.fetchval("select status from trading_signals")
    finally:
        await conn.close()
    [conflict] = raised.value.plan.conflicts
    assert (
        conflict.what
        == "1 row of trading_signals with status 'weird', which tradebridge does not know"
    )
    assert conflict.fix is not None
    assert conflict.fix.startswith(
        "update trading_signals set status = 'failed' where status = 'weird'"
    )
    assert "filled_qty" not in columns  # nothing was changed
    assert survivor == "weird"


async def test_migrate_duplicate_signal_ids_fails_clearly_and_rolls_back(empty_db: str) -> None:
    conn = await asyncpg.connect(empty_db)
    try:
        await conn.execute(
            "create table trading_signals (signal_id text not null, side text); "
            "insert into trading_signals values ('dup', 'buy'), ('dup', 'sell')"
        )
        with pytest.raises(MigrationFailed, match=r"duplicated signal_id values \(e\.g\. dup\)"):
            await migrate(empty_db)
        columns = await _columns(conn, "trading_signals")
        bookkeeping = await conn.fetchval("select to_regclass('tradebridge_schema_migrations')")
    finally:
        await conn.close()
    assert columns == {"signal_id", "side"}
    assert bookkeeping is None  # nothing was changed


async def test_migrate_from_two_connections_at_once_applies_each_migration_once(
    empty_db: str,
) -> None:
    results = await asyncio.gather(*(migrate(empty_db) for _ in range(4)))
    applied_now = [s.version for states in results for s in states if s.applied_now]
    assert sorted(applied_now) == [m.version for m in load_migrations()]
    conn = await asyncpg.connect(empty_db)
    try:
        count = await conn.fetchval("select count(*) from tradebridge_schema_migrations")
    finally:
        await conn.close()
    assert count == len(load_migrations())


async def test_migrate_changed_applied_file_is_refused(
    empty_db: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    await migrate(empty_db)
    original = load_migrations()
    edited = [
        migrations.Migration(m.version, m.name, m.sql + "\n-- edited", "0" * 64) for m in original
    ]
    monkeypatch.setattr(migrations, "load_migrations", lambda: edited)
    with pytest.raises(MigrationFailed, match="applied migrations must not change"):
        await migrate(empty_db)
    states = await status(empty_db)
    assert [s.checksum_matches for s in states] == [False] * len(original)


async def test_status_on_empty_database_lists_every_migration_pending(empty_db: str) -> None:
    states = await status(empty_db)
    assert [s.is_applied for s in states] == [False] * len(load_migrations())


def test_migration_files_are_numbered_and_packaged() -> None:
    sql_dir = Path(migrations.__file__).parent / "sql"
    files = sorted(p.name for p in sql_dir.glob("*.sql"))
    assert files == [f"{m.version:04d}_{m.name}.sql" for m in load_migrations()]
    assert load_migrations()[0].version == 1


async def test_strategy_plain_insert_after_migrate_gets_defaults(empty_db: str) -> None:
    conn = await asyncpg.connect(empty_db)
    try:
        await conn.execute(STRATEGY_TABLE)
        await migrate(empty_db)
        await conn.execute(
            "insert into trading_signals (signal_id, strategy_name, instrument, side, "
            "order_type, quantity, price, stop_loss, take_profit, account_name, metadata) "
            "values ('n1', 's', 'MNQZ6', 'buy', 'limit', 1, 21000.5, 0, null, 'ACC1', '{}')"
        )
        row = await conn.fetchrow("select * from trading_signals where signal_id = 'n1'")
    finally:
        await conn.close()
    assert row["status"] == "pending"
    assert row["placement_attempts"] == 0
    assert row["filled_qty"] == Decimal(0)
    assert row["created_at"] is not None
    assert row["updated_at"] is not None


async def test_migration_sql_itself_runs_twice_outside_the_runner(empty_db: str) -> None:
    conn = await asyncpg.connect(empty_db)
    try:
        for migration in load_migrations():
            await conn.execute(migration.sql)
            await conn.execute(migration.sql)
        triggers = await conn.fetchval(
            "select count(*) from pg_trigger where tgname like 'tradebridge_%'"
        )
    finally:
        await conn.close()
    # 0007 adds the kill switches' two, 0013 the inserted-pending check, 0015 the deleted event,
    # 0016 the truncated rows' events
    assert triggers == 11

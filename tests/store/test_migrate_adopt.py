"""``db migrate`` on the deployment tradebridge replaces (issue 11, part B): its exact tables,
rows in each of its statuses and its history; what cannot be adapted; a ledger the workers
cannot use. The end-to-end side (old inserts placed on the simulator) is in
tests/tracking/test_legacy_rows.py; the CLI's plan and exit codes in test_migrate_cli.py."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from decimal import Decimal

import asyncpg
import pytest

from _support.legacy import LEGACY_ROWS, OLD_CANCEL, OLD_INSERT, create_legacy
from tradebridge.errors import MigrationFailed
from tradebridge.store import adopt
from tradebridge.store.adopt import AdoptionConflict
from tradebridge.store.ledger import Ledger
from tradebridge.store.migrate import (
    _BOOKKEEPING,
    MigrationReport,
    load_migrations,
    migrate,
    migrate_report,
)

LEGACY_TABLE = f"order_history_legacy_{datetime.now(UTC):%Y%m%d}"
# The previous deployment's statuses, and what each row has after the migration.
MAPPED = {
    "old-pending": "pending",
    "old-processing": "needs_review",
    "old-placed": "needs_review",
    "old-failed": "failed",
    "old-cancelled": "cancelled",
}


@pytest.fixture
async def legacy_db(empty_db: str) -> str:
    """Return the URL of a database with the previous deployment's tables and rows."""
    await create_legacy(empty_db)
    return empty_db


@pytest.fixture
async def adopted(legacy_db: str) -> MigrationReport:
    """Migrate the previous deployment's database; return what the run did."""
    return await migrate_report(legacy_db)


@pytest.fixture
async def conn(legacy_db: str) -> AsyncIterator[asyncpg.Connection]:
    """Return a superuser connection to the (legacy) database."""
    opened = await asyncpg.connect(legacy_db)
    try:
        yield opened
    finally:
        await opened.close()


async def _columns(conn: asyncpg.Connection, table: str) -> dict[str, str]:
    rows = await conn.fetch(
        "select attname, format_type(atttypid, atttypmod) as type from pg_attribute "
        "where attrelid = to_regclass($1) and attnum > 0 and not attisdropped",
        table,
    )
    return {r["attname"]: r["type"] for r in rows}


async def test_migrate_previous_deployment_maps_each_status_and_keeps_every_row(
    conn: asyncpg.Connection, legacy_db: str
) -> None:
    before = {r["signal_id"]: r for r in await conn.fetch("select * from trading_signals")}
    report = await migrate_report(legacy_db)
    after = {r["signal_id"]: r for r in await conn.fetch("select * from trading_signals")}
    assert {k: r["status"] for k, r in after.items()} == MAPPED
    assert sorted(report.mapped) == ["old-placed", "old-processing"]
    for signal_id, row in before.items():  # the old columns keep their values
        for column in ("id", "strategy_name", "quantity", "price", "account_name", "metadata",
                       "tradovate_order_id", "placement_attempts", "created_at"):  # fmt: skip
            assert after[signal_id][column] == row[column], (signal_id, column)
    assert after["old-failed"]["error_message"] == "Tradovate said no"
    assert after["old-placed"]["error_message"].startswith(
        "needs review (legacy placed): the previous bridge placed this order"
    )
    assert after["old-processing"]["error_message"].startswith(
        "needs review (legacy processing): the previous bridge had claimed this row"
    )
    assert after["old-pending"]["price"] == Decimal("21000.25")


async def test_migrate_previous_deployment_records_why_each_row_was_moved(
    conn: asyncpg.Connection, adopted: MigrationReport
) -> None:
    events = await conn.fetch(
        "select signal_id, detail from order_history where event = 'legacy_adopted' "
        "order by signal_id"
    )
    assert [(e["signal_id"], *_pick(e["detail"])) for e in events] == [
        ("old-placed", "placed", "needs_review", "880001"),
        ("old-processing", "processing", "needs_review", None),
    ]


def _pick(detail: str) -> tuple[object, ...]:
    import json

    data = json.loads(detail)
    return data["legacy_status"], data["to"], data["tradovate_order_id"]


async def test_migrate_previous_deployment_moves_order_history_aside_and_copies_events(
    conn: asyncpg.Connection, adopted: MigrationReport
) -> None:
    legacy = await _columns(conn, LEGACY_TABLE)
    kept = await conn.fetchval(f'select count(*) from "{LEGACY_TABLE}"')
    copied = await conn.fetch(
        "select signal_id, event from order_history where event like 'legacy\\_%' "
        "and event <> 'legacy_adopted' order by signal_id, id"
    )
    assert set(legacy) == {"id", "signal_id", "event_type", "event_data", "created_at"}
    assert kept == len(LEGACY_ROWS) * 2 - 1 + 1  # created, status changed, order placed
    assert [(r["signal_id"], r["event"]) for r in copied if r["signal_id"] == "old-placed"] == [
        ("old-placed", "legacy_created"),
        ("old-placed", "legacy_status_changed"),
        ("old-placed", "legacy_order_placed"),
    ]
    assert len(copied) == kept
    assert await _columns(conn, "order_history") == {
        "id": "bigint", "signal_id": "text", "event": "text", "detail": "jsonb",
        "created_at": "timestamp with time zone",
    }  # fmt: skip
    # The old foreign key (on delete cascade) still works: tradebridge's append-only trigger
    # was never attached to the legacy table.
    await conn.execute("delete from trading_signals where signal_id = 'old-cancelled'")
    assert await conn.fetchval(f'select count(*) from "{LEGACY_TABLE}"') == kept - 2


async def test_migrate_previous_deployment_schema_is_what_the_workers_need(
    conn: asyncpg.Connection, adopted: MigrationReport
) -> None:
    columns = await _columns(conn, "trading_signals")
    checks = {
        r["conname"]: r["convalidated"]
        for r in await conn.fetch(
            "select conname, convalidated from pg_constraint "
            "where conrelid = 'trading_signals'::regclass and contype = 'c'"
        )
    }
    nullable = {
        r["attname"]
        for r in await conn.fetch(
            "select attname from pg_attribute where attrelid = 'trading_signals'::regclass "
            "and attnum > 0 and not attnotnull"
        )
    }
    rls = {
        r["relname"]: r["relrowsecurity"]
        for r in await conn.fetch(
            "select relname, relrowsecurity from pg_class where relname = any($1::text[])",
            ["order_history", "broker_calls", "webhook_alerts"],
        )
    }
    assert columns["id"] == "uuid"  # kept: still the primary key
    assert columns["signal_id"] == columns["status"] == columns["account_name"] == "text"
    assert columns["price"] == columns["stop_loss"] == columns["take_profit"] == "numeric"
    assert columns["quantity"] == "integer"
    assert "trading_signals_order_type_check" not in checks  # refused 'stoplimit'
    assert checks["trading_signals_status_check"] is True  # tradebridge's, validated
    assert checks["trading_signals_side_check"] is True  # buy/sell: kept
    assert checks["trading_signals_quantity_check"] is True  # > 0: kept
    assert {"strategy_name", "instrument", "side", "order_type", "quantity"} <= nullable
    assert rls == {"order_history": True, "broker_calls": True, "webhook_alerts": True}
    assert await adopt.verify(conn) == []
    assert await conn.fetchval(
        "select count(*) from pg_trigger where tgname = 'update_trading_signals_updated_at'"
    )


async def test_migrate_previous_deployment_second_run_changes_nothing(
    legacy_db: str, adopted: MigrationReport
) -> None:
    again = await migrate_report(legacy_db)
    assert not again.plan.adapts
    assert not again.mapped
    assert not any(s.applied_now for s in again.states)
    assert {s.kind for s in again.plan.steps} <= {"keep", "note"}


async def test_adopted_ledger_claims_only_pending_rows_and_old_inserts_work(
    conn: asyncpg.Connection, adopted: MigrationReport, legacy_db: str
) -> None:
    await conn.execute(OLD_INSERT, "new-1", "orb", "MNQZ6", "buy", "market", 1, None, "ACC1")
    async with await Ledger.connect(legacy_db) as ledger:
        claimed = await ledger.claim_next("w1", limit=5, per_account=5)
        history = await ledger.history("old-pending")
    assert [r.signal_id for r in claimed] == ["old-pending", "new-1"]
    assert history[-1].event == "claimed"
    assert [e.event for e in history[:2]] == ["legacy_created", "claimed"]


async def test_old_cancel_on_pending_row_is_honoured_and_recorded(
    conn: asyncpg.Connection, adopted: MigrationReport, legacy_db: str
) -> None:
    await conn.execute(OLD_INSERT, "new-1", "orb", "MNQZ6", "buy", "market", 1, None, "ACC1")
    assert await conn.execute(OLD_CANCEL, "new-1") == "UPDATE 1"
    async with await Ledger.connect(legacy_db) as ledger:
        row = await ledger.get("new-1")
        history = await ledger.history("new-1")
        claimed = await ledger.claim_next("w1", limit=5, per_account=5)
    assert row is not None
    assert row.status == "cancelled"
    assert row.ts_final is not None
    assert history[-1].event == "cancelled"
    assert {k: history[-1].detail[k] for k in ("from", "to", "via", "by")} == {
        "from": "pending", "to": "cancelled", "via": "update", "by": "postgres",
    }  # fmt: skip
    assert "new-1" not in [r.signal_id for r in claimed]


async def test_old_cancel_on_claimed_row_changes_nothing_and_a_forced_one_is_refused(
    conn: asyncpg.Connection, adopted: MigrationReport, legacy_db: str
) -> None:
    async with await Ledger.connect(legacy_db) as ledger:
        [claimed] = await ledger.claim_next("w1")
        # The old function's WHERE status = 'pending' no longer matches: nothing happens.
        assert await conn.execute(OLD_CANCEL, claimed.signal_id) == "UPDATE 0"
        with pytest.raises(asyncpg.PostgresError, match="illegal status move processing"):
            await conn.execute(
                "update trading_signals set status = 'cancelled' where signal_id = $1",
                claimed.signal_id,
            )
        row = await ledger.get(claimed.signal_id)
    assert row is not None
    assert row.status == "processing"


async def test_migrate_after_an_earlier_migrate_took_the_old_tables_repairs_them(
    conn: asyncpg.Connection, legacy_db: str
) -> None:
    # What `db migrate` did before it inspected anything: every migration ran on the old
    # tables, kept the old order_history and attached tradebridge's triggers to it.
    await conn.execute(_BOOKKEEPING)
    for migration in load_migrations()[:5]:
        await conn.execute(migration.sql)
        await conn.execute(
            "insert into tradebridge_schema_migrations (version, name, checksum) "
            "values ($1, $2, $3)",
            migration.version,
            migration.name,
            migration.checksum,
        )
    async with await Ledger.connect(legacy_db) as ledger:
        with pytest.raises(asyncpg.PostgresError):  # every claim failed
            await ledger.claim_next("w1")
    report = await migrate_report(legacy_db)
    async with await Ledger.connect(legacy_db) as ledger:
        claimed = await ledger.claim_next("w1")
    legacy_triggers = await conn.fetchval(
        "select count(*) from pg_trigger where tgrelid = to_regclass($1)", LEGACY_TABLE
    )
    later = [m.version for m in load_migrations()[5:]]
    assert [s.version for s in report.states if s.applied_now] == later
    assert [r.signal_id for r in claimed] == ["old-pending"]
    assert legacy_triggers == 2  # the foreign key's own, none of tradebridge's
    assert await adopt.verify(conn) == []


CONFLICTS = [
    (
        (
            "alter table trading_signals drop constraint trading_signals_quantity_check; "
            "alter table trading_signals alter column quantity type text"
        ),
        "trading_signals.quantity is text: tradebridge needs one of",
        'convert it (alter table trading_signals alter column "quantity" type numeric',
    ),
    (
        (
            "alter table trading_signals add column desk text; update trading_signals set "
            "desk = 'NY'; alter table trading_signals alter column desk set not null"
        ),
        "trading_signals.desk is NOT NULL without a default",
        'alter table trading_signals alter column "desk" set default',
    ),
    (
        "create view open_signals as select signal_id from trading_signals",
        (
            "widen trading_signals.signal_id from character varying(100) to text: view "
            "open_signals depends on it"
        ),
        "drop view open_signals, run `tradebridge db migrate`, then create it again",
    ),
    (
        (
            "alter table trading_signals drop constraint trading_signals_status_check; "
            "update trading_signals set status = 'queued' where signal_id = 'old-pending'"
        ),
        "1 row of trading_signals with status 'queued', which tradebridge does not know",
        "update trading_signals set status = 'failed' where status = 'queued'",
    ),
]


@pytest.mark.parametrize(("change", "what", "fix"), CONFLICTS)
async def test_migrate_conflict_stops_naming_it_and_its_fix_and_changes_nothing(
    conn: asyncpg.Connection, legacy_db: str, change: str, what: str, fix: str
) -> None:
    await conn.execute(change)
    before = await _columns(conn, "trading_signals")
    with pytest.raises(AdoptionConflict) as raised:
        await migrate(legacy_db)
    [conflict] = raised.value.plan.conflicts
    assert conflict.what.startswith(what)
    assert conflict.fix is not None
    assert conflict.fix.startswith(fix)
    assert str(raised.value).startswith("1 conflict with what tradebridge needs; nothing was")
    assert await _columns(conn, "trading_signals") == before
    assert await conn.fetchval("select to_regclass($1)", LEGACY_TABLE) is None
    assert await conn.fetchval("select to_regclass('tradebridge_schema_migrations')") is None


async def test_migrate_on_a_ledger_the_workers_cannot_use_fails_naming_why(
    ledger_db: str,
) -> None:
    conn = await asyncpg.connect(ledger_db)
    try:
        # Disabled by hand to fix rows, and forgotten.
        await conn.execute(
            "alter table trading_signals disable trigger tradebridge_signals_before_update"
        )
        with pytest.raises(MigrationFailed) as raised:
            await migrate(ledger_db)
    finally:
        await conn.close()
    assert str(raised.value) == (
        "the workers could not use this ledger, so nothing was changed: trigger "
        "tradebridge_signals_before_update on trading_signals is disabled (alter table "
        "trading_signals enable trigger tradebridge_signals_before_update)"
    )

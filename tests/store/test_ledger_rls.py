"""supabase/tradebridge.sql on a local PostgreSQL set up as Supabase sets up a project.

App users (``authenticated``) insert pending signals for the accounts mapped to them (in
those accounts' id namespace) and read their own statuses, but cannot forge results, trade
or read other users' accounts, take ids other users need, or read the broker audit and the
webhook log. ``anon`` gets nothing. The documented ``tradebridge`` role works for every path
the bridge uses (the end-to-end ``serve`` case: tests/runtime/test_serve_supabase.py).
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import asyncpg
import pytest

from _support.supabase import SUPABASE_SQL, as_tradebridge, set_up_supabase
from tradebridge.store.ledger import Ledger, NewAlert, NewSignal
from tradebridge.store.migrate import migrate

USER_A = str(uuid.UUID(int=1))
USER_B = str(uuid.UUID(int=2))
# Each user's account; an app user's signal ids live in its account's namespace.
OWNERS = {"ACC1": USER_A, "ACC2": USER_B}
APP_INSERT = """
insert into trading_signals (signal_id, strategy_name, instrument, side, order_type, quantity,
                             account_name, metadata)
values ($1, 'app', 'MNQZ6', 'buy', 'market', 1, $2, '{}')
"""
TABLES = [
    "trading_signals", "order_history", "broker_calls", "webhook_alerts", "account_risk",
    "account_owners", "tradebridge_schema_migrations", "kill_switches", "kill_switch_events",
    "notification_state", "notified_signals", "notifications", "position_check_turns",
    "position_checks", "dashboard_logouts",
]  # fmt: skip


@pytest.fixture
async def supabase_db(empty_db: str) -> AsyncIterator[asyncpg.Connection]:
    """Return a superuser connection to a migrated database set up as on Supabase, where
    user A owns ACC1 and user B owns ACC2."""
    await set_up_supabase(empty_db)
    conn = await asyncpg.connect(empty_db)
    try:
        await conn.executemany(
            "insert into account_owners (account_name, user_id) values ($1, $2)",
            list(OWNERS.items()),
        )
        yield conn
    finally:
        await conn.close()


async def _as_role(
    conn: asyncpg.Connection, role: str, sql: str, *args: object
) -> list[asyncpg.Record]:
    """Run ``sql`` as ``role`` (no JWT)."""
    async with conn.transaction():
        await conn.execute(f"set local role {role}")
        return list(await conn.fetch(sql, *args))


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
    await _as_user(supabase_db, USER_A, APP_INSERT, "ACC1:a-1", "ACC1")
    row = await supabase_db.fetchrow("select * from trading_signals where signal_id = 'ACC1:a-1'")
    assert row["status"] == "pending"
    assert str(row["user_id"]) == USER_A


@pytest.mark.parametrize(
    ("signal_id", "account"),
    [
        ("ACC2:a-1", "ACC2"),  # another user's account
        ("ACC9:a-1", "ACC9"),  # an account nobody owns
        ("ACC1:a-1", None),  # no account
    ],
)
async def test_app_user_cannot_insert_for_an_account_not_mapped_to_them(
    supabase_db: asyncpg.Connection, signal_id: str, account: str | None
) -> None:
    with pytest.raises(asyncpg.InsufficientPrivilegeError, match="row-level security"):
        await _as_user(supabase_db, USER_A, APP_INSERT, signal_id, account)
    assert await supabase_db.fetchval("select count(*) from trading_signals") == 0


@pytest.mark.parametrize("signal_id", ["orb-0931", "ACC2:orb-0931", "ACC10:orb-0931", "acc1:x"])
async def test_app_user_cannot_take_an_id_outside_their_accounts_namespace(
    supabase_db: asyncpg.Connection, signal_id: str
) -> None:
    # The id another user's strategy needs later stays free: only 'ACC1:…' ids are A's.
    with pytest.raises(asyncpg.InsufficientPrivilegeError, match="row-level security"):
        await _as_user(supabase_db, USER_A, APP_INSERT, signal_id, "ACC1")
    if signal_id.startswith("ACC2:"):
        await _as_user(supabase_db, USER_B, APP_INSERT, signal_id, "ACC2")
        assert await supabase_db.fetchval("select count(*) from trading_signals") == 1


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
        f"{column}) values ('ACC1:forged', 'MNQZ6', 'buy', 1, 'ACC1', {value})"
    )
    with pytest.raises(asyncpg.InsufficientPrivilegeError):
        await _as_user(supabase_db, USER_A, sql)
    assert await supabase_db.fetchval("select count(*) from trading_signals") == 0


async def test_app_user_without_identity_cannot_insert(supabase_db: asyncpg.Connection) -> None:
    with pytest.raises(asyncpg.InsufficientPrivilegeError, match="row-level security"):
        await _as_user(supabase_db, "", APP_INSERT, "ACC1:anon-1", "ACC1")


@pytest.mark.parametrize(
    "sql",
    [
        "update trading_signals set status = 'filled'",
        "update trading_signals set quantity = 5",
        "delete from trading_signals",
        "select * from broker_calls",
        "insert into order_history (signal_id, event) values ('ACC1:a-1', 'filled')",
        "select * from webhook_alerts",
        "insert into account_owners (account_name, user_id) values ('ACC3', auth.uid())",
        "update account_owners set user_id = auth.uid()",
        "delete from account_owners",
    ],
)
async def test_app_user_cannot_change_rows_or_read_audit(
    supabase_db: asyncpg.Connection, sql: str
) -> None:
    await _as_user(supabase_db, USER_A, APP_INSERT, "ACC1:a-1", "ACC1")
    with pytest.raises(asyncpg.InsufficientPrivilegeError):
        await _as_user(supabase_db, USER_A, sql)


async def test_app_user_reads_only_own_signals_and_history(
    supabase_db: asyncpg.Connection,
) -> None:
    await _as_user(supabase_db, USER_A, APP_INSERT, "ACC1:a-1", "ACC1")
    await _as_user(supabase_db, USER_B, APP_INSERT, "ACC2:b-1", "ACC2")
    # Rows tradebridge stored (webhook, CLI: no user_id) on each user's account.
    for signal_id, account in (("tv-1", "ACC1"), ("tv-2", "ACC2"), ("tv-3", "ACC9")):
        await supabase_db.execute(
            "insert into trading_signals (signal_id, instrument, side, quantity, account_name) "
            "values ($1, 'MNQZ6', 'buy', 1, $2)",
            signal_id,
            account,
        )
    await supabase_db.execute(
        "insert into order_history (signal_id, event) values "
        "('ACC1:a-1', 'claimed'), ('ACC2:b-1', 'claimed'), ('tv-1', 'claimed'), "
        "('tv-2', 'claimed')"
    )
    mine = await _as_user(
        supabase_db, USER_A, "select signal_id, status from trading_signals order by signal_id"
    )
    history = await _as_user(
        supabase_db, USER_A, "select signal_id from order_history order by signal_id"
    )
    owners = await _as_user(supabase_db, USER_A, "select account_name from account_owners")
    assert [tuple(r) for r in mine] == [("ACC1:a-1", "pending"), ("tv-1", "pending")]
    assert [tuple(r) for r in history] == [("ACC1:a-1",), ("tv-1",)]
    assert [tuple(r) for r in owners] == [("ACC1",)]


@pytest.mark.parametrize("table", TABLES)
@pytest.mark.parametrize(
    "statement",
    ["select * from {t}", "insert into {t} default values", "delete from {t}",
     "truncate {t}"],
)  # fmt: skip
async def test_anon_gets_nothing(
    supabase_db: asyncpg.Connection, table: str, statement: str
) -> None:
    with pytest.raises(asyncpg.InsufficientPrivilegeError, match="permission denied"):
        await _as_role(supabase_db, "anon", statement.format(t=table))


@pytest.mark.parametrize("role", ["anon", "authenticated"])
async def test_api_roles_cannot_call_tradebridge_functions_or_sequences(
    supabase_db: asyncpg.Connection, role: str
) -> None:
    with pytest.raises(asyncpg.InsufficientPrivilegeError, match="permission denied"):
        await _as_role(
            supabase_db, role, "select tradebridge_status_move_allowed('failed', 'pending', false)"
        )
    with pytest.raises(asyncpg.InsufficientPrivilegeError, match="permission denied"):
        await _as_role(supabase_db, role, "select nextval('order_history_id_seq')")


async def test_every_table_has_rls_an_owner_and_only_the_documented_grants(
    supabase_db: asyncpg.Connection,
) -> None:
    # Every table of the schema, so that a table a later migration adds cannot be missed.
    rows = await supabase_db.fetch(
        "select c.relname, c.relrowsecurity, pg_get_userbyid(c.relowner) as owner, "
        "       coalesce((select array_agg(distinct a.grantee::regrole::text "
        "                          || ':' || a.privilege_type) "
        "                   from aclexplode(c.relacl) a "
        "                  where a.grantee <> c.relowner), '{}') as grants "
        "  from pg_class c where c.relnamespace = 'public'::regnamespace and c.relkind = 'r' "
        " order by c.relname"
    )
    found = {r["relname"]: (r["relrowsecurity"], r["owner"], sorted(r["grants"])) for r in rows}
    service = ["service_role:SELECT"]
    assert found == {
        "account_owners": (True, "tradebridge", ["authenticated:SELECT", *service]),
        "account_risk": (True, "tradebridge", []),
        "broker_calls": (True, "tradebridge", []),
        "dashboard_logouts": (True, "tradebridge", []),
        "kill_switch_events": (True, "tradebridge", []),
        "kill_switches": (True, "tradebridge", []),
        "notification_state": (True, "tradebridge", []),
        "notifications": (True, "tradebridge", []),
        "notified_signals": (True, "tradebridge", []),
        "order_history": (True, "tradebridge", ["authenticated:SELECT", *service]),
        "position_check_turns": (True, "tradebridge", []),
        "position_checks": (True, "tradebridge", []),
        "trading_signals": (
            True, "tradebridge",
            ["authenticated:SELECT", "service_role:INSERT", "service_role:SELECT"],
        ),
        "tradebridge_schema_migrations": (True, "tradebridge", []),
        "webhook_alerts": (True, "tradebridge", []),
    }  # fmt: skip


async def test_service_role_queues_and_reads_signals_but_sets_no_result(
    supabase_db: asyncpg.Connection,
) -> None:
    await _as_role(supabase_db, "service_role", APP_INSERT, "srv-1", "ACC9")
    read = await _as_role(supabase_db, "service_role", "select signal_id from trading_signals")
    with pytest.raises(asyncpg.InsufficientPrivilegeError):
        await _as_role(supabase_db, "service_role", "update trading_signals set status = 'filled'")
    assert [tuple(r) for r in read] == [("srv-1",)]


async def test_tradebridge_role_owns_tables_and_sees_every_row(
    supabase_db: asyncpg.Connection,
) -> None:
    await _as_user(supabase_db, USER_A, APP_INSERT, "ACC1:a-1", "ACC1")
    await _as_user(supabase_db, USER_B, APP_INSERT, "ACC2:b-1", "ACC2")
    owners = await supabase_db.fetch(
        "select tablename, tableowner from pg_tables where tablename = any($1::text[])", TABLES
    )
    async with supabase_db.transaction():
        await supabase_db.execute("set local role tradebridge")
        updated = await supabase_db.execute(
            "update trading_signals set status = 'processing', claimed_by = 'w'"
        )
    assert {r["tableowner"] for r in owners} == {"tradebridge"}
    assert len(owners) == len(TABLES)
    assert updated == "UPDATE 2"


async def test_tradebridge_role_stores_webhook_alerts_and_places_rows(
    supabase_db: asyncpg.Connection, empty_db: str
) -> None:
    # Before, webhook_alerts stayed postgres's with no grant to tradebridge: every webhook
    # alert was answered 503 ("permission denied for table webhook_alerts").
    async with await Ledger.connect(as_tradebridge(empty_db)) as ledger:
        stored = await ledger.insert_alert(
            NewAlert(received_at=datetime.now(UTC), format="tradebridge", outcome="accepted",
                     idempotency_key="k-1", payload={"action": "buy"}),
            [NewSignal(signal_id="tv-k1-1", account_name="ACC1", instrument="MNQZ6",
                       side="buy", quantity=Decimal(1), order_type="market")],
        )  # fmt: skip
        again = await ledger.insert_alert(
            NewAlert(received_at=datetime.now(UTC), format="tradebridge", outcome="accepted",
                     idempotency_key="k-1"),
            [],
        )  # fmt: skip
        [claimed] = await ledger.claim_next("w1")
        await ledger.requeue_stale(older_than=timedelta(0), claimed_by="w1")
        states = await migrate(as_tradebridge(empty_db))
    assert not stored.duplicate
    assert again.duplicate
    assert again.signal_ids == ("tv-k1-1",)
    assert claimed.signal_id == "tv-k1-1"
    assert all(s.is_applied and not s.applied_now for s in states)


async def test_supabase_sql_runs_twice(supabase_db: asyncpg.Connection) -> None:
    await supabase_db.execute(SUPABASE_SQL)
    policies = await supabase_db.fetchval(
        "select count(*) from pg_policies where policyname like 'tradebridge_%'"
    )
    assert policies == 5


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

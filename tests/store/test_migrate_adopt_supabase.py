"""The previous deployment's tables on a Supabase-like project (its API roles, Supabase's
default grants, its RLS policy allowing everything to ``authenticated``): ``db migrate`` as
``postgres``, then supabase/tradebridge.sql, then its strategies' inserts and cancels as a
signed-in app user (docs/migrating.md)."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator

import asyncpg
import pytest

from _support.legacy import OLD_CANCEL, OLD_INSERT, create_legacy
from _support.supabase import (
    SUPABASE_SQL,
    SUPABASE_STAND_IN,
    TRADEBRIDGE_PASSWORD,
    as_tradebridge,
)
from tradebridge.store.ledger import Ledger
from tradebridge.store.migrate import migrate

USER_A = str(uuid.UUID(int=1))
OLD_POLICY = '"Allow all for authenticated users"'


@pytest.fixture
async def project(empty_db: str) -> AsyncIterator[asyncpg.Connection]:
    """Return a superuser connection to a Supabase-like project holding the previous
    deployment's tables and rows, migrated by tradebridge as ``postgres``."""
    conn = await asyncpg.connect(empty_db)
    try:
        await conn.execute(SUPABASE_STAND_IN)
        await create_legacy(empty_db)
        await migrate(empty_db)
        yield conn
    finally:
        await conn.close()


async def _set_up_tradebridge(conn: asyncpg.Connection, *, drop_old_policy: bool) -> list[str]:
    """Run supabase/tradebridge.sql (after dropping the old policy, as the docs say, if
    asked) and map ACC1 to user A; return the warnings it raised."""
    warnings: list[str] = []
    conn.add_log_listener(lambda _, message: warnings.append(str(message.message)))
    if drop_old_policy:
        await conn.execute(f"drop policy {OLD_POLICY} on trading_signals")
    await conn.execute(SUPABASE_SQL)
    await conn.execute(f"alter role tradebridge with password '{TRADEBRIDGE_PASSWORD}'")
    await conn.execute(
        "insert into account_owners (account_name, user_id) values ('ACC1', $1)", USER_A
    )
    return warnings


async def _as(
    conn: asyncpg.Connection, role: str, sql: str, *args: object, user: str = USER_A
) -> str:
    async with conn.transaction():
        await conn.execute(f"set local role {role}")
        await conn.execute("select set_config('request.jwt.claim.sub', $1, true)", user)
        return str(await conn.execute(sql, *args))


async def _count_as(conn: asyncpg.Connection, role: str, table: str) -> int:
    async with conn.transaction():
        await conn.execute(f"set local role {role}")
        return int(await conn.fetchval(f"select count(*) from {table}"))


@pytest.mark.parametrize("role", ["anon", "authenticated"])
async def test_migrate_turns_rls_on_for_the_tables_it_makes_beside_a_protected_one(
    project: asyncpg.Connection, role: str
) -> None:
    # Supabase's default grants give the new tables to every API role; the old
    # order_history was protected, its successor must not be open meanwhile.
    assert await project.fetchval("select count(*) from order_history") > 0
    assert await _count_as(project, role, "order_history") == 0


async def test_old_insert_with_status_pending_works_as_app_user(
    project: asyncpg.Connection,
) -> None:
    await _set_up_tradebridge(project, drop_old_policy=True)
    done = await _as(
        project, "authenticated", OLD_INSERT,
        "ACC1:orb-1", "orb", "MNQZ6", "buy", "stop", 1, 21050, "ACC1",
    )  # fmt: skip
    row = await project.fetchrow("select * from trading_signals where signal_id = 'ACC1:orb-1'")
    assert done == "INSERT 0 1"
    assert row["status"] == "pending"
    assert str(row["user_id"]) == USER_A


async def test_old_cancel_of_own_pending_signal_works_as_app_user_and_is_recorded(
    project: asyncpg.Connection,
) -> None:
    await _set_up_tradebridge(project, drop_old_policy=True)
    await _as(project, "authenticated", OLD_INSERT,
              "ACC1:orb-1", "orb", "MNQZ6", "buy", "market", 1, None, "ACC1")  # fmt: skip
    done = await _as(project, "authenticated", OLD_CANCEL, "ACC1:orb-1")
    status = await project.fetchval(
        "select status from trading_signals where signal_id = 'ACC1:orb-1'"
    )
    event = await project.fetchrow(
        "select event, detail from order_history where signal_id = 'ACC1:orb-1' "
        "order by id desc limit 1"
    )
    assert done == "UPDATE 1"
    assert status == "cancelled"
    assert event["event"] == "cancelled"
    detail = json.loads(event["detail"])
    assert (detail["by"], detail["user_id"], detail["from"]) == (
        "authenticated", USER_A, "pending"
    )  # fmt: skip


@pytest.mark.parametrize("drop_old_policy", [True, False], ids=["documented", "old_policy_kept"])
@pytest.mark.parametrize(
    ("sql", "args"),
    [
        # An insert that is not pending (a forged result, a wedged claim).
        (OLD_INSERT.replace("'pending'", "'filled'"),
         ("ACC1:f-1", "orb", "MNQZ6", "buy", "market", 1, None, "ACC1")),
        (OLD_INSERT.replace("'pending'", "'processing'"),
         ("ACC1:f-2", "orb", "MNQZ6", "buy", "market", 1, None, "ACC1")),
        # Any move but pending -> cancelled.
        ("update trading_signals set status = 'filled' where signal_id = 'old-pending'", ()),
        ("update trading_signals set status = 'denied' where signal_id = 'old-pending'", ()),
    ],
)  # fmt: skip
async def test_app_user_cannot_set_another_status_even_beside_the_old_policy(
    project: asyncpg.Connection, drop_old_policy: bool, sql: str, args: tuple[object, ...]
) -> None:
    await _set_up_tradebridge(project, drop_old_policy=drop_old_policy)
    before = await project.fetch("select signal_id, status from trading_signals order by 1")
    with pytest.raises(asyncpg.InsufficientPrivilegeError):
        await _as(project, "authenticated", sql, *args)
    assert await project.fetch("select signal_id, status from trading_signals order by 1") == (
        before
    )


async def test_supabase_sql_names_the_old_policy_it_keeps(project: asyncpg.Connection) -> None:
    warnings = await _set_up_tradebridge(project, drop_old_policy=False)
    assert any(
        w.startswith('policy "Allow all for authenticated users" on trading_signals')
        and "docs/migrating.md" in w
        for w in warnings
    ), warnings


async def test_tradebridge_role_claims_the_app_users_old_insert(
    project: asyncpg.Connection, empty_db: str
) -> None:
    await _set_up_tradebridge(project, drop_old_policy=True)
    await _as(project, "authenticated", OLD_INSERT,
              "ACC1:orb-1", "orb", "MNQZ6", "buy", "market", 1, None, "ACC1")  # fmt: skip
    await project.execute("update trading_signals set status = 'cancelled' "
                          "where signal_id = 'old-pending'")  # fmt: skip
    async with await Ledger.connect(as_tradebridge(empty_db)) as ledger:
        claimed = await ledger.claim_next("w1")
    states = await migrate(as_tradebridge(empty_db))
    assert [r.signal_id for r in claimed] == ["ACC1:orb-1"]
    assert not any(s.applied_now for s in states)

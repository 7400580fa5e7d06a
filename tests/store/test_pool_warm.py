"""A warm pool: each connection prepares the order path's statements when it opens, so the
first alert after a start (or after a quiet spell, with the pool's floor) does not wait for
PostgreSQL to load its catalog."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import asyncpg

from tradebridge.store.ledger import HOT_STATEMENTS, Ledger


async def _prepared(conn: asyncpg.Connection) -> set[str]:
    rows = await conn.fetch("select statement from pg_prepared_statements")
    return {r["statement"] for r in rows}


async def test_every_hot_statement_prepares_on_the_migrated_ledger(ledger_db: str) -> None:
    # The list rots silently otherwise: a statement that no longer prepares stops the
    # warm-up at that point (open_pool swallows the error for an unmigrated ledger).
    conn = await asyncpg.connect(ledger_db)
    try:
        for statement in HOT_STATEMENTS:
            await conn.prepare(statement)
    finally:
        await conn.close()
    assert len(HOT_STATEMENTS) >= 8


async def test_a_warm_pool_opens_its_floor_with_the_hot_statements_prepared(
    ledger_db: str,
) -> None:
    async with await Ledger.connect(ledger_db, min_size=3, max_size=3, warm=True) as ledger:
        held = [await ledger.pool.acquire() for _ in range(3)]
        try:
            for conn in held:
                assert set(HOT_STATEMENTS) <= await _prepared(conn)
        finally:
            for conn in held:
                await ledger.pool.release(conn)


async def test_a_pool_not_asked_to_warm_prepares_nothing(ledger_db: str) -> None:
    ledger = await Ledger.connect(ledger_db, min_size=1, max_size=1)
    async with ledger, ledger.pool.acquire() as conn:
        assert not set(HOT_STATEMENTS) & await _prepared(conn)


async def test_a_warm_pool_opens_on_a_ledger_not_migrated_yet(empty_db: str) -> None:
    ledger = await Ledger.connect(empty_db, min_size=2, max_size=2, warm=True)
    async with ledger, ledger.pool.acquire() as conn:
        assert await conn.fetchval("select 1") == 1


async def test_recent_instruments_lists_what_each_account_traded_since(ledger: Ledger) -> None:
    # What the dispatcher's warm-up looks up at start (Dispatcher._warm).
    for i, (account, instrument) in enumerate(
        [("A1", "MNQZ6"), ("A1", "MNQZ6"), ("A1", "ESZ6"), ("A2", "MNQZ6"), ("OTHER", "CLF7")]
    ):
        await ledger.insert_signal(signal_id=f"s{i}", account_name=account,
                                   instrument=instrument, side="buy", quantity=1)  # fmt: skip
    an_hour_ago = datetime.now(UTC) - timedelta(hours=1)

    recent = await ledger.recent_instruments(["A1", "A2", "A3"], an_hour_ago)
    later = await ledger.recent_instruments(["A1"], datetime.now(UTC) + timedelta(hours=1))

    assert {k: sorted(v) for k, v in recent.items()} == {"A1": ["ESZ6", "MNQZ6"], "A2": ["MNQZ6"]}
    assert later == {}

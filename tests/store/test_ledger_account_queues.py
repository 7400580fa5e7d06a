"""One broker account is one queue (migration 0011, docs/ledger.md "Claims and per-account
order"): the account a row is placed on is the account it is claimed under, and no pending
row holds back its account while nothing can ever claim it."""

from __future__ import annotations

import sys
from datetime import date

import asyncpg
import pytest

from tradebridge.pipeline.validate import (
    ACCOUNT_NAME_BLANKS,
    Denied,
    RawSignal,
    ValidSignal,
    validate,
)
from tradebridge.store.ledger import Ledger
from tradebridge.store.migrate import migrate

ACCOUNT = "DEMO0000001"
EVERY_BLANK = "".join(c for c in map(chr, range(sys.maxunicode + 1)) if c.isspace())


async def _insert(ledger: Ledger, signal_id: str, account: str) -> None:
    """Insert as a strategy does: the documented columns, straight into the table."""
    await ledger.pool.execute(
        "insert into trading_signals (signal_id, instrument, side, order_type, quantity, "
        "account_name) values ($1, 'MNQZ6', 'buy', 'market', 1, $2)",
        signal_id,
        account,
    )


async def _stored(ledger: Ledger, signal_id: str) -> str:
    return str(
        await ledger.pool.fetchval(
            "select account_name from trading_signals where signal_id = $1", signal_id
        )
    )


@pytest.mark.parametrize("padded", [ACCOUNT + " ", " " + ACCOUNT, f"\t{ACCOUNT}\r\n", "\x0b\x0c"])
async def test_insert_account_name_is_stored_without_surrounding_blanks(
    ledger: Ledger, padded: str
) -> None:
    await _insert(ledger, "s1", padded)

    assert await _stored(ledger, "s1") == padded.strip(ACCOUNT_NAME_BLANKS)


async def test_update_of_account_name_by_another_program_is_trimmed_too(ledger: Ledger) -> None:
    await _insert(ledger, "s1", "OTHER")

    await ledger.pool.execute(
        "update trading_signals set account_name = $1 where signal_id = 's1'", ACCOUNT + "  "
    )

    assert await _stored(ledger, "s1") == ACCOUNT


async def test_claim_rows_of_one_account_padded_differently_are_one_queue(ledger: Ledger) -> None:
    await _insert(ledger, "entry", ACCOUNT + " ")
    await _insert(ledger, "exit", ACCOUNT)

    first = await ledger.claim_next("w1", limit=16)
    second = await ledger.claim_next("w2", limit=16)  # the account is busy with the entry

    assert [r.signal_id for r in first] == ["entry"]
    assert second == []


async def test_validate_places_every_row_on_the_account_the_ledger_stores(ledger: Ledger) -> None:
    # Whatever blank surrounds the name, validation either places the row on exactly the
    # account the column holds (the queue the claim knows) or denies it: never on a
    # different account than the one it is claimed under.
    names = {f"b{ord(c)}-{side}": name for c in EVERY_BLANK
             for side, name in (("l", c + ACCOUNT), ("r", ACCOUNT + c))}  # fmt: skip
    for signal_id, name in names.items():
        await _insert(ledger, signal_id, name)

    placed_on: dict[str, str | None] = {}
    for signal_id in names:
        row = await ledger.get(signal_id)
        assert row is not None
        verdict = validate(RawSignal.of(row), today=date(2026, 12, 1), accounts={ACCOUNT})
        if isinstance(verdict, ValidSignal):
            assert verdict.account == row.account_name, signal_id
            placed_on[signal_id] = verdict.account
        else:
            assert isinstance(verdict, Denied)
            assert verdict.field == "account_name", (signal_id, verdict.reason)
            placed_on[signal_id] = None

    assert {s for s, account in placed_on.items() if account == ACCOUNT} == {
        f"b{ord(c)}-{side}" for c in ACCOUNT_NAME_BLANKS for side in "lr"
    }


async def test_claim_pending_row_without_signal_id_holds_back_nothing(ledger: Ledger) -> None:
    # A legacy row tradebridge never claims (no signal_id), older than the account's rows.
    async with ledger.pool.acquire() as db:
        await db.execute(
            "alter table trading_signals drop constraint trading_signals_signal_id_present"
        )
        await db.execute("alter table trading_signals alter column signal_id drop not null")
        await db.execute(
            "insert into trading_signals (signal_id, instrument, side, order_type, quantity, "
            "account_name, created_at) values (null, 'MNQZ6', 'buy', 'market', 1, $1, "
            "now() - interval '1 day')",
            ACCOUNT,
        )
    await _insert(ledger, "after-legacy", ACCOUNT)

    claimed = await ledger.claim_next("w1", 16, per_account=16)

    assert [r.signal_id for r in claimed] == ["after-legacy"]


# --- migrating a table that already has rows ------------------------------------------------

LEGACY_TABLE = """
create table trading_signals (
    id bigserial primary key,
    signal_id text unique,
    instrument text,
    side text,
    order_type text,
    quantity integer,
    account_name text,
    status text default 'pending'
)
"""


async def _legacy(url: str, *rows: tuple[str | None, str, str]) -> asyncpg.Connection:
    conn = await asyncpg.connect(url)
    await conn.execute(LEGACY_TABLE)
    await conn.executemany(
        "insert into trading_signals (signal_id, instrument, side, order_type, quantity, "
        "account_name, status) values ($1, 'MNQZ6', 'buy', 'market', 1, $2, $3)",
        rows,
    )
    return conn


async def test_migrate_trims_account_names_of_existing_rows(empty_db: str) -> None:
    conn = await _legacy(
        empty_db, ("old-1", ACCOUNT + " ", "filled"), ("old-2", ACCOUNT, "pending")
    )
    try:
        await migrate(empty_db)
        names = await conn.fetch("select signal_id, account_name from trading_signals order by id")
    finally:
        await conn.close()

    assert [tuple(r) for r in names] == [("old-1", ACCOUNT), ("old-2", ACCOUNT)]


async def test_migrate_over_pending_row_without_signal_id_leaves_it_as_it_is(
    empty_db: str,
) -> None:
    conn = await _legacy(empty_db, (None, ACCOUNT, "pending"), ("old-2", ACCOUNT, "pending"))
    try:
        await migrate(empty_db)
        rows = await conn.fetch(
            "select signal_id, account_name, status from trading_signals order by id"
        )
    finally:
        await conn.close()

    assert [tuple(r) for r in rows] == [(None, ACCOUNT, "pending"), ("old-2", ACCOUNT, "pending")]


async def test_migrate_keeps_finished_rows_without_signal_id(empty_db: str) -> None:
    conn = await _legacy(empty_db, (None, ACCOUNT + " ", "filled"), (None, ACCOUNT, "cancelled"))
    try:
        await migrate(empty_db)
        rows = await conn.fetch("select account_name, status from trading_signals order by id")
    finally:
        await conn.close()

    assert [tuple(r) for r in rows] == [(ACCOUNT + " ", "filled"), (ACCOUNT, "cancelled")]

"""What the risk rules ask of the ledger (store/ledger/risk.py): the balance marks, each
account's overview in one statement, and the flattens the rules queue exactly once."""

from __future__ import annotations

import asyncio
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

import pytest

from tradebridge.errors import StoreError
from tradebridge.store.ledger import Ledger

DAY = date(2026, 11, 25)


async def _sent(ledger: Ledger, signal_id: str, account: str, status: str, at: datetime) -> None:
    await ledger.insert_signal(signal_id=signal_id, account_name=account, instrument="MNQZ6",
                               side="buy", quantity=1)  # fmt: skip
    for step in ("processing", "submitted", status):  # the moves the trigger allows
        await ledger.pool.execute(
            "update trading_signals set status = $2, ts_submitted = $3 where signal_id = $1",
            signal_id, step, at,
        )  # fmt: skip


async def test_overview_counts_open_and_todays_orders_and_returns_the_marks(
    ledger: Ledger,
) -> None:
    now = datetime.now(UTC)
    day_start = now - timedelta(hours=1)
    await _sent(ledger, "w", "A1", "working", now)
    await _sent(ledger, "f", "A1", "filled", now)
    await _sent(ledger, "old", "A1", "filled", day_start - timedelta(minutes=1))
    await _sent(ledger, "other", "A2", "working", now)
    await ledger.mark_balance("A1", DAY, Decimal(50000))
    marks = await ledger.mark_balance("A1", DAY, Decimal("49400.50"))

    found = {o.account_name: o for o in await ledger.risk_overview(
        [("A1", day_start), ("A3", day_start)])}  # fmt: skip

    assert (found["A1"].open_orders, found["A1"].orders_today) == (1, 2)
    assert found["A1"].marks == marks
    assert marks.day_start_balance == Decimal(50000)
    assert marks.balance == Decimal("49400.50")
    assert marks.high_water_intraday == Decimal(50000)
    assert (found["A3"].open_orders, found["A3"].orders_today, found["A3"].marks) == (0, 0, None)


async def test_risk_flattens_are_queued_once_per_id_whoever_asks(ledger: Ledger) -> None:
    due = [("risk-flat-A1-20261125-at", "A1", "flatten_at")]

    queued = await ledger.queue_risk_flattens(due, {"by": "risk"})
    again = await ledger.queue_risk_flattens(due, {"by": "risk"})

    assert queued == due
    assert again == []
    row = await ledger.get("risk-flat-A1-20261125-at")
    assert row is not None
    assert (row.intent, row.account_name, row.instrument, row.status.value) == (
        "flatten", "A1", None, "pending",
    )  # fmt: skip
    assert row.metadata == {"by": "risk", "risk": "flatten_at"}
    assert [e.event for e in await ledger.history(row.signal_id)] == ["received"]


async def test_overview_without_the_risk_migration_says_to_migrate(ledger: Ledger) -> None:
    await ledger.pool.execute("drop table account_risk")

    with pytest.raises(StoreError, match=r"no account_risk table \(migration 0008_risk_rules\)"):
        await ledger.risk_overview([("A1", datetime.now(UTC))])


async def test_activity_of_accounts_checked_side_by_side_is_one_statement_with_the_same_counts(
    ledger: Ledger, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A fan-out's first rows ask for their accounts' counts in the same turn of the loop.
    now = datetime.now(UTC)
    await _sent(ledger, "w", "A1", "working", now)
    await _sent(ledger, "f", "A1", "filled", now - timedelta(seconds=5))
    await _sent(ledger, "hour", "A1", "filled", now - timedelta(minutes=30))
    await _sent(ledger, "yesterday", "A1", "filled", now - timedelta(days=1))
    await _sent(ledger, "checked", "A1", "submitted", now)  # the row being checked: left out
    await _sent(ledger, "w2", "A2", "working", now - timedelta(minutes=5))
    asks = [
        ("A1", "checked", now - timedelta(seconds=60), now - timedelta(hours=2)),
        ("A2", "x", now - timedelta(seconds=60), now - timedelta(hours=2)),
        ("A3", "y", now - timedelta(seconds=60), now - timedelta(hours=2)),
        ("A1", "w", now - timedelta(seconds=1), now - timedelta(minutes=10)),
    ]

    async def ask(account: str, besides: str, minute: datetime, day: datetime) -> tuple[int, ...]:
        found = await ledger.risk_activity(
            account, besides=besides, minute_since=minute, day_since=day
        )
        return found.open_orders, found.orders_last_minute, found.orders_today

    alone = [await ask(*a) for a in asks]
    statements: list[str] = []
    db = ledger._db

    class Counted:  # the ledger's statements, counted on their way to the pool
        async def fetch(self, query: str, *args: object) -> object:
            statements.append(query)
            return await db.fetch(query, *args)

    monkeypatch.setattr(ledger, "_db", Counted())
    together = await asyncio.gather(*(ask(*a) for a in asks))

    assert alone == [(1, 2, 3), (1, 0, 1), (0, 0, 0), (1, 1, 2)]
    assert list(together) == alone
    assert len(statements) == 1


async def test_activity_read_failing_fails_every_caller_of_the_batch(
    ledger: Ledger, monkeypatch: pytest.MonkeyPatch
) -> None:
    class Down:  # the database gone between the check and the read (forced)
        async def fetch(self, query: str, *args: object) -> object:
            raise ConnectionResetError("the database closed the connection")

    monkeypatch.setattr(ledger, "_db", Down())
    now = datetime.now(UTC)

    found = await asyncio.gather(
        *(ledger.risk_activity(a, besides="x", minute_since=now, day_since=now)
          for a in ("A1", "A2")),
        return_exceptions=True,
    )  # fmt: skip

    assert [type(f) for f in found] == [ConnectionResetError, ConnectionResetError]

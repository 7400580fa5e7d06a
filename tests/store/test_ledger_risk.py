"""What the risk rules ask of the ledger (store/ledger/risk.py): the balance marks, each
account's overview in one statement, and the flattens the rules queue exactly once."""

from __future__ import annotations

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

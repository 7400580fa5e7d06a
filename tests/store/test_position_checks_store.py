"""The position check's statements (store/ledger/positions.py) on a real PostgreSQL."""

from __future__ import annotations

from dataclasses import replace
from decimal import Decimal

from tradebridge.store.ledger import Ledger, PositionCheck, PositionTurn


async def test_position_checks_stale_check_does_not_undo_an_accept(ledger: Ledger) -> None:
    first = PositionCheck("A", "MNQZ6", Decimal(0), Decimal(1), Decimal(1), accepted_by="baseline")
    await ledger.save_position_checks([first])
    [read] = await ledger.position_checks("A")
    # A check reads the row, an operator accepts meanwhile, the check then saves what it
    # judged from what it read.
    stale = replace(read, broker_net=Decimal(3), divergence={"unexplained": "2", "seen": 1})
    await ledger.save_position_checks([replace(first, broker_net=Decimal(3))],
                                      read={"MNQZ6": read})  # fmt: skip
    [seen] = await ledger.position_checks("A")
    assert await ledger.accept_positions("A", None, "operator") == ["MNQZ6"]

    await ledger.save_position_checks([stale], read={"MNQZ6": seen})
    [after] = await ledger.position_checks("A")

    assert (after.accepted, after.accepted_by, after.divergence) == (Decimal(2), "operator", None)


async def test_position_turns_one_caller_per_account_and_interval(ledger: Ledger) -> None:
    first = await ledger.take_position_turns(["A", "B"], 60.0)
    second = await ledger.take_position_turns(["A", "B", "C"], 60.0)
    await ledger.mark_baselined("A")
    again = await ledger.take_position_turns(["A"], 0.0)

    assert first == {"A": PositionTurn(baselined=False), "B": PositionTurn(baselined=False)}
    assert second == {"C": PositionTurn(baselined=False)}
    assert again == {"A": PositionTurn(baselined=True)}

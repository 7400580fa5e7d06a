"""Moves sent together while the database is busy (``store/ledger/fast_moves.py``): each
caller still gets its own row or its own precise error, nothing half-written."""

from __future__ import annotations

import asyncio
from decimal import Decimal

import asyncpg
import pytest

from _support.database import MoveStatements, set_status_behind_the_trigger
from tradebridge.domain.lifecycle import SignalStatus as S
from tradebridge.errors import IllegalTransition
from tradebridge.store.ledger import BrokerCall, Ledger, fast_moves

_CALL = BrokerCall("native", "POST", "/order/placeorder", 200, 1.5, {"q": Decimal(1)}, {"id": 7})


@pytest.fixture
def statements(ledger: Ledger, monkeypatch: pytest.MonkeyPatch) -> MoveStatements:
    return MoveStatements.spy(ledger, monkeypatch)


async def _claimed(ledger: Ledger, count: int) -> list[str]:
    ids = [f"b{i}" for i in range(count)]
    for i, signal_id in enumerate(ids):
        await ledger.insert_signal(
            signal_id=signal_id, instrument="MNQZ6", side="buy", quantity=1,
            account_name=f"ACC{i}",
        )  # fmt: skip
    rows = await ledger.claim_next("w", limit=count)
    assert len(rows) == count
    return ids


async def _submitted(ledger: Ledger, statements: MoveStatements, count: int) -> list[str]:
    """Rows b0.. claimed and written ahead, the statements counted from here."""
    ids = await _claimed(ledger, count)
    await _write_aheads(ledger, ids)
    statements.sent.clear()
    return ids


async def _write_aheads(ledger: Ledger, ids: list[str], owner: str = "w") -> list[object]:
    return await asyncio.gather(
        *(ledger.transition(i, S.SUBMITTED, expected=S.PROCESSING, owner=owner,
                            client_order_id=f"tb-{i}") for i in ids),
        return_exceptions=True,
    )  # fmt: skip


async def test_moves_waiting_on_a_busy_database_go_as_one_statement(
    ledger: Ledger, statements: MoveStatements
) -> None:
    ids = await _claimed(ledger, 10)

    moved = await _write_aheads(ledger, ids)

    assert statements.sent == [1, 1, 8]  # two in flight at once, the other eight together
    assert statements.lazy == [False, False, False]  # a write-ahead always waits for the disk
    assert [(r.signal_id, r.status, r.client_order_id) for r in moved] == [  # type: ignore[attr-defined]
        (i, S.SUBMITTED, f"tb-{i}") for i in ids
    ]
    for signal_id in ids:
        row = await ledger.get(signal_id)
        assert row is not None
        assert (row.status, row.placement_attempts) == (S.SUBMITTED, 1)
        assert row.ts_submitted is not None
        events = [(e.event, e.detail) for e in await ledger.history(signal_id)]
        assert events == [
            ("claimed", events[0][1]),
            ("submitted", {"from": "processing", "to": "submitted"}),
        ]


async def test_a_batch_writes_each_rows_event_and_broker_call(
    ledger: Ledger, statements: MoveStatements
) -> None:
    ids = await _submitted(ledger, statements, 6)

    moved = await asyncio.gather(
        *(ledger.transition(i, S.WORKING, expected=S.SUBMITTED, owner="w", event="accepted",
                            tradovate_order_id=f"7{n}", detail={"broker_order_id": f"7{n}"},
                            broker_call=_CALL if n % 2 else None)
          for n, i in enumerate(ids))
    )  # fmt: skip

    assert statements.sent == [1, 1, 4]
    assert statements.lazy[-1] is True  # the broker's answer commits lazily, batched too
    assert [r.tradovate_order_id for r in moved] == [f"7{n}" for n in range(6)]
    for n, signal_id in enumerate(ids):
        [*_, accepted] = await ledger.history(signal_id)
        assert (accepted.event, accepted.detail) == (
            "accepted", {"from": "submitted", "to": "working", "broker_order_id": f"7{n}"}
        )  # fmt: skip
        calls = [c.call for c in await ledger.broker_calls(signal_id)]
        assert calls == ([BrokerCall("native", "POST", "/order/placeorder", 200, 1.5,
                                     {"q": "1"}, {"id": 7})] if n % 2 else [])  # fmt: skip


async def test_a_move_not_as_expected_in_a_batch_gets_its_precise_error_the_rest_move(
    ledger: Ledger, statements: MoveStatements
) -> None:
    ids = await _claimed(ledger, 6)

    moved = await asyncio.gather(
        *(ledger.transition(i, S.SUBMITTED, expected=S.PROCESSING,
                            owner="other" if i == "b4" else "w") for i in ids),
        return_exceptions=True,
    )  # fmt: skip

    assert statements.sent[:3] == [1, 1, 4]
    error = moved[4]
    assert isinstance(error, IllegalTransition)
    assert "claimed by 'w', not by 'other'" in str(error)
    for signal_id in ids:
        row = await ledger.get(signal_id)
        assert row is not None
        assert row.status is (S.PROCESSING if signal_id == "b4" else S.SUBMITTED)


async def test_a_batch_the_database_refuses_is_sent_again_move_by_move(
    ledger: Ledger, ledger_db: str, statements: MoveStatements
) -> None:
    # The table's trigger refuses one move (a row submitted once may not go back to pending):
    # the whole statement is refused, nothing of it written; each move then goes alone.
    ids = await _claimed(ledger, 6)
    await ledger.transition("b5", S.SUBMITTED, expected=S.PROCESSING, owner="w")
    await set_status_behind_the_trigger(ledger_db, "b5", "processing")
    statements.sent.clear()

    moved = await asyncio.gather(
        *(ledger.transition(i, S.PENDING, expected=S.PROCESSING) for i in ids),
        return_exceptions=True,
    )

    assert statements.sent == [1, 1, 4, 1, 1, 1, 1]  # refused as a batch, then one by one
    assert isinstance(moved[5], IllegalTransition)
    assert "illegal status move" in str(moved[5])
    assert [r.status for r in moved[:5]] == [S.PENDING] * 5  # type: ignore[union-attr]
    assert ledger._fast.batching  # a refused move is no reason to stop batching


async def test_a_rows_second_move_waits_for_the_next_statement(
    ledger: Ledger, statements: MoveStatements
) -> None:
    ids = await _submitted(ledger, statements, 4)

    def accept(signal_id: str) -> asyncio.Future[object]:
        return asyncio.ensure_future(
            ledger.transition(
                signal_id, S.WORKING, expected=S.SUBMITTED, tradovate_order_id=f"o-{signal_id}"
            )
        )

    moves = [accept(i) for i in ids]  # b0, b1 in flight; b2, b3 wait
    moves.append(asyncio.ensure_future(ledger.move_if(
        "b2", S.FILLED, expected=S.WORKING, filled_was=Decimal(0), event="filled", detail={},
        filled_qty=Decimal(1))))  # fmt: skip
    done = await asyncio.gather(*moves)

    # b2's fill waits behind the batch that makes it working: one statement moves a row once.
    assert statements.sent == [1, 1, 2, 1]
    assert [r.status for r in done] == [S.WORKING] * 4 + [S.FILLED]  # type: ignore[attr-defined]
    assert [e.event for e in await ledger.history("b2")][-2:] == ["working", "filled"]


async def test_the_batch_statement_refused_as_not_fitting_the_schema_turns_batching_off(
    ledger: Ledger, statements: MoveStatements, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(
        fast_moves, "_BATCH_MOVE_SQL",
        fast_moves._BATCH_MOVE_SQL.replace("a.owner is null", "a.no_such_column is null"),
    )  # fmt: skip
    ids = await _claimed(ledger, 10)

    moved = await _write_aheads(ledger, ids[:5])

    assert statements.sent == [1, 1, 3, 1, 1, 1]  # refused, then one by one
    assert [r.status for r in moved] == [S.SUBMITTED] * 5  # type: ignore[attr-defined]
    assert not ledger._fast.batching
    statements.sent.clear()
    moved = await _write_aheads(ledger, ids[5:])
    assert statements.sent == [1] * 5
    assert [r.status for r in moved] == [S.SUBMITTED] * 5  # type: ignore[attr-defined]


async def test_a_batch_lost_on_the_way_gives_every_caller_the_error(
    ledger: Ledger, statements: MoveStatements
) -> None:
    # The connection dropped: the batch may have committed, so no move is sent again; each
    # caller's recovery reads its row back, as after a lone move lost the same way.
    ids = await _claimed(ledger, 5)
    statements.fail_batches = asyncpg.ConnectionDoesNotExistError("connection was closed")

    moved = await _write_aheads(ledger, ids)

    assert statements.sent == [1, 1, 3]
    assert [type(r) for r in moved[2:]] == [asyncpg.ConnectionDoesNotExistError] * 3
    assert ledger._fast.batching


async def test_a_move_whose_caller_left_before_its_batch_went_is_not_sent(
    ledger: Ledger, statements: MoveStatements
) -> None:
    ids = await _claimed(ledger, 4)
    tasks = [
        asyncio.ensure_future(ledger.transition(i, S.SUBMITTED, expected=S.PROCESSING)) for i in ids
    ]
    await asyncio.sleep(0)  # all four asked: two in flight, two waiting
    tasks[3].cancel()

    done = await asyncio.gather(*tasks, return_exceptions=True)

    assert isinstance(done[3], asyncio.CancelledError)
    assert statements.sent == [1, 1, 1]  # b2 alone: b3's caller left before the statement
    row = await ledger.get("b3")
    assert row is not None
    assert row.status is S.PROCESSING


async def test_a_move_the_batch_cannot_carry_fails_alone_the_rest_move(
    ledger: Ledger, statements: MoveStatements
) -> None:
    # A detail JSON cannot hold (a set) failed the whole batch's arguments: every caller of
    # the batch got that one move's error, and none of them moved.
    ids = await _claimed(ledger, 6)

    moved = await asyncio.gather(
        *(ledger.transition(i, S.SUBMITTED, expected=S.PROCESSING, owner="w",
                            detail={"odd": {1, 2}} if i == "b4" else {"plan": "order"})
          for i in ids),
        return_exceptions=True,
    )  # fmt: skip

    assert isinstance(moved[4], Exception)
    assert [r.status for r in (moved[i] for i in (0, 1, 2, 3, 5))] == [S.SUBMITTED] * 5  # type: ignore[union-attr]
    assert statements.sent == [1, 1, 1, 1, 1, 1]  # the batch not sent: each move on its own

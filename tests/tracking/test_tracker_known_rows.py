"""A row this process placed answers its broker events without a read
(``store/ledger/known.py``); a row anyone else moved is read again, and no fill is ever
counted twice (nor a running total's overlapping spans, as two pollers of the TradingView
bridge see them)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest

from tracking.conftest import ACCOUNT, ACCOUNT_2, Stack
from tradebridge.brokers.base import BrokerOrderEvent
from tradebridge.domain.ids import AccountName, BrokerOrderId, ClientOrderId
from tradebridge.domain.lifecycle import SignalStatus as S
from tradebridge.domain.orders import OrderFilled
from tradebridge.store.ledger import Ledger
from tradebridge.tracking.tracker import Tracker

ORDER = "880101"
CID = "tb-k1"


def _fill(fill_id: str, price: str = "21000") -> BrokerOrderEvent:
    return BrokerOrderEvent(
        account=AccountName(ACCOUNT),
        broker_order_id=BrokerOrderId(ORDER),
        client_order_id=ClientOrderId(CID),
        event=OrderFilled(qty=1, price=Decimal(price), ts_event=datetime.now(UTC), fill_id=fill_id),
    )


def _total(
    fill_id: str, qty: int, total: int, price: str, avg: str, *, leg: str | None = None
) -> BrokerOrderEvent:
    """A fill as a poller of running totals reports it (the bridge: ``order_events``)."""
    return BrokerOrderEvent(
        account=AccountName(ACCOUNT),
        broker_order_id=BrokerOrderId(leg or ORDER),
        client_order_id=None if leg else ClientOrderId(CID),
        event=OrderFilled(qty=qty, price=Decimal(price), ts_event=datetime.now(UTC),
                          fill_id=fill_id, total_qty=total, total_avg=Decimal(avg)),
        parent_order_id=BrokerOrderId(ORDER) if leg else None,
    )  # fmt: skip


async def _placed_here(stack: Stack, quantity: int) -> None:
    """Place row k1 as the dispatcher does: claim, write-ahead with its plan, the answer."""
    await stack.insert("k1", quantity=quantity)
    [claimed] = await stack.ledger.claim_next("w1")
    assert claimed.signal_id == "k1"
    await stack.ledger.transition(
        "k1", S.SUBMITTED, expected=S.PROCESSING, owner="w1", client_order_id=CID,
        detail={"plan": "order", "quantity": quantity, "contract": "MNQZ6", "side": "buy"},
    )  # fmt: skip
    await stack.ledger.transition(
        "k1", S.WORKING, expected=S.SUBMITTED, owner="w1", event="accepted",
        tradovate_order_id=ORDER,
    )  # fmt: skip


class _Reads:
    """Count the tracker's reads of a row (``event_row``)."""

    def __init__(self, ledger: Ledger, monkeypatch: pytest.MonkeyPatch) -> None:
        self.count = 0
        read: Callable[..., Awaitable[Any]] = ledger.event_row

        async def counted(*args: Any, **kwargs: Any) -> Any:
            self.count += 1
            return await read(*args, **kwargs)

        monkeypatch.setattr(ledger, "event_row", counted)


@pytest.fixture
async def other_worker(stack: Stack) -> AsyncIterator[Ledger]:
    """A second process's ledger on the same database."""
    ledger = await Ledger.connect(stack.ledger._url, min_size=1, max_size=2)
    try:
        yield ledger
    finally:
        await ledger.close()


async def _fills(ledger: Ledger) -> list[str]:
    return [e.detail["fill_id"] for e in await ledger.history("k1") if e.event == "fill"]


async def test_fills_of_an_order_placed_here_are_applied_without_a_read(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    await _placed_here(stack, quantity=2)
    reads = _Reads(stack.ledger, monkeypatch)
    tracker = Tracker(stack.settings, stack.ledger, stack.pool)

    assert await tracker.apply(_fill("f1", price="21000"))
    partial = await stack.ledger.get("k1")
    assert await tracker.apply(_fill("f2", price="21001"))
    assert await tracker.apply(_fill("f2", price="21001"))  # the same fill again

    row = await stack.ledger.get("k1")
    assert reads.count == 0
    assert partial is not None
    assert (partial.status, partial.filled_qty) == (S.PARTIALLY_FILLED, 1)
    assert row is not None
    assert (row.status, row.filled_qty, row.avg_fill_price) == (S.FILLED, 2, Decimal("21000.5"))
    assert await _fills(stack.ledger) == ["f1", "f2"]


async def test_a_fill_another_process_recorded_is_not_counted_again(
    stack: Stack, monkeypatch: pytest.MonkeyPatch, other_worker: Ledger
) -> None:
    await _placed_here(stack, quantity=3)
    tracker = Tracker(stack.settings, stack.ledger, stack.pool)
    elsewhere = Tracker(stack.settings, other_worker, stack.pool)
    assert await elsewhere.apply(_fill("f1"))  # recorded by another worker's tracker
    reads = _Reads(stack.ledger, monkeypatch)

    assert await tracker.apply(_fill("f1"))  # known here as unfilled: the guard refuses
    after_refusal = reads.count  # it reads under the row's lock instead, and forgets the row
    assert await tracker.apply(_fill("f2"))
    assert await elsewhere.apply(_fill("f2"))
    assert await tracker.apply(_fill("f3"))

    row = await stack.ledger.get("k1")
    assert row is not None
    assert (row.status, row.filled_qty) == (S.FILLED, 3)
    assert await _fills(stack.ledger) == ["f1", "f2", "f3"]
    assert (after_refusal, reads.count) == (0, 2)  # f2 and f3 read it: it is not known


async def test_a_row_whose_guard_was_refused_is_read_not_refused_again(
    stack: Stack, monkeypatch: pytest.MonkeyPatch, other_worker: Ledger
) -> None:
    # Kept as known after a refused guard, the row failed the guard at every later event and
    # took the locked path each time (a transaction of several statements instead of a read).
    await _placed_here(stack, quantity=5)
    assert await Tracker(stack.settings, other_worker, stack.pool).apply(_fill("f1"))
    tracker = Tracker(stack.settings, stack.ledger, stack.pool)
    locked = 0
    apply_locked = tracker._apply_locked

    async def counted(*args: Any, **kwargs: Any) -> Any:
        nonlocal locked
        locked += 1
        return await apply_locked(*args, **kwargs)

    monkeypatch.setattr(tracker, "_apply_locked", counted)
    for fill_id in ("f2", "f3", "f4"):
        assert await tracker.apply(_fill(fill_id))

    row = await stack.ledger.get("k1")
    assert row is not None
    assert (row.status, row.filled_qty) == (S.PARTIALLY_FILLED, 4)
    assert locked == 1  # f2's; f3 and f4 read the row and their guarded writes went through
    assert stack.ledger.known_event_row(ORDER, CID, None, account=ACCOUNT) is None


async def test_a_row_moved_from_a_state_not_known_here_is_forgotten(stack: Stack) -> None:
    await _placed_here(stack, quantity=3)
    assert stack.ledger.known_event_row(ORDER, CID, None, account=ACCOUNT) is not None

    # A guarded write from what a read found, not from what is known here (filled 1 after
    # a fill recorded elsewhere): what is known here may miss that fill, so it is dropped.
    await stack.ledger.pool.execute(
        "update trading_signals set filled_qty = 1, status = 'partially_filled' "
        "where signal_id = 'k1'"
    )
    moved = await stack.ledger.move_if(
        "k1", S.PARTIALLY_FILLED, expected=S.PARTIALLY_FILLED, filled_was=Decimal(1),
        event="fill", detail={"fill_id": "f2"}, filled_qty=Decimal(2),
    )  # fmt: skip

    assert moved is not None
    assert stack.ledger.known_event_row(ORDER, CID, None, account=ACCOUNT) is None


async def test_only_the_row_of_the_events_client_id_is_known(stack: Stack) -> None:
    await _placed_here(stack, quantity=1)

    known = stack.ledger.known_event_row(ORDER, CID, "f9", account=ACCOUNT)
    assert known is not None
    assert (known.signal_id, known.status, known.ordered_qty, known.fill_seen) == (
        "k1", "working", Decimal(1), False,
    )  # fmt: skip
    known_as = stack.ledger.known_event_row
    assert known_as(ORDER, None, None, account=ACCOUNT) is not None  # no client id given
    assert known_as(ORDER, "tb-other", None, account=ACCOUNT) is None
    assert known_as("999", CID, None, account=ACCOUNT) is None
    # Another account's order of the same id (another environment's: test_tracker_other_
    # environment.py) is not this row's.
    assert known_as(ORDER, None, None, account=ACCOUNT_2) is None


async def _two_pollers(
    stack: Stack, elsewhere: Ledger, order: str, prices: tuple[str, str, str], *, leg: bool
) -> None:
    """Apply what two workers' pollers saw of ``order``'s 2 lots filling: this one at 0, 1
    and 2 lots (the first lot, then the second at ``prices[0]``, ``prices[2]``), the other at
    0 and 2 (both at ``prices[1]``, the average)."""
    here = Tracker(stack.settings, stack.ledger, stack.pool)
    there = Tracker(stack.settings, elsewhere, stack.pool)
    first, average, second = prices
    on = order if leg else None
    assert await here.apply(_total(f"{order}@1", 1, 1, first, first, leg=on))
    assert await there.apply(_total(f"{order}@2", 2, 2, average, average, leg=on))
    assert await here.apply(_total(f"{order}@2", 1, 2, second, average, leg=on))


async def test_running_totals_two_pollers_saw_in_different_spans_are_never_summed(
    stack: Stack, other_worker: Ledger
) -> None:
    await _placed_here(stack, quantity=2)

    await _two_pollers(stack, other_worker, ORDER, ("21000", "21000.5", "21001"), leg=False)

    row = await stack.ledger.get("k1")
    assert row is not None
    assert (row.status, row.filled_qty, row.avg_fill_price) == (S.FILLED, 2, Decimal("21000.5"))
    fills = [(e.detail["fill_id"], e.detail["qty"], Decimal(e.detail["price"]))
             for e in await stack.ledger.history("k1") if e.event == "fill"]  # fmt: skip
    assert fills == [(f"{ORDER}@1", 1, 21000), (f"{ORDER}@2", 1, 21001)]


async def test_a_legs_running_totals_from_two_pollers_count_once_in_the_position(
    stack: Stack, other_worker: Ledger
) -> None:
    # The entry bought 2; its stop leg sold them, seen in different spans by two workers.
    await _placed_here(stack, quantity=2)
    tracker = Tracker(stack.settings, stack.ledger, stack.pool)
    assert await tracker.apply(_total(f"{ORDER}@2", 2, 2, "21000", "21000"))
    assert await stack.ledger.our_positions(ACCOUNT) == {"MNQZ6": 2}

    await _two_pollers(stack, other_worker, "L1", ("20990", "20990", "20990"), leg=True)

    assert await stack.ledger.our_positions(ACCOUNT) == {"MNQZ6": 0}

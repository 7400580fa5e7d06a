"""The tracker's write path: one read and one guarded write per event, and the locked path
when the row moved in between (fills are never lost nor counted twice)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest

from tracking.conftest import ACCOUNT, Stack
from tradebridge.brokers.base import BrokerOrderEvent
from tradebridge.domain.ids import AccountName, BrokerOrderId, ClientOrderId
from tradebridge.domain.lifecycle import SignalStatus as S
from tradebridge.domain.orders import OrderAccepted, OrderFilled
from tradebridge.store.ledger import Ledger
from tradebridge.tracking.tracker import Tracker

ORDER = "880001"


def _event(event: Any, client_order_id: str | None = None) -> BrokerOrderEvent:
    return BrokerOrderEvent(
        account=AccountName(ACCOUNT),
        broker_order_id=BrokerOrderId(ORDER),
        client_order_id=None if client_order_id is None else ClientOrderId(client_order_id),
        event=event,
    )


def _fill(fill_id: str, qty: int = 1, price: str = "21000") -> BrokerOrderEvent:
    return _event(OrderFilled(qty=qty, price=Decimal(price), ts_event=datetime.now(UTC),
                              fill_id=fill_id))  # fmt: skip


async def _working_row(stack: Stack, quantity: int) -> None:
    """A row placed for ``quantity`` lots: working, its submitted plan in its history."""
    await stack.insert("t1", quantity=quantity, client_order_id="tb-t1",
                       tradovate_order_id=ORDER, status="working")  # fmt: skip
    await stack.ledger.add_event("t1", "submitted", {"plan": "order", "quantity": quantity})


async def _fill_events(ledger: Ledger) -> list[str]:
    return [e.detail["fill_id"] for e in await ledger.history("t1") if e.event == "fill"]


def _both_read_first(ledger: Ledger, monkeypatch: pytest.MonkeyPatch) -> None:
    """Hold each event's read until two have read: both writes then race (the rare case)."""
    barrier = asyncio.Barrier(2)
    read: Callable[..., Awaitable[Any]] = ledger.event_row

    async def read_then_wait(*args: Any, **kwargs: Any) -> Any:
        found = await read(*args, **kwargs)
        async with asyncio.timeout(10):
            await barrier.wait()
        return found

    monkeypatch.setattr(ledger, "event_row", read_then_wait)


async def test_tracker_fills_move_row_to_partial_then_filled_with_average(stack: Stack) -> None:
    await _working_row(stack, quantity=2)
    tracker = Tracker(stack.settings, stack.ledger, stack.pool)

    assert await tracker.apply(_fill("f1", price="21000"))
    partial = await stack.ledger.get("t1")
    assert await tracker.apply(_fill("f2", price="21001"))
    filled = await stack.ledger.get("t1")

    assert partial is not None
    assert (partial.status, partial.filled_qty) == (S.PARTIALLY_FILLED, 1)
    assert filled is not None
    assert (filled.status, filled.filled_qty, filled.avg_fill_price) == (
        S.FILLED, 2, Decimal("21000.5"),
    )  # fmt: skip
    assert await _fill_events(stack.ledger) == ["f1", "f2"]


async def test_tracker_same_fill_twice_applied_once(stack: Stack) -> None:
    await _working_row(stack, quantity=2)
    tracker = Tracker(stack.settings, stack.ledger, stack.pool)

    assert await tracker.apply(_fill("f1"))
    assert await tracker.apply(_fill("f1"))

    row = await stack.ledger.get("t1")
    assert row is not None
    assert (row.status, row.filled_qty) == (S.PARTIALLY_FILLED, 1)
    assert await _fill_events(stack.ledger) == ["f1"]


async def test_tracker_two_fills_read_together_both_counted(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Both read "partially filled, 1 of 3"; the first write leaves the status as it was, so
    # only the filled quantity tells the second that the row moved: it applies under the lock.
    await _working_row(stack, quantity=3)
    tracker = Tracker(stack.settings, stack.ledger, stack.pool)
    assert await tracker.apply(_fill("f0"))
    _both_read_first(stack.ledger, monkeypatch)

    applied = await asyncio.gather(tracker.apply(_fill("f1")), tracker.apply(_fill("f2")))

    row = await stack.ledger.get("t1")
    assert applied == [True, True]
    assert row is not None
    assert (row.status, row.filled_qty) == (S.FILLED, 3)
    assert sorted(await _fill_events(stack.ledger)) == ["f0", "f1", "f2"]


async def test_tracker_same_fill_read_together_applied_once(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    await _working_row(stack, quantity=3)
    tracker = Tracker(stack.settings, stack.ledger, stack.pool)
    assert await tracker.apply(_fill("f0"))
    _both_read_first(stack.ledger, monkeypatch)

    applied = await asyncio.gather(tracker.apply(_fill("f1")), tracker.apply(_fill("f1")))

    row = await stack.ledger.get("t1")
    assert applied == [True, True]
    assert row is not None
    assert (row.status, row.filled_qty) == (S.PARTIALLY_FILLED, 2)
    assert await _fill_events(stack.ledger) == ["f0", "f1"]


@contextlib.asynccontextmanager
async def _counted_ledger(stack: Stack) -> AsyncIterator[tuple[Ledger, list[str]]]:
    """A second ledger on the stack's database, one connection, its statements recorded."""
    ledger = await Ledger.connect(stack.ledger._url, min_size=1, max_size=1)
    sent: list[str] = []
    try:
        async with ledger.pool.acquire() as conn:
            conn.add_query_logger(lambda record: sent.append(record.query))
        sent.clear()
        yield ledger, sent
    finally:
        await ledger.close()


def _accepted(client_order_id: str | None = "tb-t1") -> BrokerOrderEvent:
    # The simulator, like Tradovate may, reports the order before the command naming our id.
    return _event(OrderAccepted(BrokerOrderId(ORDER), datetime.now(UTC)), client_order_id)


async def test_tracker_event_costs_one_read_and_one_write(stack: Stack) -> None:
    await stack.insert("t1", quantity=1, client_order_id="tb-t1", status="submitted")
    await stack.ledger.add_event("t1", "submitted", {"plan": "order", "quantity": 1})
    async with _counted_ledger(stack) as (ledger, sent):
        tracker = Tracker(stack.settings, ledger, stack.pool)

        assert await tracker.apply(_accepted())
        after_accept = len(sent)
        assert await tracker.apply(_fill("f1"))

    row = await stack.ledger.get("t1")
    assert row is not None
    assert (row.status, row.tradovate_order_id, row.filled_qty) == (S.FILLED, ORDER, 1)
    assert (after_accept, len(sent) - after_accept) == (2, 2)


@pytest.mark.parametrize("client_order_id", ["tb-t1", None])
async def test_tracker_acceptance_of_row_this_process_placed_costs_no_statement(
    stack: Stack, client_order_id: str | None
) -> None:
    await stack.insert("t1", quantity=1, client_order_id="tb-t1", status="submitted")
    async with _counted_ledger(stack) as (ledger, sent):
        await ledger.transition(
            "t1", S.WORKING, expected=S.SUBMITTED, event="accepted", tradovate_order_id=ORDER
        )  # the dispatcher's outcome, in this process
        sent.clear()

        tracker = Tracker(stack.settings, ledger, stack.pool)
        assert await tracker.apply(_accepted(client_order_id))

    assert sent == []
    history = [e.event for e in await stack.ledger.history("t1")]
    assert history.count("accepted") == 1


async def test_tracker_acceptance_of_row_another_process_placed_reads_it(stack: Stack) -> None:
    await stack.insert("t1", quantity=1, client_order_id="tb-t1", status="submitted")
    await stack.ledger.transition(
        "t1", S.WORKING, expected=S.SUBMITTED, event="accepted", tradovate_order_id=ORDER
    )
    async with _counted_ledger(stack) as (ledger, sent):
        assert await Tracker(stack.settings, ledger, stack.pool).apply(_accepted())

    assert len(sent) == 1  # the read: nothing to do


@pytest.mark.parametrize("client_order_id", ["tb-t1", None])
async def test_tracker_event_during_this_process_send_waits_for_its_outcome(
    stack: Stack, client_order_id: str | None
) -> None:
    # The broker's report of an order arrives with the answer to its submit: the tracker
    # lets the dispatcher write the outcome first, then has nothing left to do. Without our
    # id on the event, it waits for the sends of the event's account.
    await stack.insert("t1", quantity=1, client_order_id="tb-t1", status="submitted")
    async with _counted_ledger(stack) as (ledger, sent):
        tracker = Tracker(stack.settings, ledger, stack.pool)
        with ledger.sending("tb-t1", ACCOUNT), ledger.sending("tb-other", "OTHER"):
            applying = asyncio.create_task(tracker.apply(_accepted(client_order_id)))
            await ledger.transition(
                "t1", S.WORKING, expected=S.SUBMITTED, event="accepted", tradovate_order_id=ORDER
            )  # the outcome: it finds the row still submitted
            outcome_statements = len(sent)
        assert await applying

    assert len(sent) == outcome_statements == 1
    history = [e.event for e in await stack.ledger.history("t1")]
    assert history.count("accepted") == 1


async def test_tracker_waits_once_for_a_send_that_hangs(stack: Stack) -> None:
    # A send whose answer hangs (until the request times out) holds up its order's events
    # once, for event_retry_s; later events of it are applied at once.
    await stack.insert("t1", quantity=2, client_order_id="tb-t1", status="submitted")
    await stack.ledger.add_event("t1", "submitted", {"plan": "order", "quantity": 2})
    tracker = Tracker(stack.settings, stack.ledger, stack.pool)
    with stack.ledger.sending("tb-t1", ACCOUNT):
        assert await tracker.apply(_accepted())  # waited event_retry_s, then applied
        tracker.retry_s = 60.0
        async with asyncio.timeout(10):
            assert await tracker.apply(_event(_fill("f1").event, "tb-t1"))

    row = await stack.ledger.get("t1")
    assert row is not None
    assert (row.status, row.filled_qty) == (S.PARTIALLY_FILLED, 1)

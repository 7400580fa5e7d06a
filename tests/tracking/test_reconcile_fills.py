"""Reconcile's filled total and the tracker's fills agree: a row's filled quantity is never
lowered and never counts a lot twice, whoever writes it (docs/ledger.md, "Filled quantity").

Reconcile writes the broker's running total of an order (no fill ids); the tracker writes
fills by id. A fill whose id is not recorded but that such a total counted already is
recorded, not added; reconcile's write is guarded by the filled quantity it read and only
raises it. Each test drives one interleaving step by step against the real ledger and the
simulator (found by review, 2026-12-07: tests/scratch_review_reconcile).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest

from tracking.conftest import ACCOUNT, Stack, StackFactory
from tradebridge.brokers.base import BrokerOrderEvent
from tradebridge.dispatch.reconcile import Reconciler
from tradebridge.domain.commands import CancelOrder
from tradebridge.domain.ids import AccountName, BrokerOrderId, ClientOrderId
from tradebridge.domain.lifecycle import SignalStatus as S
from tradebridge.domain.orders import OrderCancelled, OrderFilled
from tradebridge.sim.config import SimConfig
from tradebridge.store.ledger import EventRow, Ledger
from tradebridge.tracking.tracker import Tracker, _change

# One lot per match: a market order fills one lot at once, each price move one more.
ONE_LOT = SimConfig(port=0, price_step_s=3600, liquidity_per_fill=1)
# Rows count as idle (reconcile's net looks at them) this soon.
IDLE_S = 0.05


async def _eventually(
    check: Callable[[], Awaitable[bool]], what: str, timeout: float = 10.0
) -> None:
    try:
        async with asyncio.timeout(timeout):
            while not await check():
                await asyncio.sleep(0.02)
    except TimeoutError:
        pytest.fail(f"not within {timeout:g} s: {what}")


async def _idle(stack: Stack, signal_id: str) -> None:
    """Wait until reconcile's net would look at the row (nothing heard of it for a while)."""

    async def listed() -> bool:
        rows = await stack.ledger.open_orders_idle(timedelta(seconds=IDLE_S))
        return signal_id in {r[0] for r in rows}

    await _eventually(listed, f"{signal_id} idle")


def _fills(stack: Stack, order_id: int) -> list[Any]:
    return list(stack.sim.call(lambda: stack.sim.ctx.engine.fills(order_id)))


def _broker_filled(stack: Stack, order_id: int) -> int:
    return sum(f.qty for f in _fills(stack, order_id))


def _fill_event(cid: str, order_id: int, fill: Any) -> BrokerOrderEvent:
    """The event the user-sync socket emits for a fill (live, or replayed from the snapshot
    after a reconnect), keyed by the broker's fill id."""
    return BrokerOrderEvent(
        AccountName(ACCOUNT), BrokerOrderId(str(order_id)), ClientOrderId(cid),
        OrderFilled(fill.qty, fill.price, datetime.now(UTC), str(fill.id)),
    )  # fmt: skip


@asynccontextmanager
async def _tracker(stack: Stack, where: str) -> AsyncIterator[Tracker]:
    """A tracker in the placing process (it knows the row it wrote) or in another one."""
    if where == "same_process":
        yield Tracker(stack.settings, stack.ledger, stack.pool)
        return
    other = await Ledger.connect(stack.ledger._url, min_size=1, max_size=2)
    try:
        yield Tracker(stack.settings, other, stack.pool)
    finally:
        await other.close()


async def _state(stack: Stack, signal_id: str) -> tuple[S, Decimal]:
    row = await stack.ledger.get(signal_id)
    assert row is not None
    return row.status, row.filled_qty


@pytest.mark.parametrize("where", ["same_process", "other_process"])
async def test_reconcile_total_then_missed_fill_event_counts_the_lot_once(
    make_stack: StackFactory, where: str
) -> None:
    """Socket down while 1 of 2 lots fills; reconcile writes the broker's total (1); the
    socket comes back and replays the missed fill: recorded, not added (it was counted twice,
    FILLED 2 of a broker's 1). The next lot's fill is still added."""
    async with make_stack(ONE_LOT, dispatcher={"reconcile_interval_s": IDLE_S}) as stack:
        await stack.insert("f1", quantity=2)  # market buy 2: one lot fills at placement
        await stack.dispatcher("w1", tracking=False).drain_once()  # no tracker: socket down
        [entry] = stack.entries()
        assert _broker_filled(stack, entry.id) == 1
        await _idle(stack, "f1")
        report = await Reconciler(stack.settings, stack.ledger, stack.pool).reconcile_once()
        assert report.synced == {"f1": "partially_filled"}
        assert await _state(stack, "f1") == (S.PARTIALLY_FILLED, 1)

        [missed] = _fills(stack, entry.id)
        async with _tracker(stack, where) as tracker:
            assert await tracker.apply(_fill_event("tb-f1", entry.id, missed))
            assert await _state(stack, "f1") == (S.PARTIALLY_FILLED, 1)
            assert await tracker.apply(_fill_event("tb-f1", entry.id, missed))  # twice: once
            assert await _state(stack, "f1") == (S.PARTIALLY_FILLED, 1)

            stack.set_price(stack.last())  # the second lot fills
            [_, second] = _fills(stack, entry.id)
            assert await tracker.apply(_fill_event("tb-f1", entry.id, second))

        assert await _state(stack, "f1") == (S.FILLED, _broker_filled(stack, entry.id))
        fills = [e.detail for e in await stack.ledger.history("f1") if e.event == "fill"]
        assert [(d["fill_id"], d["qty"], d.get("covered")) for d in fills] == [
            (str(missed.id), 1, 1), (str(second.id), 1, None),
        ]  # fmt: skip


async def test_reconcile_stale_total_never_lowers_fills_the_tracker_wrote(
    make_stack: StackFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Reconcile reads the broker's total (2 of 5); before it writes, the tracker applies
    fills 2 and 3 (row: 3). Reconcile's write, guarded by the filled quantity it read, is
    refused; read again, the row is ahead of the report: nothing to write. It wrote 2 over 3,
    and a cancel of the rest then froze the row at cancelled 2 while the broker filled 3."""
    async with make_stack(ONE_LOT, dispatcher={"reconcile_interval_s": IDLE_S}) as stack:
        await stack.insert("s1", quantity=5)
        await stack.dispatcher("w1", tracking=False).drain_once()
        [entry] = stack.entries()
        tracker = Tracker(stack.settings, stack.ledger, stack.pool)
        [first] = _fills(stack, entry.id)
        assert await tracker.apply(_fill_event("tb-s1", entry.id, first))
        assert await _state(stack, "s1") == (S.PARTIALLY_FILLED, 1)
        stack.set_price(stack.last())  # fill 2 at the broker; its event not applied yet
        assert _broker_filled(stack, entry.id) == 2
        await _idle(stack, "s1")

        broker = await stack.pool.get(ACCOUNT)
        read = broker.order_reports
        meanwhile = True

        async def reports_then_events(account: AccountName) -> Any:
            nonlocal meanwhile
            found = await read(account)  # reconcile's read: 2 filled
            if meanwhile:  # fill 3 at the broker; the socket delivers fills 2 and 3
                meanwhile = False
                stack.set_price(stack.last())
                for fill in _fills(stack, entry.id)[1:]:
                    assert await tracker.apply(_fill_event("tb-s1", entry.id, fill))
                assert await _state(stack, "s1") == (S.PARTIALLY_FILLED, 3)
            return found

        monkeypatch.setattr(broker, "order_reports", reports_then_events)
        await Reconciler(stack.settings, stack.ledger, stack.pool).reconcile_once()
        monkeypatch.undo()
        assert not meanwhile
        assert await _state(stack, "s1") == (S.PARTIALLY_FILLED, 3)

        # The trader cancels the rest; the tracker writes it.
        await broker.cancel(CancelOrder(AccountName(ACCOUNT), BrokerOrderId(str(entry.id))))
        cancelled = BrokerOrderEvent(
            AccountName(ACCOUNT), BrokerOrderId(str(entry.id)), ClientOrderId("tb-s1"),
            OrderCancelled("by the trader"),
        )  # fmt: skip
        assert await tracker.apply(cancelled)
        assert _broker_filled(stack, entry.id) == 3
        assert await _state(stack, "s1") == (S.CANCELLED, 3)


async def test_reconcile_refused_by_a_newer_fill_reads_again_and_raises_to_broker_total(
    make_stack: StackFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Reconcile reads the broker's total (3 of 5) while the row has 1; before it writes,
    the tracker applies fill 2 (row: 2). Its guarded write is refused, the row read again
    (2), and raised to 3; fill 3's event, replayed later, is recorded, not added."""
    async with make_stack(ONE_LOT, dispatcher={"reconcile_interval_s": IDLE_S}) as stack:
        await stack.insert("r1", quantity=5)
        await stack.dispatcher("w1", tracking=False).drain_once()
        [entry] = stack.entries()
        tracker = Tracker(stack.settings, stack.ledger, stack.pool)
        [first] = _fills(stack, entry.id)
        assert await tracker.apply(_fill_event("tb-r1", entry.id, first))
        stack.set_price(stack.last())
        stack.set_price(stack.last() + 1)  # fills 2 and 3 at the broker, no events yet
        assert _broker_filled(stack, entry.id) == 3
        await _idle(stack, "r1")

        broker = await stack.pool.get(ACCOUNT)
        read = broker.order_reports
        meanwhile = True

        async def reports_then_fill_2(account: AccountName) -> Any:
            nonlocal meanwhile
            found = await read(account)  # reconcile's read: 3 filled
            if meanwhile:
                meanwhile = False
                second = _fills(stack, entry.id)[1]
                assert await tracker.apply(_fill_event("tb-r1", entry.id, second))
                assert await _state(stack, "r1") == (S.PARTIALLY_FILLED, 2)
            return found

        monkeypatch.setattr(broker, "order_reports", reports_then_fill_2)
        report = await Reconciler(stack.settings, stack.ledger, stack.pool).reconcile_once()
        monkeypatch.undo()
        assert not meanwhile
        assert report.synced == {"r1": "partially_filled"}
        assert await _state(stack, "r1") == (S.PARTIALLY_FILLED, 3)

        third = _fills(stack, entry.id)[2]
        assert await tracker.apply(_fill_event("tb-r1", entry.id, third))
        assert await _state(stack, "r1") == (S.PARTIALLY_FILLED, _broker_filled(stack, entry.id))


async def test_missed_fill_applied_by_two_trackers_at_once_is_counted_once(
    make_stack: StackFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Reconcile wrote 2 (fills A and B, neither event seen). A's event reaches two
    processes' trackers, which read the row at the same moment: it is recorded once. Recorded
    twice (a fill counted in a total leaves the status and filled quantity, the guard of a
    move, unchanged), B's event would then be added: FILLED 3 while the broker filled 2."""
    async with make_stack(ONE_LOT, dispatcher={"reconcile_interval_s": IDLE_S}) as stack:
        await stack.insert("t1", quantity=3)
        await stack.dispatcher("w1", tracking=False).drain_once()
        [entry] = stack.entries()
        stack.set_price(stack.last())  # A at placement, B now: no events
        await _idle(stack, "t1")
        await Reconciler(stack.settings, stack.ledger, stack.pool).reconcile_once()
        assert await _state(stack, "t1") == (S.PARTIALLY_FILLED, 2)
        fill_a, fill_b = _fills(stack, entry.id)

        together = asyncio.Barrier(2)
        async with _tracker(stack, "other_process") as one, _tracker(stack, "other_process") as two:
            for tracker in (one, two):
                real = tracker.ledger.event_row

                async def read_then_meet(*a: Any, _real: Any = real, **kw: Any) -> EventRow | None:
                    row = await _real(*a, **kw)
                    await together.wait()  # both have read the row before either writes
                    return row

                monkeypatch.setattr(tracker.ledger, "event_row", read_then_meet)
            event = _fill_event("tb-t1", entry.id, fill_a)
            assert all(await asyncio.gather(one.apply(event), two.apply(event)))
            monkeypatch.undo()
            assert await _state(stack, "t1") == (S.PARTIALLY_FILLED, 2)

            assert await one.apply(_fill_event("tb-t1", entry.id, fill_b))
            assert await _state(stack, "t1") == (S.PARTIALLY_FILLED, 2)

            stack.set_price(stack.last() + 1)  # the third lot
            assert await two.apply(_fill_event("tb-t1", entry.id, _fills(stack, entry.id)[2]))
        assert await _state(stack, "t1") == (S.FILLED, _broker_filled(stack, entry.id))
        recorded = [
            e.detail["fill_id"] for e in await stack.ledger.history("t1") if e.event == "fill"
        ]
        assert sorted(recorded) == sorted(str(f.id) for f in _fills(stack, entry.id))


def _row(filled: int, by_total: int, ordered: int | None, status: S) -> EventRow:
    return EventRow(
        signal_id="u1", status=status.value, filled_qty=Decimal(filled),
        avg_fill_price=Decimal(100) if filled else None, tradovate_order_id="9",
        ordered_qty=None if ordered is None else Decimal(ordered), by_total=Decimal(by_total),
    )  # fmt: skip


@pytest.mark.parametrize(
    ("filled", "by_total", "ordered", "status", "qty", "after"),
    [
        # nothing counted by a total: the fill is added
        (1, 0, 3, S.PARTIALLY_FILLED, 1, (S.PARTIALLY_FILLED, 2, None)),
        (2, 0, 3, S.PARTIALLY_FILLED, 1, (S.FILLED, 3, None)),
        # counted by a total: recorded, not added; the status as the quantity says
        (2, 2, 3, S.PARTIALLY_FILLED, 1, (S.PARTIALLY_FILLED, 2, 1)),
        (3, 1, None, S.WORKING, 1, (S.PARTIALLY_FILLED, 3, 1)),
        (3, 1, 3, S.WORKING, 1, (S.FILLED, 3, 1)),
        # counted in part: the rest is added
        (1, 1, 5, S.PARTIALLY_FILLED, 3, (S.PARTIALLY_FILLED, 3, 1)),
        (2, 1, 3, S.PARTIALLY_FILLED, 2, (S.FILLED, 3, 1)),
    ],
)
def test_fill_counted_by_a_total_is_recorded_not_added(
    filled: int, by_total: int, ordered: int | None, status: S, qty: int,
    after: tuple[S, int, int | None],
) -> None:  # fmt: skip
    event = BrokerOrderEvent(
        AccountName(ACCOUNT), BrokerOrderId("9"), ClientOrderId("tb-u1"),
        OrderFilled(qty, Decimal(100), datetime.now(UTC), "F"),
    )  # fmt: skip
    change = _change(_row(filled, by_total, ordered, status), event)
    assert change is not None
    new_status, new_filled, covered = after
    assert (change.new, change.fields["filled_qty"], change.detail.get("covered")) == (
        new_status, new_filled, covered,
    )  # fmt: skip
    assert change.detail["qty"] == qty
    assert change.covered is (covered is not None)


async def test_reconcile_final_report_below_the_row_writes_its_status_not_its_quantity(
    make_stack: StackFactory,
) -> None:
    """A row ahead of the broker's final total (something counted a lot twice) is not
    lowered by reconcile: the status is written, the quantity kept (and logged)."""
    async with make_stack(ONE_LOT, dispatcher={"reconcile_interval_s": IDLE_S}) as stack:
        await stack.insert("b1", quantity=3)
        await stack.dispatcher("w1", tracking=False).drain_once()
        [entry] = stack.entries()
        await stack.ledger.transition(
            "b1", S.PARTIALLY_FILLED, expected=S.WORKING, event="fill", filled_qty=2,
            avg_fill_price=Decimal(100),
        )  # fmt: skip
        broker = await stack.pool.get(ACCOUNT)
        await broker.cancel(CancelOrder(AccountName(ACCOUNT), BrokerOrderId(str(entry.id))))
        assert _broker_filled(stack, entry.id) == 1
        await _idle(stack, "b1")

        report = await Reconciler(stack.settings, stack.ledger, stack.pool).reconcile_once()

        assert report.synced == {"b1": "cancelled"}
        assert await _state(stack, "b1") == (S.CANCELLED, 2)

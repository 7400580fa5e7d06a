"""Reconcile's net follows an open row's order to its end even when the account's order
lists no longer show it.

The bridge lists a finished order in ``/orders`` for about a minute, then only in
``/ordersHistory``, newest first and at most ``tvbridge.history_max_count`` (200) of them.
An order that ended while no process followed the account (its end never came as an event)
and that more recent finished orders pushed out of that history is in neither list. Until
2026-12-08 reconcile compared open rows with those lists only, and such a row stayed
`working` for good (and counted as an open order in the risk rules): now the order of an
open row missing from them is read on its own (``Broker.order_report``).
"""

from __future__ import annotations

import asyncio
from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest

from _support.rig import front
from tracking.conftest import ACCOUNT, ACCOUNT_IDS, Stack, StackFactory
from tradebridge.dispatch.reconcile import Reconciler
from tradebridge.domain.enums import Dialect, OrderType, Side
from tradebridge.domain.lifecycle import SignalStatus
from tradebridge.runtime.serve import _lost_orders_judging
from tradebridge.sim.config import SimConfig
from tradebridge.sim.engine import OrderRequest

TICK = front().product.tick_size
IDLE_S = 0.05
HISTORY = 2  # stands for the default 200: the same cut, with fewer orders to push it


def _on_grid(price: Decimal) -> Decimal:
    return (price / TICK).to_integral_value() * TICK


def _by_hand_and_cancelled(stack: Stack) -> None:
    """An order nobody's row placed, then cancelled: a newer entry of the history."""
    request = OrderRequest(
        account_id=ACCOUNT_IDS[ACCOUNT], symbol=front().name, action=Side.BUY,
        order_type=OrderType.LIMIT, order_qty=1, price=_on_grid(stack.last() - 300),
    )  # fmt: skip

    def place_and_cancel() -> None:
        engine = stack.sim.ctx.engine
        engine.cancel_order(engine.place_order(request).order_id)

    stack.sim.call(place_and_cancel)


async def _idle(stack: Stack, signal_id: str) -> None:
    async with asyncio.timeout(10):
        while signal_id not in {
            r[0] for r in await stack.ledger.open_orders_idle(timedelta(seconds=IDLE_S))
        }:
            await asyncio.sleep(0.02)


async def test_reconcile_bridge_row_whose_cancel_left_history_ends_cancelled(
    make_stack: StackFactory,
) -> None:
    # Finished orders leave /orders at once (the bridge's minute, passed).
    sim = SimConfig(port=0, price_step_s=3600, finished_order_linger_s=0)
    async with make_stack(sim, dialect=Dialect.TVBRIDGE,
                          dispatcher={"reconcile_interval_s": IDLE_S},
                          tvbridge={"history_max_count": HISTORY}) as stack:  # fmt: skip
        await stack.insert("hist-1", order_type="limit", price=_on_grid(stack.last() - 200))
        await stack.dispatcher().drain_once()  # placed; no tracker runs (the process stops)
        row = await stack.wait("hist-1", "working")
        order_id = int(row.tradovate_order_id or 0)

        # While no process runs: the order is cancelled at the broker, then more orders end.
        stack.sim.call(lambda: stack.sim.ctx.engine.cancel_order(order_id))
        for _ in range(HISTORY):
            _by_hand_and_cancelled(stack)
        listed = await (await stack.pool.get(ACCOUNT)).order_reports(ACCOUNT)  # type: ignore[arg-type]
        assert str(order_id) not in {str(r.broker_order_id) for r in listed}

        await _idle(stack, "hist-1")
        report = await Reconciler(stack.settings, stack.ledger, stack.pool).reconcile_once()
        after = await stack.ledger.get("hist-1")

    assert after is not None
    assert (after.status, after.filled_qty or 0) == (SignalStatus.CANCELLED, 0)
    assert report.synced == {"hist-1": "cancelled"}


@pytest.mark.parametrize("dialect", [Dialect.NATIVE, Dialect.TVBRIDGE])
async def test_reconcile_open_row_whose_order_the_broker_lost_stays_open(
    make_stack: StackFactory, dialect: Dialect
) -> None:
    """An order the broker no longer knows at all (a simulator restarted) is not guessed."""
    async with make_stack(SimConfig(port=0, price_step_s=3600), dialect=dialect,
                          dispatcher={"reconcile_interval_s": IDLE_S}) as stack:  # fmt: skip
        await stack.insert("lost-1", status="working", client_order_id="tb-lost-1",
                           tradovate_order_id="990000001")  # fmt: skip
        await _idle(stack, "lost-1")
        report = await Reconciler(stack.settings, stack.ledger, stack.pool).reconcile_once()
        after = await stack.ledger.get("lost-1")

    assert after is not None
    assert after.status is SignalStatus.WORKING
    assert report.synced == {}


@pytest.mark.parametrize("dialect", [Dialect.NATIVE, Dialect.TVBRIDGE])
async def test_reconcile_reads_a_lost_order_less_and_less_and_reports_it(
    make_stack: StackFactory, dialect: Dialect, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Such an order is read again after a wait that doubles (not every round, for good),
    noted once on its row, and reported from the third "no such order" in a row; once the
    row closes, it is forgotten."""
    async with make_stack(SimConfig(port=0, price_step_s=3600), dialect=dialect,
                          dispatcher={"reconcile_interval_s": IDLE_S}) as stack:  # fmt: skip
        await stack.insert("lost-2", status="working", client_order_id="tb-lost-2",
                           tradovate_order_id="990000002")  # fmt: skip
        await _idle(stack, "lost-2")
        now = [1000.0]
        reconciler = Reconciler(stack.settings, stack.ledger, stack.pool, now_s=lambda: now[0])
        broker = await stack.pool.get(ACCOUNT)
        real = broker.order_report
        reads: list[str] = []

        async def counted(account: Any, order_id: Any) -> Any:
            reads.append(str(order_id))
            return await real(account, order_id)

        monkeypatch.setattr(broker, "order_report", counted)
        # Before any round, anything may be lost (a notice from before a restart is held).
        assert reconciler.lost_orders_judging() is None
        # Waits of 0.05, 0.1, 0.2 s on the reconciler's clock (the interval, doubling).
        for at, read in [(1000.0, 1), (1000.01, 1), (1000.05, 2), (1000.1, 2), (1000.15, 3)]:
            now[0] = at
            await reconciler.reconcile_once()
            assert reads.count("990000002") == read, at
            assert [o.signal_id for o in reconciler.lost_orders()] == (
                ["lost-2"] if read >= 3 else []
            )
            # Counted but not reported yet: its account is still being judged.
            assert reconciler.lost_orders_judging() == (
                frozenset() if read >= 3 else frozenset({ACCOUNT})
            )
        [lost] = reconciler.lost_orders()
        noted = [e for e in await stack.ledger.history("lost-2") if e.event == "order_not_found"]
        row = await stack.ledger.get("lost-2")
        assert row is not None
        assert row.status is SignalStatus.WORKING
        assert (lost.order_id, lost.misses, len(noted)) == ("990000002", 3, 1)

        # A restart: the new process counts again from nothing, but the loss is the one the
        # row's history noted (no second note; its notice says "since" the first answer).
        restarted = Reconciler(stack.settings, stack.ledger, stack.pool, now_s=lambda: now[0])
        for at in (1001.0, 1001.1, 1001.3):
            now[0] = at
            await restarted.reconcile_once()
        [again] = restarted.lost_orders()
        renoted = [e for e in await stack.ledger.history("lost-2") if e.event == "order_not_found"]
        assert (again.misses, again.first_at, len(renoted)) == (3, noted[0].created_at, 1)
        assert reads.count("990000002") == 6
        # Something happened to the row since the note (here a note of another kind): that
        # loss is not known to be this one, so the next process notes it anew.
        await stack.ledger.add_event("lost-2", "operator_note", {"note": "looked at it"})
        third = Reconciler(stack.settings, stack.ledger, stack.pool, now_s=lambda: now[0])
        now[0] = 1002.0
        await third.reconcile_once()
        events = [e.event for e in await stack.ledger.history("lost-2")]
        assert events[-2:] == ["operator_note", "order_not_found"]
        reads.clear()

        # The row closes (say its cancel comes at last): the reconciler forgets it.
        await stack.ledger.pool.execute(
            "update trading_signals set status = 'cancelled' where signal_id = 'lost-2'"
        )
        now[0] = 2000.0
        await reconciler.reconcile_once()
        assert reconciler.lost_orders() == []
        assert reconciler.lost_orders_judging() == frozenset()
        assert reads == []


async def test_a_running_worker_tells_the_notifier_which_lost_orders_it_still_counts(
    make_stack: StackFactory,
) -> None:
    """What ``serve`` hands its notifier (``_lost_orders_judging``) from a real worker:
    nothing known before the worker has decided to reconcile and read the open rows (a
    notice from before a restart is held), then the account whose lost order it counts."""
    async with make_stack(SimConfig(port=0, price_step_s=3600),
                          dispatcher={"reconcile_interval_s": IDLE_S}) as stack:  # fmt: skip
        await stack.insert("lost-3", status="working", client_order_id="tb-lost-3",
                           tradovate_order_id="990000003")  # fmt: skip
        await _idle(stack, "lost-3")
        worker = stack.dispatcher("w1", tracking=True)
        assert _lost_orders_judging([worker]) is None
        stack.start(worker)
        async with asyncio.timeout(20):
            while (judging := _lost_orders_judging([worker])) is None:
                await asyncio.sleep(0.02)
        assert judging == frozenset({ACCOUNT})
        # An intake-only process (no worker) holds nothing.
        assert _lost_orders_judging([]) == frozenset()

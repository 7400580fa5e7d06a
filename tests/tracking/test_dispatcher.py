"""The dispatcher end to end: rows in, orders at the simulator, statuses written back."""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest

from _support.rig import front, order
from tracking.conftest import ACCOUNT, ACCOUNT_2, Stack, StackFactory
from tradebridge.dispatch.placement import WORKER_LOCK_NAMESPACE, plan_to_json
from tradebridge.dispatch.reconcile import Reconciler
from tradebridge.domain.lifecycle import SignalStatus
from tradebridge.obs.metrics import REGISTRY
from tradebridge.pipeline.route import PlaceOrder
from tradebridge.pipeline.validate import RawSignal, ValidSignal


def _sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


async def test_dispatcher_market_row_ends_filled_with_fields(stack: Stack) -> None:
    stack.start(stack.dispatcher())
    await stack.insert("m1", quantity=2)

    row = await stack.wait("m1", "filled")

    [order] = stack.entries()
    assert row.tradovate_order_id == str(order.id)
    assert row.client_order_id == "tb-m1"
    assert row.filled_qty == 2
    assert row.avg_fill_price is not None
    assert row.account_id == "100001"
    assert row.placement_attempts == 1
    events = [e.event for e in await stack.ledger.history("m1")]
    # The submit's answer and the user-sync fill race: either may move the row first.
    assert events[:2] == ["claimed", "submitted"]
    assert events[2] in ("accepted", "fill")
    calls = await stack.ledger.broker_calls("m1")
    assert any(c.call.path == "/order/placeorder" for c in calls)


async def test_dispatcher_far_limit_rests_then_tracker_writes_fill(stack: Stack) -> None:
    stack.start(stack.dispatcher())
    tick = front().product.tick_size
    limit = (stack.last() / tick).to_integral_value() * tick - 40 * tick
    await stack.insert("l1", order_type="limit", price=limit)
    await stack.wait("l1", "working")

    stack.set_price(limit - 4 * tick)

    row = await stack.wait("l1", "filled")
    assert row.filled_qty == 1
    assert row.avg_fill_price == limit


async def test_dispatcher_broker_rejection_ends_rejected_with_text(stack: Stack) -> None:
    faults = stack.sim.ctx.faults
    faults.inject_failure_reason = "AccountClosed"
    faults.inject_failure_text = "Account is closed for trading"
    faults.inject_failure_count = 1
    stack.start(stack.dispatcher())
    await stack.insert("r1")

    row = await stack.wait("r1", "rejected")

    assert row.error_message is not None
    assert "AccountClosed" in row.error_message
    assert "closed for trading" in row.error_message


async def test_dispatcher_rows_of_one_account_are_placed_in_insertion_order(stack: Stack) -> None:
    for i in range(6):
        await stack.insert(f"o{i}", side="buy" if i % 2 else "sell")
    stack.start(stack.dispatcher())

    rows = [await stack.wait(f"o{i}", "filled") for i in range(6)]

    by_id = sorted(stack.entries(), key=lambda o: o.id)
    assert [str(o.id) for o in by_id] == [r.tradovate_order_id for r in rows]


async def test_dispatcher_internal_error_row_is_retried_never_failed_and_keeps_its_turn(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tradebridge.dispatch import dispatcher as module

    real = module.needs
    calls = Counter[str]()

    def explode(signal: ValidSignal, **kw: Any) -> object:
        calls[signal.signal_id] += 1
        if signal.signal_id == "buggy" and calls["buggy"] <= 3:
            raise RuntimeError("boom")
        return real(signal, **kw)

    monkeypatch.setattr(module, "needs", explode)
    errors_before = _sample("tradebridge_row_errors_total", kind="internal")
    await stack.insert("buggy")
    await stack.insert("after")
    dispatcher = stack.dispatcher()
    stack.start(dispatcher)

    buggy = await stack.wait("buggy", "filled")
    after = await stack.wait("after", "filled")

    assert calls["buggy"] == 4
    events = await stack.ledger.history("buggy")
    retries = [e.detail["reason"] for e in events if e.event == "requeued"]
    assert retries == ["retry after internal: RuntimeError: boom"] * 3
    assert "failed" not in [e.event for e in events]
    assert _sample("tradebridge_row_errors_total", kind="internal") == errors_before + 3
    # Its turn is kept: the account's next row waited behind it.
    assert int(str(buggy.tradovate_order_id)) < int(str(after.tradovate_order_id))
    assert dispatcher.retrying_rows() == {}


async def test_dispatcher_row_validation_cannot_check_is_denied_not_retried(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same columns would raise again on every try: retried, the row would hold back its
    account's queue for good."""
    from tradebridge.dispatch import dispatcher as module

    real = module.validate

    def explode(raw: RawSignal, **kw: Any) -> object:
        if raw.signal_id == "unreadable":
            raise ArithmeticError("columns beyond reason")
        return real(raw, **kw)

    monkeypatch.setattr(module, "validate", explode)
    await stack.insert("unreadable")
    await stack.insert("after")
    stack.start(stack.dispatcher())

    denied = await stack.wait("unreadable", "denied")
    await stack.wait("after", "filled")

    assert denied.error_message is not None
    assert "the row could not be checked: ArithmeticError: columns beyond reason" in (
        denied.error_message
    )
    events = [e.event for e in await stack.ledger.history("unreadable")]
    assert "requeued" not in events
    assert len(stack.entries()) == 1


async def test_dispatcher_row_with_an_absurd_price_is_denied_and_does_not_hold_back_its_account(
    stack: Stack,
) -> None:
    """A price the numeric column holds but Decimal's tick check cannot (28 digits)."""
    stack.start(stack.dispatcher())
    await stack.insert("poison", order_type="limit", price=Decimal("1e28"))
    await stack.insert("after")

    poison = await stack.wait("poison", "denied", timeout=8)
    await stack.wait("after", "filled", timeout=10)

    assert "price 1E+28 is too large" in (poison.error_message or "")


@pytest.mark.parametrize("signal_id", ["breakout-sl", "es-0930-tp", "spread-leg"])
async def test_dispatcher_row_whose_signal_id_ends_like_a_leg_is_denied_before_any_order(
    stack: Stack, signal_id: str
) -> None:
    """Its order id "tb-<signal_id>" would read as a bracket leg's of another row: the
    tracker would book its fills there (an exit "brk-sl" counted on its entry "brk")."""
    stack.start(stack.dispatcher())
    await stack.insert("brk")
    await stack.wait("brk", "filled")
    await stack.insert(signal_id, side="sell")

    row = await stack.wait(signal_id, "denied")

    suffix = "-" + signal_id.rsplit("-", 1)[1]
    assert f"ends with '{suffix}', which is reserved for bracket legs" in (row.error_message or "")
    assert "rename the signal" in (row.error_message or "")
    assert row.client_order_id is None
    assert len(stack.entries()) == 1
    assert stack.net_position() == 1


async def test_dispatcher_row_taken_over_midway_never_ends_failed(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The loss: reconcile requeued a row this worker was placing, so the write-ahead
    # was refused ("claimed by None"), and by the time the worker looked again the row was
    # claimed anew under the same worker id; the worker then ended it `failed`.
    transition = stack.ledger.transition
    taken = False

    async def requeued_meanwhile(signal_id: str, new_status: SignalStatus, **kw: Any) -> Any:
        nonlocal taken
        if taken or new_status is not SignalStatus.SUBMITTED:
            return await transition(signal_id, new_status, **kw)
        taken = True
        await stack.ledger.requeue_stale(older_than=timedelta(0), claimed_by="w1")
        try:
            return await transition(signal_id, new_status, **kw)
        finally:
            await stack.ledger.claim_next("w1")

    monkeypatch.setattr(stack.ledger, "transition", requeued_meanwhile)
    before = _sample("tradebridge_row_errors_total", kind="claim_lost")
    await stack.insert("taken")
    stack.start(stack.dispatcher())

    row = await stack.wait("taken", "filled", "failed")

    events = [e.event for e in await stack.ledger.history("taken")]
    assert row.status is SignalStatus.FILLED, row.error_message
    assert events.count("claimed") >= 2
    assert [o.cl_ord_id for o in stack.entries()] == ["tb-taken"]
    # At least the refused write-ahead; under load the dispatcher's own wake may also have
    # claimed the requeued row first (the write-ahead then goes through), and the loser of
    # that race counts the loss, possibly after the row reads filled: wait for it.
    deadline = asyncio.get_running_loop().time() + 10
    while _sample("tradebridge_row_errors_total", kind="claim_lost") < before + 1:
        if asyncio.get_running_loop().time() > deadline:
            break
        await asyncio.sleep(0.01)
    assert _sample("tradebridge_row_errors_total", kind="claim_lost") >= before + 1


async def test_two_dispatchers_place_every_row_exactly_once(stack: Stack) -> None:
    ids = [f"t{i}" for i in range(40)]
    for i, signal_id in enumerate(ids):
        await stack.insert(signal_id, account_name=ACCOUNT if i % 2 else ACCOUNT_2,
                           side="buy" if i % 4 < 2 else "sell")  # fmt: skip
    stack.start(stack.dispatcher("a"))
    stack.start(stack.dispatcher("b"))

    rows = [await stack.wait(s, "filled", timeout=30) for s in ids]

    orders = stack.entries(ACCOUNT) + stack.entries(ACCOUNT_2)
    assert len(orders) == len(ids)
    assert sorted(o.cl_ord_id or "" for o in orders) == sorted(f"tb-{s}" for s in ids)
    assert {r.tradovate_order_id for r in rows} == {str(o.id) for o in orders}


async def test_dispatcher_listener_dropped_timer_drain_still_places(
    make_stack: StackFactory,
) -> None:
    async with make_stack(dispatcher={"drain_interval_s": 0.5}) as stack:
        dispatcher = stack.dispatcher()
        stack.start(dispatcher)
        await stack.insert("before")
        await stack.wait("before", "filled")
        # Drop the listener's connection: the notification of the next insert is lost.
        await stack.ledger.pool.execute(
            "select pg_terminate_backend(pid) from pg_stat_activity "
            "where application_name = 'tradebridge-listener'"
        )
        await stack.insert("after")

        row = await stack.wait("after", "filled", timeout=10)

    assert row.placement_attempts == 1


async def test_dispatcher_accept_then_drop_is_looked_up_and_adopted_once(stack: Stack) -> None:
    faults = stack.sim.ctx.faults
    faults.drop_after_accept_rate = 1.0
    tick = front().product.tick_size
    limit = (stack.last() / tick).to_integral_value() * tick - 40 * tick
    stack.start(stack.dispatcher())
    await stack.insert("d1", order_type="limit", price=limit)
    await stack.wait("d1", "unknown", "working")
    faults.drop_after_accept_rate = 0.0

    row = await stack.wait("d1", "working")

    [order] = stack.entries()
    assert row.tradovate_order_id == str(order.id)
    assert row.placement_attempts == 1
    events = [e.event for e in await stack.ledger.history("d1")]
    assert "unknown" in events
    assert "adopted" in events or "accepted" in events


@pytest.mark.parametrize("sent", [True, False])
async def test_reconcile_dead_workers_submitted_row_ends_with_one_order(
    stack: Stack, sent: bool
) -> None:
    # A worker claimed the row, wrote `submitted` (with its plan) and died, before or after
    # its request reached the broker.
    await stack.insert("k1")
    [claimed] = await stack.ledger.claim_next("ghost")
    plan = PlaceOrder(order("tb-k1", account=ACCOUNT))
    await stack.ledger.transition(
        "k1", SignalStatus.SUBMITTED, expected=SignalStatus.PROCESSING, owner="ghost",
        client_order_id="tb-k1", detail=plan_to_json(plan),
    )  # fmt: skip
    if sent:
        await (await stack.pool.get(ACCOUNT)).submit(plan.command)
    reconciler = Reconciler(stack.settings, stack.ledger, stack.pool)

    report = await reconciler.reconcile_once()

    assert claimed.signal_id == "k1"
    assert report.dead_workers == ["ghost"]
    assert report.marked_unknown == ["k1"]
    row = await stack.ledger.get("k1")
    assert row is not None
    assert row.status in (SignalStatus.WORKING, SignalStatus.FILLED)
    assert [o.cl_ord_id for o in stack.entries()] == ["tb-k1"]
    assert row.tradovate_order_id == str(stack.entries()[0].id)
    assert row.placement_attempts == (1 if sent else 2)


async def test_reconcile_dead_workers_processing_row_goes_back_to_pending(stack: Stack) -> None:
    await stack.insert("p1")
    await stack.ledger.claim_next("ghost")

    report = await Reconciler(stack.settings, stack.ledger, stack.pool).reconcile_once()

    assert report.requeued == ["p1"]
    row = await stack.ledger.get("p1")
    assert row is not None
    assert row.status is SignalStatus.PENDING


async def test_reconcile_live_workers_rows_are_left_alone(stack: Stack) -> None:
    dispatcher = stack.dispatcher("alive")
    await stack.insert("a1")
    async with dispatcher.liveness():
        await stack.ledger.claim_next("alive")
        report = await Reconciler(stack.settings, stack.ledger, stack.pool).reconcile_once()

    assert report.dead_workers == []
    row = await stack.ledger.get("a1")
    assert row is not None
    assert row.status is SignalStatus.PROCESSING


@pytest.mark.parametrize("where", ["this process", "another process"])
@pytest.mark.parametrize("status", [SignalStatus.PROCESSING, SignalStatus.SUBMITTED])
async def test_reconcile_leaves_a_live_workers_old_claim_to_it(
    stack: Stack, status: SignalStatus, where: str
) -> None:
    # A live worker's request can wait in the user's request budget long after its
    # write-ahead (an hour window used up, a queue stalled). Marking the row unknown and
    # looking it up meanwhile finds nothing, fails it, and the order leaves afterwards.
    worker = "alive" if where == "this process" else "remote"
    async with contextlib.AsyncExitStack() as alive:
        if where == "this process":
            await alive.enter_async_context(stack.dispatcher(worker).liveness())
        else:  # another process's worker: only its liveness lock says it lives
            conn = await alive.enter_async_context(stack.ledger._pool.acquire())
            await conn.execute(
                "select pg_advisory_lock($1, hashtext($2))", WORKER_LOCK_NAMESPACE, worker
            )
            alive.push_async_callback(conn.execute, "select pg_advisory_unlock_all()")
        await stack.insert("old")
        await stack.ledger.claim_next(worker)
        if status is SignalStatus.SUBMITTED:
            plan = PlaceOrder(order("tb-old", account=ACCOUNT))
            await stack.ledger.transition(
                "old", SignalStatus.SUBMITTED, expected=SignalStatus.PROCESSING, owner=worker,
                client_order_id="tb-old", detail=plan_to_json(plan),
            )  # fmt: skip
        async with stack.ledger._pool.acquire() as db:  # claimed long before stale_after_s
            await db.execute(
                "update trading_signals set claimed_at = now() - interval '1 hour' "
                "where signal_id = 'old'"
            )
        report = await Reconciler(stack.settings, stack.ledger, stack.pool).reconcile_once()

    assert report.requeued == []
    assert report.marked_unknown == []
    row = await stack.ledger.get("old")
    assert row is not None
    assert row.status is status
    assert row.claimed_by == worker


async def test_reconcile_unknown_row_without_a_recorded_plan_needs_review_never_failed(
    stack: Stack,
) -> None:
    # It may have been sent: 'failed' would say no order rests at the broker.
    await stack.insert("np")
    await stack.ledger.claim_next("ghost")
    await stack.ledger.transition(
        "np", SignalStatus.SUBMITTED, expected=SignalStatus.PROCESSING, owner="ghost"
    )

    report = await Reconciler(stack.settings, stack.ledger, stack.pool).reconcile_once()

    row = await stack.ledger.get("np")
    assert row is not None
    assert report.resolved == {"np": "needs_review"}
    assert row.status is SignalStatus.NEEDS_REVIEW
    assert row.error_message is not None
    assert "no plan recorded" in row.error_message

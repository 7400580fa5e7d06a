"""A lookup by shape never takes the order of another row still in flight (issue 8).

On the bridge no client id comes back, so a lost submit's order is found by shape: new since
its baseline, owned by no other row. A row still in flight (``submitted``, ``unknown``,
``needs_review``) owns nothing in the ledger yet, but its order may be the very one the lookup
sees. The race the crash test can hit: x's worker dies between the write-ahead and the send
(nothing reached the broker); y, the account's next row of the same shape, is sent by another
worker; x's lookup runs while y's answer is on its way (or lost) and finds exactly one new
order of x's shape: y's. These tests drive that race step by step, with the simulator's record
of each order's ``requestId`` as the truth.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from decimal import Decimal

import pytest

from _support.native import front
from tracking.conftest import ACCOUNT, ACCOUNT_IDS, Stack, StackFactory
from tradebridge.dispatch.placement import Placer, lookup_window_s, plan_to_json
from tradebridge.dispatch.reconcile import Reconciler
from tradebridge.domain.commands import SubmitOrder
from tradebridge.domain.enums import Dialect, OrderType, Side
from tradebridge.domain.ids import AccountName, client_order_id_for
from tradebridge.domain.lifecycle import SignalStatus
from tradebridge.pipeline.route import PlaceOrder
from tradebridge.sim.engine import OrderRequest
from tradebridge.tracking.tracker import Tracker

WORKER = "w-dead"


def _far_sell(stack: Stack) -> Decimal:
    tick = front().product.tick_size
    return (stack.last() / tick).to_integral_value() * tick + 200 * tick


def _command(signal_id: str, price: Decimal) -> SubmitOrder:
    return SubmitOrder(
        client_order_id=client_order_id_for(signal_id), account=AccountName(ACCOUNT),
        contract=front(), side=Side.SELL, order_type=OrderType.LIMIT, quantity=1,
        limit_price=price,
    )  # fmt: skip


async def _write_ahead(stack: Stack, signal_id: str, price: Decimal) -> None:
    """Take the baseline and commit ``submitted``, as a dispatcher does before it sends."""
    broker = await stack.pool.get(ACCOUNT)
    command = _command(signal_id, price)
    detail = plan_to_json(PlaceOrder(command))
    begun = datetime.now(UTC)
    baseline = await broker.lookup_baseline(command)
    assert baseline is not None
    detail["baseline"] = baseline.to_json()
    detail["baseline_after"] = begun.isoformat()
    await stack.ledger.transition(
        signal_id, SignalStatus.SUBMITTED, expected=SignalStatus.PROCESSING, owner=WORKER,
        client_order_id=command.client_order_id, detail=detail,
    )  # fmt: skip


def _sent_by_another_worker(stack: Stack, signal_id: str, price: Decimal) -> str:
    """Place the row's order at the simulator as another worker's bridge submit would."""
    request = OrderRequest(
        account_id=ACCOUNT_IDS[ACCOUNT], symbol=front().name, action=Side.SELL,
        order_type=OrderType.LIMIT, order_qty=1, price=price,
        cl_ord_id=client_order_id_for(signal_id), is_automated=True,
    )  # fmt: skip
    engine = stack.sim.ctx.engine
    result = stack.sim.call(lambda: engine.place_order(request))
    assert result.order_id is not None
    return str(result.order_id)


async def _claim(stack: Stack, *signal_ids: str, price: Decimal) -> None:
    for signal_id in signal_ids:
        await stack.insert(signal_id, side="sell", order_type="limit", price=price)
    claimed = await stack.ledger.claim_next(WORKER, 1, per_account=len(signal_ids))
    assert [r.signal_id for r in claimed] == list(signal_ids)


async def _lost(stack: Stack, signal_id: str) -> None:
    await stack.ledger.transition(
        signal_id, SignalStatus.UNKNOWN, expected=SignalStatus.SUBMITTED,
        error_message="worker lost",
    )  # fmt: skip


def _placer(stack: Stack) -> Placer:
    return Placer(
        stack.ledger, stack.settings.dispatcher, lookup_window_s=lookup_window_s(stack.settings)
    )


def _owner(stack: Stack) -> dict[str, str | None]:
    return {str(o.id): o.cl_ord_id for o in stack.entries()}


async def test_lookup_while_a_same_shape_row_is_in_flight_waits_then_resends_its_own(
    make_stack: StackFactory,
) -> None:
    async with make_stack(dialect=Dialect.TVBRIDGE) as stack:
        price = _far_sell(stack)
        await _claim(stack, "x", "y", price=price)
        await _write_ahead(stack, "x", price)
        await _lost(stack, "x")  # its worker died before the request left
        await _write_ahead(stack, "y", price)
        y_order = _sent_by_another_worker(stack, "y", price)  # y's answer still on its way
        placer = _placer(stack)
        broker = await stack.pool.get(ACCOUNT)
        today = datetime.now(UTC).date()

        assert await placer.resolve("x", broker, today=today) is SignalStatus.UNKNOWN
        x = await stack.ledger.get("x")
        assert x is not None
        assert x.tradovate_order_id is None  # y's order is not taken
        events = [e.event for e in await stack.ledger.history("x")]
        assert "lookup_ambiguous" in events

        await stack.ledger.transition(  # y's answer arrives: y owns its order
            "y", SignalStatus.WORKING, expected=SignalStatus.SUBMITTED, tradovate_order_id=y_order
        )
        assert await placer.resolve("x", broker, today=today) is SignalStatus.WORKING
        x = await stack.ledger.get("x")
        assert x is not None
        assert x.placement_attempts == 2  # proven absent, then resent with its own id
        owner = _owner(stack)
        assert owner[y_order] == "tb-y"
        assert x.tradovate_order_id is not None
        assert owner[x.tradovate_order_id] == "tb-x"


async def test_lookup_of_a_row_sent_after_an_older_unresolved_row_adopts_its_own(
    make_stack: StackFactory,
) -> None:
    # x's submit (never executed) is older than the lookup window when y is claimed; y's own
    # order appears after y's baseline, so it cannot be x's: y adopts it, x is resent.
    async with make_stack(dialect=Dialect.TVBRIDGE) as stack:
        price = _far_sell(stack)
        await _claim(stack, "x", price=price)
        await _write_ahead(stack, "x", price)
        await _lost(stack, "x")
        await asyncio.sleep(lookup_window_s(stack.settings) + 0.2)
        await _claim(stack, "y", price=price)
        await _write_ahead(stack, "y", price)
        y_order = _sent_by_another_worker(stack, "y", price)
        await _lost(stack, "y")  # y's answer was lost too
        placer = _placer(stack)
        broker = await stack.pool.get(ACCOUNT)
        today = datetime.now(UTC).date()

        assert await placer.resolve("y", broker, today=today) is SignalStatus.WORKING
        assert await placer.resolve("x", broker, today=today) is SignalStatus.WORKING

        owner = _owner(stack)
        rows = {sid: await stack.ledger.get(sid) for sid in ("x", "y")}
        for sid, row in rows.items():
            assert row is not None
            assert row.tradovate_order_id is not None
            assert owner[row.tradovate_order_id] == f"tb-{sid}"
        assert rows["y"] is not None
        assert rows["y"].tradovate_order_id == y_order
        assert sorted(owner.values(), key=str) == ["tb-x", "tb-y"]


async def test_order_recorded_by_its_row_while_the_lookup_ran_is_looked_up_again_not_escalated(
    make_stack: StackFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The lookup read the owned orders before y recorded its order, and y was no longer in
    # flight when x tried to adopt it: the database refuses (one row per broker order). That
    # order was never x's: x looks again, finds itself absent, and is resent.
    async with make_stack(dialect=Dialect.TVBRIDGE) as stack:
        price = _far_sell(stack)
        await _claim(stack, "x", "y", price=price)
        await _write_ahead(stack, "x", price)
        await _lost(stack, "x")
        await _write_ahead(stack, "y", price)
        y_order = _sent_by_another_worker(stack, "y", price)
        owned_before_y = await stack.ledger.owned_orders(ACCOUNT, besides="x")
        await stack.ledger.transition(
            "y", SignalStatus.WORKING, expected=SignalStatus.SUBMITTED, tradovate_order_id=y_order
        )
        read_owned = stack.ledger.owned_orders
        stale = [owned_before_y]

        async def owned_read_before_y_recorded(account: str, *, besides: str) -> frozenset[str]:
            return stale.pop() if stale else await read_owned(account, besides=besides)

        monkeypatch.setattr(stack.ledger, "owned_orders", owned_read_before_y_recorded)
        broker = await stack.pool.get(ACCOUNT)

        status = await _placer(stack).resolve("x", broker, today=datetime.now(UTC).date())

        assert status is SignalStatus.WORKING
        x = await stack.ledger.get("x")
        assert x is not None
        assert x.tradovate_order_id is not None
        assert _owner(stack)[x.tradovate_order_id] == "tb-x"
        assert "escalated" not in [e.event for e in await stack.ledger.history("x")]


async def test_order_seen_by_a_refused_lookup_is_not_named_ours_to_the_tracker(
    make_stack: StackFactory,
) -> None:
    # x's lookup sees y's order and (rightly) does not adopt it; the bridge adapter must not
    # remember it as x's either, or the tracker applies y's fill to x "by client id" (seen in
    # the crash test: a row filled with another row's order, that row resent).
    async with make_stack(dialect=Dialect.TVBRIDGE) as stack:
        price = _far_sell(stack)
        await _claim(stack, "x", "y", price=price)
        await _write_ahead(stack, "x", price)
        await _lost(stack, "x")
        await _write_ahead(stack, "y", price)
        y_order = _sent_by_another_worker(stack, "y", price)
        tracker = asyncio.create_task(Tracker(stack.settings, stack.ledger, stack.pool).run())
        stack.tasks.append(tracker)
        await asyncio.sleep(0.5)  # the tracker's first poll: its baseline
        broker = await stack.pool.get(ACCOUNT)
        today = datetime.now(UTC).date()

        assert await _placer(stack).resolve("x", broker, today=today) is SignalStatus.UNKNOWN
        stack.set_price(price)  # y's order fills; the tracker sees it
        await asyncio.sleep(1.0)

        x = await stack.ledger.get("x")
        assert x is not None
        assert x.status is SignalStatus.UNKNOWN, [e.event for e in await stack.ledger.history("x")]
        assert x.tradovate_order_id is None
        await stack.ledger.transition(  # y's answer lands; reconcile finds y's fill
            "y", SignalStatus.WORKING, expected=SignalStatus.SUBMITTED, tradovate_order_id=y_order
        )
        await asyncio.sleep(stack.settings.dispatcher.reconcile_interval_s + 0.1)
        await Reconciler(stack.settings, stack.ledger, stack.pool).reconcile_once()
        y = await stack.wait("y", "filled")
        assert y.tradovate_order_id == y_order


async def test_rows_claimed_in_one_batch_tell_an_older_unresolved_submit_by_the_baseline_time(
    make_stack: StackFactory,
) -> None:
    # x and y were claimed together; x's submit never ran, y's order exists and its answer
    # was lost. y's baseline was read well after x's submit (and its window): y's order
    # cannot be x's. Both end with their own order, nobody waits for the bound.
    async with make_stack(dialect=Dialect.TVBRIDGE) as stack:
        price = _far_sell(stack)
        await _claim(stack, "x", "y", price=price)
        await _write_ahead(stack, "x", price)
        await _lost(stack, "x")
        await asyncio.sleep(lookup_window_s(stack.settings) + 1.2)  # + the clock slack
        await _write_ahead(stack, "y", price)
        y_order = _sent_by_another_worker(stack, "y", price)
        await _lost(stack, "y")
        placer = _placer(stack)
        broker = await stack.pool.get(ACCOUNT)
        today = datetime.now(UTC).date()

        assert await placer.resolve("y", broker, today=today) is SignalStatus.WORKING
        assert await placer.resolve("x", broker, today=today) is SignalStatus.WORKING

        owner = _owner(stack)
        y = await stack.ledger.get("y")
        x = await stack.ledger.get("x")
        assert y is not None
        assert x is not None
        assert y.tradovate_order_id == y_order
        assert x.tradovate_order_id is not None
        assert owner[x.tradovate_order_id] == "tb-x"


async def test_dispatcher_stores_when_it_began_reading_the_baseline(
    make_stack: StackFactory,
) -> None:
    async with make_stack(dialect=Dialect.TVBRIDGE) as stack:
        stack.start(stack.dispatcher())
        before = datetime.now(UTC)
        await stack.insert("a", side="sell", order_type="limit", price=_far_sell(stack))
        await stack.wait("a", "working")
        submitted = [e for e in await stack.ledger.history("a") if e.event == "submitted"]
        assert len(submitted) == 1
        detail = submitted[0].detail
        assert "baseline" in detail
        assert before <= datetime.fromisoformat(detail["baseline_after"]) <= datetime.now(UTC)

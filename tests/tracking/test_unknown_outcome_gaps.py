"""Gaps in resolving unknown outcomes found by review (2026-12-07).

* A submit's request may leave, and reach the broker, long after its write-ahead (the
  request budget's wait, a p-ticket's p-time and resend, a request that timed out): the
  lookup must not conclude "absent" before the window has passed since then.
* An accepted answer naming an order another row already holds (it adopted it by shape)
  must not leave the row ``submitted``: its account would claim nothing more.
* An unknown cancel or flatten that fails every time it runs must not hold its account's
  exits for good: it is bounded like an order (its first run, ``max_resends``).
* A row still ``submitted`` may not have sent its request yet: a lookup by shape of
  another row never takes the order it may place, however old its write-ahead.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from _support.native import front, order
from tracking.conftest import ACCOUNT, ACCOUNT_IDS, Stack, StackFactory
from tradebridge.brokers.base import Broker
from tradebridge.dispatch.placement import Placer, lookup_window_s, plan_to_json
from tradebridge.dispatch.reconcile import Reconciler
from tradebridge.domain.commands import SubmitOrder
from tradebridge.domain.enums import Dialect, OrderType, Side
from tradebridge.domain.ids import AccountName, BrokerOrderId, client_order_id_for
from tradebridge.domain.lifecycle import SignalStatus
from tradebridge.errors import OutcomeUnknown
from tradebridge.pipeline.route import PlaceOrder
from tradebridge.sim.engine import OrderRequest
from tradebridge.store.ledger import HistoryEvent

WORKER = "w1"


def _below(stack: Stack, ticks: int = 40) -> Decimal:
    tick = front().product.tick_size
    return (stack.last() / tick).to_integral_value() * tick - ticks * tick


def _above(stack: Stack, ticks: int = 200) -> Decimal:
    tick = front().product.tick_size
    return (stack.last() / tick).to_integral_value() * tick + ticks * tick


def _writes_fail(stack: Stack) -> None:
    """From now on the simulator answers every write 5xx (not executed)."""

    def switch() -> None:
        faults = stack.sim.ctx.faults
        faults.error_5xx_writes_only = True
        faults.error_5xx_rate = 1.0

    stack.sim.call(switch)


async def _escalation(stack: Stack, signal_id: str) -> HistoryEvent:
    [event] = [e for e in await stack.ledger.history(signal_id) if e.event == "escalated"]
    return event


async def _until(check: Callable[[], Awaitable[bool]], timeout: float) -> bool:
    deadline = asyncio.get_running_loop().time() + timeout
    while asyncio.get_running_loop().time() < deadline:
        if await check():
            return True
        await asyncio.sleep(0.05)
    return await check()


# --- a request that left late ---------------------------------------------------------------


async def test_submit_whose_request_left_late_is_found_not_sent_twice(
    make_stack: StackFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The request leaves 2.5 s after the write-ahead (longer than the window, 2 s here;
    # 10 s by default against a budget's wait, a p-time or a 10 s request timeout), the
    # connection resets after sending, and the broker lists the order 0.1 s later. Counted
    # from the write-ahead the window had passed: one look, "absent", a second order.
    # The window is wide and the contract known beforehand, so the late order is one POST
    # well inside it even on a loaded machine (a first contract lookup once took 0.9 s).
    async with make_stack(tradovate={"lookup_absent_after_s": 2.0}) as stack:
        await stack.insert("late", order_type="limit", price=_below(stack))
        broker = await stack.pool.get(ACCOUNT)
        await broker.resolve_contract(front().name, ACCOUNT)
        real_submit = broker.submit
        booked: list[asyncio.Task[BrokerOrderId]] = []

        async def leaves_late(command: SubmitOrder) -> BrokerOrderId:
            if booked:  # a resend goes through as usual
                return await real_submit(command)
            await asyncio.sleep(2.5)  # waiting to leave

            async def listed_late() -> BrokerOrderId:
                await asyncio.sleep(0.1)
                return await real_submit(command)

            booked.append(asyncio.create_task(listed_late()))
            raise OutcomeUnknown(
                "connection reset after sending", client_order_id=command.client_order_id
            )

        monkeypatch.setattr(broker, "submit", leaves_late)
        await stack.dispatcher(WORKER, tracking=False).drain_once()
        placed = await booked[0]

        row = await stack.ledger.get("late")
        assert row is not None
        assert [o.id for o in stack.entries()] == [int(placed)]
        assert (row.status, row.tradovate_order_id) == (SignalStatus.WORKING, str(placed))
        assert row.placement_attempts == 1
        [unknown] = [e for e in await stack.ledger.history("late") if e.event == "unknown"]
        assert row.last_attempt_at is not None
        given_up = datetime.fromisoformat(unknown.detail["given_up_at"])
        assert given_up - row.last_attempt_at >= timedelta(seconds=2.4)


# --- an accepted answer for an order another row holds ---------------------------------------


async def test_accepted_answer_for_an_order_another_row_adopted_escalates_the_row(
    make_stack: StackFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    # y is sent; before its answer is written, x (unknown, same shape) adopts y's order by
    # shape. y's answer hits the one-row-per-order index. y used to stay submitted under its
    # live worker (read as "someone moved the row"): nothing recovered it, and its account
    # claimed nothing more. The answer proves the order is y's: a human decides.
    async with make_stack() as stack:
        dispatcher = stack.dispatcher(WORKER, tracking=False)
        async with dispatcher.liveness():
            limit = _below(stack)
            await stack.insert("x", order_type="limit", price=limit)
            await stack.insert("y", order_type="limit", price=limit)
            claimed = await stack.ledger.claim_next(WORKER, 1, per_account=2)
            assert [r.signal_id for r in claimed] == ["x", "y"]
            x_plan = PlaceOrder(order("tb-x", OrderType.LIMIT, limit=limit, account=ACCOUNT))
            await stack.ledger.transition(
                "x", SignalStatus.SUBMITTED, expected=SignalStatus.PROCESSING, owner=WORKER,
                client_order_id="tb-x", detail=plan_to_json(x_plan),
            )  # fmt: skip
            await stack.ledger.transition(
                "x", SignalStatus.UNKNOWN, expected=SignalStatus.SUBMITTED, owner=WORKER,
                error_message="outcome unknown",
            )  # fmt: skip
            y_plan = PlaceOrder(order("tb-y", OrderType.LIMIT, limit=limit, account=ACCOUNT))
            await stack.ledger.transition(
                "y", SignalStatus.SUBMITTED, expected=SignalStatus.PROCESSING, owner=WORKER,
                client_order_id="tb-y", detail=plan_to_json(y_plan),
            )  # fmt: skip
            broker = await stack.pool.get(ACCOUNT)
            real_submit = broker.submit

            async def adopted_meanwhile(command: SubmitOrder) -> BrokerOrderId:
                order_id = await real_submit(command)
                # x's lookup (another process's reconcile) adopts y's order meanwhile.
                await stack.ledger.transition(
                    "x", SignalStatus.WORKING, expected=SignalStatus.UNKNOWN,
                    event="adopted_probable",
                    detail={"broker_order_id": order_id, "probable": True},
                    tradovate_order_id=str(order_id),
                )  # fmt: skip
                return order_id

            monkeypatch.setattr(broker, "submit", adopted_meanwhile)
            status = await dispatcher.placer.send("y", y_plan, broker, owner=WORKER)
            monkeypatch.undo()
            await stack.insert("next")
            more = await stack.ledger.claim_next("w-other")

        [placed] = stack.entries()
        assert status is SignalStatus.NEEDS_REVIEW
        y = await stack.ledger.get("y")
        assert y is not None
        assert y.status is SignalStatus.NEEDS_REVIEW
        assert y.tradovate_order_id is None  # the order stays with x until a human decides
        assert y.error_message is not None
        assert str(placed.id) in y.error_message
        assert "x" in y.error_message
        escalated = await _escalation(stack, "y")
        assert escalated.detail["reason"] == "order_owned"
        assert (escalated.detail["broker_order_id"], escalated.detail["owner"]) == (
            str(placed.id), "x",
        )  # fmt: skip
        x_events = [e.event for e in await stack.ledger.history("x")]
        assert "adoption_disputed" in x_events
        assert [r.signal_id for r in more] == ["next"]  # the account is not stalled


# --- cancels and flattens whose outcome stays unknown ----------------------------------------


async def test_unknown_flatten_failing_every_run_escalates_past_the_bound_from_its_first_run(
    make_stack: StackFactory,
) -> None:
    # Each rerun refreshes last_attempt_at, from which the account's hold counts: the
    # flatten used to run again every round, unknown for good, holding the account's exits,
    # reverses, cancels and flattens back.
    # The bound leaves room for the drain's own reruns (each reads the position and the
    # orders first since 2026-12-07: test_unknown_flatten_reads_first.py).
    async with make_stack(dispatcher={"unknown_bound_s": 3.0, "max_resends": 1000}) as stack:
        await stack.insert("buy")  # a market buy: a position to flatten
        dispatcher = stack.dispatcher(WORKER, tracking=False)
        await dispatcher.drain_once()
        assert stack.net_position() == 1
        _writes_fail(stack)
        await stack.insert("fl", intent="flatten", side=None, quantity=None)
        await dispatcher.drain_once()
        row = await stack.ledger.get("fl")
        assert row is not None
        assert row.status is SignalStatus.UNKNOWN

        reconciler = Reconciler(stack.settings, stack.ledger, stack.pool)

        async def escalated() -> bool:
            await reconciler.reconcile_once()
            row = await stack.ledger.get("fl")
            return row is not None and row.status is not SignalStatus.UNKNOWN

        assert await _until(escalated, timeout=12.0)  # the bound is 3 s

        row = await stack.ledger.get("fl")
        assert row is not None
        assert row.status is SignalStatus.NEEDS_REVIEW
        assert row.placement_attempts > 1  # it was run again within the bound
        assert row.error_message is not None
        assert "flatten" in row.error_message
        assert "unknown_bound_s" in row.error_message
        assert (await _escalation(stack, "fl")).detail["reason"] == "rerun_failing"
        bound = timedelta(seconds=stack.settings.dispatcher.unknown_bound_s)
        assert await stack.ledger.held_back(ACCOUNT, unknown_bound=bound) == []


async def test_unknown_cancel_failing_every_run_escalates_after_max_resends(
    make_stack: StackFactory,
) -> None:
    async with make_stack(dispatcher={"max_resends": 2}) as stack:
        await stack.insert("lim", order_type="limit", price=_below(stack))
        dispatcher = stack.dispatcher(WORKER, tracking=False)
        await dispatcher.drain_once()
        assert len(stack.entries()) == 1
        _writes_fail(stack)
        await stack.insert("c", intent="cancel", side=None, quantity=None)
        await dispatcher.drain_once()  # sent, unknown, run again inline

        row = await stack.ledger.get("c")
        assert row is not None
        assert row.status is SignalStatus.NEEDS_REVIEW
        assert row.placement_attempts == 3  # the first run and max_resends reruns
        assert row.error_message is not None
        assert "max_resends" in row.error_message
        assert (await _escalation(stack, "c")).detail["reason"] == "rerun_failing"


# --- a rival still submitted ------------------------------------------------------------------


def _sell(signal_id: str, price: Decimal) -> SubmitOrder:
    return SubmitOrder(
        client_order_id=client_order_id_for(signal_id), account=AccountName(ACCOUNT),
        contract=front(), side=Side.SELL, order_type=OrderType.LIMIT, quantity=1,
        limit_price=price,
    )  # fmt: skip


async def _write_ahead(stack: Stack, broker: Broker, signal_id: str, price: Decimal) -> None:
    """Take the baseline and commit ``submitted``, as a dispatcher does before it sends."""
    command = _sell(signal_id, price)
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


async def test_lookup_by_shape_never_takes_the_order_of_a_row_still_submitted_however_old(
    make_stack: StackFactory,
) -> None:
    # y's write-ahead is older than x's baseline by more than the window, but y is still
    # submitted: its request waited (the request budget) and leaves only now. x's submit
    # never reached the broker; its lookup finds one new order of its shape, y's. Judged
    # by y's write-ahead, y "would have shown before x's baseline": x adopted y's order,
    # and y's answer then found its order taken.
    async with make_stack(dialect=Dialect.TVBRIDGE) as stack:
        price = _above(stack)
        for signal_id in ("x", "y"):
            await stack.insert(signal_id, side="sell", order_type="limit", price=price)
        claimed = await stack.ledger.claim_next(WORKER, 1, per_account=2)
        assert [r.signal_id for r in claimed] == ["x", "y"]
        broker = await stack.pool.get(ACCOUNT)
        await _write_ahead(stack, broker, "y", price)
        await asyncio.sleep(lookup_window_s(stack.settings) + 1.2)  # + the clock slack
        await _write_ahead(stack, broker, "x", price)
        await stack.ledger.transition(
            "x", SignalStatus.UNKNOWN, expected=SignalStatus.SUBMITTED,
            error_message="outcome unknown",
        )  # fmt: skip
        request = OrderRequest(  # y's request leaves at last
            account_id=ACCOUNT_IDS[ACCOUNT], symbol=front().name, action=Side.SELL,
            order_type=OrderType.LIMIT, order_qty=1, price=price,
            cl_ord_id=client_order_id_for("y"), is_automated=True,
        )  # fmt: skip
        engine = stack.sim.ctx.engine
        assert stack.sim.call(lambda: engine.place_order(request)).order_id is not None
        placer = Placer(
            stack.ledger, stack.settings.dispatcher, lookup_window_s=lookup_window_s(stack.settings)
        )

        status = await placer.resolve("x", broker, today=datetime.now(UTC).date())

        x = await stack.ledger.get("x")
        assert x is not None
        assert (status, x.tradovate_order_id) == (SignalStatus.UNKNOWN, None)
        events = [e.event for e in await stack.ledger.history("x")]
        assert "lookup_ambiguous" in events

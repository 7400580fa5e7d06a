"""Brackets relative to the fill, placed by the broker: native order strategies (issue 9, item 2).

The whole path, native dialect: a ledger row with a bracket in ticks and no reference price,
the dispatcher, the simulator's Bracket strategy, the user-sync events, the row's outcome.
The legs must be priced from the real fill, work one-cancels-other, cover partial fills,
go with a cancelled entry, follow the position on exits (item 1), and a strategy whose
answer is lost must never be started twice.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from decimal import Decimal
from typing import Any

import pytest

from tracking.conftest import ACCOUNT, ACCOUNT_IDS, Stack, StackFactory
from tracking.test_brackets_follow import (
    ACTIONS,
    SL_TICKS,
    TICK,
    TP_TICKS,
    _assert_no_leg_exceeds_position,
    _leg_prices,
    _live_legs,
    _on_grid,
    _sweep,
)
from tradebridge.domain.enums import Dialect, OrderType
from tradebridge.sim.config import SimConfig
from tradebridge.sim.engine import OrdStatus, SimOrder, SimOrderStrategy

FROZEN = SimConfig(port=0, price_step_s=3600)


@pytest.fixture
async def stack(make_stack: StackFactory) -> AsyncIterator[Stack]:
    """A native stack on a market that moves only when told, with a dispatcher running."""
    async with make_stack(FROZEN, dialect=Dialect.NATIVE) as built:
        built.start(built.dispatcher())
        yield built


def _strategies(stack: Stack) -> list[SimOrderStrategy]:
    return stack.sim.call(lambda: stack.sim.ctx.engine.order_strategies(ACCOUNT_IDS[ACCOUNT]))


def _entry_of(stack: Stack, strategy: SimOrderStrategy) -> SimOrder:
    return next(o for o in stack.sim_orders() if o.id == strategy.entry_id)


def _legs_by_type(stack: Stack) -> dict[OrderType, SimOrder]:
    return {leg.version.order_type: leg for leg in _live_legs(stack)}


async def _strategy_bracketed(stack: Stack, signal_id: str, qty: int, **columns: Any) -> None:
    """Fill a market entry whose bracket is in ticks, with no reference price at all."""
    await stack.insert(signal_id, quantity=qty, stop_loss_ticks=SL_TICKS,
                       take_profit_ticks=TP_TICKS, **columns)  # fmt: skip
    await stack.wait(signal_id, "filled")
    await _until_legs(stack, 2)


async def _until_legs(stack: Stack, count: int) -> None:
    deadline = asyncio.get_running_loop().time() + 15
    while len(_live_legs(stack)) < count:
        assert asyncio.get_running_loop().time() < deadline, "the legs never appeared"
        await asyncio.sleep(0.02)


async def test_market_entry_without_reference_gets_legs_priced_from_the_fill(stack: Stack) -> None:
    await stack.insert("entry", stop_loss_ticks=SL_TICKS, take_profit_ticks=TP_TICKS)

    row = await stack.wait("entry", "filled", "denied", "rejected", "failed")

    assert (row.status, row.error_message) == ("filled", None)
    (strategy,) = _strategies(stack)
    entry = _entry_of(stack, strategy)
    assert strategy.uuid == row.client_order_id
    assert row.tradovate_order_id == str(entry.id)
    fill = entry.avg_fill_price
    assert fill is not None
    assert row.avg_fill_price == fill
    legs = _legs_by_type(stack)
    assert legs[OrderType.STOP].version.stop_price == fill - SL_TICKS * TICK
    assert legs[OrderType.LIMIT].version.price == fill + TP_TICKS * TICK


@pytest.mark.parametrize("units", ["points", "ticks"])
async def test_strategy_units_agree_between_client_and_broker(
    make_stack: StackFactory, units: str
) -> None:
    sim = SimConfig(port=0, price_step_s=3600, strategy_units=units)
    tradovate = {"strategies": {"units": units}}
    async with make_stack(sim, dialect=Dialect.NATIVE, tradovate=tradovate) as stack:
        stack.start(stack.dispatcher())
        await _strategy_bracketed(stack, "entry", 1)
        (strategy,) = _strategies(stack)
        fill = _entry_of(stack, strategy).avg_fill_price
        assert fill is not None
        assert _legs_by_type(stack)[OrderType.STOP].version.stop_price == fill - SL_TICKS * TICK


async def test_strategies_off_prices_the_legs_at_submit_as_an_oso(make_stack: StackFactory) -> None:
    tradovate = {"strategies": {"use": "never"}}
    async with make_stack(FROZEN, dialect=Dialect.NATIVE, tradovate=tradovate) as stack:
        stack.start(stack.dispatcher())
        reference = _on_grid(stack.last()) - 8 * TICK
        await stack.insert("entry", reference_price=reference, stop_loss_ticks=SL_TICKS)
        await stack.wait("entry", "filled")
        await _until_legs(stack, 1)

        assert _strategies(stack) == []
        (stop,) = _live_legs(stack)
        assert stop.version.stop_price == reference - SL_TICKS * TICK


async def test_target_fill_cancels_the_stop(stack: Stack) -> None:
    await _strategy_bracketed(stack, "entry", 2)
    legs = _legs_by_type(stack)
    target = legs[OrderType.LIMIT].version.price
    assert target is not None

    stack.set_price(target + TICK)

    assert stack.net_position() == 0
    states = {o.version.order_type: o.ord_status for o in stack.sim_orders() if o.parent_id}
    assert states == {OrderType.LIMIT: OrdStatus.FILLED, OrderType.STOP: OrdStatus.CANCELED}
    (strategy,) = _strategies(stack)
    assert strategy.status == "ExecutionFinished"


async def test_partial_entry_fills_are_covered_as_they_come(make_stack: StackFactory) -> None:
    sim = SimConfig(port=0, price_step_s=3600, liquidity_per_fill=1)
    async with make_stack(sim, dialect=Dialect.NATIVE) as stack:
        stack.start(stack.dispatcher())
        await stack.insert("entry", quantity=3, stop_loss_ticks=SL_TICKS,
                           take_profit_ticks=TP_TICKS)  # fmt: skip
        await stack.wait("entry", "partially_filled")
        await _until_legs(stack, 2)
        assert {leg.leaves_qty for leg in _live_legs(stack)} == {1}

        last = stack.last()
        stack.set_price(last)  # each matching pass fills one more
        stack.set_price(last)

        row = await stack.wait("entry", "filled")
        assert row.filled_qty == 3
        assert {leg.leaves_qty for leg in _live_legs(stack)} == {3}
        _assert_no_leg_exceeds_position(stack)


async def test_cancelling_the_resting_entry_stops_the_strategy(stack: Stack) -> None:
    price = _on_grid(stack.last()) - 100 * TICK
    await stack.insert("entry", order_type="limit", price=price, stop_loss_ticks=SL_TICKS,
                       take_profit_ticks=TP_TICKS)  # fmt: skip
    await stack.wait("entry", "working")

    await stack.insert("act", intent="cancel", side=None, quantity=None)
    await stack.wait("act", "filled", "cancelled", "denied", "failed", "working")

    assert (await stack.wait("entry", "cancelled")).status == "cancelled"
    (strategy,) = _strategies(stack)
    assert strategy.status == "StoppedByUser"
    stack.set_price(price - 10 * TICK)
    assert _live_legs(stack) == []
    assert stack.net_position() == 0


@pytest.mark.parametrize("tracking", [False, True], ids=["lookup", "events"])
async def test_strategy_whose_answer_is_lost_is_started_once(
    make_stack: StackFactory, tracking: bool
) -> None:
    async with make_stack(FROZEN, dialect=Dialect.NATIVE) as stack:
        # Without the tracker the row can only learn its order through the lookup by uuid;
        # with it, the user-sync events name the entry by the strategy's uuid first.
        stack.start(stack.dispatcher(tracking=tracking))
        await _lose_strategy_answer(stack, tracking=tracking)


async def _lose_strategy_answer(stack: Stack, *, tracking: bool) -> None:
    faults = stack.sim.ctx.faults
    faults.drop_mode = "reset"
    faults.drop_after_accept_rate = 1.0
    try:
        await stack.insert("entry", stop_loss_ticks=SL_TICKS, take_profit_ticks=TP_TICKS)
        await stack.wait("entry", "unknown", "filled", "working", "needs_review")
    finally:
        faults.drop_after_accept_rate = 0.0

    row = await stack.wait("entry", "filled", "needs_review", "failed")

    assert row.status == "filled"
    (strategy,) = _strategies(stack)
    assert strategy.uuid == row.client_order_id
    assert row.tradovate_order_id == str(strategy.entry_id)
    assert [o.id for o in stack.entries()] == [strategy.entry_id]
    assert stack.net_position() == 1
    history = await stack.ledger.pool.fetch(
        "select event from order_history where signal_id = 'entry' order by id"
    )
    events = [h["event"] for h in history]
    if not tracking:
        assert "lookup" in events  # the answer was lost: looked up by uuid, not resent
    assert "resubmitted" not in events
    assert events.count("submitted") == 1


async def test_strategy_whose_entry_cannot_be_read_is_escalated_never_restarted(
    make_stack: StackFactory,
) -> None:
    sim = SimConfig(port=0, price_step_s=3600)
    dispatcher = {"unknown_bound_s": 1.0}
    async with make_stack(sim, dialect=Dialect.NATIVE, dispatcher=dispatcher) as stack:
        # The broker starts the strategy, but its links (which order is the entry) cannot be
        # read: the submit's outcome is open, and the lookup finds our uuid without an entry.
        stack.sim.ctx.faults.missing_routes = ["orderStrategyLink/*"]
        stack.start(stack.dispatcher(tracking=False))
        await stack.insert("entry", stop_loss_ticks=SL_TICKS, take_profit_ticks=TP_TICKS)

        row = await stack.wait("entry", "needs_review", "failed", "filled", timeout=30)

        assert row.status == "needs_review"
        assert len(_strategies(stack)) == 1
        assert len(stack.entries()) == 1
        events = [h["event"] for h in await stack.ledger.pool.fetch(
            "select event from order_history where signal_id = 'entry' order by id")]  # fmt: skip
        assert "resubmitted" not in events
        assert "lookup_ambiguous" in events


@pytest.mark.parametrize(
    ("intent", "columns", "remaining"), ACTIONS, ids=[f"{a}-{r}" for a, _, r in ACTIONS]
)
async def test_action_leaves_no_strategy_leg_larger_than_the_position(
    stack: Stack, intent: str, columns: dict[str, Any], remaining: int
) -> None:
    await _strategy_bracketed(stack, "entry", 2)
    old_prices = _leg_prices(stack)

    await stack.insert("act", intent=intent, **{"side": None, "quantity": None, **columns})
    row = await stack.wait("act", "filled", "denied", "rejected", "failed")

    assert (row.status, row.error_message) == ("filled", None)
    assert stack.net_position() == remaining
    _assert_no_leg_exceeds_position(stack)
    _sweep(stack, old_prices, remaining)
    (strategy,) = _strategies(stack)
    if not _live_legs(stack):
        assert strategy.status in {"ExecutionInterrupted", "ExecutionFinished"}


async def test_exit_interrupts_the_strategy_before_cancelling_its_legs(stack: Stack) -> None:
    await _strategy_bracketed(stack, "entry", 1)

    await stack.insert("act", intent="exit", side=None, quantity=None)
    await stack.wait("act", "filled")

    (strategy,) = _strategies(stack)
    assert strategy.status == "ExecutionInterrupted"
    fitted = await stack.ledger.pool.fetchval(
        "select detail from order_history where signal_id = 'act' and event = 'legs_fitted'"
    )
    assert fitted["interrupted"] == [str(strategy.id)]
    assert stack.net_position() == 0
    assert Decimal(0) == sum(leg.leaves_qty for leg in _live_legs(stack))


# --- scale-out, trailing stops, break-even (item 3) --------------------------------------------

TARGETS = [{"ticks": 20, "quantity": 1}, {"ticks": 40, "quantity": 1}]


async def _scaled_out(stack: Stack, signal_id: str = "entry", **columns: Any) -> Decimal:
    """Fill a market entry of 3 with two targets of 1 and a runner; return the fill price."""
    values: dict[str, Any] = {"quantity": 3, "take_profits": TARGETS, "stop_loss_ticks": 16}
    values.update(columns)
    await stack.insert(signal_id, **values)
    row = await stack.wait(signal_id, "filled", "denied", "failed")
    assert (row.status, row.error_message) == ("filled", None)
    targets = values["take_profits"]
    runner = values["quantity"] > sum(t["quantity"] for t in targets)
    await _until_legs(stack, 2 * len(targets) + runner)
    (strategy,) = _strategies(stack)
    fill = _entry_of(stack, strategy).avg_fill_price
    assert fill is not None
    return fill


def _stops(stack: Stack) -> list[SimOrder]:
    return [o for o in _live_legs(stack) if o.version.order_type is OrderType.STOP]


async def test_scale_out_targets_close_their_own_quantities(stack: Stack) -> None:
    fill = await _scaled_out(stack)
    targets = sorted(o.version.price for o in _live_legs(stack) if o.version.price is not None)
    assert targets == [fill + 20 * TICK, fill + 40 * TICK]
    assert sorted(o.leaves_qty for o in _stops(stack)) == [1, 1, 1]
    assert {o.version.stop_price for o in _stops(stack)} == {fill - 16 * TICK}

    stack.set_price(fill + 25 * TICK)
    assert stack.net_position() == 2
    stack.set_price(fill + 45 * TICK)
    assert stack.net_position() == 1  # the runner, still protected by its stop
    assert [o.leaves_qty for o in _live_legs(stack)] == [1]
    _assert_no_leg_exceeds_position(stack)


async def test_trailing_stop_follows_the_price_then_closes(stack: Stack) -> None:
    await stack.insert("entry", trailing_stop_ticks=8)
    await stack.wait("entry", "filled")
    await _until_legs(stack, 1)
    (stop,) = _stops(stack)
    first = stop.version.stop_price
    assert first is not None

    high = _on_grid(stack.last()) + 30 * TICK
    stack.set_price(high)
    stack.set_price(high - 4 * TICK)  # a dip inside the trail: the stop stays

    (stop,) = _stops(stack)
    assert stop.version.stop_price == high - 8 * TICK > first
    stack.set_price(high - 10 * TICK)
    assert stack.net_position() == 0
    assert _live_legs(stack) == []


async def test_breakeven_moves_the_runner_stops_after_the_first_target(stack: Stack) -> None:
    fill = await _scaled_out(stack, breakeven=True)

    stack.set_price(fill + 25 * TICK)

    assert stack.net_position() == 2
    assert {o.version.stop_price for o in _stops(stack)} == {fill}
    stack.set_price(fill - TICK)
    assert stack.net_position() == 0


@pytest.mark.parametrize(
    ("intent", "columns", "remaining"), ACTIONS, ids=[f"{a}-{r}" for a, _, r in ACTIONS]
)
async def test_action_leaves_no_scale_out_leg_larger_than_the_position(
    stack: Stack, intent: str, columns: dict[str, Any], remaining: int
) -> None:
    await _scaled_out(stack, quantity=2, take_profits=TARGETS)  # two targets of one: no runner
    old_prices = _leg_prices(stack)

    await stack.insert("act", intent=intent, **{"side": None, "quantity": None, **columns})
    row = await stack.wait("act", "filled", "denied", "rejected", "failed")

    assert (row.status, row.error_message) == ("filled", None)
    assert stack.net_position() == remaining
    _assert_no_leg_exceeds_position(stack)
    _sweep(stack, old_prices, remaining)


async def test_bridge_account_denies_a_scale_out_row_with_the_reason(
    make_stack: StackFactory,
) -> None:
    async with make_stack(FROZEN, dialect=Dialect.TVBRIDGE) as stack:
        stack.start(stack.dispatcher())
        await stack.insert("entry", quantity=2, take_profits=TARGETS, stop_loss_ticks=16,
                           reference_price=_on_grid(stack.last()))  # fmt: skip

        row = await stack.wait("entry", "denied", "filled", "failed")

        assert row.status == "denied"
        assert row.error_message is not None
        assert "take_profits" in row.error_message
        assert stack.sim_orders() == []

"""Protective orders follow the position (issue 9, item 1), on the simulator, both dialects.

An entry with a stop loss and a take profit is filled; then an action closes, reduces or
turns the position. Afterwards the simulator must hold no working leg larger than what is
left, and moving the price through every old leg price must open nothing: the position only
ever moves from what is left towards flat (a remaining leg doing its job), never beyond.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from decimal import Decimal
from typing import Any

import pytest

from _support.rig import front
from tracking.conftest import Stack, StackFactory
from tradebridge.domain.enums import Dialect, OrderType
from tradebridge.sim.config import SimConfig
from tradebridge.sim.engine import OrdStatus, SimOrder

pytestmark = pytest.mark.parametrize("dialect", [Dialect.NATIVE, Dialect.TVBRIDGE])

TICK = front().product.tick_size
SL_TICKS, TP_TICKS = 40, 60


@pytest.fixture
async def stack(make_stack: StackFactory, dialect: Dialect) -> AsyncIterator[Stack]:
    """A stack whose accounts speak ``dialect`` on a market that moves only when told."""
    async with make_stack(SimConfig(port=0, price_step_s=3600), dialect=dialect) as built:
        built.start(built.dispatcher())
        yield built


def _on_grid(price: Decimal) -> Decimal:
    return (price / TICK).to_integral_value() * TICK


async def _bracketed(stack: Stack, signal_id: str, qty: int, side: str = "buy") -> None:
    """Fill an entry of ``qty`` with a stop loss and a take profit; wait for its live legs."""
    await stack.insert(signal_id, side=side, quantity=qty, reference_price=_on_grid(stack.last()),
                       stop_loss_ticks=SL_TICKS, take_profit_ticks=TP_TICKS)  # fmt: skip
    await stack.wait(signal_id, "filled")
    assert len([leg for leg in _legs(stack) if leg.ord_status is OrdStatus.WORKING]) >= 2


def _legs(stack: Stack) -> list[SimOrder]:
    return [o for o in stack.sim_orders() if o.parent_id is not None]


def _live_legs(stack: Stack) -> list[SimOrder]:
    """Legs that can fill now (a suspended leg waits for its own entry)."""
    return [o for o in _legs(stack) if o.ord_status is OrdStatus.WORKING]


def _leg_prices(stack: Stack) -> list[Decimal]:
    prices = {o.version.price if o.version.order_type is OrderType.LIMIT else o.version.stop_price
              for o in _legs(stack)}  # fmt: skip
    return sorted(p for p in prices if p is not None)


def _assert_no_leg_exceeds_position(stack: Stack) -> None:
    position = stack.net_position()
    covered: dict[int | None, int] = {}
    for leg in _live_legs(stack):
        assert position != 0, f"leg {leg.id} works while flat"
        assert leg.action.sign == -position // abs(position), f"leg {leg.id} adds to {position}"
        covered[leg.parent_id] = max(covered.get(leg.parent_id, 0), leg.leaves_qty)
    assert sum(covered.values()) <= abs(position), f"legs {covered} exceed position {position}"


def _sweep(stack: Stack, prices: list[Decimal], remaining: int) -> None:
    """Move the price through every price, down then up; the position never opens anew."""
    start = stack.last()
    low, high = min(prices) - 4 * TICK, max(prices) + 4 * TICK
    legs_left = bool(_live_legs(stack))
    for price in [*sorted(prices, reverse=True), low, *sorted(prices), high, start]:
        stack.set_price(price)
        position = stack.net_position()
        if legs_left:
            lo, hi = sorted((0, remaining))
            assert lo <= position <= hi, f"at {price}: position {position}, left {remaining}"
        else:
            assert position == remaining, f"at {price}: position {position}, not {remaining}"
        _assert_no_leg_exceeds_position(stack)


ACTIONS: list[tuple[str, dict[str, Any], int]] = [
    # (intent, row columns, position after the action, from long 2 with a bracket of 2)
    ("exit", {}, 0),  # also PickMyTrade `close` and TradersPost `sentiment: flat`
    ("exit", {"quantity": 1}, 1),
    ("reverse", {"side": "sell"}, -2),
    ("target", {"target_position": 0}, 0),
    ("target", {"target_position": 1}, 1),
    ("target", {"target_position": -1}, -1),
    ("flatten", {"instrument": None}, 0),
]


@pytest.mark.parametrize(
    ("intent", "columns", "remaining"), ACTIONS, ids=[f"{a}-{r}" for a, _, r in ACTIONS]
)
async def test_action_leaves_no_leg_larger_than_the_position(
    stack: Stack, intent: str, columns: dict[str, Any], remaining: int
) -> None:
    await _bracketed(stack, "entry", 2)
    old_prices = _leg_prices(stack)

    await stack.insert("act", intent=intent, **{"side": None, "quantity": None, **columns})
    row = await stack.wait("act", "filled", "denied", "rejected", "failed")

    assert (row.status, row.error_message) == ("filled", None)
    assert stack.net_position() == remaining
    _assert_no_leg_exceeds_position(stack)
    _sweep(stack, old_prices, remaining)


async def test_exit_of_a_short_cancels_its_legs(stack: Stack) -> None:
    await _bracketed(stack, "entry", 3, side="sell")
    old_prices = _leg_prices(stack)

    await stack.insert("act", intent="exit", side=None, quantity=None)
    await stack.wait("act", "filled")

    assert _live_legs(stack) == []
    _sweep(stack, old_prices, 0)


async def test_partial_exit_reduces_both_legs_to_what_remains(stack: Stack) -> None:
    await _bracketed(stack, "entry", 3)

    await stack.insert("act", intent="exit", side=None, quantity=2)
    await stack.wait("act", "filled")

    assert stack.net_position() == 1
    legs = sorted((o.version.order_type, o.leaves_qty) for o in _live_legs(stack))
    assert legs == [(OrderType.LIMIT, 1), (OrderType.STOP, 1)]
    events = await stack.ledger.pool.fetch(
        "select detail from order_history where signal_id = 'act' and event = 'legs_fitted'"
    )
    assert [len(e["detail"]["modified"]) for e in events] == [2]


async def test_exit_with_several_brackets_keeps_the_newest_one(stack: Stack) -> None:
    await _bracketed(stack, "first", 1)
    await _bracketed(stack, "second", 1)
    old_prices = _leg_prices(stack)

    await stack.insert("act", intent="exit", side=None, quantity=1)
    await stack.wait("act", "filled")

    second = await stack.ledger.get("second")
    assert second is not None
    assert {str(o.parent_id) for o in _live_legs(stack)} == {second.tradovate_order_id}
    _assert_no_leg_exceeds_position(stack)
    _sweep(stack, old_prices, 1)


@pytest.mark.parametrize(("setting", "resting_after"), [("legs", "working"), ("all", "cancelled")])
async def test_exit_cancels_resting_entries_only_when_configured(
    make_stack: StackFactory, dialect: Dialect, setting: str, resting_after: str
) -> None:
    sim = SimConfig(port=0, price_step_s=3600)
    async with make_stack(sim, dialect=dialect, dispatcher={"exit_cancels": setting}) as stack:
        stack.start(stack.dispatcher())
        await _bracketed(stack, "entry", 1)
        await stack.insert("rest", order_type="limit", price=_on_grid(stack.last()) - 200 * TICK)
        await stack.wait("rest", "working")

        await stack.insert("act", intent="exit", side=None, quantity=None)
        await stack.wait("act", "filled")

        assert (await stack.wait("rest", resting_after)).status == resting_after
        assert _live_legs(stack) == []
        assert stack.net_position() == 0


async def test_exit_whose_answer_is_lost_closes_once_and_leaves_no_leg(stack: Stack) -> None:
    await _bracketed(stack, "entry", 2)
    old_prices = _leg_prices(stack)
    faults = stack.sim.ctx.faults
    faults.drop_mode = "reset"
    faults.drop_after_accept_rate = 1.0
    try:
        await stack.insert("act", intent="exit", side=None, quantity=None)
        await stack.wait("act", "unknown", "filled", "needs_review", "working")
    finally:
        faults.drop_after_accept_rate = 0.0

    row = await stack.wait("act", "filled", "needs_review")

    assert row.status == "filled"
    assert stack.net_position() == 0
    assert _live_legs(stack) == []
    _sweep(stack, old_prices, 0)

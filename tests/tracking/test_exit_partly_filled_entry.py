"""An exit of a position a bracket entry is still filling: the entry's rest and its suspended
legs are cancelled before the exit leaves (pipeline/legs.py). Left alone, the legs came alive
for all the entry had filled, on a position the exit had closed, and the stop opened the
opposite position (both dialects; found by a review, 2026-12-07)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from decimal import Decimal

import pytest

from _support.rig import front
from tracking.conftest import Stack, StackFactory
from tradebridge.domain.enums import Dialect
from tradebridge.sim.config import SimConfig
from tradebridge.sim.model import OPEN_ORD_STATUSES

TICK = front().product.tick_size


def _on_grid(price: Decimal) -> Decimal:
    return (price / TICK).to_integral_value() * TICK


@pytest.fixture(params=[Dialect.NATIVE, Dialect.TVBRIDGE], ids=["native", "bridge"])
async def stack(request: pytest.FixtureRequest, make_stack: StackFactory) -> AsyncIterator[Stack]:
    # One contract a pass: a market entry of 3 fills 1 and works for the rest.
    sim = SimConfig(port=0, price_step_s=3600, liquidity_per_fill=1)
    async with make_stack(sim, dialect=request.param) as built:
        built.start(built.dispatcher())
        yield built


async def test_exit_of_a_partly_filled_bracket_entry_leaves_nothing_to_open_a_position(
    stack: Stack,
) -> None:
    last = _on_grid(stack.last())
    stop, target = last - 40 * TICK, last + 60 * TICK
    await stack.insert("entry", side="buy", quantity=3, stop_loss=stop, take_profit=target)
    await stack.wait("entry", "partially_filled")
    assert stack.net_position() == 1

    await stack.insert("exit", intent="exit", side=None, quantity=None)
    row = await stack.wait("exit", "filled", "denied", "rejected", "failed", "needs_review")
    assert row.status == "filled"
    assert stack.net_position() == 0

    still_open = [o for o in stack.sim_orders() if o.ord_status in OPEN_ORD_STATUSES]
    assert still_open == [], [(o.id, o.ord_status, o.parent_id) for o in still_open]
    # Prices that would fill the entry's rest, then trigger its stop: nothing trades.
    for price in (last, last, stop - 4 * TICK, stop - 4 * TICK, target + 4 * TICK):
        stack.set_price(price)
        assert stack.net_position() == 0

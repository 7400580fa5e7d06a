"""A reduction that leaves part of a still-filling bracket entry keeps that part protected.

Long 2 from a bracket entry of 3 still working (2 filled); an exit of 1 leaves 1. The
entry's suspended legs would come alive for 2, more than remains, and cannot be resized
while suspended: they and the entry's rest were cancelled, and the long 1 that remained had
no stop loss and no take profit (the gap left by 2026-12-07's fix, pipeline/legs.py). Now the
entry's rest is cancelled first, so its legs come alive for the 2 it filled (no more than the
position before the exit), then they are cut to the 1 that remains (both dialects).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from decimal import Decimal

import pytest

from _support.rig import front
from tracking.conftest import Stack, StackFactory
from tradebridge.domain.enums import Dialect, OrderType
from tradebridge.sim.config import SimConfig
from tradebridge.sim.model import OPEN_ORD_STATUSES, OrdStatus

TICK = front().product.tick_size


def _on_grid(price: Decimal) -> Decimal:
    return (price / TICK).to_integral_value() * TICK


@pytest.fixture(params=[Dialect.NATIVE, Dialect.TVBRIDGE], ids=["native", "bridge"])
async def stack(request: pytest.FixtureRequest, make_stack: StackFactory) -> AsyncIterator[Stack]:
    # Two contracts a pass: a market entry of 3 fills 2 and works for the rest.
    sim = SimConfig(port=0, price_step_s=3600, liquidity_per_fill=2)
    async with make_stack(sim, dialect=request.param) as built:
        built.start(built.dispatcher())
        yield built


async def test_reduction_of_a_partly_filled_bracket_entry_keeps_what_remains_protected(
    stack: Stack,
) -> None:
    last = _on_grid(stack.last())
    stop, target = last - 40 * TICK, last + 60 * TICK
    await stack.insert("entry", side="buy", quantity=3, stop_loss=stop, take_profit=target)
    await stack.wait("entry", "partially_filled")
    assert stack.net_position() == 2

    await stack.insert("exit", intent="exit", side=None, quantity=1)
    row = await stack.wait("exit", "filled", "denied", "rejected", "failed", "needs_review")
    assert row.status == "filled"
    assert stack.net_position() == 1

    still_open = [o for o in stack.sim_orders() if o.ord_status in OPEN_ORD_STATUSES]
    legs = {(o.version.order_type, o.action.value, o.leaves_qty) for o in still_open}
    shown = [(o.id, o.ord_status, o.parent_id, o.leaves_qty) for o in still_open]
    assert all(o.ord_status is OrdStatus.WORKING for o in still_open), shown
    assert legs == {(OrderType.STOP, "sell", 1), (OrderType.LIMIT, "sell", 1)}, shown
    # The stop does its job for what remains, and nothing opens a position afterwards.
    for price in (last, stop - 4 * TICK, target + 4 * TICK, stop - 4 * TICK):
        stack.set_price(price)
        assert stack.net_position() in (0, 1)
    assert stack.net_position() == 0
    assert [o for o in stack.sim_orders() if o.ord_status in OPEN_ORD_STATUSES] == []

"""A target move whose position moved before its legs were cut keeps the bracket of what
remains.

Long 3 from two bracketed entries; a target of 1 is planned as sell 2; one entry's stop (2)
fills before the legs are cut. The legs were cut for the stale plan (what remains computed
from the fresh position and the stale quantity: -1, so every leg went), then the row was
planned again and denied "nothing to do": long 1 without a stop. Now nothing is cut for a
plan the position no longer fits (found by a review, 2026-12-07).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from decimal import Decimal
from typing import Any

import pytest

from _support.rig import front
from tracking.conftest import ACCOUNT, Stack, StackFactory
from tradebridge.domain.enums import Dialect
from tradebridge.sim.config import SimConfig
from tradebridge.sim.engine import OrdStatus, SimOrder

TICK = front().product.tick_size


def _on_grid(price: Decimal) -> Decimal:
    return (price / TICK).to_integral_value() * TICK


@pytest.fixture(params=[Dialect.NATIVE, Dialect.TVBRIDGE], ids=["native", "bridge"])
async def stack(request: pytest.FixtureRequest, make_stack: StackFactory) -> AsyncIterator[Stack]:
    async with make_stack(SimConfig(port=0, price_step_s=3600), dialect=request.param) as built:
        built.start(built.dispatcher())
        yield built


def _live_legs(stack: Stack) -> list[SimOrder]:
    return [o for o in stack.sim_orders()
            if o.parent_id is not None and o.ord_status is OrdStatus.WORKING]  # fmt: skip


async def test_target_whose_position_moved_keeps_the_bracket_of_what_remains(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    last = _on_grid(stack.last())
    # A: long 1, stop far; B: long 2, stop near.
    await stack.insert("a", side="buy", quantity=1, stop_loss=last - 80 * TICK,
                       take_profit=last + 80 * TICK)  # fmt: skip
    await stack.wait("a", "filled")
    await stack.insert("b", side="buy", quantity=2, stop_loss=last - 40 * TICK,
                       take_profit=last + 60 * TICK)  # fmt: skip
    await stack.wait("b", "filled")
    assert stack.net_position() == 3
    assert len(_live_legs(stack)) == 4

    broker = await stack.pool.get(ACCOUNT)
    original = broker.lookup_baseline
    triggered = False

    async def b_stop_fills_after_route(command: Any) -> Any:
        nonlocal triggered
        if not triggered and command.client_order_id.endswith("tgt"):
            triggered = True
            stack.set_price(last - 42 * TICK)  # B's stop (2) fills; A's does not
        return await original(command)

    monkeypatch.setattr(broker, "lookup_baseline", b_stop_fills_after_route)
    await stack.insert("tgt", intent="target", target_position=1, side=None, quantity=None)
    row = await stack.wait("tgt", "filled", "denied", "rejected", "failed", "needs_review")

    assert triggered
    assert stack.net_position() == 1  # at the target
    legs = [(o.version.order_type.value, o.leaves_qty) for o in _live_legs(stack)]
    assert legs, (f"position 1 left without any protective leg; row {row.status}: "
                  f"{row.error_message}")  # fmt: skip

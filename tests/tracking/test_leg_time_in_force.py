"""Leg time in force (issue 9, item 6): what the simulator records for each bracket leg.

By default the legs follow the entry (Day entry: Day legs, GTC entry: GTC legs), on both
dialects. ``[orders] leg_time_in_force`` fixes it on the native dialect; the bridge gives the
legs the entry's duration, so a setting it cannot follow denies the row with the reason.
"""

from __future__ import annotations

import pytest

from _support.rig import front
from tracking.conftest import Stack, StackFactory
from tradebridge.domain.enums import Dialect, TimeInForce
from tradebridge.sim.config import SimConfig

TICK = front().product.tick_size


async def _bracketed_entry(stack: Stack, signal_id: str, tif: str) -> None:
    last = (stack.last() / TICK).to_integral_value() * TICK
    await stack.insert(signal_id, time_in_force=tif, reference_price=last,
                       stop_loss_ticks=40, take_profit_ticks=60)  # fmt: skip


def _leg_tifs(stack: Stack) -> list[TimeInForce]:
    return [o.version.time_in_force for o in stack.sim_orders() if o.parent_id is not None]


@pytest.mark.parametrize("dialect", [Dialect.NATIVE, Dialect.TVBRIDGE])
@pytest.mark.parametrize("tif", [TimeInForce.DAY, TimeInForce.GTC])
async def test_legs_by_default_take_the_entrys_time_in_force(
    make_stack: StackFactory, dialect: Dialect, tif: TimeInForce
) -> None:
    async with make_stack(SimConfig(port=0, price_step_s=3600), dialect=dialect) as stack:
        stack.start(stack.dispatcher())
        await _bracketed_entry(stack, "tif-1", tif.value)
        await stack.wait("tif-1", "filled")

        entry = next(o for o in stack.entries())
        assert entry.version.time_in_force is tif
        assert _leg_tifs(stack) == [tif, tif]


@pytest.mark.parametrize(
    ("policy", "entry", "legs"),
    [("GTC", TimeInForce.DAY, TimeInForce.GTC), ("day", TimeInForce.GTC, TimeInForce.DAY)],
)
async def test_native_legs_follow_the_setting_when_it_is_fixed(
    make_stack: StackFactory, policy: str, entry: TimeInForce, legs: TimeInForce
) -> None:
    async with make_stack(SimConfig(port=0, price_step_s=3600),
                          orders={"leg_time_in_force": policy}) as stack:  # fmt: skip
        stack.start(stack.dispatcher())
        await _bracketed_entry(stack, "tif-2", entry.value)
        await stack.wait("tif-2", "filled")

        assert next(o for o in stack.entries()).version.time_in_force is entry
        assert _leg_tifs(stack) == [legs, legs]


async def test_bridge_row_whose_legs_cannot_follow_the_setting_is_denied_unsent(
    make_stack: StackFactory,
) -> None:
    async with make_stack(SimConfig(port=0, price_step_s=3600), dialect=Dialect.TVBRIDGE,
                          orders={"leg_time_in_force": "gtc"}) as stack:  # fmt: skip
        stack.start(stack.dispatcher())
        await _bracketed_entry(stack, "tif-3", "day")
        row = await stack.wait("tif-3", "denied")

        assert row.error_message is not None
        assert "gives the legs the entry's time in force" in row.error_message
        assert stack.sim_orders() == []

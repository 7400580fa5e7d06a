"""An exit of a position a bracket entry is still filling, whose entry fills once more while
the legs are being cut: the entry's rest is cancelled (or its strategy interrupted) after the
position was read, so the exit must be sized from the position the cut leaves.

Before (found by a review, 2026-12-08): ``fit_legs`` read the position again only when a cut
was refused. The entry's cancel (the strategy's interrupt) was not refused, it cancelled the
rest of an entry that had meanwhile filled one more; the legs that would have covered that
fill were cancelled too, and the exit, sized from the first read, left the account long 1
with no stop at all (a bracket priced at submit: native OSO and bridge). A Bracket strategy
was spared by chance: its interrupt cancels its legs, so their own cancels come back "too
late" and the position was read again; it stays here so that it keeps being so.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from _support.rig import front
from tracking.conftest import ACCOUNT, StackFactory
from tradebridge.domain.enums import Dialect
from tradebridge.sim.config import SimConfig
from tradebridge.sim.model import OPEN_ORD_STATUSES

TICK = front().product.tick_size
SL_TICKS = 40

# (dialect, whether the bracket is priced at submit: an OSO, else a Bracket strategy)
CASES = [(Dialect.NATIVE, False), (Dialect.NATIVE, True), (Dialect.TVBRIDGE, True)]


def _on_grid(price: Decimal) -> Decimal:
    return (price / TICK).to_integral_value() * TICK


@pytest.mark.parametrize(("dialect", "priced"), CASES, ids=["strategy", "oso", "bridge"])
async def test_an_exit_whose_entry_fills_as_its_legs_are_cut_leaves_no_naked_position(
    make_stack: StackFactory, monkeypatch: pytest.MonkeyPatch, dialect: Dialect, priced: bool
) -> None:
    sim = SimConfig(port=0, price_step_s=3600, liquidity_per_fill=1)
    async with make_stack(sim, dialect=dialect) as stack:
        stack.start(stack.dispatcher())
        last = _on_grid(stack.last())
        # A stop alone: the cut is one cancel (of a pair, the second is refused as too late,
        # the partner having gone with the first, and that refusal made it read again).
        bracket: dict[str, Any] = {"stop_loss_ticks": SL_TICKS}
        if priced:
            bracket = {"stop_loss": last - SL_TICKS * TICK}
        await stack.insert("entry", side="buy", quantity=3, **bracket)
        await stack.wait("entry", "partially_filled")
        assert stack.net_position() == 1

        broker = await stack.pool.get(ACCOUNT)
        fills = 0
        # The first call that cuts: a strategy is interrupted first, an OSO's legs cancelled.
        for step in ("interrupt_strategy", "cancel"):
            original = getattr(broker, step, None)
            if original is None:
                continue

            async def entry_fills_first(command: Any, original: Any = original) -> None:
                nonlocal fills
                if not fills:
                    fills += 1
                    stack.set_price(last)  # one more matching pass: the entry fills one more
                await original(command)

            monkeypatch.setattr(broker, step, entry_fills_first)

        await stack.insert("exit", intent="exit", side=None, quantity=None)
        row = await stack.wait("exit", "filled", "partially_filled", "denied", "rejected",
                               "failed", "needs_review")  # fmt: skip
        if row.status == "partially_filled":
            stack.set_price(last)  # an exit of 2 fills one a pass
            row = await stack.wait("exit", "filled")

        assert fills == 1
        assert row.status == "filled", row.error_message
        still_open = [o for o in stack.sim_orders() if o.ord_status in OPEN_ORD_STATUSES]
        assert still_open == [], [(o.id, o.ord_status, o.parent_id) for o in still_open]
        assert stack.net_position() == 0  # before: long 1, with no stop

"""An exit of a position a Bracket strategy's entry is still filling, on a broker whose
interrupt stops the strategy's legs but leaves its entry working.

The reference names ``orderStrategy/interruptorderstrategy`` and nothing of what it ends
(§5.8). The simulator's interrupt cancels the entry too (``strategy_interrupt_cancels_entry``),
and the exit relied on that: switched off, the entry's rest kept working after the exit had
closed the position, and its next fill opened a position with no leg at all. The exit now
cancels an interrupted strategy's working entry itself.
"""

from __future__ import annotations

from _support.rig import front
from tracking.conftest import StackFactory
from tradebridge.sim.config import SimConfig
from tradebridge.sim.model import OPEN_ORD_STATUSES

TICK = front().product.tick_size


async def test_an_exit_cancels_the_entry_an_interrupt_leaves_working(
    make_stack: StackFactory,
) -> None:
    sim = SimConfig(
        port=0, price_step_s=3600, liquidity_per_fill=1, strategy_interrupt_cancels_entry=False
    )
    async with make_stack(sim) as stack:
        stack.start(stack.dispatcher())
        last = (stack.last() / TICK).to_integral_value() * TICK
        await stack.insert("entry", side="buy", quantity=3, stop_loss_ticks=40,
                           take_profit_ticks=60)  # fmt: skip
        await stack.wait("entry", "partially_filled")
        assert stack.net_position() == 1

        await stack.insert("exit", intent="exit", side=None, quantity=None)
        row = await stack.wait("exit", "filled", "denied", "rejected", "failed", "needs_review")
        assert row.status == "filled", row.error_message
        for _ in range(3):  # matching passes: an entry still working would fill now
            stack.set_price(last)

        still_open = [o for o in stack.sim_orders() if o.ord_status in OPEN_ORD_STATUSES]
        assert still_open == [], [(o.id, o.ord_status, o.parent_id) for o in still_open]
        assert stack.net_position() == 0  # before: long 2 once the entry's rest filled

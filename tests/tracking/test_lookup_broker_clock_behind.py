"""A lost answer's lookup on a broker whose clock is behind ours finds our own order.

The native lookup judges orders by their creation time (``timestamp``, the broker's clock)
against the time our submit left (our clock), allowing a few seconds of skew. An order that
carries our very client id (``clOrdId``) is ours whatever its time says: a host clock running
more than the skew ahead of Tradovate's (a machine without NTP) made our own order look created
before we sent it, the lookup concluded "absent", and the row was sent again (two orders).
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from _support.rig import front
from tracking.conftest import StackFactory


class _Behind:
    """The simulator's clock, ``seconds`` behind this machine's."""

    def __init__(self, seconds: float) -> None:
        self.offset = timedelta(seconds=seconds)

    def now(self) -> datetime:
        return datetime.now(UTC) - self.offset


async def test_a_lost_answer_is_adopted_when_the_broker_clock_is_behind(
    make_stack: StackFactory,
) -> None:
    async with make_stack(clock=_Behind(30)) as stack:
        stack.start(stack.dispatcher())
        tick = front().product.tick_size
        price = (stack.last() / tick).to_integral_value() * tick + 200 * tick  # rests

        faults = stack.sim.ctx.faults
        faults.drop_mode = "reset"
        faults.drop_after_accept_rate = 1.0
        await stack.insert("b", side="sell", order_type="limit", price=price)
        deadline = asyncio.get_running_loop().time() + 15
        while not stack.entries() and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.02)
        faults.drop_after_accept_rate = 0.0
        assert len(stack.entries()) == 1, "the order reached the broker"

        row = await stack.wait("b", "working", "failed", "needs_review", timeout=30)

        orders = [o.cl_ord_id for o in stack.entries()]
        assert orders == ["tb-b"], f"b placed {len(orders)} times: {orders}"
        assert row.status.value == "working", row.error_message
        assert row.tradovate_order_id == str(stack.entries()[0].id)
        assert Decimal(str(row.price)) == price

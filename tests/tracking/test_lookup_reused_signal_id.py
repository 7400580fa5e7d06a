"""A signal id reused after its row was deleted: the lookup never adopts the old row's order.

The native lookup takes an order carrying the row's client id (``tb-<signal_id>``) as the
row's own, back 10 minutes before the submit whatever the broker's clock says
(``test_lookup_broker_clock_behind.py``). A user who deletes a row and inserts a new one under
the same signal id within that time gives the new row the old row's client id: when the new
submit's outcome was unknown and it never executed, the lookup found the old row's order,
adopted it, and the new order was never sent. A deletion now leaves a ``deleted`` event in the
append-only history (migration 0015; a TRUNCATE, which fires no row trigger, one per row:
0016), and the orders the history names up to it are excluded like the orders of other rows.
"""

from __future__ import annotations

import pytest

from _support.rig import front
from tracking.conftest import StackFactory


@pytest.mark.parametrize(
    "removal",
    ["delete from trading_signals where signal_id = 'r'", "truncate trading_signals"],
    ids=["delete", "truncate"],
)
async def test_a_reused_signal_id_never_adopts_the_deleted_rows_order(
    make_stack: StackFactory, removal: str
) -> None:
    async with make_stack() as stack:
        stack.start(stack.dispatcher())
        tick = front().product.tick_size
        grid = (stack.last() / tick).to_integral_value() * tick
        await stack.insert("r", order_type="limit", price=grid - 100 * tick)
        old = await stack.wait("r", "working")
        async with stack.ledger.pool.acquire() as conn:
            await conn.execute(removal)

        faults = stack.sim.ctx.faults
        faults.error_5xx_writes_only = True
        faults.error_5xx_rate = 1.0  # the new submit is answered 5xx and NOT executed
        await stack.insert("r", order_type="limit", price=grid - 60 * tick)
        await stack.wait("r", "unknown", "working", "needs_review", "failed")
        faults.error_5xx_rate = 0.0

        row = await stack.wait("r", "working", "needs_review", "failed", timeout=30)

        entries = stack.entries()
        assert row.status.value == "working", row.error_message
        assert row.tradovate_order_id != old.tradovate_order_id, "adopted the old row's order"
        [new] = [o for o in entries if str(o.id) == row.tradovate_order_id]
        assert new.version.price == grid - 60 * tick
        assert len(entries) == 2
        deleted = [e for e in await stack.ledger.history("r") if e.event == "deleted"]
        assert [e.detail["broker_order_id"] for e in deleted] == [old.tradovate_order_id]

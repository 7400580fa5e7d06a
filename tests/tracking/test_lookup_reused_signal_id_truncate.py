"""A signal id reused after its table was truncated: the lookup never adopts the old order.

Migration 0015 leaves a ``deleted`` event for each row a DELETE removes, and the lookup
excludes the orders the history names up to it. TRUNCATE fires no row trigger: without a
statement trigger of its own, a table emptied that way (a reset between sessions, a test
day's cleanup) left no event, and a new row under an old signal id adopted the old row's
order (same client id ``tb-<signal_id>``), its own order never sent.
"""

from __future__ import annotations

from _support.rig import front
from tracking.conftest import StackFactory


async def test_a_signal_id_reused_after_truncate_never_adopts_the_old_rows_order(
    make_stack: StackFactory,
) -> None:
    async with make_stack() as stack:
        stack.start(stack.dispatcher())
        tick = front().product.tick_size
        grid = (stack.last() / tick).to_integral_value() * tick
        await stack.insert("r", order_type="limit", price=grid - 100 * tick)
        old = await stack.wait("r", "working")
        async with stack.ledger.pool.acquire() as conn:
            await conn.execute("truncate trading_signals")

        faults = stack.sim.ctx.faults
        faults.error_5xx_writes_only = True
        faults.error_5xx_rate = 1.0  # the new submit is answered 5xx and NOT executed
        await stack.insert("r", order_type="limit", price=grid - 60 * tick)
        await stack.wait("r", "unknown", "working", "needs_review", "failed")
        faults.error_5xx_rate = 0.0

        row = await stack.wait("r", "working", "needs_review", "failed", timeout=30)

        assert row.status.value == "working", row.error_message
        assert row.tradovate_order_id != old.tradovate_order_id, "adopted the old row's order"
        [new] = [o for o in stack.entries() if str(o.id) == row.tradovate_order_id]
        assert new.version.price == grid - 60 * tick
        deleted = [e for e in await stack.ledger.history("r") if e.event == "deleted"]
        assert [e.detail["broker_order_id"] for e in deleted] == [old.tradovate_order_id]

"""A target move proven absent is not resent on a position that moved since.

Target +1 from +3 is a sell of 2; its answer says RiskCheckTimeout (looked up); a manual
sell of 1 makes the position +2; the lookup proves the order absent. Resent as planned, the
sell of 2 left the account flat and the row said ``filled`` (docs/dispatcher.md: a reverse or
a target move on any other position fails instead). Found by a review (2026-12-07).
"""

from __future__ import annotations

from _support.rig import front
from tracking.conftest import ACCOUNT, ACCOUNT_IDS, StackFactory
from tracking.test_brackets_follow import TICK, _bracketed, _on_grid
from tradebridge.domain.enums import Dialect, OrderType, Side
from tradebridge.sim.config import SimConfig
from tradebridge.sim.engine import OrderRequest


async def test_target_proven_absent_is_not_resent_on_another_position(
    make_stack: StackFactory,
) -> None:
    sim = SimConfig(port=0, price_step_s=3600)
    async with make_stack(sim, dialect=Dialect.NATIVE,
                          tradovate={"lookup_absent_after_s": 1.5}) as stack:  # fmt: skip
        stack.start(stack.dispatcher())
        await _bracketed(stack, "entry", 3)
        faults = stack.sim.ctx.faults
        faults.inject_failure_reason, faults.inject_failure_count = "RiskCheckTimeout", 1
        await stack.insert("act", intent="target", target_position=1, side=None, quantity=None)
        await stack.wait("act", "unknown")
        manual = OrderRequest(
            account_id=ACCOUNT_IDS[ACCOUNT], symbol=front().name, action=Side.SELL,
            order_type=OrderType.LIMIT, order_qty=1, price=_on_grid(stack.last()) - 20 * TICK,
        )  # fmt: skip
        stack.sim.call(lambda: stack.sim.ctx.engine.place_order(manual))
        assert stack.net_position() == 2

        row = await stack.wait("act", "filled", "failed", "needs_review")

        assert row.status == "failed", (row.status, row.error_message)
        assert "not sent again" in (row.error_message or "")
        assert stack.net_position() == 2

"""An exit proven absent fits the legs again before it is resent (issue 9, item 1).

Native only: the case needs a submit whose outcome is open while nothing was placed, and
only the native dialect has that answer (``failureReason: RiskCheckTimeout``, reference
§5.2); the bridge's "refused before execution" fault would refuse the leg changes too.
"""

from __future__ import annotations

from _support.rig import front
from tracking.conftest import ACCOUNT, ACCOUNT_IDS, StackFactory
from tracking.test_brackets_follow import TICK, _bracketed, _live_legs, _on_grid
from tradebridge.domain.enums import Dialect, OrderType, Side
from tradebridge.sim.config import SimConfig
from tradebridge.sim.engine import OrderRequest


async def test_exit_proven_absent_fits_the_legs_again_before_it_is_resent(
    make_stack: StackFactory,
) -> None:
    dialect = Dialect.NATIVE
    sim = SimConfig(port=0, price_step_s=3600)
    async with make_stack(sim, dialect=dialect, tradovate={"lookup_absent_after_s": 1.5}) as stack:
        stack.start(stack.dispatcher())
        await _bracketed(stack, "entry", 3)
        faults = stack.sim.ctx.faults
        # RiskCheckTimeout: unknown until looked up (reference §5.2); nothing was placed.
        faults.inject_failure_reason, faults.inject_failure_count = "RiskCheckTimeout", 1
        await stack.insert("act", intent="exit", side=None, quantity=1)
        await stack.wait("act", "unknown")
        # Before the lookup proves it absent, the trader sells one by hand (a marketable
        # limit: not the exit's shape): the legs the first fit left (2) are now larger than
        # what the resent exit will leave (1).
        manual = OrderRequest(
            account_id=ACCOUNT_IDS[ACCOUNT], symbol=front().name, action=Side.SELL,
            order_type=OrderType.LIMIT, order_qty=1, price=_on_grid(stack.last()) - 20 * TICK,
        )  # fmt: skip
        stack.sim.call(lambda: stack.sim.ctx.engine.place_order(manual))

        row = await stack.wait("act", "filled", "failed", "needs_review")

        history = await stack.ledger.pool.fetch(
            "select event, detail from order_history where signal_id = 'act' order by id"
        )
        events = [h["event"] for h in history]
        fitted = [h["detail"]["remaining"] for h in history if h["event"] == "legs_fitted"]
        assert row.status == "filled"
        assert events.count("resubmitted") == 1
        # Before the first send, and before the resend (inline and reconcile may both look:
        # modifies to an absolute quantity are safe to repeat).
        assert fitted[0] == 2
        assert set(fitted[1:]) == {1}
        assert stack.net_position() == 1
        assert sorted(o.leaves_qty for o in _live_legs(stack)) == [1, 1]

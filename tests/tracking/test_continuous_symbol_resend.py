"""An order on a continuous symbol reads the position for the roll alone (``route.needs``):
with no risk rule on, that read judges nothing, so it must not make the order "exact".

After the roll change an order on ``MNQ1!`` read the position, and the dispatcher took every
position read for one the rules had judged: the order was marked to be resent only on that
very position, and the ledger's counts were read before it (one more statement per alert).
A buy whose submit failed without executing, on an account whose position moved meanwhile
(another order of its strategy, or one placed by hand), then ended ``failed`` ("the position
moved ... its risk checks were of that position") instead of being sent again (found by the
chaos suite, whose rules are off). Under position rules that stays the rule (docs/risk.md).
"""

from __future__ import annotations

from _support.chaos import RISK_OFF
from _support.rig import front
from tracking.conftest import ACCOUNT, StackFactory
from tradebridge.domain.commands import SubmitOrder
from tradebridge.domain.enums import OrderType, Side
from tradebridge.domain.ids import AccountName, ClientOrderId


async def test_a_continuous_symbols_order_is_resent_although_the_position_moved(
    make_stack: StackFactory,
) -> None:
    async with make_stack(risk=RISK_OFF) as stack:  # no rule judges the position
        stack.start(stack.dispatcher())
        faults = stack.sim.ctx.faults
        faults.error_5xx_writes_only = True
        faults.error_5xx_rate = 1.0  # the submit is answered 5xx and NOT executed
        await stack.insert("c", instrument="MNQ1!")
        await stack.wait("c", "unknown", "filled", "failed", "needs_review")
        # Meanwhile the account's position moves (an order placed by hand).
        faults.error_5xx_rate = 0.0
        broker = await stack.pool.get(ACCOUNT)
        await broker.submit(
            SubmitOrder(
                client_order_id=ClientOrderId("by-hand"), account=AccountName(ACCOUNT),
                contract=front(), side=Side.BUY, order_type=OrderType.MARKET, quantity=1,
            )
        )  # fmt: skip

        row = await stack.wait("c", "filled", "failed", "needs_review", timeout=30)

        assert row.status.value == "filled", row.error_message
        assert stack.net_position() == 2
        assert sorted(o.cl_ord_id or "" for o in stack.entries()) == ["by-hand", "tb-c"]

"""An order that would reduce the position but carries a bracket is judged as an entry.

Its legs rest on what the order leaves (a flat account once it has closed a long) and one of
them opens a position: a plain `sell 1` with a stop loss and a take profit while long 1
passed the kill switch as an exit, and its take-profit leg then bought 1 (found by a review,
2026-12-07). `risk.reduces_only` now says no to any order with a bracket."""

from __future__ import annotations

from decimal import Decimal

from tracking.conftest import ACCOUNT, StackFactory

TICK = Decimal("0.25")


async def test_a_reducing_order_with_a_bracket_is_stopped_by_the_kill_switch(
    make_stack: StackFactory,
) -> None:
    async with make_stack() as stack:
        stack.start(stack.dispatcher())
        await stack.insert("long", quantity=1)
        await stack.wait("long", "filled")
        await stack.ledger.engage_kill_switch(ACCOUNT, changed_by="ops", via="cli",
                                              reason="stop trading")  # fmt: skip
        last = (stack.last() / TICK).to_integral_value() * TICK
        await stack.insert("out", side="sell", quantity=1, stop_loss=last + 20,
                           take_profit=last - 20)  # fmt: skip
        row = await stack.wait("out", "filled", "denied")

        assert row.status.value == "denied"
        assert row.error_message is not None
        assert "kill switch" in row.error_message
        # Without its bracket the same sell only reduces: it passes.
        await stack.insert("plain-out", side="sell", quantity=1)
        row = await stack.wait("plain-out", "filled", "denied")
        assert row.status.value == "filled"
        assert stack.net_position() == 0

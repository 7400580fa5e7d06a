"""Orders are judged as if the account's open orders on their contract and side had filled.

`risk.reduces_only` looked at the broker's position alone: two resting sells of a long 1
each passed as "only reduces" (every rule and the kill switch skipped) and together opened a
short; three resting buys of 2 each passed `max_position = 2` against a flat position (found
by a review, 2026-12-07). The ledger's count of open orders now also says what they have
still to fill on the row's contract and side (the same statement).
"""

from __future__ import annotations

from decimal import Decimal

from tracking.conftest import ACCOUNT, StackFactory, until

TICK = Decimal("0.25")


def _grid(price: Decimal) -> Decimal:
    return (price / TICK).to_integral_value() * TICK


async def test_the_kill_switch_stops_a_second_resting_sell_that_would_turn_the_position(
    make_stack: StackFactory,
) -> None:
    async with make_stack() as stack:
        stack.start(stack.dispatcher())
        await stack.insert("long", quantity=1)
        await stack.wait("long", "filled")
        assert stack.net_position() == 1
        await stack.ledger.engage_kill_switch(ACCOUNT, changed_by="ops", via="cli",
                                              reason="stop trading")  # fmt: skip
        above = _grid(stack.last()) + 50
        # Each is a sell of 1 while long 1: "only reduces" as judged alone.
        await stack.insert("tp1", side="sell", order_type="limit", price=above)
        await stack.wait("tp1", "working")
        await stack.insert("tp2", side="sell", order_type="limit", price=above)
        second = await stack.wait("tp2", "working", "denied", "failed")

        stack.set_price(above + 10)
        await until(lambda: stack.net_position() != 1, "the resting sells fill")
        await stack.wait("tp1", "filled")
        if second.status.value == "working":
            await stack.wait("tp2", "filled")

        # The kill switch is on: no order may open a position. tp2 opens a short of 1.
        assert second.status.value == "denied", (
            f"tp2 went out under the kill switch ({second.status.value}); "
            f"net position now {stack.net_position()}"
        )


async def test_max_position_counts_resting_sells_ahead(
    make_stack: StackFactory,
) -> None:
    async with make_stack(risk={"max_position": 2}) as stack:
        stack.start(stack.dispatcher())
        await stack.insert("long", quantity=2)
        await stack.wait("long", "filled")
        above = _grid(stack.last()) + 50
        for n in range(3):  # each a sell of 2 while long 2: "only reduces" judged alone
            await stack.insert(f"s{n}", side="sell", order_type="limit", price=above,
                               quantity=2)  # fmt: skip
            await stack.wait(f"s{n}", "working", "denied")
        stack.set_price(above + 10)
        await until(lambda: stack.net_position() != 2, "the resting sells fill")
        for n in range(3):
            await stack.wait(f"s{n}", "filled", "denied")

        # max_position = 2: the position may never be beyond 2 contracts either way.
        assert abs(stack.net_position()) <= 2, (
            f"net position {stack.net_position()} with max_position = 2"
        )


async def test_max_position_counts_resting_entries_ahead(
    make_stack: StackFactory,
) -> None:
    async with make_stack(risk={"max_position": 2}) as stack:
        stack.start(stack.dispatcher())
        below = _grid(stack.last()) - 50
        for n in range(3):  # each a buy of 2 while flat: within the limit judged alone
            await stack.insert(f"b{n}", order_type="limit", price=below, quantity=2)
            await stack.wait(f"b{n}", "working", "denied")
        stack.set_price(below - 10)
        for n in range(3):
            await stack.wait(f"b{n}", "filled", "denied")

        assert abs(stack.net_position()) <= 2, (
            f"net position {stack.net_position()} with max_position = 2"
        )

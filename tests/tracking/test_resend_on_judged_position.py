"""A plain order judged by the risk rules on the position is sent again (its answer lost, the
order proved absent) only on that very position.

A plain order passes an unknown row of its account (docs/dispatcher.md, "The bound"), so the
account moves on while the unknown row waits for its lookup, and a trade made by hand at
the broker moves the position as well. The resend went out with no rule run again: an entry
doubled past `max_position`, and a sell judged "reducing" on a long that had since closed
opened a short under the kill switch (found by a review, 2026-12-07; the review's rows
behind it are now judged with the unknown row's quantity ahead, so here the position moves
by hand). Now such a resend reads the position afresh and the row ends `failed` if it
moved."""

from __future__ import annotations

from typing import Any

from _support.rig import front
from tracking.conftest import ACCOUNT, ACCOUNT_IDS, Stack, StackFactory
from tradebridge.domain.enums import OrderType, Side
from tradebridge.errors import BrokerUnavailable
from tradebridge.sim.engine import OrderRequest


def _by_hand(stack: Stack, side: Side, quantity: int) -> None:
    """Trade ``quantity`` at the broker, outside tradebridge (the trader's app): a marketable
    limit, so no lookup of the unknown market order takes it for its own."""
    tick = front().product.tick_size
    price = ((stack.last() + side.sign * 20 * tick) / tick).to_integral_value() * tick
    manual = OrderRequest(
        account_id=ACCOUNT_IDS[ACCOUNT], symbol=front().name, action=side,
        order_type=OrderType.LIMIT, order_qty=quantity, price=price,
    )  # fmt: skip
    stack.sim.call(lambda: stack.sim.ctx.engine.place_order(manual))


async def _unknown(stack: Stack, dispatcher: Any, signal_id: str, **columns: Any) -> None:
    """Place a row whose submit is answered 5xx and not executed, while its lookups fail
    (a broker that errs for a moment): the row stays ``unknown`` for reconcile."""
    broker = await stack.pool.get(ACCOUNT)
    real_lookup = broker.lookup

    async def failing(*args: Any, **kwargs: Any) -> Any:
        raise BrokerUnavailable("the broker errs for a moment")

    faults = stack.sim.ctx.faults
    faults.error_5xx_writes_only = True
    faults.error_5xx_rate = 1.0
    broker.lookup = failing  # type: ignore[method-assign]
    try:
        await stack.insert(signal_id, **columns)
        await dispatcher.drain_once()
        await stack.wait(signal_id, "unknown")
    finally:
        faults.error_5xx_rate = 0.0
        broker.lookup = real_lookup  # type: ignore[method-assign]


async def test_an_entry_is_not_resent_past_max_position(make_stack: StackFactory) -> None:
    async with make_stack(risk={"max_position": 2}) as stack:
        d = stack.dispatcher()
        await _unknown(stack, d, "a", quantity=2)  # buy 2: never reached the broker
        assert stack.net_position() == 0
        _by_hand(stack, Side.BUY, 2)
        assert stack.net_position() == 2  # at the limit

        stack.start(d)  # reconcile looks "a" up: absent
        row = await stack.wait("a", "working", "filled", "failed", "needs_review")

        assert row.status.value == "failed"
        assert row.error_message is not None
        assert "the position moved from 0 to 2" in row.error_message
        assert stack.net_position() == 2


async def test_a_sell_judged_reducing_is_not_resent_on_a_flat_account(
    make_stack: StackFactory,
) -> None:
    async with make_stack(risk={"max_position": 5}) as stack:
        d = stack.dispatcher()
        await stack.insert("long", quantity=1)
        await d.drain_once()
        await stack.wait("long", "working", "filled")
        await stack.ledger.engage_kill_switch(ACCOUNT, changed_by="ops", via="cli",
                                              reason="stop trading")  # fmt: skip
        await _unknown(stack, d, "a", side="sell", quantity=1)  # reduces +1: passes the kill
        _by_hand(stack, Side.SELL, 1)
        assert stack.net_position() == 0

        stack.start(d)
        row = await stack.wait("a", "working", "filled", "failed", "needs_review")

        assert row.status.value == "failed"
        assert stack.net_position() == 0


async def test_a_plain_order_is_resent_on_the_position_it_was_judged_on(
    make_stack: StackFactory,
) -> None:
    # The guard costs nothing when nothing moved: the order proved absent goes out again.
    async with make_stack(risk={"max_position": 2}) as stack:
        d = stack.dispatcher()
        await _unknown(stack, d, "a", quantity=2)

        stack.start(d)
        row = await stack.wait("a", "filled", "failed", "needs_review")

        assert row.status.value == "filled"
        assert stack.net_position() == 2

"""Intents end to end: exit, reverse, cancel, flatten, target, and tick brackets."""

from __future__ import annotations

import pytest

from _support.rig import front
from tracking.conftest import Stack


async def _position(stack: Stack, signal_id: str, qty: int, side: str = "buy") -> None:
    await stack.insert(signal_id, side=side, quantity=qty)
    await stack.wait(signal_id, "filled")


@pytest.mark.parametrize(
    ("start", "intent", "extra", "expected"),
    [
        (2, "exit", {}, 0),
        (-3, "exit", {}, 0),
        (2, "reverse", {"side": "sell"}, -2),
        (0, "reverse", {"side": "sell", "quantity": 1}, -1),
        (1, "target", {"target_position": 3}, 3),
        (3, "target", {"target_position": -1}, -1),
    ],
)
async def test_intent_moves_position_to_expected(
    stack: Stack, start: int, intent: str, extra: dict[str, object], expected: int
) -> None:
    stack.start(stack.dispatcher())
    if start:
        await _position(stack, "open", abs(start), "buy" if start > 0 else "sell")

    await stack.insert("it", intent=intent, **{"side": None, "quantity": None, **extra})
    row = await stack.wait("it", "filled", "denied")

    assert (row.status, row.error_message) == ("filled", None)
    assert stack.net_position() == expected


@pytest.mark.parametrize(
    ("intent", "extra", "reason"),
    [
        ("exit", {}, "nothing to do: no position"),
        ("target", {"target_position": 0}, "nothing to do: the position"),
        ("cancel", {}, "nothing to do: no working orders"),
        ("flatten", {}, "nothing to do: no position or working order"),
    ],
)
async def test_intent_with_nothing_to_do_is_denied_with_note(
    stack: Stack, intent: str, extra: dict[str, object], reason: str
) -> None:
    stack.start(stack.dispatcher())
    await stack.insert("n", intent=intent, side=None, quantity=None, **extra)

    row = await stack.wait("n", "denied")

    assert row.error_message is not None
    assert row.error_message.startswith(reason)
    assert stack.entries() == []


async def test_intent_cancel_cancels_working_orders_on_the_contract(stack: Stack) -> None:
    stack.start(stack.dispatcher())
    tick = front().product.tick_size
    limit = (stack.last() / tick).to_integral_value() * tick - 40 * tick
    await stack.insert("rest", order_type="limit", price=limit)
    await stack.wait("rest", "working")

    await stack.insert("c", intent="cancel", side=None, quantity=None)

    done = await stack.wait("c", "filled")
    rested = await stack.wait("rest", "cancelled")
    assert done.error_message is None
    assert rested.status == "cancelled"


async def test_intent_flatten_closes_position_and_cancels_orders(stack: Stack) -> None:
    stack.start(stack.dispatcher())
    await _position(stack, "open", 2)
    tick = front().product.tick_size
    limit = (stack.last() / tick).to_integral_value() * tick - 40 * tick
    await stack.insert("rest", order_type="limit", price=limit)
    await stack.wait("rest", "working")

    await stack.insert("f", intent="flatten", instrument=None, side=None, quantity=None)

    await stack.wait("f", "filled")
    await stack.wait("rest", "cancelled")
    assert stack.net_position() == 0


async def test_intent_order_with_ticks_gets_legs_priced_from_its_fill(stack: Stack) -> None:
    stack.start(stack.dispatcher())
    tick = front().product.tick_size
    limit = (stack.last() / tick).to_integral_value() * tick - 40 * tick

    await stack.insert("b", order_type="limit", price=limit, stop_loss_ticks=8,
                       take_profit_ticks=12)  # fmt: skip
    await stack.wait("b", "working")
    assert [o for o in stack.sim_orders() if o.parent_id is not None] == []  # not filled yet
    stack.set_price(limit - 2 * tick)  # through the limit: it fills at its price
    await stack.wait("b", "filled")

    legs = [o.version for o in stack.sim_orders() if o.parent_id is not None]
    prices = {str(v.order_type).lower(): (v.price, v.stop_price) for v in legs}
    assert prices["limit"][0] == limit + 12 * tick
    assert prices["stop"][1] == limit - 8 * tick


@pytest.mark.parametrize(
    ("intent", "extra"),
    [
        ("reverse", {"side": "sell", "quantity": 1, "stop_loss_ticks": 40}),
        ("target", {"target_position": 2, "take_profit": 99999}),
    ],
)
async def test_intent_reverse_or_target_row_with_bracket_is_denied_never_placed_bare(
    stack: Stack, intent: str, extra: dict[str, object]
) -> None:
    # A row inserted directly (Supabase): the worker's own check, with the reason.
    stack.start(stack.dispatcher())

    await stack.insert("rb", intent=intent, **{"side": None, "quantity": None, **extra})
    row = await stack.wait("rb", "denied")

    assert row.error_message is not None
    assert "do not go with" in row.error_message
    assert stack.sim_orders() == []

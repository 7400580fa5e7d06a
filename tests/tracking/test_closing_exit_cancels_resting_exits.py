"""An order that closes the position cancels the earlier exits still resting on it; one that
reduces it cuts them to what remains.

Long 2 with a bracket; an exit sent as a stop rests (the bracket's legs are cut to it); a
market exit then closes the position. The resting stop exit stayed working and, when the
price reached it, left the account short 2 (the `exit_cancels = "legs"` default cancels
only protective legs). Found by a review (2026-12-07).
"""

from __future__ import annotations

import pytest

from tracking.conftest import Stack, until
from tracking.test_brackets_follow import TICK, _bracketed, _on_grid, stack
from tradebridge.domain.enums import Dialect
from tradebridge.sim.engine import OrdStatus

__all__ = ["stack"]  # fixture

pytestmark = pytest.mark.parametrize("dialect", [Dialect.NATIVE, Dialect.TVBRIDGE])


async def test_a_closing_exit_leaves_no_resting_exit_to_open_a_position(stack: Stack) -> None:
    await _bracketed(stack, "entry", 2)
    stop = _on_grid(stack.last()) - 20 * TICK
    await stack.insert("stop-exit", intent="exit", side=None, quantity=None,
                       order_type="stop", stop_price=stop)  # fmt: skip
    await stack.wait("stop-exit", "working")
    await stack.insert("close", intent="exit", side=None, quantity=None)
    await stack.wait("close", "filled")
    assert stack.net_position() == 0

    await stack.wait("stop-exit", "cancelled")
    assert [o for o in stack.sim_orders() if o.ord_status is OrdStatus.WORKING] == []
    stack.set_price(stop - 4 * TICK)
    await until(lambda: stack.last() <= stop - 4 * TICK, "the price through the old stop")
    assert stack.net_position() == 0


async def test_a_reducing_exit_cuts_a_resting_exit_to_what_remains(stack: Stack) -> None:
    # The same, reduced instead of closed: the resting stop exit of 2 sold 2 of a long 1.
    await _bracketed(stack, "entry", 2)
    stop = _on_grid(stack.last()) - 20 * TICK
    await stack.insert("stop-exit", intent="exit", side=None, quantity=None,
                       order_type="stop", stop_price=stop)  # fmt: skip
    await stack.wait("stop-exit", "working")
    await stack.insert("reduce", intent="exit", side=None, quantity=1)
    await stack.wait("reduce", "filled")
    assert stack.net_position() == 1

    [resting] = [o for o in stack.sim_orders() if o.ord_status is OrdStatus.WORKING]
    assert resting.version.order_qty == 1
    stack.set_price(stop - 4 * TICK)
    await until(lambda: stack.net_position() == 0, "the resting stop exit sold what remained")
    await stack.wait("stop-exit", "filled")
    assert stack.net_position() == 0

"""An unknown flatten is run again only after reading the position and working orders.

A flatten whose answer was lost may well have closed the position. The bridge's flatten
reads the position before closing, so its rerun finds the account flat and ends the row;
the native flatten sent ``liquidateposition`` again without a look (and retried it inside
the adapter), every answer lost, until the row was escalated to ``needs_review`` although
the account had been flat since the first run. Now the rerun reads first: flat with nothing
working on the contract ends the row ``filled`` (done) and sends nothing; a position still
held is closed once more, and only what is held (a close never turns the position).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Literal

import pytest

from tracking.conftest import Stack, StackFactory
from tradebridge.domain.enums import Dialect, Side
from tradebridge.sim.config import SimConfig

pytestmark = pytest.mark.parametrize("dialect", [Dialect.NATIVE, Dialect.TVBRIDGE])

FINAL = ("filled", "needs_review", "failed", "rejected", "cancelled")


@pytest.fixture
async def stack(make_stack: StackFactory, dialect: Dialect) -> AsyncIterator[Stack]:
    """A stack whose accounts speak ``dialect``; ten reruns at most, then escalation."""
    async with make_stack(
        SimConfig(port=0, price_step_s=3600), dialect=dialect, dispatcher={"max_resends": 10}
    ) as built:
        built.start(built.dispatcher())
        yield built


async def _until(done: Callable[[], bool], what: str, timeout: float = 15.0) -> None:
    try:
        async with asyncio.timeout(timeout):
            while not done():
                await asyncio.sleep(0.02)
    except TimeoutError:
        pytest.fail(f"not within {timeout:g} s: {what}")


async def _long(stack: Stack, qty: int) -> None:
    await stack.insert("open", side="buy", quantity=qty)
    await stack.wait("open", "filled")
    assert stack.net_position() == qty


def _sells(stack: Stack) -> int:
    """Return how many orders the simulator holds that sell (closes of a long position)."""
    return sum(1 for o in stack.sim_orders() if o.action is Side.SELL)


Lost = Literal["reset", "http_500"]


def _lose_every_answer(stack: Stack, mode: Lost) -> None:
    def switch() -> None:
        faults = stack.sim.ctx.faults
        faults.error_5xx_rate = 0.0
        faults.drop_mode = mode
        faults.drop_after_accept_rate = 1.0

    stack.sim.call(switch)


@pytest.mark.parametrize("mode", ["reset", "http_500"])
async def test_unknown_flatten_with_every_answer_lost_ends_filled_once_the_account_is_flat(
    stack: Stack, mode: Lost
) -> None:
    await _long(stack, 2)
    _lose_every_answer(stack, mode)

    await stack.insert("flat", intent="flatten", side=None, quantity=None, instrument=None)
    row = await stack.wait("flat", *FINAL, timeout=30)

    assert (row.status, stack.net_position()) == ("filled", 0)
    assert _sells(stack) == 1  # closed once; no second close was sent
    events = [e.event for e in await stack.ledger.history("flat")]
    assert "unknown" in events  # the first run's answer was lost indeed
    assert events[-1] == "done"


async def test_unknown_flatten_that_did_not_run_closes_the_position_exactly_once_more(
    stack: Stack,
) -> None:
    await _long(stack, 2)

    def writes_fail() -> None:  # answered 5xx, not executed
        faults = stack.sim.ctx.faults
        faults.error_5xx_writes_only = True
        faults.error_5xx_rate = 1.0

    stack.sim.call(writes_fail)
    await stack.insert("flat", intent="flatten", side=None, quantity=None, instrument=None)
    await stack.wait("flat", "unknown")
    assert (stack.net_position(), _sells(stack)) == (2, 0)

    # The rerun runs now and closes; its answer is lost too, so one more rerun looks.
    _lose_every_answer(stack, "reset")
    await _until(lambda: _sells(stack) >= 1, "the rerun's close at the broker")
    row = await stack.wait("flat", *FINAL, timeout=30)

    assert (row.status, stack.net_position()) == ("filled", 0)
    assert _sells(stack) == 1

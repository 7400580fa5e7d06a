"""An exit sized from a position that a protective leg closes before the exit leaves is planned
again, never sent at the old size (it would open the opposite position).

An exit alert often fires as the stop triggers. The exit is sized from the position read
before it; cutting the legs (``dispatch/_legs.py``) finds the stop already filled ("too
late") or reads a position that has changed: the row is routed again from fresh reads
(here: nothing left to exit, denied).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from decimal import Decimal
from typing import Any

import pytest

from _support.rig import front
from tracking.conftest import ACCOUNT, Stack, StackFactory
from tradebridge.dispatch.dispatcher import Dispatcher
from tradebridge.domain.enums import Dialect, OrderType
from tradebridge.domain.lifecycle import SignalStatus
from tradebridge.sim.config import SimConfig
from tradebridge.sim.engine import OrdStatus, SimOrder

TICK = front().product.tick_size
SL_TICKS, TP_TICKS = 40, 60


@pytest.fixture(params=[Dialect.NATIVE, Dialect.TVBRIDGE], ids=["native", "bridge"])
async def stack(request: pytest.FixtureRequest, make_stack: StackFactory) -> AsyncIterator[Stack]:
    sim = SimConfig(port=0, price_step_s=3600)
    async with make_stack(sim, dialect=request.param) as built:
        built.start(built.dispatcher())
        yield built


def _on_grid(price: Decimal) -> Decimal:
    return (price / TICK).to_integral_value() * TICK


def _live_legs(stack: Stack) -> list[SimOrder]:
    return [o for o in stack.sim_orders()
            if o.parent_id is not None and o.ord_status is OrdStatus.WORKING]  # fmt: skip


async def _long_one_with_bracket(stack: Stack) -> SimOrder:
    await stack.insert("entry", side="buy", quantity=1, reference_price=_on_grid(stack.last()),
                       stop_loss_ticks=SL_TICKS, take_profit_ticks=TP_TICKS)  # fmt: skip
    await stack.wait("entry", "filled")
    async with asyncio.timeout(10):
        while len(_live_legs(stack)) < 2:
            await asyncio.sleep(0.02)
    assert stack.net_position() == 1
    return next(o for o in _live_legs(stack) if o.version.order_type is OrderType.STOP)


def _trigger(stack: Stack, stop: SimOrder) -> None:
    assert stop.version.stop_price is not None
    stack.set_price(stop.version.stop_price - 2 * TICK)  # the stop leg fills now


async def test_an_exit_whose_stop_fills_as_its_legs_are_cut_is_not_sent(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The legs' cancel meets the stop filled ("too late"): before, the sell 1 went out
    # anyway and left the account short 1.
    stop = await _long_one_with_bracket(stack)
    broker = await stack.pool.get(ACCOUNT)
    triggered = False
    # The first step that cuts the legs: the native bracket's strategy is interrupted first.
    for step in ("interrupt_strategy", "cancel"):
        original = getattr(broker, step)

        async def stop_triggers_first(command: Any, original: Any = original) -> None:
            nonlocal triggered
            if not triggered:
                triggered = True
                _trigger(stack, stop)
            await original(command)

        monkeypatch.setattr(broker, step, stop_triggers_first)
    await stack.insert("exit", intent="exit", side=None, quantity=None)

    row = await stack.wait("exit", "filled", "denied", "rejected", "failed", "needs_review")

    assert triggered
    assert stack.net_position() == 0
    assert row.status is SignalStatus.DENIED
    assert "no position" in (row.error_message or "")
    events = [e.event for e in await stack.ledger.history("exit")]
    assert "position_moved" in events


async def test_an_exit_whose_stop_fills_after_it_was_sized_is_not_sent(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The stop fills after routing sized the exit (1) and before the legs are cut, which
    # read 0: before, nothing compared the two and the sell 1 went out.
    stop = await _long_one_with_bracket(stack)
    broker = await stack.pool.get(ACCOUNT)
    original = broker.lookup_baseline
    triggered = False

    async def stop_triggers_after_route(command: Any) -> Any:
        nonlocal triggered
        if not triggered and command.client_order_id.endswith("exit"):
            triggered = True
            _trigger(stack, stop)
        return await original(command)

    monkeypatch.setattr(broker, "lookup_baseline", stop_triggers_after_route)
    await stack.insert("exit", intent="exit", side=None, quantity=None)

    row = await stack.wait("exit", "filled", "denied", "rejected", "failed", "needs_review")

    assert triggered
    assert stack.net_position() == 0
    assert row.status is SignalStatus.DENIED


async def test_an_exit_of_a_position_that_did_not_move_goes_out_once(stack: Stack) -> None:
    await _long_one_with_bracket(stack)
    await stack.insert("exit", intent="exit", side=None, quantity=None)

    row = await stack.wait("exit", "filled", "denied", "rejected", "failed", "needs_review")

    assert row.status is SignalStatus.FILLED
    assert stack.net_position() == 0
    events = [e.event for e in await stack.ledger.history("exit")]
    assert "position_moved" not in events


async def test_an_exit_whose_position_keeps_moving_is_denied_after_three_plans(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    await _long_one_with_bracket(stack)

    async def moved(_self: Dispatcher, _signal_id: str, plan: Any, _broker: Any) -> int:
        return int(plan.position_before) + 1  # each time the legs are cut: another position

    monkeypatch.setattr(Dispatcher, "_fit_legs", moved)
    await stack.insert("exit", intent="exit", side=None, quantity=None)

    row = await stack.wait("exit", "filled", "denied", "rejected", "failed", "needs_review")

    assert row.status is SignalStatus.DENIED
    assert "kept moving" in (row.error_message or "")
    events = [e.event for e in await stack.ledger.history("exit")]
    assert events.count("position_moved") == 3
    assert stack.net_position() == 1

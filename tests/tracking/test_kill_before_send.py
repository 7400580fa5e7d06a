"""A kill switch thrown after a row's write-ahead stops its order before it leaves.

The row is judged by the switches when its turn comes; its order may then wait to leave (the
user's request budget, a liveness wait) or, its answer lost and the lookup proving it absent,
be sent again much later. The last check before an order request leaves (the send's fence,
dispatch/liveness.py) asks the process's switches again: an order that may open a position
is not sent once a switch stops its account; the row ends ``failed``, saying so. Exits still
pass. Until 2026-12-07 both went out after the kill.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from _support.fixtures import redis_client
from tracking.conftest import ACCOUNT, Stack, StackFactory, ledger_url, make_stack, until
from tradebridge.domain.enums import Dialect
from tradebridge.domain.lifecycle import SignalStatus

__all__ = ["ledger_url", "make_stack", "redis_client"]  # fixtures


class Gate:
    """Holds the next submit of ACCOUNT before it leaves, as the request budget's wait does
    (the fence is checked after that wait, right where the request would leave)."""

    def __init__(self) -> None:
        self.entered = asyncio.Event()
        self.release = asyncio.Event()
        self.armed = True

    async def install(self, stack: Stack) -> None:
        broker = await stack.pool.get(ACCOUNT)
        real = broker.submit

        async def submit(command: Any) -> Any:
            if self.armed:
                self.armed = False
                self.entered.set()
                await self.release.wait()
            return await real(command)

        broker.submit = submit  # type: ignore[method-assign]


async def _kill(stack: Stack) -> None:
    await stack.ledger.engage_kill_switch(ACCOUNT, changed_by="ops", via="cli", reason="stop")


async def _order_posts(stack: Stack, signal_id: str) -> int:
    calls = await stack.ledger.broker_calls(signal_id)
    return sum(1 for c in calls if c.call.path == "/order/placeorder")


@pytest.mark.parametrize("dialect", [Dialect.NATIVE, Dialect.TVBRIDGE])
async def test_an_entry_written_ahead_before_a_kill_is_not_sent_after_it(
    make_stack: StackFactory, dialect: Dialect
) -> None:
    async with make_stack(dialect=dialect) as stack:
        dispatcher = stack.dispatcher("w1", tracking=False)
        stack.start(dispatcher)
        await asyncio.wait_for(dispatcher.live.wait(), 10)
        gate = Gate()
        await gate.install(stack)
        await stack.insert("k1")
        await asyncio.wait_for(gate.entered.wait(), 15)
        row = await stack.ledger.get("k1")
        assert row is not None
        assert row.status is SignalStatus.SUBMITTED

        await _kill(stack)
        gate.release.set()

        row = await stack.wait("k1", "failed", "working", "filled")
        assert row.status is SignalStatus.FAILED, row.error_message
        assert "kill switch" in (row.error_message or "")
        assert "kill_switch account DEMO0000001" in (row.error_message or "")
        calls = await stack.ledger.broker_calls("k1")
        assert [c.call.path for c in calls if c.call.method == "POST"] == []
        assert stack.sim_orders() == []


async def test_an_exit_written_ahead_before_a_kill_still_goes(stack: Stack) -> None:
    dispatcher = stack.dispatcher("w1", tracking=False)
    stack.start(dispatcher)
    await asyncio.wait_for(dispatcher.live.wait(), 10)
    await stack.insert("entry", quantity=2)
    await stack.wait("entry", "working", "filled")
    await until(lambda: stack.net_position() == 2, "the entry filled at the broker")
    gate = Gate()
    await gate.install(stack)
    await stack.insert("exit", intent="exit", side=None, quantity=None)
    await asyncio.wait_for(gate.entered.wait(), 15)

    await _kill(stack)
    gate.release.set()

    await stack.wait("exit", "working", "filled")
    await until(lambda: stack.net_position() == 0, "the exit filled at the broker")
    assert await _order_posts(stack, "exit") == 1


async def test_a_resend_after_a_kill_is_not_sent(stack: Stack) -> None:
    # The first send gets no verdict (RiskCheckTimeout: "look it up first", §6.3), the kill
    # is thrown, the lookup proves the order absent: its resend would be a new entry.
    faults = stack.sim.ctx.faults
    faults.inject_failure_reason, faults.inject_failure_count = "RiskCheckTimeout", 1
    broker = await stack.pool.get(ACCOUNT)
    real = broker.submit
    sent: list[str] = []

    async def submit(command: Any) -> Any:
        sent.append(str(command.client_order_id))
        try:
            return await real(command)
        finally:
            if len(sent) == 1:
                await _kill(stack)

    broker.submit = submit  # type: ignore[method-assign]
    dispatcher = stack.dispatcher("w1", tracking=False)
    stack.start(dispatcher)
    await asyncio.wait_for(dispatcher.live.wait(), 10)
    await stack.insert("r1")

    row = await stack.wait("r1", "failed", "working", "filled", "needs_review")

    assert row.status is SignalStatus.FAILED, row.error_message
    assert "kill switch" in (row.error_message or "")
    assert sent == ["tb-r1", "tb-r1"]  # looked up absent, sent again: stopped at the fence
    assert await _order_posts(stack, "r1") == 1
    assert stack.net_position() == 0
    events = [e.event for e in await stack.ledger.history("r1")]
    assert "unknown" in events

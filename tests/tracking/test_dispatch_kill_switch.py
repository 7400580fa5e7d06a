"""The dispatcher and the kill switch: a row is checked against the switches as its claim saw
them or, where the process's watch knows a later change, as the watch has them; never against
an older copy, and, while the watch runs, at no query besides the claim itself."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from tracking.conftest import ACCOUNT, ACCOUNT_2, Stack, until
from tradebridge.domain.kill import KillSwitches
from tradebridge.domain.lifecycle import SignalStatus
from tradebridge.store.kill import KillSwitchWatch


async def test_dispatcher_row_claimed_after_a_kill_is_denied_though_its_copy_was_older(
    stack: Stack,
) -> None:
    watch = KillSwitchWatch(stack.ledger)
    old = await watch.read_since(time.monotonic())  # the copy says: off
    await stack.ledger.engage_kill_switch(ACCOUNT, changed_by="ops", via="cli", reason="stop")
    await stack.insert("after")

    await stack.dispatcher(kill=watch).drain_once()

    row = await stack.wait("after", "denied")
    assert old.stopping(ACCOUNT) is None
    assert "kill_switch account DEMO0000001" in (row.error_message or "")
    assert stack.sim_orders() == []


async def test_dispatcher_claim_brings_the_switches_with_no_read_of_its_own(
    stack: Stack,
) -> None:
    # The watch runs (as in `serve`): fresh, it answers from memory, so judging each row by
    # the later of the claim's and the watch's view costs no query.
    watch = KillSwitchWatch(stack.ledger, poll_s=60)
    stack.tasks.append(asyncio.create_task(watch.run()))
    await until(lambda: watch.fresh, "the watch has read the switches")
    asked: list[bool] = []  # whether the watch was fresh (no read) each time it was asked
    real = watch.state

    async def state() -> KillSwitches:
        asked.append(watch.fresh)
        return await real()

    watch.state = state  # type: ignore[method-assign]
    for n in range(3):
        await stack.insert(f"a{n}")
        await stack.insert(f"b{n}", account_name=ACCOUNT_2)

    claimed = await stack.dispatcher(kill=watch).drain_once()

    assert claimed == 6
    for n in range(3):  # placed (the tracker, not running here, would mark them filled)
        await stack.wait(f"a{n}", "working", "filled")
        await stack.wait(f"b{n}", "working", "filled")
    assert asked == [True] * 6  # every row judged without a read of its own


async def test_rows_claimed_with_the_one_on_the_wire_are_denied_once_a_kill_is_thrown(
    stack: Stack,
) -> None:
    # A burst of entries is claimed in one statement; the operator throws the switch while
    # the first is on the wire. The rows behind it were claimed before the kill: judged by
    # the switches as the claim saw them, they went out too (docs/kill-switch.md: while a
    # switch is on, every new order of the accounts it covers is denied).
    broker = await stack.pool.get(ACCOUNT)
    real = broker.submit
    killed = False

    async def submit(command: Any) -> Any:
        nonlocal killed
        if not killed:
            killed = True
            await stack.ledger.engage_kill_switch(
                None, changed_by="ops", via="cli", reason="runaway"
            )
        return await real(command)

    broker.submit = submit  # type: ignore[method-assign]
    for n in range(4):
        await stack.insert(f"burst{n}")

    assert await stack.dispatcher().drain_once() == 4

    statuses = []
    for n in range(4):
        row = await stack.ledger.get(f"burst{n}")
        assert row is not None
        statuses.append(row.status)
    assert statuses[1:] == [SignalStatus.DENIED] * 3
    assert [o.cl_ord_id for o in stack.entries()] == ["tb-burst0"]


async def test_a_row_whose_reads_are_retried_is_judged_by_the_switches_when_they_succeed(
    stack: Stack,
) -> None:
    # Claimed before the kill; its broker reads fail and are tried again (the row stays
    # processing); the account's switch is thrown meanwhile; the broker comes back.
    faults = stack.sim.ctx.faults
    faults.error_5xx_rate = 1.0
    await stack.insert("stuck")
    stack.start(stack.dispatcher())
    await stack.wait("stuck", "processing")
    await stack.ledger.engage_kill_switch(ACCOUNT, changed_by="ops", via="cli", reason="outage")
    faults.error_5xx_rate = 0.0

    row = await stack.wait("stuck", "denied", "working", "filled", timeout=20)

    assert row.status is SignalStatus.DENIED
    assert "kill_switch account DEMO0000001" in (row.error_message or "")
    assert stack.entries() == []

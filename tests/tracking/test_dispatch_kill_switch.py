"""The dispatcher and the kill switch: a row is checked against the switches as its claim saw
them, never against an older copy, and that costs no query besides the claim itself."""

from __future__ import annotations

import time

from tracking.conftest import ACCOUNT, ACCOUNT_2, Stack
from tradebridge.domain.kill import KillSwitches
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
    watch = KillSwitchWatch(stack.ledger)
    reads = 0
    real = stack.ledger.kill_switches

    async def counted(*, forced: bool = False) -> KillSwitches:
        nonlocal reads
        reads += 1
        return await real(forced=forced)

    stack.ledger.kill_switches = counted  # type: ignore[method-assign]
    for n in range(3):
        await stack.insert(f"a{n}")
        await stack.insert(f"b{n}", account_name=ACCOUNT_2)

    claimed = await stack.dispatcher(kill=watch).drain_once()

    assert claimed == 6
    for n in range(3):  # placed (the tracker, not running here, would mark them filled)
        await stack.wait(f"a{n}", "working", "filled")
        await stack.wait(f"b{n}", "working", "filled")
    assert reads == 0  # the claim statement returned them

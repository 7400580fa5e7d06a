"""An account_name with surrounding blanks names the same account, and the same queue
(migration 0011, docs/ledger.md "Claims and per-account order"): an exit inserted without
the blank is placed after the entry inserted with it, not beside it."""

from __future__ import annotations

import asyncio
from typing import Any

from tracking.conftest import ACCOUNT, Stack, until
from tradebridge.domain.lifecycle import SignalStatus


async def test_exit_after_entry_with_padded_account_name_closes_the_entrys_position(
    stack: Stack,
) -> None:
    # The entry's request is held while the exit could overtake it (until the exit is
    # decided, at most a second): placed side by side, the exit reads no position and is
    # denied "nothing to do", and the entry's position stays open.
    broker = await stack.pool.get(ACCOUNT)
    real = broker.submit

    async def held_submit(command: Any) -> Any:
        if str(command.client_order_id) == "tb-ws-entry":
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 1.0
            while loop.time() < deadline:
                row = await stack.ledger.get("ws-exit")
                if row is None or row.status not in {SignalStatus.PENDING,
                                                     SignalStatus.PROCESSING}:  # fmt: skip
                    break
                await asyncio.sleep(0.02)
        return await real(command)

    broker.submit = held_submit  # type: ignore[method-assign]
    await stack.insert("ws-entry", account_name=ACCOUNT + " ")
    await stack.insert("ws-exit", account_name=ACCOUNT, intent="exit", side=None)

    await stack.dispatcher().drain_once()

    exit_ = await stack.wait("ws-exit", "working", "filled", "denied", "failed", "rejected")
    # Accepted (drain_once runs no tracker to write the fill): sent after the entry.
    assert exit_.status is SignalStatus.WORKING, (exit_.status, exit_.error_message)
    await until(lambda: stack.net_position() == 0, "the entry's position closed by the exit")

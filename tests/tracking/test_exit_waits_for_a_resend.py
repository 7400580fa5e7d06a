"""An exit claimed behind a plain order while an earlier row of its account was unknown waits
for that row's resend too, not only while it is unknown.

The claim lets a plain order pass an unknown row and takes the rows behind it in the same
batch; before each of them the task asks ``Ledger.held_back``, which counted only rows whose
status is ``unknown``. A row being resent after its lookup proved it absent is ``submitted``
(its order on its way): the exit went out beside it, sized from the position without it,
and left the account long 1 (found by a review, 2026-12-07). Now a row on its way holds back
the intents that depend on the position as well.

The gates below only delay two requests (a slow network); nothing else is changed.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import pytest

from _support.rig import front
from tracking.conftest import ACCOUNT, StackFactory, until
from tradebridge.domain.commands import SubmitOrder
from tradebridge.domain.enums import Dialect
from tradebridge.domain.lifecycle import SignalStatus


@pytest.mark.parametrize("dialect", [Dialect.NATIVE, Dialect.TVBRIDGE])
async def test_an_exit_behind_a_plain_order_waits_for_an_unknown_row_being_resent(
    make_stack: StackFactory, dialect: Dialect
) -> None:
    async with make_stack(
        dialect=dialect,
        # U's inline lookup takes a couple of seconds: time for the later rows to be claimed.
        tradovate={"lookup_absent_after_s": 2.0},
        dispatcher={"unknown_bound_s": 60.0},
    ) as stack:
        stack.start(stack.dispatcher())
        # A long position of 1.
        await stack.insert("e", side="buy", order_type="market", quantity=1)
        await stack.wait("e", "filled")
        assert stack.net_position() == 1

        broker = await stack.pool.get(ACCOUNT)
        real_submit = broker.submit
        exit_sent = asyncio.Event()
        u_calls = 0

        async def slow_network(command: SubmitOrder) -> Any:
            nonlocal u_calls
            cid = command.client_order_id
            if cid == "tb-u":
                u_calls += 1
                if u_calls == 2:
                    # U's resend is slow to leave (budget, network): its row is 'submitted'
                    # meanwhile. (Fixed, the exit waits for U: then U leaves after 5 s.)
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(exit_sent.wait(), 5)
            elif cid == "tb-r1":
                # R1's answer is slow; meanwhile U's lookup proves it absent and resends it.
                await until(lambda: u_state[0] == "submitted", "U being resent", 20)
            result = await real_submit(command)
            if cid == "tb-x":
                exit_sent.set()
            return result

        u_state = ["?"]

        async def watch_u() -> None:
            while True:
                row = await stack.ledger.get("u")
                u_state[0] = row.status.value if row is not None else "?"
                await asyncio.sleep(0.01)

        watcher = asyncio.create_task(watch_u())
        stack.tasks.append(watcher)
        broker.submit = slow_network  # type: ignore[method-assign]

        # U: buy 1 more; the submit is answered 5xx and NOT executed: unknown, looked up.
        faults = stack.sim.ctx.faults
        faults.error_5xx_writes_only = True
        faults.error_5xx_rate = 1.0
        await stack.insert("u", side="buy", order_type="market", quantity=1)
        await stack.wait("u", "unknown")
        faults.error_5xx_rate = 0.0

        # While U is unknown: a plain far limit (passes unknown rows) and an exit of it all.
        far = stack.last() - 400 * front().product.tick_size
        # One alert's two rows, inserted together (one transaction): claimed in one batch.
        async with stack.ledger.pool.acquire() as conn, conn.transaction():
            await conn.execute(
                "insert into trading_signals (signal_id, strategy_name, instrument, side, "
                "order_type, quantity, price, account_name) values ($1, 'tests', $2, 'buy', "
                "'limit', 1, $3, $4)",
                "r1",
                front().name,
                far,
                ACCOUNT,
            )
            await conn.execute(
                "insert into trading_signals (signal_id, strategy_name, instrument, intent, "
                "order_type, account_name) values ($1, 'tests', $2, 'exit', 'market', $3)",
                "x",
                front().name,
                ACCOUNT,
            )

        u = await stack.wait("u", "filled", "working", timeout=30)
        x = await stack.wait("x", "filled", "denied", "failed", timeout=30)
        await stack.wait("u", "filled", timeout=10)
        await asyncio.sleep(0.5)
        timeline = []
        for sid in ("u", "r1", "x"):
            timeline += [(e.id, sid, e.event) for e in await stack.ledger.history(sid)]
        timeline.sort()
        steps = [f"{sid}:{event}" for _, sid, event in timeline]
        # The exit was meant for the whole position U leaves (1 + 1): the account ends flat.
        assert stack.net_position() == 0, (
            f"exit {x.status.value} (filled {x.filled_qty}) was placed while U was being "
            f"resent ({u.placement_attempts} submits); the account is left at "
            f"{stack.net_position()}; order of events: {steps}"
        )
        assert x.status is SignalStatus.FILLED

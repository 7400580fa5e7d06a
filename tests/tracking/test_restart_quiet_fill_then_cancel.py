"""A fill made while no process ran, then a cancel after the restart: the row counts the fill.

The new process's first user-sync snapshot keeps quiet about orders older than its start
(reconcile's business); a live cancel of such an order then ended its row short of that fill,
and reconcile compares open rows only, so the ledger showed 1 lot where the broker traded 2,
for good (found by a review, 2026-12-07). The quiet fills of an order still open now go out
just before its next event (brokers/tradovate/usersync.py)."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from decimal import Decimal

import pytest

from tracking.conftest import ACCOUNT, StackFactory, make_settings
from tradebridge.brokers.pool import BrokerPool
from tradebridge.brokers.tradovate import broker as native
from tradebridge.dispatch.dispatcher import Dispatcher
from tradebridge.domain.commands import CancelOrder
from tradebridge.domain.ids import AccountName, BrokerOrderId
from tradebridge.domain.lifecycle import SignalStatus as S
from tradebridge.sim.config import SimConfig
from tradebridge.store.ledger import Ledger
from tradebridge.store.tokens import TokenStore

ONE_LOT = SimConfig(port=0, price_step_s=3600, liquidity_per_fill=1)


async def test_fill_made_while_down_then_cancel_after_restart_is_counted(
    make_stack: StackFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with make_stack(ONE_LOT) as stack:
        first = stack.start(stack.dispatcher("w1"))
        await stack.insert("r1", quantity=3)  # market 3: one lot fills at placement
        row = await stack.wait("r1", "partially_filled")
        assert row.filled_qty == 1
        first.cancel()  # the process stops
        await asyncio.gather(first, return_exceptions=True)
        await stack.pool.close()

        stack.set_price(stack.last())  # a second lot fills while no process runs
        [entry] = stack.entries()
        # The new process counts every order there as older than its start (no waiting out
        # the clocks' margin).
        monkeypatch.setattr(native, "_CLOCK_SKEW", timedelta(seconds=-60))
        settings = make_settings(stack.sim.url, dispatcher={"reconcile_interval_s": 30})
        ledger = await Ledger.connect(stack.ledger._url, min_size=1, max_size=8)
        pool = BrokerPool(settings, TokenStore(stack.redis, settings.tokens))
        second = asyncio.create_task(Dispatcher(settings, ledger, pool, worker_id="w2").run())
        try:
            broker = await pool.get(ACCOUNT)
            async with asyncio.timeout(15):
                while not broker.user_syncs():
                    await asyncio.sleep(0.02)
            await broker.user_syncs()[0].wait_synced(15)
            # The snapshot said nothing of the old order: the row still shows one lot.
            row = await stack.ledger.get("r1")
            assert row is not None
            assert row.filled_qty == 1

            await broker.cancel(CancelOrder(AccountName(ACCOUNT), BrokerOrderId(str(entry.id))))
            fills = stack.sim.call(lambda: stack.sim.ctx.engine.fills(entry.id))
            assert sum(f.qty for f in fills) == 2
            row = await stack.wait("r1", "cancelled")
            assert (row.status, row.filled_qty) == (S.CANCELLED, Decimal(2))
        finally:
            second.cancel()
            await asyncio.gather(second, return_exceptions=True)
            await pool.close()
            await ledger.close()

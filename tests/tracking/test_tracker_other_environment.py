"""Broker order ids are unique per environment, not across them: an event of one account's
order never moves another account's row that points at the same id.

Two processes share one ledger (Supabase), each trading its own Tradovate environment (say
demo and live, or two simulators): the ledger allows one row per broker order *per account*
(migration 0004), and the same order id may name two orders. Until 2026-12-08 the tracker
found a row by the broker's id among every account's open rows: a cancel by hand of an order
on the other environment's account cancelled this row, whose order still rested.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import pytest

from _support.rig import front, login
from tracking.conftest import ACCOUNT, ACCOUNT_2, ACCOUNT_IDS, Stack, StackFactory, make_settings
from tradebridge.brokers.pool import BrokerPool
from tradebridge.config import AccountConfig
from tradebridge.domain.enums import Dialect, OrderType, Side
from tradebridge.domain.lifecycle import SignalStatus
from tradebridge.obs.metrics import REGISTRY
from tradebridge.sim.config import SimConfig
from tradebridge.sim.engine import OrderRequest
from tradebridge.sim.server import SimServer
from tradebridge.store.ledger import Ledger, LedgerRow
from tradebridge.store.tokens import TokenStore
from tradebridge.tracking.tracker import Tracker

TICK = front().product.tick_size
DEADLINE_S = 15.0
FIRST_ORDER_ID = 1_000_001  # the simulator's first order id (sim/_records.py)
_DROP_REASONS = ("no_row", "other_order", "row_final", "row_not_open", "bracket_leg")


def _dropped() -> float:
    return sum(
        REGISTRY.get_sample_value("tradebridge_tracker_events_dropped_total", {"reason": r}) or 0.0
        for r in _DROP_REASONS
    )


async def _resting_row(stack: Stack, signal_id: str) -> str:
    """Place a buy limit far under the market on ACCOUNT (simulator A); return its order id."""
    below = ((stack.last() - 200) / TICK).to_integral_value() * TICK
    await stack.insert(signal_id, order_type="limit", price=below)
    await stack.dispatcher().drain_once()
    row = await stack.wait(signal_id, "working")
    assert row.tradovate_order_id is not None
    return row.tradovate_order_id


async def _row_moved_or_event_dropped(stack: Stack, signal_id: str, dropped: float) -> LedgerRow:
    """Wait until the row leaves working or the tracker drops an event (more than
    ``dropped``); return the row."""
    deadline = asyncio.get_running_loop().time() + DEADLINE_S
    while asyncio.get_running_loop().time() < deadline:
        row = await stack.ledger.get(signal_id)
        assert row is not None
        if row.status is not SignalStatus.WORKING or _dropped() > dropped:
            return row
        await asyncio.sleep(0.02)
    pytest.fail("the other environment's event was neither applied nor dropped")


@contextlib.asynccontextmanager
async def _other_environment(
    stack: Stack, ledger_url: str, first_id: int
) -> AsyncIterator[SimServer]:
    """Run the tracker of another process, which trades ACCOUNT_2 on a second simulator
    (another environment, whose next order id is ``first_id``), on the same database."""
    config = SimConfig(port=0, price_step_s=3600, id_offset=first_id - FIRST_ORDER_ID)
    with SimServer(config) as sim:
        # ACCOUNT_2 trades nothing on the first simulator here: its token key is this one's.
        await stack.redis.set("token:" + ACCOUNT_2, await login(sim, Dialect.NATIVE))
        settings = make_settings(sim.url).model_copy(
            update={"accounts": [AccountConfig(name=ACCOUNT_2, user="demo")]}
        )
        ledger = await Ledger.connect(ledger_url, min_size=1, max_size=4)
        pool = BrokerPool(settings, TokenStore(stack.redis, settings.tokens))
        task = asyncio.create_task(Tracker(settings, ledger, pool).run())
        try:
            yield sim
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            await pool.close()
            await ledger.close()


async def test_tracker_cancel_on_other_environment_same_order_id_leaves_row_working(
    stack: Stack, ledger_url: str
) -> None:
    order_id = await _resting_row(stack, "env-a")
    async with _other_environment(stack, ledger_url, int(order_id)) as sim_b:
        # A trader's order by hand on ACCOUNT_2 in the other environment, then cancelled:
        # that environment gives it the very id of ACCOUNT's resting order.
        def by_hand() -> int:
            engine = sim_b.ctx.engine
            contract = engine.find_contract(front().name)
            assert contract is not None
            placed = engine.place_order(OrderRequest(
                account_id=ACCOUNT_IDS[ACCOUNT_2], symbol=front().name, action=Side.SELL,
                order_type=OrderType.LIMIT, order_qty=1,
                price=engine.quote(contract.id).last + 200,
            ))  # fmt: skip
            engine.cancel_order(placed.order_id)
            return placed.order_id

        dropped = _dropped()
        assert str(sim_b.call(by_hand)) == order_id
        row = await _row_moved_or_event_dropped(stack, "env-a", dropped)

    assert (row.status, row.tradovate_order_id) == (SignalStatus.WORKING, order_id)
    assert [o.ord_status for o in stack.sim_orders() if str(o.id) == order_id] == ["Working"]


@contextlib.asynccontextmanager
async def _one_process_on_both(stack: Stack, first_id: int) -> AsyncIterator[SimServer]:
    """Run, with the ledger that placed ACCOUNT's rows (the bridge, on the stack's simulator),
    a tracker that also follows ACCOUNT_2 natively on a second simulator (another environment,
    whose next order id is ``first_id``): one process, two environments (native_url and
    bridge_url on different hosts)."""
    config = SimConfig(port=0, price_step_s=3600, id_offset=first_id - FIRST_ORDER_ID)
    with SimServer(config) as sim:
        await stack.redis.set("token:" + ACCOUNT_2, await login(sim, Dialect.NATIVE))
        settings = make_settings(
            stack.sim.url, Dialect.TVBRIDGE, tradovate={"native_url": sim.url + "/v1"}
        ).model_copy(update={"accounts": [
            AccountConfig(name=ACCOUNT, user="demo", dialect=Dialect.TVBRIDGE),
            AccountConfig(name=ACCOUNT_2, user="demo"),
        ]})  # fmt: skip
        pool = BrokerPool(settings, TokenStore(stack.redis, settings.tokens))
        task = asyncio.create_task(Tracker(settings, stack.ledger, pool).run())
        try:
            yield sim
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            await pool.close()


async def test_tracker_fill_on_other_environment_same_order_id_not_booked_on_row_placed_here(
    make_stack: StackFactory,
) -> None:
    # The row is known to this process (it placed it: ``KnownRows``), which answered an
    # event by the broker's id alone: the other environment's fill was booked onto it.
    async with make_stack(SimConfig(port=0, price_step_s=3600), Dialect.TVBRIDGE) as stack:
        order_id = await _resting_row(stack, "env-a")
        assert stack.ledger.known_event_row(order_id, None, None, account=ACCOUNT) is not None
        async with _one_process_on_both(stack, int(order_id)) as sim_b:
            # A trader's market order by hand on ACCOUNT_2, filled at once, in the other
            # environment: it gets the very id of ACCOUNT's resting order.
            def by_hand() -> int:
                engine = sim_b.ctx.engine
                placed = engine.place_order(OrderRequest(
                    account_id=ACCOUNT_IDS[ACCOUNT_2], symbol=front().name, action=Side.SELL,
                    order_type=OrderType.MARKET, order_qty=1,
                ))  # fmt: skip
                return placed.order_id

            dropped = _dropped()
            assert str(sim_b.call(by_hand)) == order_id
            row = await _row_moved_or_event_dropped(stack, "env-a", dropped)

    assert (row.status, row.tradovate_order_id, row.filled_qty) == (
        SignalStatus.WORKING, order_id, 0,
    )  # fmt: skip

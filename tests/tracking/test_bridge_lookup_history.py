"""A bridge lookup must not adopt an order that left ``/orders`` before the submit.

Finished orders stay in ``/orders`` for at least a minute, then only ``/ordersHistory`` lists
them (reference §9.5, §9.9). The baseline taken before a submit read ``/orders`` alone, and the
lookup reads both lists: an older identical order (placed by hand, or by another tool) that
had moved to the history was "not in the baseline", so it counted as new and was adopted by
shape. The row then followed someone else's filled order and nothing was placed for it
(DESIGN.md: a lookup adopts only an order "that appeared after this submit began").
"""

from __future__ import annotations

import asyncio

import pytest

from _support.native import front
from tracking.conftest import ACCOUNT, ACCOUNT_IDS, Stack, StackFactory
from tradebridge.domain.commands import SubmitOrder
from tradebridge.domain.enums import Dialect, OrderType, Side
from tradebridge.domain.ids import AccountName, BrokerOrderId
from tradebridge.errors import OutcomeUnknown
from tradebridge.sim.config import SimConfig
from tradebridge.sim.engine import OrderRequest


async def _until_gone_from_orders(stack: Stack, order_id: int, timeout: float = 10.0) -> None:
    broker = await stack.pool.get(ACCOUNT)
    bridge_id = await broker.bridge_id(AccountName(ACCOUNT))
    deadline = asyncio.get_running_loop().time() + timeout
    while asyncio.get_running_loop().time() < deadline:
        listed = await broker._read(f"/accounts/{bridge_id}/orders")
        if all(str(o["id"]) != str(order_id) for o in listed):
            return
        await asyncio.sleep(0.05)
    pytest.fail(f"order {order_id} still listed in /orders after {timeout} s")


async def test_lookup_does_not_adopt_an_older_order_only_in_history(
    make_stack: StackFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    sim_config = SimConfig(port=0, finished_order_linger_s=0.2)
    async with make_stack(sim_config, dialect=Dialect.TVBRIDGE) as stack:
        # A 1-lot market buy placed by hand earlier: filled, then gone from /orders.
        manual = stack.sim.call(
            lambda: stack.sim.ctx.engine.place_order(
                OrderRequest(
                    account_id=ACCOUNT_IDS[ACCOUNT], symbol=front().name, action=Side.BUY,
                    order_type=OrderType.MARKET, order_qty=1, is_automated=False,
                )
            )
        )  # fmt: skip
        assert manual.ok
        assert manual.order_id is not None
        await _until_gone_from_orders(stack, manual.order_id)

        # Our identical market buy: its request is lost before reaching the bridge.
        broker = await stack.pool.get(ACCOUNT)
        real_submit = broker.submit
        lost: list[str] = []

        async def lost_once(command: SubmitOrder) -> BrokerOrderId:
            if not lost:
                lost.append(command.client_order_id)
                raise OutcomeUnknown("connection reset", client_order_id=command.client_order_id)
            return await real_submit(command)

        monkeypatch.setattr(broker, "submit", lost_once)
        await stack.insert("ours", side="buy", order_type="market", quantity=1)
        dispatcher = stack.dispatcher("w1", tracking=False)
        deadline = asyncio.get_running_loop().time() + 15
        row = await stack.ledger.get("ours")
        while asyncio.get_running_loop().time() < deadline:
            await dispatcher.drain_once()
            row = await stack.ledger.get("ours")
            assert row is not None
            if row.tradovate_order_id is not None:
                break
            await asyncio.sleep(0.05)
        assert row is not None
        assert lost
        # The hand-placed order is not ours: nothing was placed for the row, so the lookup
        # finds it absent and the order is sent (once), under a new order id.
        assert row.tradovate_order_id != str(manual.order_id), (
            f"row adopted the hand-placed order {manual.order_id} ({row.status})"
        )
        assert len(stack.entries()) == 2

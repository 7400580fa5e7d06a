"""A reconnect's snapshot reports an order's fills before its end.

A market order for 3 fills one lot; the user-sync socket is down while a second lot fills
and the rest is cancelled. The snapshot after the reconnect holds both the missed fill and
the cancel. Reported cancel first, the row ended ``cancelled`` with 1 lot and took no fill
after it: 2 lots at the broker, 1 in the ledger, for good (reconcile compares open rows
only). Found by a review (2026-12-07).
"""

from __future__ import annotations

from decimal import Decimal

from tracking.conftest import ACCOUNT, StackFactory
from tradebridge.domain.commands import CancelOrder
from tradebridge.domain.ids import AccountName, BrokerOrderId
from tradebridge.domain.lifecycle import SignalStatus
from tradebridge.sim.config import SimConfig

ONE_LOT = SimConfig(port=0, price_step_s=3600, liquidity_per_fill=1)


async def test_a_fill_missed_while_the_socket_was_down_is_counted_before_the_cancel(
    make_stack: StackFactory,
) -> None:
    async with make_stack(ONE_LOT) as stack:
        stack.start(stack.dispatcher("w1"))
        await stack.insert("p1", quantity=3)  # a market order for 3: one lot fills at once
        row = await stack.wait("p1", "partially_filled")
        assert row.filled_qty == 1
        broker = await stack.pool.get(ACCOUNT)
        [sync] = broker.user_syncs()
        await sync.stop()  # the socket is down, as between a drop and its reconnect

        stack.set_price(stack.last())  # a second lot fills meanwhile
        [entry] = stack.entries()
        await broker.cancel(CancelOrder(AccountName(ACCOUNT), BrokerOrderId(str(entry.id))))
        fills = stack.sim.call(lambda: stack.sim.ctx.engine.fills(entry.id))
        assert sum(f.qty for f in fills) == 2

        await sync.start()  # the reconnect's snapshot: the missed fill and the cancel
        await sync.wait_synced(10)
        row = await stack.wait("p1", "cancelled")

        assert (row.status, row.filled_qty) == (SignalStatus.CANCELLED, Decimal(2))
        events = [e.event for e in await stack.ledger.history("p1")]
        assert events.index("cancelled") > max(i for i, e in enumerate(events) if e == "fill")

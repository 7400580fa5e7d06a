"""Orders are judged as if the account's working orders at the broker had filled, those
placed outside tradebridge included.

The rules counted the ledger's own open rows ahead of an order (test_risk_counts_orders_ahead)
and nothing else: with `max_position = 2`, a buy 2 resting at the broker (placed by hand in
the Tradovate platform, or by another tool) and our buy 2 took the account long 4; under a
kill switch a sell 1 resting by hand on a long 1 and our sell 1 ("only reduces", judged
alone) opened a short (found by a review, 2026-12-07). Now the broker's working orders on
the order's contract and side are counted as well (native: the user-sync socket's mirror;
bridge: ``/orders``), less the ledger's own rows.
"""

from __future__ import annotations

import asyncio
from decimal import Decimal

import pytest

from _support.rig import front
from tracking.conftest import ACCOUNT, ACCOUNT_IDS, Stack, StackFactory
from tradebridge.brokers.tradovate.usersync import UserSync
from tradebridge.domain.enums import Dialect, OrderType, Side
from tradebridge.domain.ids import AccountName
from tradebridge.sim.engine import OrderRequest

DIALECTS = pytest.mark.parametrize("dialect", [Dialect.NATIVE, Dialect.TVBRIDGE])


def _grid(price: Decimal) -> Decimal:
    tick = front().product.tick_size
    return (price / tick).to_integral_value() * tick


async def _rest_by_hand(stack: Stack, side: Side, quantity: int, price: Decimal) -> None:
    """Rest a limit order at the broker outside tradebridge (the trader's app)."""
    manual = OrderRequest(
        account_id=ACCOUNT_IDS[ACCOUNT], symbol=front().name, action=side,
        order_type=OrderType.LIMIT, order_qty=quantity, price=price,
    )  # fmt: skip
    placed = stack.sim.call(lambda: stack.sim.ctx.engine.place_order(manual))
    assert placed.order_id is not None, placed.failure_text
    await _seen(stack, str(placed.order_id))


async def _seen(stack: Stack, order_id: str, timeout: float = 15.0) -> None:
    """Return once the account's adapter lists ``order_id`` among its working orders (native:
    once the user-sync socket has brought it; before the rules counted them, its orders)."""
    broker = await stack.pool.get(ACCOUNT)
    read = getattr(broker, "working_orders", None) or broker.order_reports
    deadline = asyncio.get_running_loop().time() + timeout
    while asyncio.get_running_loop().time() < deadline:
        if any(r.broker_order_id == order_id for r in await read(AccountName(ACCOUNT))):
            return
        await asyncio.sleep(0.02)
    pytest.fail(f"not within {timeout:g} s: the adapter lists order {order_id}")


@DIALECTS
async def test_max_position_counts_a_buy_resting_by_hand(
    make_stack: StackFactory, dialect: Dialect
) -> None:
    async with make_stack(dialect=dialect, risk={"max_position": 2}) as stack:
        stack.start(stack.dispatcher())
        below = _grid(stack.last()) - 50
        await _rest_by_hand(stack, Side.BUY, 2, below)

        await stack.insert("b", quantity=2)  # flat: within the limit, judged alone
        row = await stack.wait("b", "filled", "denied", "failed")

        assert row.status.value == "denied", f"b is {row.status.value}"
        assert row.error_message is not None
        assert "max_position" in row.error_message
        assert "+4" in row.error_message, row.error_message
        assert stack.net_position() == 0


@DIALECTS
async def test_the_kill_switch_counts_a_sell_resting_by_hand(
    make_stack: StackFactory, dialect: Dialect
) -> None:
    async with make_stack(dialect=dialect) as stack:
        stack.start(stack.dispatcher())
        await stack.insert("long", quantity=1)
        await stack.wait("long", "filled")
        above = _grid(stack.last()) + 50
        await _rest_by_hand(stack, Side.SELL, 1, above)
        await stack.ledger.engage_kill_switch(ACCOUNT, changed_by="ops", via="cli",
                                              reason="stop trading")  # fmt: skip

        # A sell of 1 while long 1: "only reduces" judged alone; with the sell by hand, short 1.
        await stack.insert("s", side="sell", quantity=1)
        row = await stack.wait("s", "filled", "denied", "failed")

        assert row.status.value == "denied", f"s is {row.status.value}"
        assert row.error_message is not None
        assert "kill switch" in row.error_message
        assert "with 1 more in working orders" in row.error_message, row.error_message
        assert stack.net_position() == 1


@DIALECTS
async def test_an_order_of_the_ledger_working_at_the_broker_is_counted_once(
    make_stack: StackFactory, dialect: Dialect
) -> None:
    async with make_stack(dialect=dialect, risk={"max_position": 4}) as stack:
        stack.start(stack.dispatcher())
        below = _grid(stack.last()) - 50
        await stack.insert("rest", order_type="limit", price=below, quantity=2)
        rest = await stack.wait("rest", "working")
        assert rest.tradovate_order_id is not None
        await _seen(stack, rest.tradovate_order_id)

        # 2 resting (the ledger's own) and 2 more: 4, at the limit; counted twice, 6.
        await stack.insert("b", quantity=2)
        row = await stack.wait("b", "filled", "denied", "failed")

        assert row.status.value == "filled", f"b is {row.status.value}: {row.error_message}"
        assert stack.net_position() == 2


async def test_native_working_orders_are_not_read_from_rest_while_the_socket_cannot_tell(
    make_stack: StackFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Read from REST they cost four to six reads of the user's budget per judged order; a
    # fan-out during a socket outage would wait minutes for them (d298950). While a socket
    # follows the account but is not current, none are counted: the ledger's rows still are.
    async with make_stack(dialect=Dialect.NATIVE) as stack:
        stack.start(stack.dispatcher())
        await _rest_by_hand(stack, Side.BUY, 1, _grid(stack.last()) - 50)
        broker = await stack.pool.get(ACCOUNT)
        rest_reads: list[str] = []
        real = broker.order_reports

        async def counted(account: AccountName) -> object:
            rest_reads.append(account)
            return await real(account)

        monkeypatch.setattr(broker, "order_reports", counted)
        # Until the socket follows the account (it starts beside the dispatcher), REST is
        # how the adapter reads: wait for a read the socket answers alone.
        deadline = asyncio.get_running_loop().time() + 15
        while True:
            rest_reads.clear()
            if await broker.working_orders(AccountName(ACCOUNT)) and not rest_reads:
                break
            assert asyncio.get_running_loop().time() < deadline, "the socket never answered"
            await asyncio.sleep(0.02)
        monkeypatch.setattr(UserSync, "current", lambda _self: False)  # down: cannot tell

        working = await broker.working_orders(AccountName(ACCOUNT))

    assert (working, rest_reads) == ([], [])

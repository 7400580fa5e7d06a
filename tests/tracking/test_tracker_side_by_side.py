"""The tracker applies events of different orders side by side, those of one order in turn:
one event waiting (for its row's outcome to be written, for a busy database) holds up only
its own order's next events."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from decimal import Decimal

import pytest

from _support.database import MoveStatements
from tracking.conftest import ACCOUNT, FedStream, Stack, until
from tradebridge.brokers.base import BrokerOrderEvent
from tradebridge.domain.ids import AccountName, BrokerOrderId
from tradebridge.domain.lifecycle import SignalStatus as S
from tradebridge.domain.orders import OrderAccepted, OrderEvent, OrderFilled
from tradebridge.tracking.tracker import Tracker


def _event(order_id: str, event: OrderEvent, account: str = ACCOUNT) -> BrokerOrderEvent:
    return BrokerOrderEvent(AccountName(account), BrokerOrderId(order_id), None, event)


def _accepted(order_id: str) -> BrokerOrderEvent:
    return _event(order_id, OrderAccepted(BrokerOrderId(order_id), datetime.now(UTC)))


def _filled(order_id: str, account: str = ACCOUNT) -> BrokerOrderEvent:
    fill = OrderFilled(1, Decimal(21000), datetime.now(UTC), f"{order_id}-f")
    return _event(order_id, fill, account)


async def test_a_waiting_event_holds_up_only_its_own_orders_next_one(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    tracker = Tracker(stack.settings, stack.ledger, stack.pool)
    held = asyncio.Event()
    applied: list[tuple[str, str]] = []
    first = _accepted("A")

    async def apply(event: BrokerOrderEvent) -> bool:
        if event is first:
            await held.wait()  # A's acceptance waits (say, for its submit's outcome)
        applied.append((event.broker_order_id, type(event.event).__name__))
        return True

    monkeypatch.setattr(tracker, "apply", apply)
    stream = FedStream()
    following = asyncio.create_task(tracker._follow("stream", stream))  # type: ignore[arg-type]
    try:
        for event in (first, _filled("A"), _accepted("B"), _filled("B")):
            stream.queue.put_nowait(event)
        await until(lambda: len(applied) == 2, "B's events, while A's first one waits")
        assert applied == [("B", "OrderAccepted"), ("B", "OrderFilled")]

        held.set()
        await until(lambda: len(applied) == 4, "A's events")
    finally:
        following.cancel()
        await asyncio.gather(following, return_exceptions=True)

    assert applied[2:] == [("A", "OrderAccepted"), ("A", "OrderFilled")]


async def test_a_fan_outs_fills_applied_side_by_side_share_statements(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Twenty rows this process placed, their fills arriving together: the moves go as a few
    # statements, not twenty (the ledger batches moves waiting on a busy database).
    orders = await _placed_here(stack, 20)
    tracker = Tracker(stack.settings, stack.ledger, stack.pool)
    statements = MoveStatements.spy(stack.ledger, monkeypatch)
    stream = FedStream()
    following = asyncio.create_task(tracker._follow("stream", stream))  # type: ignore[arg-type]
    try:
        for n, order_id in enumerate(orders.values()):  # each on its row's account
            stream.queue.put_nowait(_filled(order_id, _account(n)))
        for signal_id in orders:
            await stack.wait(signal_id, "filled")
    finally:
        following.cancel()
        await asyncio.gather(following, return_exceptions=True)

    assert sum(statements.sent) == 20, statements.sent  # every fill moved its row, once
    assert len(statements.sent) < 20, statements.sent


def _account(n: int) -> str:
    return f"SBS{n:03d}"


async def _placed_here(stack: Stack, count: int) -> dict[str, str]:
    """Place rows s0.. as the dispatcher does (claim, write-ahead, answer), one per account;
    return their broker order ids by signal id."""
    orders = {f"s{n}": f"77{n:04d}" for n in range(count)}
    for n, signal_id in enumerate(orders):
        await stack.insert(signal_id, account_name=_account(n))
    assert len(await stack.ledger.claim_next("w1", limit=count)) == count
    for signal_id, order_id in orders.items():
        await stack.ledger.transition(
            signal_id, S.SUBMITTED, expected=S.PROCESSING, owner="w1",
            client_order_id=f"tb-{signal_id}", detail={"plan": "order", "quantity": 1},
        )  # fmt: skip
        await stack.ledger.transition(
            signal_id, S.WORKING, expected=S.SUBMITTED, owner="w1", event="accepted",
            tradovate_order_id=order_id,
        )  # fmt: skip
    return orders

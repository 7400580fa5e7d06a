"""The order state machine: legal paths, refused transitions, fill arithmetic."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import pytest

from tradebridge.domain.enums import (
    IN_FLIGHT_STATUSES,
    OPEN_STATUSES,
    TERMINAL_STATUSES,
    OrderStatus,
    OrderType,
    Side,
)
from tradebridge.domain.ids import AccountName, BrokerOrderId, ClientOrderId, client_order_id_for
from tradebridge.domain.orders import (
    Order,
    OrderAccepted,
    OrderCancelled,
    OrderDenied,
    OrderEvent,
    OrderExpired,
    OrderFilled,
    OrderFoundAbsent,
    OrderModified,
    OrderOutcomeUnknown,
    OrderPendingCancel,
    OrderPendingReplace,
    OrderRejected,
    OrderSubmitted,
)
from tradebridge.errors import IllegalTransition

T = datetime(2026, 11, 25, 15, 0, tzinfo=UTC)
S = OrderStatus


def new_order(quantity: int = 3) -> Order:
    return Order(
        ClientOrderId("tb-1"),
        AccountName("DEMO0000001"),
        "MNQZ6",
        Side.BUY,
        OrderType.MARKET,
        quantity,
    )


def at(status: OrderStatus, quantity: int = 3) -> Order:
    paths: dict[OrderStatus, list[OrderEvent]] = {
        S.INITIALIZED: [],
        S.DENIED: [OrderDenied("risk", T)],
        S.SUBMITTED: [OrderSubmitted(T)],
        S.UNKNOWN: [OrderSubmitted(T), OrderOutcomeUnknown("timeout", T)],
        S.WORKING: [OrderSubmitted(T), OrderAccepted(BrokerOrderId("9"), T)],
        S.PARTIALLY_FILLED: [
            OrderSubmitted(T), OrderAccepted(BrokerOrderId("9"), T), OrderFilled(1, Decimal(1), T)
        ],
        S.PENDING_CANCEL: [
            OrderSubmitted(T), OrderAccepted(BrokerOrderId("9"), T), OrderPendingCancel(T)
        ],
        S.PENDING_REPLACE: [
            OrderSubmitted(T), OrderAccepted(BrokerOrderId("9"), T), OrderPendingReplace(T)
        ],
        S.FILLED: [OrderSubmitted(T), OrderFilled(quantity, Decimal(1), T)],
        S.CANCELLED: [OrderSubmitted(T), OrderCancelled(T)],
        S.EXPIRED: [OrderSubmitted(T), OrderExpired(T)],
        S.REJECTED: [OrderSubmitted(T), OrderRejected("InvalidPrice", "off tick", T)],
    }  # fmt: skip
    order = new_order(quantity)
    for event in paths[status]:
        order = order.apply(event)
    assert order.status is status
    return order


def test_status_sets_partition_as_documented() -> None:
    assert not TERMINAL_STATUSES & OPEN_STATUSES
    assert {S.PENDING_CANCEL, S.PENDING_REPLACE} <= OPEN_STATUSES & IN_FLIGHT_STATUSES
    assert S.UNKNOWN in IN_FLIGHT_STATUSES
    assert S.UNKNOWN not in TERMINAL_STATUSES


@pytest.mark.parametrize("status", sorted(TERMINAL_STATUSES))
@pytest.mark.parametrize(
    "event",
    [
        OrderSubmitted(T),
        OrderAccepted(BrokerOrderId("9"), T),
        OrderFilled(1, Decimal(1), T),
        OrderCancelled(T),
        OrderRejected("x", "", T),
        OrderExpired(T),
        OrderPendingCancel(T),
    ],
    ids=lambda e: type(e).__name__,
)
def test_apply_after_terminal_status_raises(status: OrderStatus, event: OrderEvent) -> None:
    with pytest.raises(IllegalTransition):
        at(status).apply(event)


def test_apply_submit_twice_raises() -> None:
    with pytest.raises(IllegalTransition):
        at(S.SUBMITTED).apply(OrderSubmitted(T))


def test_apply_unknown_outcome_cannot_resubmit_without_lookup() -> None:
    unknown = at(S.UNKNOWN)
    with pytest.raises(IllegalTransition):
        unknown.apply(OrderSubmitted(T))
    absent = unknown.apply(OrderFoundAbsent(T))
    assert absent.status is S.INITIALIZED
    assert absent.apply(OrderSubmitted(T)).status is S.SUBMITTED


def test_apply_unknown_outcome_then_lookup_finds_order_working() -> None:
    found = at(S.UNKNOWN).apply(OrderAccepted(BrokerOrderId("77"), T))
    assert found.status is S.WORKING
    assert found.broker_order_id == "77"


def test_apply_fills_average_price_and_finish() -> None:
    order = at(S.WORKING)
    order = order.apply(OrderFilled(1, Decimal("100.25"), T))
    assert (order.status, order.filled_qty, order.leaves_qty) == (S.PARTIALLY_FILLED, 1, 2)
    order = order.apply(OrderFilled(2, Decimal("100.50"), T))
    assert order.status is S.FILLED
    assert order.avg_fill_price == (Decimal("100.25") + 2 * Decimal("100.50")) / 3
    assert order.is_done()


def test_apply_overfill_raises() -> None:
    with pytest.raises(IllegalTransition):
        at(S.WORKING).apply(OrderFilled(4, Decimal(1), T))


def test_apply_fill_before_acknowledgement_is_accepted() -> None:
    assert at(S.SUBMITTED).apply(OrderFilled(3, Decimal(5), T)).status is S.FILLED


def test_apply_partial_fill_while_cancel_pending_keeps_pending() -> None:
    order = at(S.PENDING_CANCEL).apply(OrderFilled(1, Decimal(1), T))
    assert order.status is S.PENDING_CANCEL
    assert order.apply(OrderCancelled(T)).status is S.CANCELLED


def test_apply_modify_below_filled_raises() -> None:
    with pytest.raises(IllegalTransition):
        at(S.PARTIALLY_FILLED).apply(OrderModified(0, None, None, T))


def test_apply_modify_changes_quantity_and_prices() -> None:
    order = at(S.PENDING_REPLACE).apply(OrderModified(5, Decimal(2), None, T))
    assert (order.status, order.quantity, order.limit_price) == (S.WORKING, 5, Decimal(2))


def test_apply_denied_only_before_sending() -> None:
    assert at(S.INITIALIZED).apply(OrderDenied("no", T)).status is S.DENIED
    with pytest.raises(IllegalTransition):
        at(S.SUBMITTED).apply(OrderDenied("no", T))


def test_client_order_id_is_stable_and_new_only_for_new_decisions() -> None:
    assert client_order_id_for("42") == client_order_id_for("42") == "tb-42"
    assert client_order_id_for("42", attempt=2) == "tb-42-r2"

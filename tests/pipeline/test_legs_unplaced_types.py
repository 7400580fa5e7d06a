"""A protective leg of an order type tradebridge does not place (reference §4.9: a
``TrailingStop`` leg of a trailing Bracket strategy, ``TrailingStopLimit``, ``MIT``) is read
from the native wire as MARKET (``order_type_from_wire``). A partial exit that reduces such a
leg must not send it back to Tradovate as a ``Market`` order: that modify turns the trailing
stop into a market order, which sells at once on top of the exit (long 2, exit 1: flat).

Its broker type is kept (``OrderStatusReport.broker_order_type``), so it is resized by its
quantity alone under that type (a trailing stop's other fields may not be modified:
``TrailingStopNonOrderQtyModify``); a leg read as MARKET whose type is not known is cancelled
(less protection, never a position)."""

from __future__ import annotations

from decimal import Decimal

import pytest

from tradebridge.brokers.tradovate import wire
from tradebridge.domain.enums import OrderStatus, OrderType, Side
from tradebridge.domain.ids import AccountName, BrokerOrderId
from tradebridge.domain.reports import OrderStatusReport
from tradebridge.pipeline.legs import fit_legs

A = AccountName("A1")
MNQ = "MNQZ6"
ENTRY = OrderStatusReport(
    BrokerOrderId("10"), A, MNQ, Side.BUY, OrderType.MARKET, 2, OrderStatus.FILLED,
    filled_qty=2,
)  # fmt: skip


def _leg(wire_type: str, broker_order_type: str | None) -> OrderStatusReport:
    return OrderStatusReport(
        BrokerOrderId("11"), A, MNQ, Side.SELL, wire.order_type_from_wire(wire_type), 2,
        OrderStatus.WORKING, stop_price=Decimal(20900), parent_id=BrokerOrderId("10"),
        broker_order_type=broker_order_type,
    )  # fmt: skip


@pytest.mark.parametrize("wire_type", ["TrailingStop", "TrailingStopLimit", "MIT"])
def test_a_leg_of_an_unplaced_type_is_resized_by_its_quantity_under_its_own_type(
    wire_type: str,
) -> None:
    leg = _leg(wire_type, wire.unplaced_order_type(wire_type))

    fit = fit_legs([ENTRY, leg], MNQ, 1)  # an exit of 1 leaves 1

    assert fit.cancels == ()
    assert [wire.modify_order_body(m) for m in fit.modifies] == [
        {"orderId": 11, "orderQty": 1, "orderType": wire_type, "isAutomated": True}
    ]


def test_a_leg_read_as_market_of_an_unknown_type_is_cancelled_never_made_a_market_order() -> None:
    leg = _leg("SomethingNew", None)

    fit = fit_legs([ENTRY, leg], MNQ, 1)

    assert fit.modifies == ()
    assert [c.broker_order_id for c in fit.cancels] == ["11"]


@pytest.mark.parametrize(
    ("wire_type", "unplaced"),
    [("TrailingStop", "TrailingStop"), ("MIT", "MIT"), ("Stop", None), ("Limit", None),
     ("Market", None), ("", None)],
)  # fmt: skip
def test_unplaced_order_types_are_the_ones_we_do_not_place(
    wire_type: str, unplaced: str | None
) -> None:
    assert wire.unplaced_order_type(wire_type) == unplaced

"""A protective leg of an order type tradebridge does not place (reference §4.9: a
``TrailingStop`` leg of a trailing Bracket strategy, ``TrailingStopLimit``, ``MIT``) is read
from the native wire as MARKET (``order_type_from_wire``). A partial exit that reduces such a
leg must not send it back to Tradovate as a ``Market`` order: that modify turns the trailing
stop into a market order, which sells at once on top of the exit (long 2, exit 1: flat)."""

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


@pytest.mark.parametrize("wire_type", ["TrailingStop", "TrailingStopLimit", "MIT"])
def test_reducing_a_leg_of_an_unplaced_type_never_modifies_it_into_a_market_order(
    wire_type: str,
) -> None:
    entry = OrderStatusReport(
        BrokerOrderId("10"), A, MNQ, Side.BUY, OrderType.MARKET, 2, OrderStatus.FILLED,
        filled_qty=2,
    )  # fmt: skip
    leg = OrderStatusReport(
        BrokerOrderId("11"), A, MNQ, Side.SELL, wire.order_type_from_wire(wire_type), 2,
        OrderStatus.WORKING, stop_price=Decimal(20900), parent_id=BrokerOrderId("10"),
    )  # fmt: skip

    fit = fit_legs([entry, leg], MNQ, 1)  # an exit of 1 leaves 1

    bodies = [wire.modify_order_body(m) for m in fit.modifies]
    assert [b for b in bodies if b["orderType"] == "Market"] == [], bodies
    # Reduced or cancelled, the leg covers no more than what remains.
    assert fit.modifies or [c.broker_order_id for c in fit.cancels] == ["11"]

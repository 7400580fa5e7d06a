"""What the broker's working orders add ahead of an order (pipeline/risk.working_ahead): the
orders on its contract and side, besides the ledger's own rows, as if they all filled; a
bracket's legs per entry, one of each one-cancels-other pair, no more than a working entry
has filled."""

from __future__ import annotations

from dataclasses import replace

import pytest

from _support.order_reports import MNQ, bracket, order_report
from tradebridge.domain.enums import OrderStatus, OrderType, Side
from tradebridge.domain.ids import ClientOrderId
from tradebridge.pipeline.risk import working_ahead


def test_working_ahead_counts_what_orders_on_the_side_have_left_to_fill() -> None:
    orders = [
        order_report(1, Side.BUY, 2),
        order_report(2, Side.BUY, 3, OrderStatus.PARTIALLY_FILLED, filled=1),
        order_report(3, Side.SELL, 5),  # the other side
        order_report(4, Side.BUY, 5, contract="MESZ6"),  # another contract
        order_report(5, Side.BUY, 5, OrderStatus.CANCELLED),
        order_report(6, Side.BUY, 5, OrderStatus.FILLED, filled=5),
    ]

    assert working_ahead(orders, MNQ, Side.BUY, frozenset()) == 4


def test_working_ahead_leaves_out_the_ledgers_rows_by_broker_or_client_id() -> None:
    ours = replace(order_report(2, Side.BUY, 3), client_order_id=ClientOrderId("tb-a"))
    orders = [order_report(1, Side.BUY, 2), ours, order_report(3, Side.BUY, 4)]

    assert working_ahead(orders, MNQ, Side.BUY, frozenset({"1", "tb-a"})) == 4


def test_working_ahead_counts_one_leg_of_each_oco_pair_of_a_filled_entry() -> None:
    orders = bracket(10, 2) + bracket(20, 1)  # long 3, each entry with a stop and a target

    assert working_ahead(orders, MNQ, Side.SELL, frozenset()) == 3
    # Protective sells of a long are no buys: nothing toward a long limit.
    assert working_ahead(orders, MNQ, Side.BUY, frozenset()) == 0


def test_working_ahead_counts_the_legs_of_the_ledgers_own_entry() -> None:
    # Our row's entry (filled, its order id the ledger's) left its legs at the broker.
    assert working_ahead(bracket(10, 2), MNQ, Side.SELL, frozenset({"10"})) == 2


@pytest.mark.parametrize(("filled", "ahead"), [(0, 0), (1, 1), (3, 3)])
def test_working_ahead_counts_the_legs_of_a_working_entry_up_to_what_it_filled(
    filled: int, ahead: int
) -> None:
    status = OrderStatus.PARTIALLY_FILLED if filled else OrderStatus.WORKING
    orders = [
        order_report(10, Side.BUY, 3, status, kind=OrderType.LIMIT, filled=filled),
        order_report(11, Side.SELL, 3, OrderStatus.WORKING, parent=10, kind=OrderType.STOP),
        order_report(12, Side.SELL, 3, OrderStatus.WORKING, parent=10, kind=OrderType.LIMIT),
    ]

    assert working_ahead(orders, MNQ, Side.SELL, frozenset()) == ahead

"""Protective legs follow the position: which legs a closing order cancels or reduces."""

from __future__ import annotations

from dataclasses import replace
from decimal import Decimal

import pytest

from _support.order_reports import MNQ, bracket, order_report
from tradebridge.domain.enums import OrderStatus, OrderType, Side
from tradebridge.domain.reports import OrderStatusReport
from tradebridge.pipeline.legs import ending_entries, fit_legs, protective_legs


@pytest.mark.parametrize("remaining", [0, -2])
def test_fit_legs_position_closed_or_turned_cancels_every_leg(remaining: int) -> None:
    fit = fit_legs(bracket(10, 2), MNQ, remaining)

    assert sorted(c.broker_order_id for c in fit.cancels) == ["11", "12"]
    assert fit.modifies == ()


def test_fit_legs_reduced_position_reduces_both_legs_to_what_remains() -> None:
    fit = fit_legs(bracket(10, 3), MNQ, 1)

    assert fit.cancels == ()
    assert sorted((m.broker_order_id, m.quantity) for m in fit.modifies) == [("11", 1), ("12", 1)]
    stop = next(m for m in fit.modifies if m.broker_order_id == "11")
    assert (stop.order_type, stop.stop_price) == (OrderType.STOP, Decimal(20900))


def test_fit_legs_keeps_the_newest_brackets_and_cancels_the_oldest() -> None:
    orders = bracket(10, 1) + bracket(20, 1) + bracket(30, 1)

    fit = fit_legs(orders, MNQ, 2)

    assert sorted(c.broker_order_id for c in fit.cancels) == ["11", "12"]
    assert fit.modifies == ()


def test_fit_legs_legs_within_the_remainder_are_left_alone() -> None:
    assert not fit_legs(bracket(10, 2), MNQ, 2)
    assert not fit_legs(bracket(10, 2), MNQ, 5)


def test_fit_legs_modify_keeps_what_a_leg_already_filled() -> None:
    orders = bracket(10, 3)
    orders[1] = order_report(11, Side.SELL, 3, OrderStatus.PARTIALLY_FILLED, parent=10,
                       kind=OrderType.STOP, filled=1)  # fmt: skip

    fit = fit_legs(orders, MNQ, 1)

    assert sorted((m.broker_order_id, m.quantity) for m in fit.modifies) == [("11", 2), ("12", 1)]


def test_fit_legs_leg_on_the_side_that_adds_to_the_position_is_cancelled() -> None:
    # Legs of an old short (buys) while the position left is long: they would add to it.
    orders = bracket(10, 1, Side.SELL)

    fit = fit_legs(orders, MNQ, 1)

    assert sorted(c.broker_order_id for c in fit.cancels) == ["11", "12"]


def test_fit_legs_suspended_legs_of_a_working_entry_follow_their_entry() -> None:
    resting = [
        order_report(40, Side.BUY, 1, kind=OrderType.LIMIT),
        order_report(41, Side.SELL, 1, parent=40, kind=OrderType.STOP),
        order_report(42, Side.SELL, 1, parent=40, kind=OrderType.LIMIT),
    ]

    assert protective_legs(resting, MNQ) == []
    assert not fit_legs([*resting, order_report(50, Side.BUY, 1)], MNQ, 0)


def test_fit_legs_other_contracts_and_final_orders_are_not_touched() -> None:
    orders = bracket(10, 1)
    other = [
        order_report(20, Side.BUY, 1, OrderStatus.FILLED, filled=1, contract="MESZ6"),
        order_report(21, Side.SELL, 1, parent=20, kind=OrderType.STOP, contract="MESZ6"),
        order_report(22, Side.SELL, 1, OrderStatus.CANCELLED, parent=10, kind=OrderType.STOP),
    ]

    fit = fit_legs(orders + other, MNQ, 0)

    assert sorted(c.broker_order_id for c in fit.cancels) == ["11", "12"]


def test_fit_legs_legs_whose_entry_is_no_longer_listed_count_as_protective() -> None:
    orders = bracket(10, 2)[1:]

    fit = fit_legs(orders, MNQ, 0)

    assert sorted(c.broker_order_id for c in fit.cancels) == ["11", "12"]


@pytest.mark.parametrize(
    ("cancel_others", "cancelled"), [(False, ["11", "12"]), (True, ["11", "12", "40", "41"])]
)
def test_fit_legs_resting_entries_stay_unless_asked_to_cancel_everything(
    cancel_others: bool, cancelled: list[str]
) -> None:
    resting = [
        order_report(40, Side.BUY, 1, kind=OrderType.LIMIT),
        order_report(41, Side.SELL, 1, parent=40, kind=OrderType.STOP),
    ]

    fit = fit_legs(bracket(10, 1) + resting, MNQ, 0, cancel_others=cancel_others)

    assert sorted(c.broker_order_id for c in fit.cancels) == cancelled


def _strategy(entry: int, qty: int, filled: int, targets: int = 1) -> list[OrderStatusReport]:
    """A strategy's entry (filled ``filled`` of ``qty``) and one OCO pair per target."""
    status = OrderStatus.FILLED if filled == qty else OrderStatus.PARTIALLY_FILLED
    orders = [replace(order_report(entry, Side.BUY, qty, status, filled=filled), strategy_id="S")]
    share = filled // targets
    for _ in range(targets):
        for kind in (OrderType.STOP, OrderType.LIMIT):
            leg = order_report(entry + 1 + len(orders), Side.SELL, share, parent=entry, kind=kind)
            orders.append(replace(leg, strategy_id="S"))
    return orders


def test_fit_legs_strategy_legs_of_a_working_entry_protect_what_filled() -> None:
    orders = _strategy(10, 3, filled=2)  # the entry still works for 1

    assert len(protective_legs(orders, MNQ)) == 2
    fit = fit_legs(orders, MNQ, 0)
    # The legs, and the entry's rest: the interrupt alone may leave it working (unverified),
    # to fill later with no leg at all.
    assert sorted(c.broker_order_id for c in fit.cancels) == ["10", "12", "13"]
    assert [i.strategy_id for i in fit.interrupts] == ["S"]


def test_fit_legs_interrupted_strategy_whose_entry_filled_cancels_no_entry() -> None:
    orders = _strategy(10, 2, filled=2)

    fit = fit_legs(orders, MNQ, 0)

    assert sorted(c.broker_order_id for c in fit.cancels) == ["12", "13"]
    assert [i.strategy_id for i in fit.interrupts] == ["S"]


def test_fit_legs_scale_out_pairs_cover_their_sum() -> None:
    orders = _strategy(10, 3, filled=3, targets=3)  # three pairs of one

    fit = fit_legs(orders, MNQ, 1)  # keep one stop and one target, first first

    assert len(fit.cancels) == 4
    kept = {leg.broker_order_id for leg in orders[1:]} - {c.broker_order_id for c in fit.cancels}
    assert sorted(kept) == ["12", "13"]
    assert fit.interrupts == ()


def _filling(entry: int, qty: int, filled: int) -> list[OrderStatusReport]:
    """A bracket entry still working with ``filled`` of ``qty`` filled, its legs suspended."""
    return [
        order_report(
            entry, Side.BUY, qty, OrderStatus.PARTIALLY_FILLED, kind=OrderType.LIMIT, filled=filled
        ),
        order_report(
            entry + 1, Side.SELL, qty, OrderStatus.WORKING, parent=entry, kind=OrderType.STOP
        ),
        order_report(
            entry + 2, Side.SELL, qty, OrderStatus.WORKING, parent=entry, kind=OrderType.LIMIT
        ),
    ]


def test_fit_legs_close_of_a_partly_filled_entry_cancels_its_legs_then_its_rest() -> None:
    # Left alone, the legs would come alive for what the entry filled, on a flat position.
    fit = fit_legs(_filling(10, 3, filled=1), MNQ, 0)

    assert [c.broker_order_id for c in fit.cancels] == ["11", "12", "10"]
    assert fit.modifies == ()


def test_fit_legs_partly_filled_entry_the_remainder_covers_is_left_alone() -> None:
    # Long 3: 2 from a filled bracket, 1 from the entry still filling; sell 2 leaves 1, which
    # the newest (the filling entry) keeps; the older bracket's legs go.
    orders = bracket(20, 2) + _filling(30, 3, filled=1)

    fit = fit_legs(orders, MNQ, 1)

    assert sorted(c.broker_order_id for c in fit.cancels) == ["21", "22"]
    assert fit.modifies == ()


def test_fit_legs_partly_filled_entry_the_remainder_no_longer_covers_goes_with_its_legs() -> None:
    # Long 3 from one entry still filling (3 of 5); sell 2 leaves 1: its legs would come alive
    # for 3. They cannot be resized while suspended: cancelled, and the entry's rest with them.
    orders = _filling(10, 5, filled=3)

    fit = fit_legs(orders, MNQ, 1)

    assert [c.broker_order_id for c in fit.cancels] == ["11", "12", "10"]


def test_fit_legs_unfilled_entry_is_not_a_filling_one() -> None:
    orders = bracket(20, 1) + _filling(30, 2, filled=0)

    fit = fit_legs(orders, MNQ, 0)

    assert sorted(c.broker_order_id for c in fit.cancels) == ["21", "22"]


def _resting_exit(oid: int, side: Side, qty: int, filled: int = 0) -> OrderStatusReport:
    status = OrderStatus.PARTIALLY_FILLED if filled else OrderStatus.WORKING
    return order_report(oid, side, qty, status, kind=OrderType.STOP, filled=filled)


def test_fit_legs_resting_exit_larger_than_what_remains_is_cut_to_it() -> None:
    # Long 3, a stop exit of 3 rests; a reduction to 1 leaves it selling 1 (not short 2).
    orders = [_resting_exit(50, Side.SELL, 3)]

    fit = fit_legs(orders, MNQ, 1, resting_exits=frozenset({"50"}))

    assert fit.cancels == ()
    assert [(m.broker_order_id, m.quantity, m.stop_price) for m in fit.modifies] == [
        ("50", 1, Decimal(20900))
    ]


def test_fit_legs_resting_exit_keeps_what_it_filled_and_fits_the_rest() -> None:
    fit = fit_legs(
        [_resting_exit(50, Side.SELL, 3, filled=1)], MNQ, 1, resting_exits=frozenset({"50"})
    )

    assert [(m.broker_order_id, m.quantity) for m in fit.modifies] == [("50", 2)]


@pytest.mark.parametrize("remaining", [0, -1])
def test_fit_legs_resting_exit_is_cancelled_when_nothing_remains_or_it_would_add(
    remaining: int,
) -> None:
    fit = fit_legs(
        [_resting_exit(50, Side.SELL, 2)], MNQ, remaining, resting_exits=frozenset({"50"})
    )

    assert [c.broker_order_id for c in fit.cancels] == ["50"]
    assert fit.modifies == ()


def test_fit_legs_resting_exit_within_what_remains_and_unknown_orders_are_left() -> None:
    orders = [_resting_exit(50, Side.SELL, 1), _resting_exit(60, Side.SELL, 5)]

    assert not fit_legs(orders, MNQ, 2, resting_exits=frozenset({"50"}))


def test_ending_entries_reduction_below_a_partly_filled_entry_ends_its_rest_alone() -> None:
    # Long 3 from one entry still filling (3 of 5); sell 2 leaves 1. Ended, its legs come
    # alive for 3 (the position before the sell) and are then cut to 1 like any others.
    orders = _filling(10, 5, filled=3)

    assert [c.broker_order_id for c in ending_entries(orders, MNQ, 3, 1)] == ["10"]


@pytest.mark.parametrize("remaining", [0, -1])
def test_ending_entries_close_or_turn_ends_nothing(remaining: int) -> None:
    assert ending_entries(_filling(10, 5, filled=3), MNQ, 3, remaining) == ()


def test_ending_entries_entry_the_remainder_covers_is_not_ended() -> None:
    orders = bracket(20, 2) + _filling(30, 3, filled=1)

    assert ending_entries(orders, MNQ, 3, 1) == ()


def test_ending_entries_legs_that_would_exceed_the_position_end_nothing() -> None:
    # Long 2 although the entry filled 3 (a sale outside the bridge): alive for 3, its stop
    # would open a short 1 before the fit could cut it. Cut while suspended instead.
    orders = _filling(10, 5, filled=3)

    assert ending_entries(orders, MNQ, 2, 1) == ()
    assert [c.broker_order_id for c in fit_legs(orders, MNQ, 1).cancels] == ["11", "12", "10"]


def test_ending_entries_counts_the_live_legs_of_other_entries() -> None:
    # Long 3: a filled bracket of 1 (live legs) and 2 from an entry still filling (2 of 4).
    orders = bracket(20, 1) + _filling(30, 4, filled=2)

    assert [c.broker_order_id for c in ending_entries(orders, MNQ, 3, 1)] == ["30"]
    # Legs of 2 live beside it on long 3: with its 2 they would cover 4.
    crowded = bracket(20, 2) + _filling(30, 4, filled=2)
    assert ending_entries(crowded, MNQ, 3, 1) == ()

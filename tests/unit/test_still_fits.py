"""``still_fits``: may a closing order proven absent be sent again on the position now held?"""

from __future__ import annotations

import pytest

from _support.native import order
from tradebridge.dispatch.placement import still_fits
from tradebridge.domain.enums import Side
from tradebridge.pipeline.route import PlaceOrder


def _plan(side: Side, quantity: int, before: int) -> PlaceOrder:
    return PlaceOrder(order("tb-x", side=side, quantity=quantity), position_before=before,
                      fit_legs=True)  # fmt: skip


@pytest.mark.parametrize(
    ("side", "quantity", "before", "now", "fits"),
    [
        (Side.SELL, 3, 3, 3, True),  # unchanged
        (Side.SELL, 3, 3, 2, False),  # exit all of 3 on 2: would turn it short 1
        (Side.SELL, 3, 3, 0, False),  # the stop filled: flat, an exit would open one
        (Side.SELL, 1, 3, 2, True),  # exit 1 of 3 on 2: still reduces it
        (Side.SELL, 2, 3, 2, True),  # closes what is left
        (Side.SELL, 1, 3, -1, False),  # turned by hand meanwhile
        (Side.BUY, 2, -2, -1, False),  # cover 2 on short 1: would open long 1
        (Side.SELL, 6, 3, 2, False),  # a reverse: sized from that very position
        (Side.SELL, 6, 3, 3, True),
    ],
)
def test_still_fits(side: Side, quantity: int, before: int, now: int, fits: bool) -> None:
    assert still_fits(_plan(side, quantity, before), now) is fits


@pytest.mark.parametrize(("now", "fits"), [(3, True), (2, False), (4, False), (5, False)])
def test_an_exact_plan_fits_only_the_position_it_was_sized_from(now: int, fits: bool) -> None:
    # A target of +1 from +3 (sell 2), or an exit of all of +3 resent on +4 (it would leave 1).
    for quantity in (2, 3):
        plan = PlaceOrder(order("tb-x", side=Side.SELL, quantity=quantity), position_before=3,
                          fit_legs=True, exact=True)  # fmt: skip
        assert still_fits(plan, now) is fits


def test_exact_survives_the_plans_json() -> None:
    from datetime import date

    from tradebridge.dispatch.placement import plan_from_json, plan_to_json

    plan = PlaceOrder(order("tb-x", side=Side.SELL, quantity=2), position_before=3,
                      fit_legs=True, exact=True)  # fmt: skip
    again = plan_from_json(plan_to_json(plan), date(2026, 12, 7))
    assert isinstance(again, PlaceOrder)
    assert again.exact
    assert not plan_from_json(plan_to_json(_plan(Side.SELL, 1, 3)), date(2026, 12, 7)).exact

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

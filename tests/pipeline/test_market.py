"""A bracket against the market (issue 9, item 5): the price the legs are judged against."""

from __future__ import annotations

from decimal import Decimal

import pytest

from tradebridge.domain.enums import OrderType, Side
from tradebridge.pipeline.market import Market, bracket_through_market

MARKET = Market(bid=Decimal(100), ask=Decimal("100.25"))
D = Decimal


@pytest.mark.parametrize(
    ("side", "order_type", "limit", "stop", "sl", "tp", "through"),
    [
        (Side.BUY, OrderType.MARKET, None, None, D(99), D(101), None),
        (Side.BUY, OrderType.MARKET, None, None, D(100), None, "stop loss 100 is not below"),
        (Side.BUY, OrderType.MARKET, None, None, None, D(100), "take profit 100 is not above"),
        (Side.SELL, OrderType.MARKET, None, None, D("100.5"), D(99), None),
        (Side.SELL, OrderType.MARKET, None, None, D("100.25"), None, "(ask 100.25)"),
        # A resting limit is judged at its price, a marketable one at the market.
        (Side.BUY, OrderType.LIMIT, D(95), None, D(96), None, "limit price 95"),
        (Side.BUY, OrderType.LIMIT, D(95), None, D(94), D(97), None),
        (Side.BUY, OrderType.LIMIT, D(105), None, D(101), None, "(bid 100)"),
        (Side.SELL, OrderType.LIMIT, D(105), None, D(106), D(104), None),
        # A stop entry fills once the market reaches it.
        (Side.BUY, OrderType.STOP, None, D(105), D(101), D(106), None),
        (Side.BUY, OrderType.STOP_LIMIT, D(106), D(105), D(101), D(104), "stop price 105"),
        (Side.SELL, OrderType.STOP, None, D(95), D(96), D(94), None),
        (Side.SELL, OrderType.STOP, None, D(95), D(94), None, "stop loss 94 is not above"),
    ],
)
def test_bracket_through_market_judges_legs_against_the_fill_price(
    side: Side,
    order_type: OrderType,
    limit: Decimal | None,
    stop: Decimal | None,
    sl: Decimal | None,
    tp: Decimal | None,
    through: str | None,
) -> None:
    why = bracket_through_market(side, order_type, limit_price=limit, stop_price=stop,
                                 stop_loss=sl, take_profit=tp, market=MARKET)  # fmt: skip

    if through is None:
        assert why is None
    else:
        assert why is not None
        assert through in why

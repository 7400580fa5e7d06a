"""A bracket against the market: would a leg fill the moment its entry does?

Pure: the quote is an argument. The CLI (``tradebridge order``, ``tradebridge send``) checks a
bracket given in prices against a quote before sending, so that a stop on the wrong side of
the market, or a target the market is already through, is refused instead of filling at
once (issue 9). The legs start working when the entry fills, so they are judged against the
price the position could be closed at right after the fill:

* a market entry: the market (a buy's legs sell: the bid; a sell's buy: the ask);
* a limit entry fills at its limit or better: for a buy the lower of the limit and the bid,
  for a sell the higher of the limit and the ask;
* a stop (or stop-limit) entry fills once the market reaches its stop: for a buy the higher
  of the stop and the bid, for a sell the lower of the stop and the ask.

A buy's stop loss must be below that price and its take profit above it; a sell's the other
way round. Equal counts as through: a leg at the price fills at once.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from tradebridge.domain.enums import OrderType, Side


@dataclass(frozen=True, slots=True)
class Market:
    """A quote: what the market pays (bid) and asks."""

    bid: Decimal
    ask: Decimal


def bracket_through_market(
    side: Side,
    order_type: OrderType,
    *,
    limit_price: Decimal | None,
    stop_price: Decimal | None,
    stop_loss: Decimal | None,
    take_profit: Decimal | None,
    market: Market,
) -> str | None:
    """Return why a leg would fill as soon as the entry does (with the numbers), or None."""
    buy = side is Side.BUY
    quoted, quote_name = (market.bid, "bid") if buy else (market.ask, "ask")
    price, what = quoted, f"the market ({quote_name} {quoted})"
    # A resting entry fills at its own price, a marketable one at the market: a buy limit
    # below the bid (a stop above it) rests; a sell limit above the ask (a stop below) too.
    stop = order_type.needs_stop_price
    entry, name = (stop_price, "stop") if stop else (limit_price, "limit")
    rests = entry is not None and ((entry > quoted) == (buy == stop)) and entry != quoted
    if order_type is not OrderType.MARKET and entry is not None and rests:
        price, what = entry, f"the entry's {name} price {entry}"
    below, above = ("below", "above") if buy else ("above", "below")
    quote = f"bid {market.bid} / ask {market.ask}"
    if stop_loss is not None and ((stop_loss >= price) if buy else (stop_loss <= price)):
        return (
            f"the stop loss {stop_loss} is not {below} {what} for a {side.value} "
            f"({quote}): it would fill at once"
        )
    if take_profit is not None and ((take_profit <= price) if buy else (take_profit >= price)):
        return (
            f"the take profit {take_profit} is not {above} {what} for a {side.value} "
            f"({quote}): the market is already through it"
        )
    return None

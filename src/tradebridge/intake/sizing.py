"""Stop-loss and take-profit units to what the ledger stores: whole ticks or a price.

``ticks``, ``points`` and ``dollars`` (of risk per contract) become a distance in whole
ticks from the entry; ``price`` stays an absolute price. A distance or price that is not a
whole number of ticks is rounded towards the entry (a tighter stop, a nearer target: never
more risk than asked for), and the answer says so.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal

from tradebridge.domain.products import MAX_DISTANCE_TICKS, Product
from tradebridge.intake.formats.alert import AlertBracket, AlertRejected


@dataclass(frozen=True, slots=True)
class BracketLeg:
    """One converted leg: whole ticks from the entry, or an absolute price; plus a note."""

    ticks: int | None = None
    price: Decimal | None = None
    note: str | None = None


def convert_bracket(
    bracket: AlertBracket,
    product: Product,
    *,
    leg: str,
    direction: int | None,
    entry: Decimal | None = None,
) -> BracketLeg:
    """Convert one leg (``leg`` is ``stop_loss`` or ``take_profit``).

    ``direction`` is +1 for a long entry, -1 for a short one, ``None`` when the intake cannot
    know it (a reverse); ``entry`` is the limit or reference price when the alert gave one.
    """
    converted = _convert(bracket, product, leg=leg, direction=direction, entry=entry)
    if converted.ticks is not None and entry is not None:
        _check_above_zero(converted.ticks, product, leg=leg, direction=direction, entry=entry)
    return converted


def _convert(
    bracket: AlertBracket,
    product: Product,
    *,
    leg: str,
    direction: int | None,
    entry: Decimal | None,
) -> BracketLeg:
    tick = product.tick_size
    if bracket.unit == "ticks":
        return BracketLeg(ticks=_ticks(bracket.value, leg))
    if bracket.unit == "points":
        exact = bracket.value / tick
        ticks = _ticks(exact.to_integral_value(ROUND_FLOOR), leg, given=f"{bracket.value} points")
        note = None
        if exact != ticks:
            note = (
                f"{leg} of {bracket.value} points is not a whole number of "
                f"{product.root} ticks ({tick}): rounded towards the entry to {ticks} ticks "
                f"({ticks * tick} points)"
            )
        return BracketLeg(ticks=ticks, note=note)
    if bracket.unit == "dollars":
        exact = bracket.value / product.tick_value
        given = f"${bracket.value} per contract"
        ticks = _ticks(exact.to_integral_value(ROUND_FLOOR), leg, given=given)
        note = None
        if exact != ticks:
            note = (
                f"{leg} of ${_money(bracket.value)} per contract is not a whole number of "
                f"{product.root} ticks (${_money(product.tick_value)} each): rounded towards "
                f"the entry to {ticks} ticks (${_money(ticks * product.tick_value)})"
            )
        return BracketLeg(ticks=ticks, note=note)
    return _price_leg(bracket.value, product, leg=leg, direction=direction, entry=entry)


def _below(leg: str, direction: int | None) -> bool | None:
    """Return whether the leg belongs below the entry (a long's stop, a short's target);
    None when the direction is unknown."""
    return None if direction is None else (direction > 0) == (leg == "stop_loss")


def _check_above_zero(
    ticks: int, product: Product, *, leg: str, direction: int | None, entry: Decimal
) -> None:
    """Refuse a leg that is (or may be) below the entry by as much as the entry's price."""
    most = product.ticks_above_zero(entry)
    if _below(leg, direction) is not False and ticks > most:
        raise AlertRejected(
            f"{leg} of {ticks} ticks ({ticks * product.tick_size} points) from the entry "
            f"{entry} lies at or below zero",
            field=leg,
            expected=f"a distance closer to the entry than its price: at most {most:,} ticks",
        )


def _price_leg(
    price: Decimal, product: Product, *, leg: str, direction: int | None, entry: Decimal | None
) -> BracketLeg:
    # Which side of the entry the leg belongs on: a long's stop is below, its target above.
    below = _below(leg, direction)
    if entry is not None and below is not None and (price < entry) != below:
        side = "below" if below else "above"
        raise AlertRejected(
            f"{leg} price {price} is not {side} the entry {entry}",
            field=leg,
            expected=f"a {leg.replace('_', ' ')} {side} the entry for this direction",
        )
    if product.is_on_tick(price):
        return BracketLeg(price=price)
    if below is None:
        raise AlertRejected(
            f"{leg} price {price} is not a multiple of the {product.root} tick {product.tick_size}",
            field=leg,
            expected=f"a price on the {product.tick_size} grid",
        )
    # Towards the entry: up for a leg below it, down for a leg above it.
    rounding = ROUND_CEILING if below else ROUND_FLOOR
    rounded = (price / product.tick_size).to_integral_value(rounding) * product.tick_size
    note = (
        f"{leg} price {price} is not on the {product.root} tick grid ({product.tick_size}): "
        f"rounded towards the entry to {rounded}"
    )
    return BracketLeg(price=rounded, note=note)


def _ticks(value: Decimal, leg: str, *, given: str | None = None) -> int:
    if value != value.to_integral_value():
        raise AlertRejected(
            f"{leg}.ticks is {value}", field=f"{leg}.ticks", expected="a whole number of ticks"
        )
    if value < 1:
        raise AlertRejected(
            f"{leg} of {given or value} is less than one tick",
            field=leg,
            expected="a distance of at least one tick",
        )
    if value > MAX_DISTANCE_TICKS:
        raise AlertRejected(f"{leg} of {given or value} is too far", field=leg,
                            expected=f"a distance under {MAX_DISTANCE_TICKS:,} ticks")  # fmt: skip
    return int(value)


def _money(value: Decimal) -> str:
    return f"{value.normalize():f}"

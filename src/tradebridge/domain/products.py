"""Futures products tradebridge knows: tick size, value per point and listing cycle.

Figures are the exchanges' contract specifications (CME Group product pages).
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import ROUND_CEILING, Decimal
from enum import StrEnum

from tradebridge.errors import InvalidSymbol

MAX_MAGNITUDE = Decimal(10) ** 9
"""Every price or distance tradebridge takes is smaller than this in size: no future trades
near it, and Decimal arithmetic on a number far above it (a tick check) can fail."""
MAX_DISTANCE_TICKS = 1_000_000
"""The furthest a bracket leg may be from its entry, in ticks."""
MAX_CONTRACTS = 100_000
"""Contracts a quantity or target position may name (also after an account's multiplier)."""


class ExpiryRule(StrEnum):
    """How a product's contracts expire; see ``contracts.expiry_date``."""

    EQUITY_INDEX = "equity_index"  # third Friday of the contract month
    CRUDE = "crude"  # business days before the 25th of the prior month
    METALS = "metals"  # third-last business day of the contract month


@dataclass(frozen=True, slots=True)
class Product:
    """One futures product (a root such as ``MNQ``)."""

    root: str
    description: str
    exchange: str
    tick_size: Decimal
    value_per_point: Decimal
    listed_months: str  # CME month codes of every listed contract
    trade_months: str  # the months the front contract rolls through (liquid months)
    expiry_rule: ExpiryRule
    expiry_business_days: int  # for CRUDE: business days before the 25th of the prior month
    roll_days: int  # calendar days before expiry when the front month moves on
    base_price: Decimal  # the simulator's starting price

    @property
    def tick_value(self) -> Decimal:
        """Return the dollar value of one tick for one contract."""
        return self.tick_size * self.value_per_point

    def is_on_tick(self, price: Decimal) -> bool:
        """Return whether ``price`` is a whole number of ticks."""
        return price % self.tick_size == 0

    def ticks_above_zero(self, price: Decimal) -> int:
        """Return the most whole ticks below ``price`` that still leave a price above zero:
        a leg further below its entry than that can never trigger nor fill."""
        return int((price / self.tick_size).to_integral_value(ROUND_CEILING)) - 1


_ALL = "FGHJKMNQUVXZ"
_QUARTERLY = "HMUZ"
_GOLD = "GJMQVZ"


def _equity(root: str, desc: str, exch: str, tick: str, vpp: str, base: str) -> Product:
    return Product(
        root, desc, exch, Decimal(tick), Decimal(vpp), _QUARTERLY, _QUARTERLY,
        ExpiryRule.EQUITY_INDEX, 0, 8, Decimal(base),
    )  # fmt: skip


PRODUCTS: dict[str, Product] = {
    p.root: p
    for p in (
        _equity("ES", "E-mini S&P 500", "CME", "0.25", "50", "6000"),
        _equity("MES", "Micro E-mini S&P 500", "CME", "0.25", "5", "6000"),
        _equity("NQ", "E-mini Nasdaq-100", "CME", "0.25", "20", "21000"),
        _equity("MNQ", "Micro E-mini Nasdaq-100", "CME", "0.25", "2", "21000"),
        _equity("YM", "E-mini Dow ($5)", "CBOT", "1", "5", "44000"),
        _equity("MYM", "Micro E-mini Dow", "CBOT", "1", "0.5", "44000"),
        _equity("RTY", "E-mini Russell 2000", "CME", "0.1", "50", "2300"),
        _equity("M2K", "Micro E-mini Russell 2000", "CME", "0.1", "5", "2300"),
        Product("CL", "Crude Oil", "NYMEX", Decimal("0.01"), Decimal(1000), _ALL, _ALL,
                ExpiryRule.CRUDE, 3, 3, Decimal(70)),
        Product("MCL", "Micro WTI Crude Oil", "NYMEX", Decimal("0.01"), Decimal(100), _ALL, _ALL,
                ExpiryRule.CRUDE, 4, 2, Decimal(70)),
        Product("GC", "Gold", "COMEX", Decimal("0.1"), Decimal(100), _ALL, _GOLD,
                ExpiryRule.METALS, 0, 35, Decimal(2650)),
        Product("MGC", "Micro Gold", "COMEX", Decimal("0.1"), Decimal(10), _ALL, _GOLD,
                ExpiryRule.METALS, 0, 35, Decimal(2650)),
    )
}  # fmt: skip


def product(root: str) -> Product:
    """Return the product of ``root`` or raise ``InvalidSymbol``."""
    try:
        return PRODUCTS[root.upper()]
    except KeyError:
        known = ", ".join(sorted(PRODUCTS))
        raise InvalidSymbol(f"unknown product root {root!r}; known roots: {known}") from None

"""The simulator's price path: a seeded random walk in whole ticks, one step per interval.

Each contract walks on its own ``random.Random(f"{seed}:{name}")``, so the same seed gives
the same prices, different contracts differ, and how often the path is read does not change
where it goes (step ``k`` is the ``k``-th draw whatever the number of reads in between).
The walk starts when the contract is first priced, a few hundred ticks from the product's
base price, and never goes below one tick.
"""

from __future__ import annotations

import random
from datetime import datetime
from decimal import Decimal

from tradebridge.domain.products import Product

_START_SPREAD_TICKS = 200  # how far from the base price a contract may start
_MOVE_PROBABILITY = 0.3  # chance of one tick up, and separately of one tick down, per step


class PricePath:
    """The last price of one contract, advanced lazily to a clock time."""

    __slots__ = ("_rng", "_start", "_step_s", "last_ticks", "steps", "tick_size")

    def __init__(
        self, seed: int, name: str, product: Product, start: datetime, step_s: float
    ) -> None:
        # Not for cryptography: a reproducible market is the whole point.
        self._rng = random.Random(f"{seed}:{name}")  # noqa: S311
        self._start = start
        self._step_s = step_s
        self.tick_size = product.tick_size
        base = int(product.base_price / product.tick_size)
        offset = self._rng.randint(-_START_SPREAD_TICKS, _START_SPREAD_TICKS)
        self.last_ticks = max(1, base + offset)
        self.steps = 0

    @property
    def last(self) -> Decimal:
        """Return the last price."""
        return self.last_ticks * self.tick_size

    def advance_to(self, now: datetime) -> bool:
        """Take every step due by ``now``; return whether the price moved."""
        due = int((now - self._start).total_seconds() // self._step_s)
        count = due - self.steps
        if count <= 0:
            return False
        self.steps = due
        draw = self._rng.random
        ticks = before = self.last_ticks
        down, up = _MOVE_PROBABILITY, 1.0 - _MOVE_PROBABILITY
        for _ in range(count):
            r = draw()
            if r < down:
                ticks = ticks - 1 if ticks > 1 else 1
            elif r >= up:
                ticks += 1
        self.last_ticks = ticks
        return ticks != before

    def set_last(self, price: Decimal) -> None:
        """Move the last price (the walk goes on from there); ``price`` must be on tick."""
        if price <= 0 or price % self.tick_size != 0:
            raise ValueError(f"price {price} must be positive and a multiple of {self.tick_size}")
        self.last_ticks = int(price / self.tick_size)

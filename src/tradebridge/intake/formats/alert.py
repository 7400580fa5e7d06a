"""The common alert model: what every payload format's parser produces, and how it refuses.

A parser (``tradebridge``, ``traderspost``, ``pickmytrade``) turns one decoded body into a
``ParsedAlert``; ``intake/plan.py`` turns that into ledger rows. A body that cannot be traded
as written is an ``AlertRejected``: a 400 naming the field and what it expects.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any, Literal

from tradebridge.errors import InvalidInput

Format = Literal["tradebridge", "traderspost", "pickmytrade"]
AlertIntent = Literal["order", "exit", "reverse", "cancel", "flatten", "target"]
"""What an alert asks for: its rows' ``intent`` column, raw (``pipeline.validate.Intent`` once
a worker has checked the row)."""
BracketUnit = Literal["ticks", "points", "price", "dollars"]


class AlertRejected(InvalidInput):
    """An alert that cannot be traded as written: a 400 naming the field and what it expects."""

    def __init__(
        self, message: str, *, field: str | None = None, expected: str | None = None
    ) -> None:
        super().__init__(message, field=field)
        self.expected = expected


@dataclass(frozen=True, slots=True)
class AlertBracket:
    """A stop loss or take profit as the alert gave it: a unit and a value.

    ``intake/sizing.py`` turns it into ticks or a price; the protective orders placed at the
    broker are a ``domain.commands.Bracket``.
    """

    unit: BracketUnit
    value: Decimal


@dataclass(frozen=True, slots=True)
class TakeProfit:
    """One take profit of a scale-out: a distance and the contracts it closes."""

    bracket: AlertBracket
    quantity: Decimal


@dataclass(frozen=True, slots=True)
class AccountRef:
    """An account (or ``group:NAME``) the alert routes to, with its quantity multiplier."""

    name: str
    multiplier: Decimal = Decimal(1)


@dataclass(frozen=True, slots=True)
class ParsedAlert:
    """One alert in tradebridge's terms, whatever dialect it arrived in."""

    format: Format
    intent: AlertIntent
    symbol: str | None
    side: str | None = None  # 'buy' | 'sell' for intent 'order' (a hint for 'target')
    quantity: Decimal | None = None
    order_type: str = "market"
    price: Decimal | None = None
    stop_price: Decimal | None = None
    tif: str | None = None
    stop_loss: AlertBracket | None = None
    take_profit: AlertBracket | None = None
    accounts: tuple[AccountRef, ...] = ()
    strategy: str | None = None
    alert_id: str | None = None
    fired_at: datetime | None = None
    target_position: Decimal | None = None
    reference_price: Decimal | None = None
    comment: str | None = None
    cancel_first: bool = False  # TradersPost's ``cancel``: a cancel row ahead of the order
    # Scale-out (native order strategies): several take profits, a trailing stop, break-even.
    take_profits: tuple[TakeProfit, ...] = ()
    trailing_stop: AlertBracket | None = None
    breakeven: bool = False
    ignored_fields: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()


Parser = Callable[[Mapping[str, Any]], ParsedAlert]
"""One payload format's parser: a decoded body to a ``ParsedAlert`` (or ``AlertRejected``)."""

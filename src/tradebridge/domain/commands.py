"""Commands: imperative requests to a broker, built by the pipeline, carried out by adapters."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Literal

from tradebridge.domain.contracts import ContractSymbol
from tradebridge.domain.enums import OrderType, Side, TimeInForce
from tradebridge.domain.ids import AccountName, BrokerOrderId, ClientOrderId
from tradebridge.errors import InvalidOrder

LegTimeInForce = Literal["entry", "gtc", "day"]
"""``[orders] leg_time_in_force``: the legs' time in force follows the entry, or is fixed."""


def leg_time_in_force(entry: TimeInForce, policy: LegTimeInForce = "entry") -> TimeInForce:
    """Return the time in force of the bracket legs of an entry with ``entry``.

    ``entry`` (the default): the entry's own, except that the legs of an IOC or FOK entry are
    Day (a leg has to rest until the price comes; an immediate-or-cancel leg would be gone
    at once). ``gtc`` / ``day``: that, whatever the entry.
    """
    if policy == "gtc":
        return TimeInForce.GTC
    if policy == "day" or entry in (TimeInForce.IOC, TimeInForce.FOK):
        return TimeInForce.DAY
    return entry


@dataclass(frozen=True, slots=True)
class Bracket:
    """Protective orders attached to an entry: absolute prices, either may be absent.

    ``time_in_force`` is the legs' (None: ``leg_time_in_force(entry)``, following the entry).
    """

    stop_loss: Decimal | None = None
    take_profit: Decimal | None = None
    time_in_force: TimeInForce | None = None

    def __bool__(self) -> bool:
        return self.stop_loss is not None or self.take_profit is not None


@dataclass(frozen=True, slots=True)
class SubmitOrder:
    """Place one order (with an optional bracket) under a stable client order id."""

    client_order_id: ClientOrderId
    account: AccountName
    contract: ContractSymbol
    side: Side
    order_type: OrderType
    quantity: int
    limit_price: Decimal | None = None
    stop_price: Decimal | None = None
    tif: TimeInForce = TimeInForce.DAY
    expire_time: datetime | None = None
    bracket: Bracket | None = None
    text: str = ""

    def __post_init__(self) -> None:
        if self.quantity <= 0:
            raise InvalidOrder(f"quantity must be a positive whole number, got {self.quantity}",
                               field="quantity")  # fmt: skip
        if self.order_type.needs_limit_price and self.limit_price is None:
            raise InvalidOrder(f"a {self.order_type.value} order needs a limit price",
                               field="price")  # fmt: skip
        if self.order_type.needs_stop_price and self.stop_price is None:
            raise InvalidOrder(f"a {self.order_type.value} order needs a stop price",
                               field="stop_price")  # fmt: skip
        if TimeInForce.GTD in (self.tif, self.leg_tif) and self.expire_time is None:
            raise InvalidOrder("a GTD order needs an expire time", field="expire_time")
        tick = self.contract.product.tick_size
        for name, price in (("price", self.limit_price), ("stop_price", self.stop_price)):
            if price is not None and (price <= 0 or price % tick != 0):
                raise InvalidOrder(
                    f"{name} {price} is not a positive multiple of the tick {tick}", field=name
                )

    @property
    def leg_tif(self) -> TimeInForce:
        """Return the time in force of the bracket legs (``Bracket.time_in_force``)."""
        chosen = self.bracket.time_in_force if self.bracket is not None else None
        return chosen if chosen is not None else leg_time_in_force(self.tif)


@dataclass(frozen=True, slots=True)
class CancelOrder:
    """Cancel one working order."""

    account: AccountName
    broker_order_id: BrokerOrderId


@dataclass(frozen=True, slots=True)
class ModifyOrder:
    """Change the quantity or prices of one working order."""

    account: AccountName
    broker_order_id: BrokerOrderId
    quantity: int
    order_type: OrderType
    limit_price: Decimal | None = None
    stop_price: Decimal | None = None


@dataclass(frozen=True, slots=True)
class FlattenPosition:
    """Cancel working orders on a contract and close the position."""

    account: AccountName
    contract: ContractSymbol

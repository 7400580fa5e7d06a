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
class Target:
    """One take profit of a scale-out: the contracts it closes, whole ticks from the fill."""

    quantity: int
    ticks: int


@dataclass(frozen=True, slots=True)
class Bracket:
    """Protective orders attached to an entry; any leg may be absent.

    A leg is an absolute price (``stop_loss``, ``take_profit``) or a distance in whole ticks
    from the entry's fill (``*_ticks``), which only a broker that prices legs from the fill
    can place (native order strategies, ``BrokerCapabilities.brackets_from_fill``). A bracket
    is ``relative`` when every leg it has is a distance. ``time_in_force`` is the legs' (None:
    ``leg_time_in_force(entry)``, following the entry).

    Scale-out (distances only): ``targets`` replaces ``take_profit_ticks`` with up to three
    take profits, each closing its own quantity (what they leave is covered by the stop
    alone); ``trailing`` makes the stop follow the best price by ``stop_loss_ticks``;
    ``breakeven`` moves the stops of the other targets to the fill once one target filled.
    """

    stop_loss: Decimal | None = None
    take_profit: Decimal | None = None
    time_in_force: TimeInForce | None = None
    stop_loss_ticks: int | None = None
    take_profit_ticks: int | None = None
    targets: tuple[Target, ...] = ()
    trailing: bool = False
    breakeven: bool = False

    def __bool__(self) -> bool:
        return bool(self.targets) or any(
            leg is not None
            for leg in (self.stop_loss, self.take_profit, self.stop_loss_ticks,
                        self.take_profit_ticks)
        )  # fmt: skip

    def plan(self, quantity: int) -> tuple[tuple[int, int | None], ...]:
        """Return the (quantity, target ticks) of each bracket of an entry of ``quantity``.

        One per target, then the rest (if any) protected by the stop alone; without
        ``targets``, one bracket for the whole quantity.
        """
        if not self.targets:
            return ((quantity, self.take_profit_ticks),)
        plan: list[tuple[int, int | None]] = [(t.quantity, t.ticks) for t in self.targets]
        rest = quantity - sum(t.quantity for t in self.targets)
        if rest > 0:
            plan.append((rest, None))
        return tuple(plan)

    @property
    def relative(self) -> bool:
        """Return whether every leg is a distance from the fill (and there is one)."""
        absolute = self.stop_loss is not None or self.take_profit is not None
        return bool(self) and not absolute


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
    # An order of a type tradebridge does not place (``OrderStatusReport.broker_order_type``):
    # its quantity alone changes, its type restated as the broker named it.
    broker_order_type: str | None = None


@dataclass(frozen=True, slots=True)
class InterruptStrategy:
    """Stop a native order strategy: its legs still working are cancelled with it."""

    account: AccountName
    strategy_id: str


@dataclass(frozen=True, slots=True)
class FlattenPosition:
    """Cancel working orders on a contract and close the position."""

    account: AccountName
    contract: ContractSymbol

"""Helpers for the engine tests: an engine on a manual clock with known prices."""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from tradebridge.domain.enums import OrderType, Side, TimeInForce
from tradebridge.sim.clock import ManualClock
from tradebridge.sim.config import SimConfig
from tradebridge.sim.engine import (
    EntityChange,
    OrderRequest,
    PlaceResult,
    SimContract,
    SimEngine,
    SimOrder,
)

ACCOUNT = 100001  # user 1 ("demo")
OTHER_ACCOUNT = 100002  # user 1
APEX_ACCOUNT = 200010  # user 2
ES = "ESZ6"
MNQ = "MNQZ6"
CL = "CLF7"  # CLZ6 expired on 2026-11-20; January 2027 is the front month on 2026-11-25
START = {ES: Decimal(6000), MNQ: Decimal(21000), CL: Decimal(70)}
FROZEN_S = 10**9  # a price step so long that prices only move when a test moves them


def d(text: str | int) -> Decimal:
    """Return a Decimal (short to keep tables readable)."""
    return Decimal(str(text))


@dataclass
class Sim:
    """An engine, its clock, and every event it published."""

    engine: SimEngine
    clock: ManualClock
    events: list[EntityChange] = field(default_factory=list)

    def contract(self, name: str) -> SimContract:
        """Return a contract that must exist."""
        contract = self.engine.find_contract(name)
        assert contract is not None, name
        return contract

    def price(self, name: str, last: Decimal | str | int) -> None:
        """Move a contract's last price (bid = last, ask = last + one tick)."""
        self.engine.set_price(
            self.contract(name).id, d(last) if not isinstance(last, Decimal) else last
        )

    def place(self, *args: Any, **kwargs: Any) -> PlaceResult:
        """Place the order ``request(*args, **kwargs)`` builds."""
        return self.engine.place_order(self.request(*args, **kwargs))

    def request(
        self,
        action: Side,
        order_type: OrderType = OrderType.MARKET,
        qty: int = 1,
        *,
        symbol: str = ES,
        account: int = ACCOUNT,
        price: str | int | None = None,
        stop: str | int | None = None,
        tif: TimeInForce = TimeInForce.DAY,
        **fields: Any,
    ) -> OrderRequest:
        """Build an order request with short arguments."""
        return OrderRequest(
            account_id=account,
            symbol=symbol,
            action=action,
            order_type=order_type,
            order_qty=qty,
            price=None if price is None else d(price),
            stop_price=None if stop is None else d(stop),
            time_in_force=tif,
            **fields,
        )

    def order(self, order_id: int | None) -> SimOrder:
        """Return an order that must exist."""
        assert order_id is not None
        order = self.engine.order(order_id)
        assert order is not None
        return order

    def net(self, symbol: str = ES, account: int = ACCOUNT) -> int:
        """Return the net position of an account in a contract (0 when none)."""
        contract_id = self.contract(symbol).id
        found = [p for p in self.engine.positions(account) if p.contract_id == contract_id]
        return found[0].net_pos if found else 0


def make_sim(**config: Any) -> Sim:
    """Build an engine on 2026-11-25 15:00 UTC with ES, MNQ and CL at round prices."""
    config.setdefault("price_step_s", FROZEN_S)
    clock = ManualClock()
    engine = SimEngine(SimConfig.model_validate(config), clock)
    sim = Sim(engine, clock)
    for name, last in START.items():
        sim.price(name, last)
    engine.subscribe(sim.events.append)
    return sim

"""Positions and cash: fills paired first in, first out, realized P&L into cash, open P&L.

Like Tradovate's fill pairs, realized P&L is exact in ticks times ``value_per_point`` and
``net_price`` is the average open price. Cash is initial cash plus realized P&L (no
commissions). ``open_pnl`` marks longs at the bid and shorts at the ask (what closing would
get).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal

from tradebridge.sim._records import Records
from tradebridge.sim._reference import Reference
from tradebridge.sim.clock import Clock
from tradebridge.sim.model import Quote, SimCashBalance, SimContract, SimFill, SimPosition


@dataclass(slots=True)
class _Lot:
    """An open part of a position: signed quantity at one price (first in, first out)."""

    qty: int
    price: Decimal


@dataclass(slots=True)
class _Holding:
    """The open lots behind one position, and their total value (for the average price)."""

    lots: deque[_Lot] = field(default_factory=deque)
    open_value: Decimal = Decimal(0)  # sum of |qty| * price over the open lots


class Positions:
    """Every account's positions, the lots behind them, and its cash."""

    def __init__(self, clock: Clock, reference: Reference, records: Records) -> None:
        self._clock = clock
        self._reference = reference
        self._records = records
        self._positions: dict[tuple[int, int], SimPosition] = {}
        self._positions_by_account: dict[int, list[SimPosition]] = {}
        self._holdings: dict[tuple[int, int], _Holding] = {}
        self._cash: dict[int, SimCashBalance] = {}
        now = clock.now()
        for account in reference.accounts():
            cash = Decimal(str(reference.account_config(account.id).initial_cash))
            self._cash[account.id] = SimCashBalance(
                records.next_id("cashBalance"), account.id, now, cash
            )

    def position(self, account_id: int, contract_id: int) -> SimPosition | None:
        """Return an account's position in a contract, if it ever traded it."""
        return self._positions.get((account_id, contract_id))

    def positions(self, account_id: int | None = None) -> list[SimPosition]:
        """Return positions, of one account or all."""
        if account_id is None:
            return list(self._positions.values())
        return list(self._positions_by_account.get(account_id, ()))

    def cash_balance(self, account_id: int) -> SimCashBalance:
        """Return an account's cash balance (KeyError if the account is unknown)."""
        return self._cash[account_id]

    def apply_fill(self, fill: SimFill, contract: SimContract) -> None:
        """Apply a fill to the position (first in, first out) and realized P&L to cash."""
        key = (fill.account_id, fill.contract_id)
        position = self._positions.get(key)
        created = position is None
        if position is None:
            position = SimPosition(
                self._records.next_id("position"),
                fill.account_id,
                fill.contract_id,
                self._clock.now(),
            )
            self._positions[key] = position
            self._positions_by_account.setdefault(fill.account_id, []).append(position)
            self._holdings[key] = _Holding()
        holding = self._holdings[key]
        qty, price = fill.qty, fill.price
        sign = fill.action.sign
        if sign > 0:
            position.bought += qty
            position.bought_value += qty * price
        else:
            position.sold += qty
            position.sold_value += qty * price
        remaining = qty
        points = Decimal(0)
        lots = holding.lots
        while remaining and lots and (lots[0].qty > 0) != (sign > 0):
            lot = lots[0]
            closed = min(remaining, abs(lot.qty))
            lot_sign = 1 if lot.qty > 0 else -1
            points += closed * (price - lot.price) * lot_sign
            holding.open_value -= closed * lot.price
            lot.qty -= closed * lot_sign
            remaining -= closed
            if lot.qty == 0:
                lots.popleft()
        if remaining:
            lots.append(_Lot(sign * remaining, price))
            holding.open_value += remaining * price
        position.net_pos += sign * qty
        position.net_price = (
            holding.open_value / abs(position.net_pos) if position.net_pos else None
        )
        realized = points * contract.product.value_per_point
        position.realized_pnl += realized
        position.timestamp = self._clock.now()
        event = "created" if created else "updated"
        self._records.publish(fill.account_id, "position", event, position)
        if realized:
            cash = self._cash[fill.account_id]
            cash.realized_pnl += realized
            cash.amount += realized
            cash.timestamp = position.timestamp
            self._records.publish(fill.account_id, "cashBalance", "updated", cash)

    def open_pnl(self, account_id: int, quote: Callable[[int], Quote]) -> Decimal:
        """Return the open P&L of an account's positions at the prices ``quote`` gives."""
        total = Decimal(0)
        for position in self._positions_by_account.get(account_id, ()):
            if position.net_pos == 0:
                continue
            holding = self._holdings[(account_id, position.contract_id)]
            current = quote(position.contract_id)
            mark = current.bid if position.net_pos > 0 else current.ask
            sign = 1 if position.net_pos > 0 else -1
            contract = self._reference.contract_of(position.contract_id)
            per_point = mark * position.net_pos - sign * holding.open_value
            total += per_point * contract.product.value_per_point
        return total

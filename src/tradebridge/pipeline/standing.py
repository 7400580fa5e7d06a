"""An account's standing against its risk rules: the day's P&L and the room left under each
limit, as ``/healthz``, ``/metrics`` and the start-up banner show them (docs/risk.md).

Pure: the balance marks and counts are arguments (``runtime/risk_watch.py`` reads them). The
room is measured the way the rules judge (``pipeline/risk.py``): a rule stops new entries
once its room is 0 or less. The account's own rules are shown (``[risk]`` and its
``[accounts.risk]``); a strategy's overrides apply to that strategy's rows only.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from tradebridge.domain.balance import BalanceMarks
from tradebridge.domain.sessions import trading_day
from tradebridge.pipeline.risk import Rules, trailing_threshold


@dataclass(frozen=True, slots=True)
class Room:
    """One limit: where the account stands, the limit, and the room left before it stops."""

    rule: str
    setting: str
    value: Decimal
    limit: Decimal
    room: Decimal
    money: bool = True  # dollars (else a count of orders)

    @property
    def reached(self) -> bool:
        """Return whether the rule stops new entries now."""
        return self.room <= 0

    def as_json(self) -> dict[str, Any]:
        """Return the room as JSON data (numbers as strings: money keeps its cents)."""
        return {
            "value": str(self.value),
            "limit": str(self.limit),
            "room": str(self.room),
            "reached": self.reached,
            "setting": self.setting,
        }


@dataclass(frozen=True, slots=True)
class Standing:
    """An account's standing: its day, balance, P&L and the room under each limit."""

    account: str
    trading_day: date
    balance: Decimal | None = None
    day_pnl: Decimal | None = None  # None: no balance read in this trading day yet
    balance_at: datetime | None = None
    open_orders: int = 0
    orders_today: int = 0
    rooms: tuple[Room, ...] = ()

    @property
    def reached(self) -> list[str]:
        """Return the rules that stop new entries now."""
        return [room.rule for room in self.rooms if room.reached]

    def as_json(self) -> dict[str, Any]:
        """Return the standing as JSON data."""
        return {
            "trading_day": self.trading_day.isoformat(),
            "balance": None if self.balance is None else str(self.balance),
            "balance_at": None if self.balance_at is None else self.balance_at.isoformat(),
            "day_pnl": None if self.day_pnl is None else str(self.day_pnl),
            "open_orders": self.open_orders,
            "orders_today": self.orders_today,
            "limits": {room.rule: room.as_json() for room in self.rooms},
            "reached": self.reached,
        }

    def summary(self) -> str:
        """Return one line for the banner, e.g. ``P&L +120.00; daily_loss_limit 880.00 left``."""
        pnl = "P&L not read yet today" if self.day_pnl is None else f"P&L {self.day_pnl:+.2f}"
        parts = [pnl]
        for room in self.rooms:
            fmt = ".2f" if room.money else ".0f"
            left = "REACHED" if room.reached else f"{room.room:{fmt}} left"
            parts.append(f"{room.rule} {left}")
        return "; ".join(parts)


def standing(
    account: str,
    rules: Rules,
    now: datetime,
    *,
    marks: BalanceMarks | None,
    open_orders: int,
    orders_today: int,
) -> Standing:
    """Return where ``account`` stands under ``rules`` at ``now``.

    The day's P&L counts from the first balance read in the current trading day; with none
    read yet (no entry since the reset) it is unknown, and so is the room of the P&L rules
    that measure from it (the trailing drawdown is shown from the last balance read).
    """
    today = trading_day(now, rules.zone, rules.day_reset)
    rooms: list[Room] = []
    pnl: Decimal | None = None
    if marks is not None and marks.trading_day == today:
        pnl = marks.balance - marks.day_start_balance
    if rules.daily_loss_limit is not None and pnl is not None:
        limit = rules.daily_loss_limit
        rooms.append(Room("daily_loss_limit", rules.setting("daily_loss_limit"), pnl, limit,
                          limit + pnl))  # fmt: skip
    if rules.trailing_drawdown is not None and marks is not None:
        eod = rules.trailing_mode == "eod"
        threshold = trailing_threshold(rules, marks.high_water_eod if eod else (
            marks.high_water_intraday))  # fmt: skip
        assert threshold is not None
        room = marks.balance - threshold - rules.trailing_margin
        rooms.append(Room("trailing_drawdown", rules.setting("trailing_drawdown"), marks.balance,
                          threshold, room))  # fmt: skip
    if rules.daily_profit_target is not None and pnl is not None:
        target = rules.daily_profit_target
        rooms.append(Room("daily_profit_target", rules.setting("daily_profit_target"), pnl,
                          target, target - pnl))  # fmt: skip
    for rule, count, most in (
        ("max_orders_per_day", orders_today, rules.max_orders_per_day),
        ("max_open_orders", open_orders, rules.max_open_orders),
    ):
        if most is not None:
            rooms.append(Room(rule, rules.setting(rule), Decimal(count), Decimal(most),
                              Decimal(most - count), money=False))  # fmt: skip
    return Standing(
        account,
        today,
        balance=None if marks is None else marks.balance,
        day_pnl=pnl,
        balance_at=None if marks is None else marks.updated_at,
        open_orders=open_orders,
        orders_today=orders_today,
        rooms=tuple(rooms),
    )

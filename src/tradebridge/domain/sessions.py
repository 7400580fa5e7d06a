"""Exchange sessions and trading days, in the exchange's time zone; pure (``now`` is an argument).

A CME Globex session runs from ``open`` the evening before to ``close`` on its trade date
(17:00 to 16:00 Chicago time for every product tradebridge knows): Sunday evening opens
Monday's session, and Friday's close is the last until Sunday. A trade date that is not a
business day of the roll calendar (``domain.contracts.is_business_day``: weekends and the
fixed-date holidays) has no session at all; early closes before or on a holiday are not
modelled, so on such a day entries are refused for the whole session (the safe side).

The trading day (daily loss, orders per day) begins at a reset time of its own, 17:00 by
default: a moment at or after the reset belongs to the next calendar day's trading day.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from tradebridge.domain.contracts import is_business_day


@dataclass(frozen=True, slots=True)
class Session:
    """One session of the exchange: its trade date and when it opens and closes (UTC)."""

    trade_date: date
    opens: datetime
    closes: datetime


def _at(day: date, when: time, zone: ZoneInfo) -> datetime:
    return datetime.combine(day, when, tzinfo=zone).astimezone(UTC)


def trading_day(now: datetime, zone: ZoneInfo, reset: time) -> date:
    """Return the trading day ``now`` belongs to (a reset at or before ``now`` began it)."""
    local = now.astimezone(zone)
    return local.date() + timedelta(days=1) if local.time() >= reset else local.date()


def trading_day_start(now: datetime, zone: ZoneInfo, reset: time) -> datetime:
    """Return when the trading day of ``now`` began (UTC)."""
    return _at(trading_day(now, zone, reset) - timedelta(days=1), reset, zone)


def session_at(now: datetime, zone: ZoneInfo, opens: time, closes: time) -> Session | None:
    """Return the session ``now`` falls in, or None while the exchange is closed.

    ``opens`` after ``closes`` is an overnight session (opens the evening before its trade
    date); otherwise it opens and closes on its trade date.
    """
    local = now.astimezone(zone)
    overnight = opens > closes
    if overnight:
        day = local.date() + timedelta(days=1) if local.time() >= opens else local.date()
        start = _at(day - timedelta(days=1), opens, zone)
    else:
        day = local.date()
        start = _at(day, opens, zone)
    end = _at(day, closes, zone)
    if not is_business_day(day) or not start <= now < end:
        return None
    return Session(day, start, end)


def in_flat_window(now: datetime, zone: ZoneInfo, flat_at: time, reset: time) -> bool:
    """Return whether ``now`` lies between ``flat_at`` and the trading day's ``reset`` (the
    time an account must be flat by, until the next trading day begins)."""
    local = now.astimezone(zone).time()
    if flat_at <= reset:
        return flat_at <= local < reset
    return local >= flat_at or local < reset

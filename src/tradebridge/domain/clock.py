"""The wall clock, in one place: every component asks for aware UTC times here.

Components that must be tested against time take a ``Clock`` (a function returning the
current time) with ``utcnow`` as the default; the simulator keeps its own, settable clock
(``sim/clock.py``).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

Clock = Callable[[], datetime]


def utcnow() -> datetime:
    """Return the current time, timezone-aware, in UTC."""
    return datetime.now(UTC)


_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_since(text: str, now: datetime) -> datetime:
    """Return the moment ``text`` names: an age (``90s``, ``30m``, ``1h``, ``2d``) before
    ``now``, or an ISO time (UTC unless it says otherwise); ``ValueError`` saying so otherwise."""
    found = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhd])\s*", text.lower())
    if found:
        try:
            return now - timedelta(seconds=float(found.group(1)) * _UNITS[found.group(2)])
        except OverflowError:
            raise ValueError(
                f"{text.strip()!r} is too far back: use a smaller age (e.g. 30d) or an ISO time"
            ) from None
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ValueError(
            f"{text!r} is neither an age (90s, 30m, 1h, 2d) nor an ISO time (2026-12-05T14:00:00Z)"
        ) from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)

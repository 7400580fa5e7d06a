"""The wall clock, in one place: every component asks for aware UTC times here.

Components that must be tested against time take a ``Clock`` (a function returning the
current time) with ``utcnow`` as the default; the simulator keeps its own, settable clock
(``sim/clock.py``).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

Clock = Callable[[], datetime]


def utcnow() -> datetime:
    """Return the current time, timezone-aware, in UTC."""
    return datetime.now(UTC)

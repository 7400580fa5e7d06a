"""Clocks for the simulator: the system's, or one that tests move by hand."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Protocol


class Clock(Protocol):
    """Something that tells the time (timezone-aware UTC)."""

    def now(self) -> datetime:
        """Return the current time."""
        ...


class SystemClock:
    """The machine's clock."""

    def now(self) -> datetime:
        """Return the current UTC time."""
        return datetime.now(UTC)


@dataclass
class ManualClock:
    """A clock that only moves when told to (tests, reproducible demos)."""

    current: datetime = field(default_factory=lambda: datetime(2026, 11, 25, 15, 0, tzinfo=UTC))

    def now(self) -> datetime:
        """Return the frozen time."""
        return self.current

    def advance(self, seconds: float) -> datetime:
        """Move the clock forward and return the new time."""
        self.current += timedelta(seconds=seconds)
        return self.current

"""What every dialect module of the simulator shares: settings, clock, state, tokens."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from tradebridge.sim.auth import TokenAuthority
from tradebridge.sim.clock import Clock
from tradebridge.sim.config import FaultConfig, SimConfig
from tradebridge.sim.engine import SimEngine


@dataclass
class SimContext:
    """The simulator's shared parts; each dialect builds its router from one of these."""

    config: SimConfig
    clock: Clock
    engine: SimEngine
    auth: TokenAuthority
    # Who writes fresh tokens after ``/_sim/tokens/expire`` (a running ``TokenSeeder``);
    # each returns the keys it wrote.
    token_writers: list[Callable[[], Awaitable[list[str]]]] = field(default_factory=list)

    @property
    def faults(self) -> FaultConfig:
        """Return the live fault switches."""
        return self.config.faults

    @classmethod
    def build(cls, config: SimConfig, clock: Clock) -> SimContext:
        """Build a fresh simulator state from settings."""
        return cls(config, clock, SimEngine(config, clock), TokenAuthority(config, clock))

"""Fixtures of the runtime tests: a fresh migrated database, a simulator with tokens in Redis."""

from __future__ import annotations

from _support.runtime import fresh_db, sim, sim_tokens

__all__ = ["fresh_db", "sim", "sim_tokens"]  # fixtures

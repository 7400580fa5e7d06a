"""Fixtures of the contract suite (defined in ``_contract_support``)."""

from __future__ import annotations

from _support.rig import dialect, make_rig, redis_client, rig

__all__ = ["dialect", "make_rig", "redis_client", "rig"]

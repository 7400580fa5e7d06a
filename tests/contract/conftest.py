"""Fixtures of the contract suite (defined in ``_contract_support``)."""

from __future__ import annotations

from _contract_support import dialect, make_rig, redis_client, rig

__all__ = ["dialect", "make_rig", "redis_client", "rig"]

"""Identifier types: distinct names for strings that must never be mixed up."""

from __future__ import annotations

from typing import NewType

SignalId = NewType("SignalId", str)
"""The ledger's ``signal_id``: one signal for one account."""

ClientOrderId = NewType("ClientOrderId", str)
"""Our order id (``clOrdId`` natively, ``requestId`` on the bridge); stable across attempts."""

BrokerOrderId = NewType("BrokerOrderId", str)
"""The broker's id for an order: an int natively, a string on the bridge; kept as text."""

AccountName = NewType("AccountName", str)
"""An account's name (``accountSpec``), e.g. ``PAAPEX1361890000010``."""

AccountId = NewType("AccountId", str)
"""An account's id in a dialect: the native int as text, or the bridge's ``D...`` value."""


def client_order_id_for(signal_id: str, attempt: int = 1) -> ClientOrderId:
    """Derive the client order id of a signal; a new id only for a new business decision."""
    base = f"tb-{signal_id}"
    return ClientOrderId(base if attempt <= 1 else f"{base}-r{attempt}")


# Bracket legs carry their entry's client id with a suffix (brokers/tradovate/wire.py, and
# ``-leg`` for the legs of a native order strategy); no row is theirs.
LEG_SUFFIXES = ("-sl", "-tp", "-leg")


def entry_client_id(cid: str | None) -> str | None:
    """Return the entry's client id of a bracket leg's ``cid``, or None if it is no leg's."""
    if cid is None or not cid.endswith(LEG_SUFFIXES):
        return None
    return cid.rsplit("-", 1)[0]

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

"""Which payload format a decoded body is written in."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from tradebridge.intake.formats.alert import Format


def detect_format(body: Mapping[str, Any]) -> Format:
    """Recognise the dialect of a decoded body (reference §4.6, restricted to ours)."""
    if "data" in body and ("date" in body or "token" in body):
        return "pickmytrade"
    if "ticker" in body and "action" in body and "symbol" not in body:
        return "traderspost"
    return "tradebridge"

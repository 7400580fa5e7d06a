"""Which payload format a decoded body is written in, and the parser that reads it."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from tradebridge.intake.formats.alert import Format, Parser
from tradebridge.intake.formats.pickmytrade import parse_pickmytrade
from tradebridge.intake.formats.tradebridge import parse_tradebridge
from tradebridge.intake.formats.traderspost import parse_traderspost


def detect_format(body: Mapping[str, Any]) -> Format:
    """Recognise the dialect of a decoded body (reference §4.6, restricted to ours)."""
    if "data" in body and ("date" in body or "token" in body):
        return "pickmytrade"
    if "ticker" in body and "action" in body and "symbol" not in body:
        return "traderspost"
    return "tradebridge"


PARSERS: dict[Format, Parser] = {
    "tradebridge": parse_tradebridge,
    "traderspost": parse_traderspost,
    "pickmytrade": parse_pickmytrade,
}
"""The parser of each format: ``PARSERS[detect_format(body)](body)``."""

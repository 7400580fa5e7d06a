"""Raw bytes to one JSON object, bounded before anything works on it; whatever the format.

The nesting depth is measured before the JSON parser runs (it recurses), and every string
and key is checked against what PostgreSQL text can hold (no NUL, no lone surrogate). Numbers
are parsed as ``Decimal`` from the JSON text itself, so ``1.0`` stays exact. Each refusal is
a 400 naming the field, never a 5xx.
"""

from __future__ import annotations

import itertools
import json
import re
from decimal import Decimal
from typing import Any

from tradebridge.intake.formats.alert import AlertRejected

# Body fields that may carry the secret, in any dialect; never stored, never logged.
SECRET_FIELDS = frozenset({"secret", "passphrase", "token", "key"})

MAX_DEPTH = 16
"""Nesting levels a body may have (the documented alerts use 3)."""


class _Reject(ValueError):
    """Raised by the JSON decoder hooks; becomes a 400."""


def _no_constant(name: str) -> Any:
    # NaN / Infinity: an empty or NaN TradingView placeholder left unquoted.
    raise _Reject(f"{name} is not a number JSON allows")


def decode_body(raw: bytes) -> dict[str, Any]:
    """Decode a body to one JSON object (a one-element array is unwrapped); 400 otherwise.

    The nesting depth is measured on the text before the (recursive) JSON parser sees it,
    and every string and key of the result is checked to be storable text.
    """
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise AlertRejected(
            "the body is not UTF-8 text", expected="a JSON object (UTF-8)"
        ) from None
    if not text.strip():
        raise AlertRejected("the body is empty", expected="a JSON object")
    # Counting the openers first keeps the scan off the path of every ordinary alert.
    depth = nesting_depth(text) if text.count("[") + text.count("{") > MAX_DEPTH else 0
    if depth > MAX_DEPTH:
        raise AlertRejected(
            f"the body nests {depth} levels deep",
            expected=f"a JSON object nested at most {MAX_DEPTH} levels",
        )
    try:
        value = json.loads(text, parse_float=Decimal, parse_constant=_no_constant)
    except _Reject as e:
        raise AlertRejected(f"the body is not valid JSON: {e}", expected="a JSON object") from None
    except (ValueError, RecursionError) as e:
        where = (
            f" (line {e.lineno}, column {e.colno})" if isinstance(e, json.JSONDecodeError) else ""
        )
        raise AlertRejected(
            f"the body is not valid JSON{where}; an empty or NaN placeholder left unquoted "
            "breaks it",
            expected="a JSON object",
        ) from None
    if isinstance(value, list):
        if len(value) != 1:
            raise AlertRejected(
                f"the body is a list of {len(value)} items", expected="one alert per request"
            )
        value = value[0]
    if not isinstance(value, dict):
        raise AlertRejected(f"the body is a JSON {type(value).__name__}", expected="a JSON object")
    check_strings(value)
    return value


# Brackets inside string literals are text, not nesting. Escapes go first (linear, and then
# no string holds a quote), then the literals: two linear passes, no backtracking.
_ESCAPE = re.compile(r"\\.", re.DOTALL)
_STRING = re.compile(r'"[^"]*"')
_NOT_BRACKETS = bytes(c for c in range(256) if c not in b"[]{}")
_OPENERS = frozenset(b"[{")


def nesting_depth(text: str) -> int:
    """Return how deep the brackets of a JSON text nest, outside string literals (no recursion).

    On text that is not valid JSON the figure is only an upper bound; the parser rejects it.
    """
    outside = _STRING.sub("", _ESCAPE.sub("", text))
    brackets = outside.encode("ascii", "ignore").translate(None, _NOT_BRACKETS)
    return max(itertools.accumulate(1 if c in _OPENERS else -1 for c in brackets), default=0)


# What PostgreSQL text (and jsonb) cannot hold: NUL, and UTF-16 surrogates on their own
# (JSON's "\ud800" escape decodes to one; it has no UTF-8 form).
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")


def check_strings(value: Any) -> None:
    """Refuse any key or string, at any depth, that PostgreSQL text cannot store (a 400).

    Iterative: the depth is already bounded, but no recursion is needed to walk it.
    """
    pending: list[tuple[Any, tuple[str, ...]]] = [(value, ())]
    while pending:
        node, trail = pending.pop()
        if isinstance(node, dict):
            for key, child in node.items():
                where = (*trail, f".{key}" if trail else key)
                _check_text(key, where)
                pending.append((child, where))
        elif isinstance(node, list):
            pending.extend((child, (*trail, f"[{i}]")) for i, child in enumerate(node))
        elif isinstance(node, str):
            _check_text(node, trail)


def _check_text(text: str, trail: tuple[str, ...]) -> None:
    bad = _UNSTORABLE.search(text)
    if bad is None:
        return
    field = safe_text("".join(trail), 80) or None
    where = field or "the body"
    if bad.group() == "\x00":
        raise AlertRejected(f"{where} contains a NUL character (\\u0000)", field=field,
                            expected="text without NUL characters")  # fmt: skip
    raise AlertRejected(
        f"{where} contains a lone surrogate ({bad.group().encode('unicode_escape').decode()})",
        field=field,
        expected="valid Unicode text (a surrogate escape only as half of a pair)",
    )


def safe_text(text: str, limit: int = 40) -> str:
    """Return ``text`` shortened to ``limit`` and with NUL and lone surrogates escaped."""
    short = text if len(text) <= limit else text[: limit - 3] + "..."
    if _UNSTORABLE.search(short) is None:
        return short
    return _UNSTORABLE.sub(lambda m: m.group().encode("unicode_escape").decode(), short)

"""Alert bodies: raw bytes to one JSON object, the dialect it is written in, one parsed alert.

Every dialect parser (``tradebridge_format``, ``compat``) produces the same ``ParsedAlert``;
``plan`` turns it into ledger rows. Numbers are parsed as ``Decimal`` from the JSON text
itself, so ``1.0`` stays exact and ``1.5`` contracts is an error, never 1.

Whatever arrives is bounded before anything works on it: the nesting depth before the JSON
parser runs (it recurses), every string against what PostgreSQL text can hold (no NUL, no
lone surrogate), every number against sane magnitudes before any Decimal arithmetic, every
text field against a length. Each is a 400 naming the field, never a 5xx.
"""

from __future__ import annotations

import itertools
import json
import re
from collections.abc import Callable, Mapping
from collections.abc import Set as AbstractSet
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any, Literal

from tradebridge.errors import InvalidInput

Format = Literal["tradebridge", "traderspost", "pickmytrade"]
Intent = Literal["order", "exit", "reverse", "cancel", "flatten", "target"]
BracketUnit = Literal["ticks", "points", "price", "dollars"]

# Body fields that may carry the secret, in any dialect; never stored, never logged.
SECRET_FIELDS = frozenset({"secret", "passphrase", "token", "key"})

MAX_DEPTH = 16
"""Nesting levels a body may have (the documented alerts use 3)."""
MAX_TEXT_CHARS = 500
"""Characters a text field (symbol, account, strategy, id, comment...) may have."""
MAX_MAGNITUDE = Decimal(10) ** 9
"""Every number an alert carries is smaller than this in size (prices, brackets, multipliers)."""
MIN_EXPONENT = -30
"""...and, unless it is zero, is not smaller than 10**-30 in size."""
MAX_CONTRACTS = 100_000
"""Contracts a quantity or target position may name (also after an account's multiplier)."""


class AlertRejected(InvalidInput):
    """An alert that cannot be traded as written: a 400 naming the field and what it expects."""

    def __init__(
        self, message: str, *, field: str | None = None, expected: str | None = None
    ) -> None:
        super().__init__(message, field=field)
        self.expected = expected


@dataclass(frozen=True, slots=True)
class Bracket:
    """A stop loss or take profit as the alert gave it: a unit and a value."""

    unit: BracketUnit
    value: Decimal


@dataclass(frozen=True, slots=True)
class TakeProfit:
    """One take profit of a scale-out: a distance and the contracts it closes."""

    bracket: Bracket
    quantity: Decimal


@dataclass(frozen=True, slots=True)
class AccountRef:
    """An account (or ``group:NAME``) the alert routes to, with its quantity multiplier."""

    name: str
    multiplier: Decimal = Decimal(1)


@dataclass(frozen=True, slots=True)
class ParsedAlert:
    """One alert in tradebridge's terms, whatever dialect it arrived in."""

    format: Format
    intent: Intent
    symbol: str | None
    side: str | None = None  # 'buy' | 'sell' for intent 'order' (a hint for 'target')
    quantity: Decimal | None = None
    order_type: str = "market"
    price: Decimal | None = None
    stop_price: Decimal | None = None
    tif: str | None = None
    stop_loss: Bracket | None = None
    take_profit: Bracket | None = None
    accounts: tuple[AccountRef, ...] = ()
    strategy: str | None = None
    alert_id: str | None = None
    fired_at: datetime | None = None
    target_position: Decimal | None = None
    reference_price: Decimal | None = None
    comment: str | None = None
    cancel_first: bool = False  # TradersPost's ``cancel``: a cancel row ahead of the order
    # Scale-out (native order strategies): several take profits, a trailing stop, break-even.
    take_profits: tuple[TakeProfit, ...] = ()
    trailing_stop: Bracket | None = None
    breakeven: bool = False
    ignored_fields: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()


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


def detect_format(body: Mapping[str, Any]) -> Format:
    """Recognise the dialect of a decoded body (reference §4.6, restricted to ours)."""
    if "data" in body and ("date" in body or "token" in body):
        return "pickmytrade"
    if "ticker" in body and "action" in body and "symbol" not in body:
        return "traderspost"
    return "tradebridge"


class FieldReader:
    """Typed reads of a JSON object's fields; remembers which were read."""

    def __init__(self, body: Mapping[str, Any], prefix: str = "") -> None:
        self._body = body
        self._prefix = prefix
        self._read: set[str] = set()

    def path(self, name: str) -> str:
        """Return the dotted name of a field for messages."""
        return f"{self._prefix}{name}"

    def has(self, name: str) -> bool:
        """Return whether the field is present and not null."""
        return self._body.get(name) is not None

    def raw(self, name: str) -> Any:
        """Return the raw value (marking the field read)."""
        self._read.add(name)
        return self._body.get(name)

    def unread(self) -> list[str]:
        """Return the fields present but never read, in body order."""
        return [k for k in self._body if k not in self._read]

    def text(self, name: str, *, required: bool = False, expected: str = "text") -> str | None:
        """Read a non-empty string (numbers are accepted as their text)."""
        value = self.raw(name)
        if value is None:
            if required:
                raise AlertRejected(f"{self.path(name)} is missing", field=self.path(name),
                                    expected=expected)  # fmt: skip
            return None
        if isinstance(value, bool) or not isinstance(value, str | int | Decimal):
            raise AlertRejected(
                f"{self.path(name)} must be {expected}, not {_kind(value)}",
                field=self.path(name),
                expected=expected,
            )
        text = str(value).strip()
        if not text:
            if required:
                raise AlertRejected(f"{self.path(name)} is empty", field=self.path(name),
                                    expected=expected)  # fmt: skip
            return None
        if len(text) > MAX_TEXT_CHARS:
            raise AlertRejected(
                f"{self.path(name)} is too long ({len(text)} characters)",
                field=self.path(name),
                expected=f"{expected}, at most {MAX_TEXT_CHARS} characters",
            )
        return text

    def choice(
        self,
        name: str,
        options: Mapping[str, str],
        *,
        required: bool = False,
        default: str | None = None,
    ) -> str | None:
        """Read a case-insensitive keyword and map it through ``options``."""
        expected = "one of " + ", ".join(dict.fromkeys(options))
        text = self.text(name, required=required, expected=expected)
        if text is None:
            return default
        mapped = options.get(text.lower())
        if mapped is None:
            raise AlertRejected(
                f"{self.path(name)} is {_show(text)}", field=self.path(name), expected=expected
            )
        return mapped

    def decimal(
        self, name: str, *, required: bool = False, expected: str = "a number"
    ) -> Decimal | None:
        """Read a finite number, from a JSON number or a string such as ``"1.0"``."""
        value = self.raw(name)
        if value is None or (isinstance(value, str) and not value.strip()):
            if required:
                raise AlertRejected(f"{self.path(name)} is missing", field=self.path(name),
                                    expected=expected)  # fmt: skip
            return None
        return to_decimal(value, self.path(name), expected)

    def positive(self, name: str, *, required: bool = False) -> Decimal | None:
        """Read a number greater than zero."""
        value = self.decimal(name, required=required, expected="a number above 0")
        if value is not None and value <= 0:
            raise AlertRejected(
                f"{self.path(name)} is {value}", field=self.path(name), expected="a number above 0"
            )
        return value

    def whole(
        self, name: str, *, required: bool = False, allow_zero: bool = False, signed: bool = False
    ) -> Decimal | None:
        """Read a whole number (``"2"``, ``2.0``); 1.5 is an error, never rounded."""
        expected = "a whole number" + ("" if signed else (" of 0 or more" if allow_zero
                                                           else " above 0"))  # fmt: skip
        value = self.decimal(name, required=required, expected=expected)
        if value is None:
            return None
        if abs(value) > MAX_CONTRACTS:
            raise AlertRejected(
                f"{self.path(name)} is {value}: more than {MAX_CONTRACTS:,} contracts",
                field=self.path(name),
                expected=f"{expected}, at most {MAX_CONTRACTS:,}",
            )
        return check_whole(value, self.path(name), allow_zero=allow_zero, signed=signed)

    def boolean(self, name: str) -> bool | None:
        """Read a bool, also from ``"true"``/``"false"``/``1``/``0``."""
        value = self.raw(name)
        if value is None:
            return None
        if isinstance(value, bool):
            return value
        text = str(value).strip().lower()
        if text in {"true", "1", "yes"}:
            return True
        if text in {"false", "0", "no", ""}:
            return False
        raise AlertRejected(
            f"{self.path(name)} is {_show(value)}", field=self.path(name), expected="true or false"
        )

    def obj(self, name: str) -> Mapping[str, Any] | None:
        """Read a nested JSON object."""
        value = self.raw(name)
        if value is None:
            return None
        if not isinstance(value, dict):
            raise AlertRejected(
                f"{self.path(name)} must be an object, not {_kind(value)}",
                field=self.path(name),
                expected="an object",
            )
        return value

    def time(self, name: str) -> datetime | None:
        """Read a fire time: ISO-8601 (``{{timenow}}``) or epoch seconds/milliseconds."""
        value = self.raw(name)
        if value is None or (isinstance(value, str) and not value.strip()):
            return None
        return parse_time(value, self.path(name))


def to_decimal(value: Any, field: str, expected: str = "a number") -> Decimal:
    """Convert a JSON number or numeric string to a finite ``Decimal``; 400 otherwise."""
    if isinstance(value, bool) or not isinstance(value, int | Decimal | str):
        raise AlertRejected(f"{field} must be {expected}, not {_kind(value)}", field=field,
                            expected=expected)  # fmt: skip
    text = str(value).strip()
    if "_" in text:  # Decimal() accepts 1_000; JSON and TradingView never write it
        raise AlertRejected(f"{field} is {_show(value)}", field=field, expected=expected)
    try:
        number = Decimal(text)
    except InvalidOperation:
        raise AlertRejected(f"{field} is {_show(value)}", field=field, expected=expected) from None
    if not number.is_finite():
        raise AlertRejected(f"{field} is {_show(value)}", field=field, expected=expected)
    # Bounded before any arithmetic: a price of 1e29 would stop a worker's tick-grid check
    # (Decimal's DivisionImpossible) long after the alert was answered 200.
    if number and (abs(number) >= MAX_MAGNITUDE or number.adjusted() < MIN_EXPONENT):
        raise AlertRejected(
            f"{field} is {_show(value)}: out of range",
            field=field,
            expected=f"{expected}, below {MAX_MAGNITUDE:,} in size, not below 1e{MIN_EXPONENT}",
        )
    return number


def check_whole(
    value: Decimal, field: str, *, allow_zero: bool = False, signed: bool = False
) -> Decimal:
    """Return ``value`` as a whole ``Decimal`` or raise a 400 that says it is not whole."""
    if value != value.to_integral_value():
        raise AlertRejected(
            f"{field} is {value}: contracts come in whole numbers",
            field=field,
            expected="a whole number",
        )
    if not signed and (value < 0 or (value == 0 and not allow_zero)):
        raise AlertRejected(
            f"{field} is {value}", field=field,
            expected="a whole number " + ("of 0 or more" if allow_zero else "above 0"),
        )  # fmt: skip
    return value.to_integral_value() + 0  # drops the exponent and turns -0 into 0


def parse_time(value: Any, field: str) -> datetime:
    """Parse ``{{timenow}}``-style times leniently; naive times are UTC."""
    if isinstance(value, int | Decimal) and not isinstance(value, bool):
        number = Decimal(value)
        if not number.is_finite() or number <= 0 or number >= Decimal(10) ** 14:
            raise AlertRejected(f"{field} is {_show(value)}", field=field,
                                expected=_TIME_EXPECTED)  # fmt: skip
        seconds = number / 1000 if number > Decimal(10) ** 11 else number
        return datetime.fromtimestamp(float(seconds), tz=UTC)
    if not isinstance(value, str):
        raise AlertRejected(f"{field} must be a time, not {_kind(value)}", field=field,
                            expected=_TIME_EXPECTED)  # fmt: skip
    text = value.strip()
    if text.isascii() and text.isdigit():  # str.isdigit() also says yes to "²"
        if len(text) > 14:  # epoch milliseconds have 13 digits; int() of 5,000 would raise
            raise AlertRejected(f"{field} is {_show(value)}", field=field,
                                expected=_TIME_EXPECTED)  # fmt: skip
        return parse_time(int(text), field)
    try:
        parsed = datetime.fromisoformat(text.replace("z", "Z"))
        if parsed.tzinfo is None:
            parsed = parsed.replace(tzinfo=UTC)
        # Year 1 at +14:00 is before year 1 in UTC: out of datetime's range.
        return parsed.astimezone(UTC)
    except (ValueError, OverflowError):
        raise AlertRejected(f"{field} is {_show(value)}", field=field,
                            expected=_TIME_EXPECTED) from None  # fmt: skip


_TIME_EXPECTED = "an ISO-8601 time such as {{timenow}} (2025-10-01T14:30:05Z)"


def reject_unknown(names: list[str], known: AbstractSet[str]) -> None:
    """Raise a 400 naming every unknown field (the tradebridge format knows all of its)."""
    if not names:
        return
    listed = ", ".join(names)
    hint = ""
    for name in names:
        close = _closest(name, known)
        if close:
            hint = f" (did you mean {close}?)"
            break
    raise AlertRejected(
        f"unknown field{'s' if len(names) > 1 else ''}: {listed}{hint}",
        field=names[0],
        expected="only the documented fields: " + ", ".join(sorted(known)),
    )


def _closest(name: str, known: AbstractSet[str]) -> str | None:
    squashed = _squash(name)
    for candidate in sorted(known):
        if _squash(candidate) == squashed:
            return candidate
    return None


def _squash(name: str) -> str:
    return "".join(ch for ch in name.lower() if ch.isalnum())


def _kind(value: Any) -> str:
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, list):
        return "a list"
    if value is None:
        return "null"
    if isinstance(value, str):
        return "text"
    return "a number"


def _show(value: Any) -> str:
    # ASCII escapes (json.dumps' default): a lone surrogate or NUL is shown, never sent raw.
    text = json.dumps(value, default=str)
    return text if len(text) <= 40 else text[:37] + "..."


Parser = Callable[[Mapping[str, Any]], ParsedAlert]

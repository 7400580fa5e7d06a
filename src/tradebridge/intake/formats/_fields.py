"""Typed reads of an alert's fields, shared by the payload formats' parsers.

``FieldReader`` reads a JSON object's fields as text, keywords, numbers, whole contracts,
booleans, objects and fire times, and remembers which it read. Every number is bounded
against sane magnitudes before any Decimal arithmetic, every text field against a length;
``1.5`` contracts is an error, never 1. Each refusal is an ``AlertRejected`` (a 400) naming
the field and what it expects.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from collections.abc import Set as AbstractSet
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from tradebridge.domain.products import MAX_CONTRACTS, MAX_MAGNITUDE
from tradebridge.intake.formats.alert import AlertRejected

MAX_TEXT_CHARS = 500
"""Characters a text field (symbol, account, strategy, id, comment...) may have."""
MIN_EXPONENT = -30
"""Every number an alert carries (prices, brackets, multipliers) is smaller than
``MAX_MAGNITUDE`` in size and, unless it is zero, not smaller than 10**-30."""


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


def unsupported(field: str, what: str) -> None:
    """Raise a 400: ``field`` asks for ``what``, which tradebridge cannot honour."""
    raise AlertRejected(
        f"{field}: tradebridge does not support {what}",
        field=field,
        expected="the supported subset in docs/tradingview.md",
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

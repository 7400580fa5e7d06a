"""Contract symbols (``MNQZ6``), CME month codes and the roll calendar.

A Tradovate contract name is the product root, a CME month code and the last digit of the
year. TradingView adds continuous symbols (``MNQ1!``), exchange prefixes
(``CME_MINI:MNQ1!``) and four-digit years (``MNQZ2026``). Everything here is pure: the
current date is always an argument.

The calendar follows the exchanges' rules with the fixed-date holidays only (New Year,
Juneteenth, Independence Day, Christmas; not Good Friday, Thanksgiving or the Monday
holidays), an approximation of at most a business day, stated here so nobody is surprised:

* equity index (ES, NQ, YM, RTY and micros): expire on the third Friday of the quarterly
  month; the front month rolls 8 days earlier (the second Thursday), as volume does;
* crude (CL, MCL): expire 3 (CL) or 4 (MCL) business days before the 25th of the month
  before the contract month; roll a few days earlier;
* metals (GC, MGC): expire on the third-last business day of the contract month; the front
  month rolls before first notice, at the end of the month before, through the liquid
  months G J M Q V Z.

The roll days are each product's default (``Product.roll_days``); a ``RollCalendar`` built
from the settings (``[contracts] roll_days``) overrides them per root, for a chart whose
continuous symbol rolls on another day. Nobody has checked the defaults against the day
TradingView's ``1!`` rolls.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date, timedelta

from tradebridge.domain.products import ExpiryRule, Product, product
from tradebridge.errors import InvalidSymbol

MONTH_CODES = "FGHJKMNQUVXZ"
"""CME month codes, January to December."""

_EXPLICIT = re.compile(r"^([A-Z0-9]{1,4}?)([FGHJKMNQUVXZ])(\d{1,4})$")
_CONTINUOUS = re.compile(r"^([A-Z0-9]{1,4}?)([12])!$")


def month_code(month: int) -> str:
    """Return the CME code of a month number (1..12)."""
    return MONTH_CODES[month - 1]


def month_of(code: str) -> int:
    """Return the month number of a CME month code."""
    index = MONTH_CODES.find(code.upper())
    if index < 0 or len(code) != 1:
        raise InvalidSymbol(f"{code!r} is not a CME month code ({MONTH_CODES})")
    return index + 1


@dataclass(frozen=True, slots=True, order=True)
class ContractSymbol:
    """One futures contract: a root and a delivery month."""

    root: str
    year: int
    month: int

    @property
    def name(self) -> str:
        """Return Tradovate's name, e.g. ``MNQZ6``."""
        return f"{self.root}{month_code(self.month)}{self.year % 10}"

    @property
    def tradingview_name(self) -> str:
        """Return TradingView's name, e.g. ``MNQZ2026``."""
        return f"{self.root}{month_code(self.month)}{self.year}"

    @property
    def product(self) -> Product:
        """Return the product of this contract."""
        return product(self.root)

    def expiry(self) -> date:
        """Return the last trading day."""
        return expiry_date(self.product, self.year, self.month)

    def roll_date(self, calendar: RollCalendar | None = None) -> date:
        """Return the first day on which the next contract is the front month."""
        return self.expiry() - timedelta(days=(calendar or DEFAULT_ROLLS).roll_days(self.root))

    def is_expired(self, today: date) -> bool:
        """Return whether the contract no longer trades on ``today``."""
        return today > self.expiry()

    def __str__(self) -> str:
        return self.name


@dataclass(frozen=True, slots=True)
class RollCalendar:
    """How many calendar days before expiry each product's front month moves on.

    ``overrides`` maps a root to its days; a root it does not name keeps its product's
    default (``Product.roll_days``).
    """

    overrides: Mapping[str, int] = field(default_factory=dict)

    def roll_days(self, root: str) -> int:
        """Return the days before expiry on which ``root``'s front month moves on."""
        days = self.overrides.get(root.upper())
        return product(root).roll_days if days is None else days


DEFAULT_ROLLS = RollCalendar()
"""Every product on its built-in roll days."""


def _fixed_holidays(year: int) -> set[date]:
    days = set()
    for month, day in ((1, 1), (6, 19), (7, 4), (12, 25)):
        holiday = date(year, month, day)
        if holiday.weekday() == 5:  # observed on the Friday before
            holiday -= timedelta(days=1)
        elif holiday.weekday() == 6:  # observed on the Monday after
            holiday += timedelta(days=1)
        days.add(holiday)
    return days


def is_business_day(day: date) -> bool:
    """Return whether exchanges trade a full day (weekdays minus fixed-date holidays)."""
    return day.weekday() < 5 and day not in _fixed_holidays(day.year)


def _business_days_back(day: date, count: int) -> date:
    while count > 0:
        day -= timedelta(days=1)
        if is_business_day(day):
            count -= 1
    return day


def expiry_date(prod: Product, year: int, month: int) -> date:
    """Return the last trading day of ``prod`` for the contract month ``year``-``month``."""
    if prod.expiry_rule is ExpiryRule.EQUITY_INDEX:
        first = date(year, month, 1)
        first_friday = first + timedelta(days=(4 - first.weekday()) % 7)
        return first_friday + timedelta(days=14)
    if prod.expiry_rule is ExpiryRule.CRUDE:
        prior_year, prior_month = (year - 1, 12) if month == 1 else (year, month - 1)
        day = date(prior_year, prior_month, 25)
        if not is_business_day(day):  # count from the business day before the 25th
            day = _business_days_back(day, 1)
        return _business_days_back(day, prod.expiry_business_days)
    next_first = date(year + month // 12, month % 12 + 1, 1)
    return _business_days_back(next_first, 3)


def _resolve_year(digits: str, today: date) -> int:
    if len(digits) == 4:
        return int(digits)
    if len(digits) == 2:
        return 2000 + int(digits)
    if len(digits) != 1:
        raise InvalidSymbol(f"year {digits!r} must have 1, 2 or 4 digits")
    # One digit: the year ending in it that is closest to today, biased to the future
    # (listings reach some years out; last year's contracts are recognisably expired).
    base = today.year - 1
    return base + (int(digits) - base) % 10


def strip_exchange(symbol: str) -> str:
    """Drop a TradingView exchange prefix: ``CME_MINI:MNQ1!`` becomes ``MNQ1!``."""
    return symbol.rsplit(":", 1)[-1].strip()


def parse_contract(symbol: str, today: date) -> ContractSymbol:
    """Parse an explicit contract such as ``MNQZ6``, ``MNQZ26`` or ``MNQZ2026``."""
    text = strip_exchange(symbol).upper()
    match = _EXPLICIT.match(text)
    if match is None:
        raise InvalidSymbol(f"{symbol!r} is not a contract like MNQZ6 (root, month code, year)")
    root, code, digits = match.groups()
    product(root)  # unknown roots fail here, with the list of known ones
    return ContractSymbol(root, _resolve_year(digits, today), month_of(code))


def listed_contracts(root: str, today: date, count: int = 4) -> list[ContractSymbol]:
    """Return the next ``count`` unexpired contracts in the product's liquid months."""
    prod = product(root)
    out: list[ContractSymbol] = []
    year, month = today.year, today.month
    while len(out) < count:
        if month_code(month) in prod.trade_months:
            contract = ContractSymbol(prod.root, year, month)
            if not contract.is_expired(today):
                out.append(contract)
        year, month = (year + 1, 1) if month == 12 else (year, month + 1)
    return out


def front_month(
    root: str, today: date, offset: int = 0, calendar: RollCalendar | None = None
) -> ContractSymbol:
    """Return the front contract of ``root`` on ``today`` (``offset=1`` is the next one)."""
    count = offset + 3
    while True:  # a long roll (days beyond a listing cycle) passes more than two contracts
        candidates = [c for c in listed_contracts(root, today, count=count)
                      if today < c.roll_date(calendar)]  # fmt: skip
        if len(candidates) > offset:
            return candidates[offset]
        count += 3


def resolve_symbol(
    symbol: str,
    today: date,
    root_map: dict[str, str] | None = None,
    calendar: RollCalendar | None = None,
) -> ContractSymbol:
    """Resolve any accepted spelling to one unexpired contract.

    Accepts explicit contracts (``MNQZ6``, ``MNQZ2026``), continuous symbols (``MNQ1!`` is
    the front month, ``MNQ2!`` the next), exchange prefixes (``CME_MINI:MNQ1!``) and bare
    roots (``MNQ``). ``root_map`` maps one root to another (trade ``MNQ`` for ``NQ``);
    ``calendar`` says when each root's front month moves on (the defaults without it).
    """
    text = strip_exchange(symbol).upper()
    if not text:
        raise InvalidSymbol("the symbol is empty")
    roots = root_map or {}
    continuous = _CONTINUOUS.match(text)
    if continuous is not None:
        root, nth = continuous.groups()
        return front_month(roots.get(root, root), today, int(nth) - 1, calendar)
    if text in roots or _is_root(text):
        return front_month(roots.get(text, text), today, calendar=calendar)
    contract = parse_contract(text, today)
    if month_code(contract.month) not in contract.product.listed_months:
        raise InvalidSymbol(f"{contract.name}: {contract.root} lists no contract in that month")
    if contract.root in roots:
        contract = ContractSymbol(roots[contract.root], contract.year, contract.month)
    if contract.is_expired(today):
        current = front_month(contract.root, today, calendar=calendar)
        raise InvalidSymbol(
            f"{contract.name} expired on {contract.expiry().isoformat()}; "
            f"the front month is {current.name}"
        )
    return contract


def follows_roll(symbol: str, root_map: dict[str, str] | None = None) -> bool:
    """Return whether ``symbol`` names no month: a continuous symbol (``MNQ1!``, with or
    without an exchange prefix) or a bare root, which resolve through the roll calendar."""
    text = strip_exchange(symbol).upper()
    return _CONTINUOUS.match(text) is not None or text in (root_map or {}) or _is_root(text)


def _is_root(text: str) -> bool:
    try:
        product(text)
    except InvalidSymbol:
        return False
    return True

"""Contract symbols and the roll calendar."""

from __future__ import annotations

from datetime import date, timedelta

import pytest

from tradebridge.domain.contracts import (
    ContractSymbol,
    RollCalendar,
    expiry_date,
    front_month,
    month_code,
    month_of,
    parse_contract,
    resolve_symbol,
)
from tradebridge.domain.products import PRODUCTS, product
from tradebridge.errors import InvalidSymbol

TODAY = date(2026, 11, 25)


@pytest.mark.parametrize(("month", "code"), list(enumerate("FGHJKMNQUVXZ", start=1)))
def test_month_code_round_trips_every_cme_month(month: int, code: str) -> None:
    assert month_code(month) == code
    assert month_of(code) == month


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("MNQZ6", ContractSymbol("MNQ", 2026, 12)),
        ("mnqz6", ContractSymbol("MNQ", 2026, 12)),
        ("MNQZ2026", ContractSymbol("MNQ", 2026, 12)),
        ("MNQZ26", ContractSymbol("MNQ", 2026, 12)),
        ("CME_MINI:MNQH7", ContractSymbol("MNQ", 2027, 3)),
        ("M2KZ6", ContractSymbol("M2K", 2026, 12)),
        ("MGCG7", ContractSymbol("MGC", 2027, 2)),
        ("MNQZ5", ContractSymbol("MNQ", 2025, 12)),  # one digit: last year is history
        ("CLF7", ContractSymbol("CL", 2027, 1)),
    ],
)
def test_parse_contract_accepts_every_spelling(text: str, expected: ContractSymbol) -> None:
    assert parse_contract(text, TODAY) == expected


@pytest.mark.parametrize("text", ["", "MNQ", "MNQA6", "XXXZ6", "MNQZ", "MNQZ123", "Z6"])
def test_parse_contract_malformed_or_unknown_raises(text: str) -> None:
    with pytest.raises(InvalidSymbol):
        parse_contract(text, TODAY)


@pytest.mark.parametrize(
    ("root", "year", "month", "expiry"),
    [
        ("ES", 2026, 12, date(2026, 12, 18)),  # third Friday
        ("MNQ", 2027, 3, date(2027, 3, 19)),
        ("CL", 2027, 1, date(2026, 12, 21)),  # Dec 25 is a Friday: 3 business days before
        ("MCL", 2027, 1, date(2026, 12, 18)),  # one business day earlier than CL
        ("CL", 2026, 12, date(2026, 11, 20)),  # Nov 25 is a Wednesday
        ("GC", 2026, 12, date(2026, 12, 29)),  # third-last business day of December
    ],
)
def test_expiry_date_follows_exchange_rules(root: str, year: int, month: int, expiry: date) -> None:
    assert expiry_date(product(root), year, month) == expiry


@pytest.mark.parametrize(
    ("root", "today", "front"),
    [
        ("MNQ", date(2026, 11, 25), "MNQZ6"),
        ("MNQ", date(2026, 12, 9), "MNQZ6"),  # the day before the roll
        ("MNQ", date(2026, 12, 10), "MNQH7"),  # roll: 8 days before the Dec 18 expiry
        ("ES", date(2027, 3, 20), "ESM7"),
        ("CL", date(2026, 11, 25), "CLF7"),
        ("GC", date(2026, 11, 25), "GCG7"),  # December is past its first-notice roll
        ("GC", date(2026, 10, 1), "GCZ6"),
    ],
)
def test_front_month_rolls_before_expiry(root: str, today: date, front: str) -> None:
    assert front_month(root, today).name == front


@pytest.mark.parametrize(
    ("symbol", "name"),
    [
        ("MNQ1!", "MNQZ6"),
        ("MNQ2!", "MNQH7"),
        ("CME_MINI:MNQ1!", "MNQZ6"),
        ("MNQ", "MNQZ6"),
        ("MNQZ6", "MNQZ6"),
        ("MNQZ2026", "MNQZ6"),
        ("NQ1!", "NQZ6"),
    ],
)
def test_resolve_symbol_maps_tradingview_spellings(symbol: str, name: str) -> None:
    assert resolve_symbol(symbol, TODAY).name == name


def test_resolve_symbol_applies_root_map() -> None:
    assert resolve_symbol("NQ1!", TODAY, {"NQ": "MNQ"}).name == "MNQZ6"


def test_resolve_symbol_expired_contract_names_the_front_month() -> None:
    with pytest.raises(
        InvalidSymbol, match=r"MNQZ5 expired on 2025-12-19; the front month is MNQZ6"
    ):
        resolve_symbol("MNQZ5", TODAY)


def test_resolve_symbol_unlisted_month_raises() -> None:
    with pytest.raises(InvalidSymbol, match="lists no contract"):
        resolve_symbol("ESF7", TODAY)


def test_every_product_has_a_front_month_all_year() -> None:
    for root in PRODUCTS:
        for month in range(1, 13):
            day = date(2027, month, 15)
            contract = front_month(root, day)
            assert not contract.is_expired(day)
            assert day < contract.roll_date()


# MNQZ6 expires on Friday 2026-12-18; by default MNQ1! moves to MNQH7 on 2026-12-10.
LATE_MNQ = RollCalendar({"MNQ": 3})


@pytest.mark.parametrize(
    ("symbol", "today", "name"),
    [
        ("MNQ1!", date(2026, 12, 10), "MNQZ6"),  # the default roll day: still the old month
        ("MNQ1!", date(2026, 12, 14), "MNQZ6"),  # the day before its own roll
        ("MNQ1!", date(2026, 12, 15), "MNQH7"),  # 3 days before expiry
        ("CME_MINI:MNQ1!", date(2026, 12, 14), "MNQZ6"),
        ("MNQ", date(2026, 12, 14), "MNQZ6"),
        ("MNQ2!", date(2026, 12, 14), "MNQH7"),
        ("MNQ2!", date(2026, 12, 15), "MNQM7"),
    ],
)
def test_resolve_symbol_root_rolled_later_resolves_to_the_old_month_until_its_roll(
    symbol: str, today: date, name: str
) -> None:
    assert resolve_symbol(symbol, today, calendar=LATE_MNQ).name == name


def test_resolve_symbol_roll_override_follows_the_root_map() -> None:
    assert resolve_symbol("NQ1!", date(2026, 12, 14), {"NQ": "MNQ"}, LATE_MNQ).name == "MNQZ6"


def test_roll_calendar_roots_it_does_not_name_keep_their_default() -> None:
    assert resolve_symbol("ES1!", date(2026, 12, 14), calendar=LATE_MNQ).name == "ESH7"
    assert LATE_MNQ.roll_days("ES") == product("ES").roll_days


def test_contract_roll_date_follows_the_calendar() -> None:
    contract = ContractSymbol("MNQ", 2026, 12)

    assert contract.roll_date() == date(2026, 12, 10)
    assert contract.roll_date(LATE_MNQ) == date(2026, 12, 15)
    assert contract.roll_date(RollCalendar({"MNQ": 0})) == date(2026, 12, 18)


def test_front_month_roll_longer_than_the_listing_cycle_still_finds_the_next_contracts() -> None:
    calendar = RollCalendar({"CL": 90})
    day = date(2026, 11, 25)

    first, second = (front_month("CL", day, n, calendar) for n in (0, 1))

    assert day < first.roll_date(calendar) < second.roll_date(calendar)
    assert first.roll_date(calendar) - day <= timedelta(days=31)


def test_tick_value_matches_exchange_specs() -> None:
    assert product("ES").tick_value == 12.5
    assert product("MNQ").tick_value == 0.5
    assert product("CL").tick_value == 10
    assert product("MGC").tick_value == 1

"""The pre-trade rules (pipeline/risk.py): each at, below and above its limit; exits pass them
all; the engine's order; which setting wins (strategy over account over global); sessions and
trading days in the exchange's time zone (domain/sessions.py)."""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from tradebridge.config import AccountConfig, RiskConfig, Settings
from tradebridge.domain.commands import Bracket, SubmitOrder
from tradebridge.domain.contracts import parse_contract
from tradebridge.domain.enums import OrderType, Side
from tradebridge.domain.ids import AccountName, ClientOrderId
from tradebridge.domain.sessions import session_at, trading_day, trading_day_start
from tradebridge.pipeline.risk import (
    RULES,
    AccountState,
    OrderFacts,
    RiskLimits,
    Rule,
    Rules,
    allowed_roots,
    assess,
    check_order,
    cooldown,
    daily_loss_limit,
    daily_profit_target,
    flatten_at,
    max_account_position,
    max_open_orders,
    max_order_qty,
    max_orders_per_day,
    max_orders_per_minute,
    max_position,
    require_stop_loss,
    rules_for,
    stop_distance,
    trading_window,
    trailing_drawdown,
)

CHICAGO = ZoneInfo("America/Chicago")
TODAY = date(2026, 11, 25)
MNQ = parse_contract("MNQZ6", TODAY)
MES = parse_contract("MESZ6", TODAY)


def _ct(*args: int) -> datetime:
    """Return a Chicago wall-clock time as UTC."""
    return datetime(*args, tzinfo=CHICAGO).astimezone(UTC)  # type: ignore[misc]


NOW = _ct(2026, 11, 25, 9, 0)  # a Wednesday morning, in session


def _order(
    quantity: int = 1,
    side: Side = Side.BUY,
    *,
    contract: Any = MNQ,
    bracket: Bracket | None = None,
    limit: Decimal | None = None,
) -> SubmitOrder:
    return SubmitOrder(
        client_order_id=ClientOrderId("tb-x"), account=AccountName("A1"), contract=contract,
        side=side, order_type=OrderType.LIMIT if limit is not None else OrderType.MARKET,
        quantity=quantity, limit_price=limit, bracket=bracket,
    )  # fmt: skip


def _facts(command: SubmitOrder | None = None, **kw: Any) -> OrderFacts:
    kw.setdefault("now", NOW)
    kw.setdefault("position", 0)
    return OrderFacts(command or _order(), **kw)


def _money(text: str) -> Decimal:
    return Decimal(text)


# Each: an id, the rule, the rules in force, the order, the account's state, passes.
CASES: list[tuple[str, Rule, Rules, OrderFacts, AccountState, bool]] = [
    # max_order_qty 5
    ("qty below", max_order_qty, Rules(max_order_qty=5), _facts(_order(4)), AccountState(), True),
    ("qty at", max_order_qty, Rules(max_order_qty=5), _facts(_order(5)), AccountState(), True),
    ("qty above", max_order_qty, Rules(max_order_qty=5), _facts(_order(6)), AccountState(), False),
    # max_position 5, long 3 (and short 3 selling)
    ("position below", max_position, Rules(max_position=5), _facts(_order(1), position=3),
     AccountState(), True),
    ("position at", max_position, Rules(max_position=5), _facts(_order(2), position=3),
     AccountState(), True),
    ("position above", max_position, Rules(max_position=5), _facts(_order(3), position=3),
     AccountState(), False),
    ("position above, short", max_position, Rules(max_position=5),
     _facts(_order(3, Side.SELL), position=-3), AccountState(), False),
    # max_account_position 8: 4 MES held, MNQ 3 held
    ("account below", max_account_position, Rules(max_account_position=8),
     _facts(_order(0 + 1), position=2, positions={"MESZ6": -4, "MNQZ6": 2}), AccountState(),
     True),
    ("account at", max_account_position, Rules(max_account_position=8),
     _facts(_order(1), position=3, positions={"MESZ6": -4, "MNQZ6": 3}), AccountState(), True),
    ("account above", max_account_position, Rules(max_account_position=8),
     _facts(_order(2), position=3, positions={"MESZ6": -4, "MNQZ6": 3}), AccountState(), False),
    # max_open_orders 3: one more may make it 3
    ("open below", max_open_orders, Rules(max_open_orders=3), _facts(),
     AccountState(open_orders=2), True),
    ("open at", max_open_orders, Rules(max_open_orders=3), _facts(),
     AccountState(open_orders=3), False),
    ("open above", max_open_orders, Rules(max_open_orders=3), _facts(),
     AccountState(open_orders=4), False),
    # max_orders_per_minute 30, per day 300
    ("minute below", max_orders_per_minute, Rules(max_orders_per_minute=30), _facts(),
     AccountState(orders_last_minute=29), True),
    ("minute at", max_orders_per_minute, Rules(max_orders_per_minute=30), _facts(),
     AccountState(orders_last_minute=30), False),
    ("minute above", max_orders_per_minute, Rules(max_orders_per_minute=30), _facts(),
     AccountState(orders_last_minute=31), False),
    ("day below", max_orders_per_day, Rules(max_orders_per_day=300), _facts(),
     AccountState(orders_today=299), True),
    ("day at", max_orders_per_day, Rules(max_orders_per_day=300), _facts(),
     AccountState(orders_today=300), False),
    ("day above", max_orders_per_day, Rules(max_orders_per_day=300), _facts(),
     AccountState(orders_today=301), False),
    # daily loss limit 1000 from a day that began at 50,000
    ("loss below", daily_loss_limit, Rules(daily_loss_limit=_money("1000")), _facts(),
     AccountState(balance=_money("49000.01"), day_start_balance=_money("50000")), True),
    ("loss at", daily_loss_limit, Rules(daily_loss_limit=_money("1000")), _facts(),
     AccountState(balance=_money("49000"), day_start_balance=_money("50000")), False),
    ("loss above", daily_loss_limit, Rules(daily_loss_limit=_money("1000")), _facts(),
     AccountState(balance=_money("48999.99"), day_start_balance=_money("50000")), False),
    ("loss unknown balance", daily_loss_limit, Rules(daily_loss_limit=_money("1000")), _facts(),
     AccountState(), False),
    # daily profit target 500
    ("profit below", daily_profit_target, Rules(daily_profit_target=_money("500")), _facts(),
     AccountState(balance=_money("50499.99"), day_start_balance=_money("50000")), True),
    ("profit at", daily_profit_target, Rules(daily_profit_target=_money("500")), _facts(),
     AccountState(balance=_money("50500"), day_start_balance=_money("50000")), False),
    ("profit above", daily_profit_target, Rules(daily_profit_target=_money("500")), _facts(),
     AccountState(balance=_money("50600"), day_start_balance=_money("50000")), False),
    # trailing drawdown 2500, margin 100, high water 51,000: threshold 48,500
    ("trailing below", trailing_drawdown,
     Rules(trailing_drawdown=_money("2500"), trailing_margin=_money("100")), _facts(),
     AccountState(balance=_money("48600.01"), high_water=_money("51000")), True),
    ("trailing at", trailing_drawdown,
     Rules(trailing_drawdown=_money("2500"), trailing_margin=_money("100")), _facts(),
     AccountState(balance=_money("48600"), high_water=_money("51000")), False),
    ("trailing above", trailing_drawdown,
     Rules(trailing_drawdown=_money("2500"), trailing_margin=_money("100")), _facts(),
     AccountState(balance=_money("48599.99"), high_water=_money("51000")), False),
    # the threshold stops trailing at 50,100: high water 53,000 would make it 50,500
    ("trailing stopped", trailing_drawdown,
     Rules(trailing_drawdown=_money("2500"), trailing_stop_balance=_money("50100")), _facts(),
     AccountState(balance=_money("50200"), high_water=_money("53000")), True),
    ("trailing start balance", trailing_drawdown,
     Rules(trailing_drawdown=_money("2500"), trailing_start_balance=_money("50000")), _facts(),
     AccountState(balance=_money("47500"), high_water=_money("49000")), False),
    # cooldown 30 s after the last entry on the root
    ("cooldown below", cooldown, Rules(cooldown_s=30.0), _facts(),
     AccountState(last_entry=NOW - timedelta(seconds=29)), False),
    ("cooldown at", cooldown, Rules(cooldown_s=30.0), _facts(),
     AccountState(last_entry=NOW - timedelta(seconds=30)), True),
    ("cooldown above", cooldown, Rules(cooldown_s=30.0), _facts(),
     AccountState(last_entry=NOW - timedelta(seconds=31)), True),
    ("cooldown no entry", cooldown, Rules(cooldown_s=30.0), _facts(), AccountState(), True),
    # stop distance 8..40 ticks (MNQ tick 0.25)
    ("stop under min", stop_distance, Rules(min_stop_ticks=8),
     _facts(_order(bracket=Bracket(stop_loss_ticks=7))), AccountState(), False),
    ("stop at min", stop_distance, Rules(min_stop_ticks=8),
     _facts(_order(bracket=Bracket(stop_loss_ticks=8))), AccountState(), True),
    ("stop over min", stop_distance, Rules(min_stop_ticks=8),
     _facts(_order(bracket=Bracket(stop_loss_ticks=9))), AccountState(), True),
    ("stop under max", stop_distance, Rules(max_stop_ticks=40),
     _facts(_order(bracket=Bracket(stop_loss_ticks=39))), AccountState(), True),
    ("stop at max", stop_distance, Rules(max_stop_ticks=40),
     _facts(_order(bracket=Bracket(stop_loss_ticks=40))), AccountState(), True),
    ("stop over max", stop_distance, Rules(max_stop_ticks=40),
     _facts(_order(bracket=Bracket(stop_loss_ticks=41))), AccountState(), False),
    ("stop price from limit", stop_distance, Rules(max_stop_ticks=40),
     _facts(_order(limit=Decimal(21000), bracket=Bracket(stop_loss=Decimal("20989.75")))),
     AccountState(), False),
    ("stop price from reference", stop_distance, Rules(min_stop_ticks=8),
     _facts(_order(bracket=Bracket(stop_loss=Decimal(20998))), entry_price=Decimal(21000)),
     AccountState(), True),
    ("stop price, no reference", stop_distance, Rules(min_stop_ticks=8),
     _facts(_order(bracket=Bracket(stop_loss=Decimal(20998)))), AccountState(), False),
    # a stop loss required
    ("stop required, given", require_stop_loss, Rules(require_stop_loss=True),
     _facts(_order(bracket=Bracket(stop_loss_ticks=20))), AccountState(), True),
    ("stop required, target only", require_stop_loss, Rules(require_stop_loss=True),
     _facts(_order(bracket=Bracket(take_profit_ticks=20))), AccountState(), False),
    ("stop required, none", require_stop_loss, Rules(require_stop_loss=True), _facts(),
     AccountState(), False),
    # allowed roots
    ("root allowed", allowed_roots, Rules(allowed_roots=frozenset({"MNQ"})), _facts(),
     AccountState(), True),
    ("root not allowed", allowed_roots, Rules(allowed_roots=frozenset({"MES", "ES"})), _facts(),
     AccountState(), False),
    # trading window: CME 17:00-16:00 Chicago, no entries in the last 10 minutes
    ("window 11 min before close", trading_window, Rules(trading_hours=True,
     no_entry_before_close_min=10), _facts(now=_ct(2026, 11, 25, 15, 49)), AccountState(), True),
    ("window 10 min before close", trading_window, Rules(trading_hours=True,
     no_entry_before_close_min=10), _facts(now=_ct(2026, 11, 25, 15, 50)), AccountState(), False),
    ("window 9 min before close", trading_window, Rules(trading_hours=True,
     no_entry_before_close_min=10), _facts(now=_ct(2026, 11, 25, 15, 51)), AccountState(), False),
    ("window daily break", trading_window, Rules(trading_hours=True),
     _facts(now=_ct(2026, 11, 25, 16, 30)), AccountState(), False),
    ("window evening session", trading_window, Rules(trading_hours=True),
     _facts(now=_ct(2026, 11, 25, 17, 0)), AccountState(), True),
    ("window saturday", trading_window, Rules(trading_hours=True),
     _facts(now=_ct(2026, 12, 5, 10, 0)), AccountState(), False),
    ("window sunday evening", trading_window, Rules(trading_hours=True),
     _facts(now=_ct(2026, 12, 6, 17, 30)), AccountState(), True),
    ("window friday evening", trading_window, Rules(trading_hours=True),
     _facts(now=_ct(2026, 12, 4, 17, 30)), AccountState(), False),
    ("window christmas", trading_window, Rules(trading_hours=True),
     _facts(now=_ct(2026, 12, 25, 9, 0)), AccountState(), False),
    ("window christmas eve evening", trading_window, Rules(trading_hours=True),
     _facts(now=_ct(2026, 12, 24, 18, 0)), AccountState(), False),
    ("window summer (CDT) before close", trading_window, Rules(trading_hours=True,
     no_entry_before_close_min=10), _facts(now=_ct(2026, 7, 15, 15, 49)), AccountState(), True),
    ("window summer (CDT) in last minutes", trading_window, Rules(trading_hours=True,
     no_entry_before_close_min=10), _facts(now=_ct(2026, 7, 15, 15, 55)), AccountState(), False),
    # flat from 15:55 until the 17:00 reset (Chicago)
    ("flat before", flatten_at, Rules(flatten_at=time(15, 55)),
     _facts(now=_ct(2026, 11, 25, 15, 54)), AccountState(), True),
    ("flat at", flatten_at, Rules(flatten_at=time(15, 55)),
     _facts(now=_ct(2026, 11, 25, 15, 55)), AccountState(), False),
    ("flat after", flatten_at, Rules(flatten_at=time(15, 55)),
     _facts(now=_ct(2026, 11, 25, 16, 59)), AccountState(), False),
    ("flat over at the reset", flatten_at, Rules(flatten_at=time(15, 55)),
     _facts(now=_ct(2026, 11, 25, 17, 0)), AccountState(), True),
    ("flat past midnight, before", flatten_at, Rules(flatten_at=time(18, 0),
     day_reset=time(2, 0)), _facts(now=_ct(2026, 11, 25, 17, 59)), AccountState(), True),
    ("flat past midnight, after", flatten_at, Rules(flatten_at=time(18, 0),
     day_reset=time(2, 0)), _facts(now=_ct(2026, 11, 26, 1, 59)), AccountState(), False),
]  # fmt: skip


@pytest.mark.parametrize(
    ("rule", "rules", "facts", "state", "passes"),
    [pytest.param(*case[1:], id=case[0]) for case in CASES],
)
def test_rule_at_below_and_above_its_limit(
    rule: Rule, rules: Rules, facts: OrderFacts, state: AccountState, passes: bool
) -> None:
    verdict = rule(facts, state, rules)

    assert verdict is not None
    assert verdict.passed is passes, verdict.reason
    assert verdict.rule in {r.__name__ for r in RULES}
    assert verdict.setting.startswith("risk.")


@pytest.mark.parametrize("rule", RULES, ids=lambda r: r.__name__)
def test_rule_off_gives_no_verdict(rule: Rule) -> None:
    assert rule(_facts(), AccountState(), Rules()) is None


# Every rule at its strictest, every state past its limit.
STRICT = Rules(
    allowed_roots=frozenset({"ES"}), max_order_qty=1, max_position=1, max_account_position=1,
    max_open_orders=1, max_orders_per_minute=1, max_orders_per_day=1,
    daily_loss_limit=Decimal(1), daily_profit_target=Decimal(1), trailing_drawdown=Decimal(1),
    trading_hours=True, no_entry_before_close_min=600, cooldown_s=3600.0, min_stop_ticks=100,
    max_stop_ticks=100, require_stop_loss=True, flatten_at=time(0, 0),
)  # fmt: skip
BROKE = AccountState(
    open_orders=9, orders_last_minute=9, orders_today=9, last_entry=NOW,
    balance=Decimal(40000), day_start_balance=Decimal(50000), high_water=Decimal(60000),
)  # fmt: skip


@pytest.mark.parametrize(
    ("position", "side", "quantity"),
    [(5, Side.SELL, 5), (5, Side.SELL, 2), (-3, Side.BUY, 3), (-3, Side.BUY, 1)],
    ids=["exit long", "reduce long", "exit short", "reduce short"],
)
def test_order_that_only_reduces_passes_every_rule_and_the_kill_switch(
    position: int, side: Side, quantity: int
) -> None:
    facts = _facts(_order(quantity, side), position=position, now=_ct(2026, 12, 5, 10, 0))

    verdicts, denied = check_order(facts, BROKE, STRICT, RiskLimits(kill_switch=True))

    assert denied is None
    assert [v.rule for v in verdicts] == ["reduces_only"]


def test_reverse_through_zero_is_no_exit_and_is_judged() -> None:
    facts = _facts(_order(6, Side.SELL), position=3)

    _, denied = check_order(facts, AccountState(), Rules(max_order_qty=5), RiskLimits())

    assert denied is not None
    assert denied.rule == "max_order_qty"


def test_engine_runs_kill_switch_first_then_rules_in_order_and_names_the_first() -> None:
    facts = _facts(_order(2, bracket=Bracket(stop_loss_ticks=5)))
    verdicts = assess(facts, BROKE, STRICT, RiskLimits(kill_switch=True))
    _, denied = check_order(facts, BROKE, STRICT, RiskLimits(kill_switch=True))

    assert [v.rule for v in verdicts] == ["kill_switch", *(r.__name__ for r in RULES)]
    # It has a stop, and a day 10,000 down is no profit: every other rule denies.
    assert [v.rule for v in verdicts if v.passed] == ["require_stop_loss", "daily_profit_target"]
    assert denied is not None
    assert denied.rule == "kill_switch"
    assert denied.reason.startswith("kill switch is on")
    assert "also denied by allowed_roots, max_order_qty" in denied.reason
    assert len(denied.detail()["verdicts"]) == len(verdicts)


def test_denial_names_the_rule_its_numbers_and_setting() -> None:
    rules = Rules(max_order_qty=5, origin=(("max_order_qty", "accounts[A1].risk.max_order_qty"),))

    _, denied = check_order(_facts(_order(7)), AccountState(), rules, RiskLimits())

    assert denied is not None
    assert denied.reason == (
        "risk rule max_order_qty: quantity 7 exceeds the limit of 5 contracts per order "
        "(accounts[A1].risk.max_order_qty)"
    )
    assert denied.field == "quantity"
    [verdict] = [v for v in denied.verdicts if not v.passed]
    assert verdict.to_json()["numbers"] == {"quantity": "7", "limit": "5"}


# --- which setting wins -----------------------------------------------------------------------


def _settings() -> Settings:
    return Settings(
        risk=RiskConfig(
            max_order_qty=10, max_position=8, cooldown_s=5.0,
            strategies={"scalper": {"max_order_qty": 2, "cooldown_s": "off"}},
        ),
        accounts=[
            AccountConfig(name="A1", risk={"max_order_qty": 5, "max_position": "off"}),
            AccountConfig(name="A2"),
        ],
    )  # fmt: skip


@pytest.mark.parametrize(
    ("account", "strategy", "qty", "position", "cooldown_s", "qty_from"),
    [
        ("A2", None, 10, 8, 5.0, "risk.max_order_qty"),
        ("A1", None, 5, None, 5.0, "accounts[A1].risk.max_order_qty"),
        ("A1", "other", 5, None, 5.0, "accounts[A1].risk.max_order_qty"),
        ("A1", "scalper", 2, None, None, "risk.strategies.scalper.max_order_qty"),
        ("A2", "scalper", 2, 8, None, "risk.strategies.scalper.max_order_qty"),
    ],
)
def test_rules_strategy_over_account_over_global(
    account: str,
    strategy: str | None,
    qty: int,
    position: int | None,
    cooldown_s: float | None,
    qty_from: str,
) -> None:
    rules = rules_for(_settings(), account, strategy)

    assert (rules.max_order_qty, rules.max_position, rules.cooldown_s) == (
        qty, position, cooldown_s,
    )  # fmt: skip
    assert rules.setting("max_order_qty") == qty_from


def test_rules_defaults_are_on_and_rails_undefined() -> None:
    rules = rules_for(Settings(risk=RiskConfig()), "A1", None)

    assert (rules.max_order_qty, rules.max_position, rules.max_account_position) == (10, 10, 20)
    assert (rules.max_open_orders, rules.max_orders_per_minute, rules.max_orders_per_day) == (
        20, 30, 300,
    )  # fmt: skip
    assert rules.trading_hours
    assert rules.no_entry_before_close_min == 10
    assert rules.undefined == {"allowed_roots", "daily_loss_limit", "trailing_drawdown"}
    assert rules.position


def test_rules_all_off_need_no_position() -> None:
    off = dict.fromkeys(
        ("max_order_qty", "max_position", "max_account_position", "max_open_orders",
         "max_orders_per_minute", "max_orders_per_day", "no_entry_before_close_min",
         "allowed_roots", "daily_loss_limit", "trailing_drawdown"),
        "off",
    )  # fmt: skip
    rules = rules_for(Settings(risk=RiskConfig(**off, trading_hours="always")), "A1", None)

    assert not rules.position
    assert not rules.counts
    assert not rules.balance
    assert rules.undefined == frozenset()


def test_account_wide_rules_are_refused_per_strategy() -> None:
    with pytest.raises(ValueError, match=re.escape(
        "risk.strategies.scalper: flatten_at, flatten_on_loss act on the whole account"
    )):  # fmt: skip
        RiskConfig(strategies={"scalper": {"flatten_at": "15:00", "flatten_on_loss": True}})


@pytest.mark.parametrize(
    ("values", "problem"),
    [
        ({"allowed_roots": ["MNQ", "XYZ"]}, "unknown root(s) XYZ"),
        ({"allowed_roots": []}, "an empty list allows nothing"),
        ({"timezone": "Mars/Olympus"}, "unknown time zone"),
        ({"max_order_qty": 0}, "greater than or equal to 1"),
        ({"daily_loss_limit": -5}, "greater than 0"),
        ({"max_position": "none"}, "off"),
    ],
)
def test_risk_settings_refuse_bad_values(values: dict[str, Any], problem: str) -> None:
    with pytest.raises(ValueError, match=re.escape(problem)):
        RiskConfig(**values)


def test_risk_settings_read_off_and_roots_case_insensitively() -> None:
    config = RiskConfig(max_order_qty="OFF", allowed_roots=["mnq", " mes "])

    assert config.max_order_qty == "off"
    assert config.allowed_roots == ["MNQ", "MES"]


# --- sessions and trading days ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("now", "day"),
    [
        (_ct(2026, 11, 25, 16, 59), date(2026, 11, 25)),
        (_ct(2026, 11, 25, 17, 0), date(2026, 11, 26)),
        (_ct(2026, 11, 25, 17, 1), date(2026, 11, 26)),
        (_ct(2026, 3, 8, 18, 0), date(2026, 3, 9)),  # the evening DST began
    ],
)
def test_trading_day_resets_at_17_chicago(now: datetime, day: date) -> None:
    assert trading_day(now, CHICAGO, time(17, 0)) == day
    start = trading_day_start(now, CHICAGO, time(17, 0))
    assert start.astimezone(CHICAGO).time() == time(17, 0)
    assert start <= now < start + timedelta(days=1, hours=1)


def test_session_of_a_monday_opens_sunday_evening_and_closes_monday_afternoon() -> None:
    session = session_at(_ct(2026, 11, 29, 18, 0), CHICAGO, time(17, 0), time(16, 0))

    assert session is not None
    assert session.trade_date == date(2026, 11, 30)
    assert session.opens == _ct(2026, 11, 29, 17, 0)
    assert session.closes == _ct(2026, 11, 30, 16, 0)


def test_day_session_opens_and_closes_on_its_date() -> None:
    zone = ZoneInfo("America/New_York")
    inside = datetime(2026, 11, 25, 10, 0, tzinfo=zone)

    session = session_at(inside, zone, time(9, 30), time(16, 0))

    assert session is not None
    assert session.trade_date == date(2026, 11, 25)
    assert session_at(inside.replace(hour=9), zone, time(9, 30), time(16, 0)) is None

"""An account's standing (pipeline/standing.py): the day's P&L and the room under each limit,
measured as the rules judge, so a room of 0 or less is exactly a limit the rule enforces."""

from __future__ import annotations

from datetime import UTC, date, datetime, time
from decimal import Decimal
from zoneinfo import ZoneInfo

import pytest

from tradebridge.domain.balance import BalanceMarks
from tradebridge.domain.commands import SubmitOrder
from tradebridge.domain.contracts import parse_contract
from tradebridge.domain.enums import OrderType, Side
from tradebridge.domain.ids import AccountName, ClientOrderId
from tradebridge.pipeline.risk import (
    AccountState,
    OrderFacts,
    Rules,
    daily_loss_limit,
    daily_profit_target,
    max_open_orders,
    max_orders_per_day,
    trailing_drawdown,
)
from tradebridge.pipeline.standing import standing

CHICAGO = ZoneInfo("America/Chicago")
NOW = datetime(2026, 11, 25, 9, 0, tzinfo=CHICAGO).astimezone(UTC)
TODAY = date(2026, 11, 25)
BUY = SubmitOrder(
    client_order_id=ClientOrderId("tb-x"), account=AccountName("A1"),
    contract=parse_contract("MNQZ6", TODAY), side=Side.BUY, order_type=OrderType.MARKET,
    quantity=1,
)  # fmt: skip


def _marks(balance: str, *, day: date = TODAY, start: str = "50000", high: str = "51000"
           ) -> BalanceMarks:  # fmt: skip
    return BalanceMarks(day, Decimal(start), Decimal(high), Decimal(high), Decimal(balance), NOW)


RULES = Rules(
    daily_loss_limit=Decimal(1000), trailing_drawdown=Decimal(2500),
    trailing_margin=Decimal(100), daily_profit_target=Decimal(500), max_orders_per_day=300,
    max_open_orders=3,
)  # fmt: skip


@pytest.mark.parametrize(
    ("balance", "orders_today", "open_orders"),
    [
        ("49000.01", 299, 2),
        ("49000", 300, 3),
        ("48999.99", 301, 4),  # the loss limit
        ("48600.01", 0, 0),
        ("48600", 0, 0),
        ("48599.99", 0, 0),  # the trailing drawdown
        ("50499.99", 0, 0),
        ("50500", 0, 0),
        ("50600", 0, 0),  # the profit target
    ],
)
def test_room_is_spent_exactly_when_the_rule_denies(
    balance: str, orders_today: int, open_orders: int
) -> None:
    marks = _marks(balance)
    found = standing("A1", RULES, NOW, marks=marks, open_orders=open_orders,
                     orders_today=orders_today)  # fmt: skip
    state = AccountState(
        open_orders=open_orders, orders_today=orders_today, balance=marks.balance,
        day_start_balance=marks.day_start_balance, high_water=marks.high_water_intraday,
    )  # fmt: skip
    facts = OrderFacts(BUY, NOW, position=0)

    for rule in (daily_loss_limit, trailing_drawdown, daily_profit_target, max_orders_per_day,
                 max_open_orders):  # fmt: skip
        verdict = rule(facts, state, RULES)
        assert verdict is not None
        room = next(r for r in found.rooms if r.rule == verdict.rule)
        assert room.reached is not verdict.passed, (verdict.rule, room, verdict.reason)


def test_standing_numbers_and_summary() -> None:
    found = standing("A1", RULES, NOW, marks=_marks("49400"), open_orders=1, orders_today=12)

    assert found.day_pnl == Decimal(-600)
    rooms = {r.rule: r for r in found.rooms}
    assert rooms["daily_loss_limit"].room == Decimal(400)
    assert rooms["trailing_drawdown"].limit == Decimal(48500)  # 51,000 less 2,500
    assert rooms["trailing_drawdown"].room == Decimal(800)  # 49,400 - 48,500 - 100
    assert rooms["daily_profit_target"].room == Decimal(1100)
    assert rooms["max_orders_per_day"].room == Decimal(288)
    assert found.reached == []
    assert found.summary() == (
        "P&L -600.00; daily_loss_limit 400.00 left; trailing_drawdown 800.00 left; "
        "daily_profit_target 1100.00 left; max_orders_per_day 288 left; max_open_orders 2 left"
    )
    data = found.as_json()
    assert data["day_pnl"] == "-600"
    assert data["limits"]["daily_loss_limit"] == {
        "value": "-600", "limit": "1000", "room": "400", "reached": False,
        "setting": "risk.daily_loss_limit",
    }  # fmt: skip


def test_a_new_trading_day_without_a_reading_has_no_pnl_yet() -> None:
    yesterday = _marks("48000", day=date(2026, 11, 24))

    found = standing("A1", RULES, NOW, marks=yesterday, open_orders=0, orders_today=0)

    assert found.day_pnl is None
    assert [r.rule for r in found.rooms] == [
        "trailing_drawdown", "max_orders_per_day", "max_open_orders",
    ]  # fmt: skip
    assert found.reached == ["trailing_drawdown"]  # 48,000 is within 100 of 48,500
    assert found.summary().startswith("P&L not read yet today; trailing_drawdown REACHED")


def test_an_account_never_read_shows_its_counts_only() -> None:
    found = standing("A1", Rules(max_orders_per_day=300, flatten_at=time(15, 55)), NOW,
                     marks=None, open_orders=0, orders_today=0)  # fmt: skip

    assert (found.balance, found.day_pnl) == (None, None)
    assert [r.rule for r in found.rooms] == ["max_orders_per_day"]

"""The pre-trade rules end to end: rows in, a real simulator over sockets, the ledger's record.

A denied row ends ``denied`` with the rule and its numbers in ``error_message`` and in
``order_history``, and the simulator's order book proves nothing reached the broker. The
daily loss limit and the trailing drawdown are driven by the simulator's own clock, moved
across the 17:00 Chicago reset by hand.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, time, timedelta
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from _support.rig import front
from tracking.conftest import ACCOUNT, Stack, StackFactory
from tradebridge.domain.enums import Dialect
from tradebridge.domain.lifecycle import SignalStatus
from tradebridge.sim.clock import ManualClock

CHICAGO = ZoneInfo("America/Chicago")


def _sim_orders(stack: Stack) -> int:
    """Return how many orders the simulator holds, of every account."""
    return len(stack.sim.call(stack.sim.ctx.engine.orders))


async def _denial(stack: Stack, signal_id: str) -> dict[str, Any]:
    """Return the ``denied`` event's detail of a row."""
    [event] = [e for e in await stack.ledger.history(signal_id) if e.event == "denied"]
    assert isinstance(event.detail, dict)
    return event.detail


def _verdict(detail: dict[str, Any], rule: str) -> dict[str, Any]:
    [found] = [v for v in detail["verdicts"] if v["rule"] == rule]
    return dict(found)


def _tomorrow_at(hour: int, minute: int) -> ManualClock:
    """Return a simulator clock at ``hour:minute`` Chicago time tomorrow (after the real now,
    so the tokens it issues look fresh to the adapters)."""
    day = datetime.now(CHICAGO).date() + timedelta(days=1)
    start = datetime.combine(day, time(hour, minute), tzinfo=CHICAGO).astimezone(UTC)
    return ManualClock(start)


@pytest.mark.parametrize("dialect", [Dialect.NATIVE, Dialect.TVBRIDGE])
async def test_risk_denied_row_ends_denied_with_rule_in_history_and_nothing_at_the_broker(
    make_stack: StackFactory, dialect: Dialect
) -> None:
    async with make_stack(dialect=dialect, risk={"max_order_qty": 2}) as stack:
        stack.start(stack.dispatcher())
        await stack.insert("big", quantity=3)

        row = await stack.wait("big", "denied")

        assert row.error_message == (
            "risk rule max_order_qty: quantity 3 exceeds the limit of 2 contracts per order "
            "(risk.max_order_qty)"
        )
        events = [e.event for e in await stack.ledger.history("big")]
        assert events == ["claimed", "denied"]
        detail = await _denial(stack, "big")
        assert detail["rule"] == "max_order_qty"
        assert _verdict(detail, "max_order_qty") == {
            "rule": "max_order_qty", "passed": False, "setting": "risk.max_order_qty",
            "reason": "quantity 3 exceeds the limit of 2 contracts per order",
            "numbers": {"quantity": "3", "limit": "2"},
        }  # fmt: skip
        assert _verdict(detail, "kill_switch")["passed"] is True
        calls = [c.call.path for c in await stack.ledger.broker_calls("big")]
        assert not any("order" in path and "place" in path for path in calls), calls
        assert _sim_orders(stack) == 0


async def test_risk_orders_per_minute_stop_a_runaway_loop_and_an_exit_still_passes(
    make_stack: StackFactory,
) -> None:
    async with make_stack(risk={"max_orders_per_minute": 3}) as stack:
        stack.start(stack.dispatcher())
        for n in range(3):
            await stack.insert(f"loop{n}")
            await stack.wait(f"loop{n}", "filled")
        await stack.insert("loop3")

        row = await stack.wait("loop3", "denied")
        await stack.insert("out", intent="exit", side=None, quantity=None)
        out = await stack.wait("out", "filled")

        assert row.error_message is not None
        assert row.error_message.startswith(
            "risk rule max_orders_per_minute: 3 orders sent in the last minute already, the "
            "limit is 3"
        )
        assert out.filled_qty == 3
        assert stack.net_position() == 0
        assert len(stack.entries()) == 4  # three entries and the exit, not the fourth
        [submitted] = [e for e in await stack.ledger.history("out") if e.event == "submitted"]
        assert submitted.detail["entry"] is False
        assert [v["rule"] for v in submitted.detail["risk"]] == ["reduces_only"]


async def test_risk_cooldown_holds_a_second_entry_on_the_root_not_its_exit_or_another_root(
    make_stack: StackFactory,
) -> None:
    async with make_stack(risk={"cooldown_s": 3600}) as stack:
        stack.start(stack.dispatcher())
        await stack.insert("first")
        await stack.wait("first", "filled")
        await stack.insert("second")

        second = await stack.wait("second", "denied")
        await stack.insert("other", instrument=front("MES").name)
        await stack.insert("out", intent="exit", side=None, quantity=None)
        await stack.wait("other", "filled")
        await stack.wait("out", "filled")

        assert second.error_message is not None
        assert second.error_message.startswith("risk rule cooldown: the last entry on MNQ was only")
        assert "(cooldown 3600s) (risk.cooldown_s)" in second.error_message
        assert [o.cl_ord_id for o in stack.entries()] == ["tb-first", "tb-other", "tb-out"]


async def test_risk_open_orders_counted_in_the_ledger_refuse_one_more(
    make_stack: StackFactory,
) -> None:
    async with make_stack(risk={"max_open_orders": 2}) as stack:
        stack.start(stack.dispatcher())
        far = (stack.last() / Decimal("0.25")).to_integral_value() * Decimal("0.25") - 200
        for n in range(2):
            await stack.insert(f"rest{n}", order_type="limit", price=far - n)
            await stack.wait(f"rest{n}", "working")
        await stack.insert("third", order_type="limit", price=far - 2)

        row = await stack.wait("third", "denied")

        assert row.error_message == (
            "risk rule max_open_orders: 2 orders of the account are open already, the limit is "
            "2 (risk.max_open_orders)"
        )
        assert len(stack.entries()) == 2


async def test_risk_strategy_rules_win_over_the_global_ones(make_stack: StackFactory) -> None:
    risk = {"max_order_qty": 5, "strategies": {"scalper": {"max_order_qty": 1}}}
    async with make_stack(risk=risk) as stack:
        stack.start(stack.dispatcher())
        await stack.insert("scalp", strategy_name="scalper", quantity=2)
        await stack.insert("swing", quantity=2)

        scalp = await stack.wait("scalp", "denied")
        swing = await stack.wait("swing", "filled")

        assert scalp.error_message is not None
        assert "(risk.strategies.scalper.max_order_qty)" in scalp.error_message
        assert swing.filled_qty == 2
        assert [o.cl_ord_id for o in stack.entries()] == ["tb-swing"]


async def test_risk_daily_loss_limit_holds_until_the_reset_of_the_simulator_clock(
    make_stack: StackFactory,
) -> None:
    clock = _tomorrow_at(16, 50)
    async with make_stack(clock=clock, risk={"daily_loss_limit": 500}) as stack:
        stack.start(stack.dispatcher(clock=clock.now))
        tick = Decimal("0.25")
        start = (stack.last() / tick).to_integral_value() * tick
        await stack.insert("long")
        await stack.wait("long", "filled")
        stack.set_price(start - 300)  # MNQ: $2 a point, 300 points is -$600
        await stack.insert("stopped", intent="exit", side=None, quantity=None)
        await stack.wait("stopped", "filled")

        await stack.insert("again")
        denied = await stack.wait("again", "denied")
        clock.advance(15 * 60)  # 17:05 Chicago: the next trading day
        await stack.insert("tomorrow")
        tomorrow = await stack.wait("tomorrow", "filled")

        assert denied.error_message is not None
        assert denied.error_message.startswith("risk rule daily_loss_limit: the day's P&L is -6")
        assert "the daily loss limit of 500.00 is reached" in denied.error_message
        numbers = _verdict(await _denial(stack, "again"), "daily_loss_limit")["numbers"]
        assert Decimal(numbers["pnl"]) <= -600
        assert numbers["day_start"] == "50000.00"
        assert tomorrow.filled_qty == 1
        assert [o.cl_ord_id for o in stack.entries()] == ["tb-long", "tb-stopped", "tb-tomorrow"]


async def test_risk_trailing_drawdown_end_of_day_trails_a_winning_day_then_stops_a_losing_one(
    make_stack: StackFactory,
) -> None:
    clock = _tomorrow_at(16, 40)
    risk = {"trailing_drawdown": 1500, "trailing_mode": "eod", "trailing_margin": 100}
    async with make_stack(clock=clock, risk=risk) as stack:
        stack.start(stack.dispatcher(clock=clock.now))
        tick = Decimal("0.25")
        start = (stack.last() / tick).to_integral_value() * tick
        # Day 1 wins about $1,000: 500 points on one MNQ.
        await stack.insert("win")
        await stack.wait("win", "filled")
        stack.set_price(start + 500)
        await stack.insert("take", intent="exit", side=None, quantity=None)
        await stack.wait("take", "filled")
        # Day 2 (after 17:00 Chicago) begins about 51,000: the threshold trails to ~49,500.
        clock.advance(25 * 60)
        await stack.insert("day2")
        await stack.wait("day2", "filled")
        stack.set_price(start - 300)  # 800 points down: about -$1,600
        await stack.insert("cut", intent="exit", side=None, quantity=None)
        await stack.wait("cut", "filled")

        await stack.insert("more")
        row = await stack.wait("more", "denied")

        assert row.error_message is not None
        assert row.error_message.startswith("risk rule trailing_drawdown: the balance")
        numbers = _verdict(await _denial(stack, "more"), "trailing_drawdown")["numbers"]
        high, threshold = Decimal(numbers["high_water"]), Decimal(numbers["threshold"])
        assert high > Decimal(50900)  # the winning day's close, not the starting 50,000
        assert threshold == high - 1500
        assert Decimal(numbers["balance"]) - threshold <= 100
        assert numbers["mode"] == "eod"
        assert row.status is SignalStatus.DENIED
        assert len(stack.entries(ACCOUNT)) == 4


async def _high_water(stack: Stack, at_least: Decimal, timeout: float = 15.0) -> Decimal:
    """Wait until the account's intraday high water reaches ``at_least``; return it."""
    deadline = asyncio.get_running_loop().time() + timeout
    found = None
    while asyncio.get_running_loop().time() < deadline:
        found = await stack.ledger.pool.fetchval(
            "select high_water_intraday from account_risk where account_name = $1", ACCOUNT
        )
        if found is not None and found >= at_least:
            return Decimal(found)
        await asyncio.sleep(0.05)
    raise AssertionError(f"high water {found}, not {at_least}")


async def test_risk_intraday_trailing_follows_fills_between_entries(
    make_stack: StackFactory,
) -> None:
    risk = {"trailing_drawdown": 1500, "trailing_mode": "intraday"}
    async with make_stack(risk=risk) as stack:
        stack.start(stack.dispatcher())
        tick = Decimal("0.25")
        start = (stack.last() / tick).to_integral_value() * tick
        await stack.insert("two", quantity=2)
        await stack.wait("two", "filled")
        stack.set_price(start + 500)  # +$1,000 a contract
        await stack.insert("half", intent="exit", side=None, quantity=1)
        await stack.wait("half", "filled")
        # The exit's fill: the balance with the open half, about 52,000, is the high water.
        high = await _high_water(stack, Decimal(51900))
        stack.set_price(start - 700)  # the rest loses 700 points: cash about 49,600
        await stack.insert("rest", intent="exit", side=None, quantity=None)
        await stack.wait("rest", "filled")

        await stack.insert("again")
        row = await stack.wait("again", "denied")

        # Checks of entries alone saw 50,000 and 49,600: the threshold would be 48,500.
        numbers = _verdict(await _denial(stack, "again"), "trailing_drawdown")["numbers"]
        assert Decimal(numbers["high_water"]) == high
        assert Decimal(numbers["threshold"]) == high - 1500
        assert row.error_message is not None
        assert row.error_message.startswith("risk rule trailing_drawdown:")


async def test_risk_position_read_refused_for_want_of_a_token_fails_the_row_never_sent_late(
    make_stack: StackFactory,
) -> None:
    # The rules need the position before a plain order; with every token dead (Redis keeps
    # them) that read is refused. The row waits up to the bound, then fails, like a submit
    # refused for the same reason: never sent late, once a token works again.
    async with make_stack(dispatcher={"unknown_bound_s": 1.0}) as stack:
        stack.sim.call(stack.sim.ctx.auth.expire_all)
        stack.start(stack.dispatcher())
        await stack.insert("stale")

        row = await stack.wait("stale", "failed")

        assert row.error_message is not None
        assert row.error_message.startswith("not placed: it was never sent (no usable token")
        assert row.error_message.endswith("so it is not sent late")
        assert _sim_orders(stack) == 0

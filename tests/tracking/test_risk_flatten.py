"""Flattens the risk rules call for, end to end (issue 13): ``flatten_at`` closes the position at
the set time and refuses entries until the reset; ``flatten_on_loss`` closes it once the
daily loss limit is reached. Each is one ``flatten`` row per account and trading day, queued
by ``RiskWatch`` (every worker runs one; only the first insert counts), placed by the
dispatcher against the simulator; the standing (/healthz, /metrics) shows the limit reached.
"""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

from tracking.conftest import ACCOUNT, ACCOUNT_2, StackFactory
from tradebridge.obs import metrics
from tradebridge.runtime.risk_watch import RiskWatch
from tradebridge.sim.clock import ManualClock

CHICAGO = ZoneInfo("America/Chicago")


def _tomorrow_at(hour: int, minute: int) -> ManualClock:
    """Return a simulator clock at ``hour:minute`` Chicago time tomorrow (after the real now,
    so the tokens it issues look fresh to the adapters)."""
    day = datetime.now(CHICAGO).date() + timedelta(days=1)
    return ManualClock(datetime.combine(day, time(hour, minute), tzinfo=CHICAGO).astimezone(UTC))


def _gauge(name: str, **labels: str) -> float | None:
    return metrics.REGISTRY.get_sample_value(name, labels)


async def test_flatten_at_closes_the_position_once_and_refuses_entries_until_the_reset(
    make_stack: StackFactory,
) -> None:
    clock = _tomorrow_at(15, 50)
    day = clock.now().astimezone(CHICAGO).strftime("%Y%m%d")
    async with make_stack(clock=clock, risk={"flatten_at": "15:55"}) as stack:
        stack.start(stack.dispatcher(clock=clock.now))
        await stack.insert("long", quantity=2)
        await stack.wait("long", "filled")
        watch = RiskWatch(stack.settings, stack.ledger, clock=clock.now)
        other_worker = RiskWatch(stack.settings, stack.ledger, clock=clock.now)
        assert await watch.act(await watch.read()) == []  # 15:50: not yet

        clock.advance(6 * 60)  # 15:56 Chicago
        queued = await watch.act(await watch.read())
        again = await watch.act(await watch.read())
        elsewhere = await other_worker.act(await other_worker.read())
        flat = await stack.wait(f"risk-flat-{ACCOUNT}-{day}-at", "filled")
        await stack.wait(f"risk-flat-{ACCOUNT_2}-{day}-at", "filled", "cancelled", "denied")
        await stack.insert("late")
        late = await stack.wait("late", "denied")
        clock.advance(70 * 60)  # 17:06: the next trading day
        await stack.insert("next")
        following = await stack.wait("next", "filled")
        position = stack.net_position()

    assert queued == [
        (f"risk-flat-{ACCOUNT}-{day}-at", ACCOUNT, "flatten_at"),
        (f"risk-flat-{ACCOUNT_2}-{day}-at", ACCOUNT_2, "flatten_at"),
    ]
    assert again == elsewhere == []  # once per account and day, whoever asks
    assert flat.intent == "flatten"
    assert (flat.strategy_name, flat.metadata) == ("risk", {"by": "risk", "risk": "flatten_at"})
    assert late.error_message is not None
    assert late.error_message.startswith(
        "risk rule flatten_at: the account is flat from 15:55 until the trading day's reset at "
        "17:00 (America/Chicago): no new entries at 15:56"
    ), late.error_message
    assert following.filled_qty == 1
    assert position == 1  # flat at 15:56, then the next day's entry


async def test_flatten_on_loss_closes_the_position_when_the_daily_loss_limit_is_reached(
    make_stack: StackFactory,
) -> None:
    clock = _tomorrow_at(10, 0)
    day = clock.now().astimezone(CHICAGO).strftime("%Y%m%d")
    risk = {"daily_loss_limit": 500, "flatten_on_loss": True}
    async with make_stack(clock=clock, risk=risk) as stack:
        stack.start(stack.dispatcher(clock=clock.now))
        tick = Decimal("0.25")
        start = (stack.last() / tick).to_integral_value() * tick
        await stack.insert("long")
        await stack.wait("long", "filled")
        watch = RiskWatch(stack.settings, stack.ledger, clock=clock.now)
        before = await watch.read()
        assert await watch.act(before) == []
        healthy = await watch.condition()()

        stack.set_price(start - 300)  # MNQ: $2 a point, -$600 open
        await stack.insert("again")  # its check reads the balance: the limit is reached
        await stack.wait("again", "denied")
        after = await watch.read()
        stopped = await watch.condition()()
        queued = await watch.act(after)
        await stack.wait(f"risk-flat-{ACCOUNT}-{day}-loss", "filled")
        twice = await watch.act(await watch.read())
        position = stack.net_position()

    assert before[ACCOUNT].day_pnl is not None
    assert before[ACCOUNT].reached == []
    assert healthy.level == "ok"
    pnl = after[ACCOUNT].day_pnl
    assert pnl is not None
    assert pnl <= -600
    assert after[ACCOUNT].reached == ["daily_loss_limit"]
    assert stopped.level == "degraded"
    assert stopped.detail["stopped"] == {ACCOUNT: ["daily_loss_limit"]}
    limits = stopped.detail["accounts"][ACCOUNT]["limits"]
    assert limits["daily_loss_limit"]["reached"] is True
    assert Decimal(limits["daily_loss_limit"]["room"]) == 500 + pnl
    assert queued == [(f"risk-flat-{ACCOUNT}-{day}-loss", ACCOUNT, "daily_loss_limit")]
    assert twice == []
    assert position == 0
    assert _gauge("tradebridge_risk_limit_reached", account=ACCOUNT,
                  rule="daily_loss_limit") == 1  # fmt: skip
    assert _gauge("tradebridge_risk_day_pnl", account=ACCOUNT) == float(pnl)

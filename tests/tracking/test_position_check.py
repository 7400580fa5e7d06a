"""Reconcile's position check (issue 14): the broker's position against tradebridge's fills.

On the simulator, both dialects, with the dispatcher (tracker and reconcile) running: a
bracketed entry whose take profit fills explains the position it leaves (the leg's fill is
written onto the entry's row); a trade by hand is a divergence, announced by the notifier,
until an operator accepts it; a flatten sent by a row accepts what it leaves.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from decimal import Decimal

import pytest
from click.testing import Result
from typer.testing import CliRunner

from _support.rig import front
from tracking.conftest import ACCOUNT, ACCOUNT_IDS, Stack, StackFactory
from tradebridge.cli.main import app
from tradebridge.domain.enums import Dialect, OrderType, Side
from tradebridge.domain.notices import NoticeKind
from tradebridge.obs import metrics
from tradebridge.runtime.notify import Notifier, Sender
from tradebridge.sim.config import SimConfig
from tradebridge.sim.engine import OrderRequest
from tradebridge.store.ledger import PositionCheck
from tradebridge.tracking.tracker import Tracker

pytestmark = pytest.mark.parametrize("dialect", [Dialect.NATIVE, Dialect.TVBRIDGE])

TICK = front().product.tick_size
CONTRACT = front().name
CHECK_S = 0.3
DEADLINE_S = 30.0


@pytest.fixture
async def stack(make_stack: StackFactory, dialect: Dialect) -> AsyncIterator[Stack]:
    """A stack of ``dialect`` on a market that moves only when told, checking often."""
    dispatcher = {"position_check_s": CHECK_S, "position_settle_s": 0.2}
    async with make_stack(SimConfig(port=0, price_step_s=3600), dialect=dialect,
                          dispatcher=dispatcher) as built:  # fmt: skip
        built.start(built.dispatcher())
        yield built


async def _check(stack: Stack) -> PositionCheck | None:
    found = [c for c in await stack.ledger.position_checks(ACCOUNT) if c.contract == CONTRACT]
    return found[0] if found else None


async def _until(stack: Stack, what: str, ok: Callable[[PositionCheck], bool]) -> PositionCheck:
    """Wait (with a deadline) for a check of the front month that satisfies ``ok``."""
    deadline = asyncio.get_running_loop().time() + DEADLINE_S
    check = None
    while asyncio.get_running_loop().time() < deadline:
        check = await _check(stack)
        if check is not None and ok(check):
            return check
        await asyncio.sleep(0.05)
    raise AssertionError(f"no check {what} within {DEADLINE_S:.0f}s; last: {check}")


async def _checked_after(stack: Stack, check: PositionCheck, times: int = 2) -> PositionCheck:
    """Return the check ``times`` turns after ``check`` (a divergence needs two)."""
    for _ in range(times):
        seen = check.checked_at
        check = await _until(stack, "later", lambda c, seen=seen: c.checked_at != seen)
    return check


def _by_hand(stack: Stack, side: Side, qty: int = 1) -> None:
    """A market order nobody's row placed (a trader's click on the broker's own screen)."""
    manual = OrderRequest(account_id=ACCOUNT_IDS[ACCOUNT], symbol=CONTRACT, action=side,
                          order_type=OrderType.MARKET, order_qty=qty)  # fmt: skip
    stack.sim.call(lambda: stack.sim.ctx.engine.place_order(manual))


def _on_grid(price: Decimal) -> Decimal:
    return (price / TICK).to_integral_value() * TICK


async def _until_gauge(value: float) -> None:
    """Wait (with a deadline) until the divergence gauge of the front month says ``value``."""
    labels = {"account": ACCOUNT, "contract": CONTRACT}
    deadline = asyncio.get_running_loop().time() + DEADLINE_S
    seen = None
    while asyncio.get_running_loop().time() < deadline:
        seen = metrics.REGISTRY.get_sample_value("tradebridge_position_unexplained", labels)
        if seen == value:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"tradebridge_position_unexplained is {seen}, not {value}")


async def _cli(*argv: str) -> Result:
    env = {"TRADEBRIDGE_CONFIG": "", "DATABASE_URL": ""}
    return await asyncio.to_thread(CliRunner().invoke, app, list(argv), env=env,
                                   terminal_width=250)  # fmt: skip


async def _observed(stack: Stack) -> list[str]:
    """Return the keys of the divergences the notifier sees on."""
    notifier = Notifier(stack.settings, stack.ledger, Sender([], stack.settings.notify))
    found = await notifier.sources["positions"]()
    return [o.key for o in found if o.kind is NoticeKind.RECONCILE_DIVERGENCE]


async def test_position_check_take_profit_leg_fill_is_explained_by_its_entry(
    stack: Stack,
) -> None:
    await stack.insert("entry", quantity=2, reference_price=_on_grid(stack.last()),
                       stop_loss_ticks=40, take_profit_ticks=60)  # fmt: skip
    await stack.wait("entry", "filled")
    await _until(stack, "with the entry filled", lambda c: c.broker_net == 2 and c.ours == 2)

    stack.set_price(stack.last() + 80 * TICK)  # through the take profit
    assert stack.net_position() == 0
    check = await _until(stack, "after the take profit", lambda c: c.broker_net == 0)
    check = await _checked_after(stack, check)

    legs = await stack.ledger.pool.fetch(
        "select detail from order_history where signal_id = 'entry' and event = 'leg_fill'"
    )
    assert sum(int(r["detail"]["qty"]) for r in legs) == 2, legs
    assert (check.ours, check.unexplained, check.diverged_since) == (0, 0, None)
    assert await _observed(stack) == []


async def test_position_check_leg_fill_event_lost_is_read_from_the_order_reports(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    await stack.insert("entry", quantity=2, reference_price=_on_grid(stack.last()),
                       stop_loss_ticks=40, take_profit_ticks=60)  # fmt: skip
    await stack.wait("entry", "filled")
    await _until(stack, "with the entry filled", lambda c: c.broker_net == 2 and c.ours == 2)

    async def lost(*_: object) -> bool:  # a leg's events never arrive (the socket was down)
        return True

    monkeypatch.setattr(Tracker, "_apply_leg", lost)
    stack.set_price(stack.last() - 50 * TICK)  # through the stop loss
    assert stack.net_position() == 0
    check = await _until(stack, "after the stop loss", lambda c: c.broker_net == 0)
    check = await _checked_after(stack, check)

    legs = await stack.ledger.pool.fetch(
        "select detail from order_history where signal_id = 'entry' and event = 'leg_fill'"
    )
    assert [r["detail"]["fill_id"] for r in legs] == ["cum@2"]
    assert (check.broker_net, check.unexplained, check.diverged_since) == (0, 0, None)


async def test_position_check_trade_by_hand_diverges_until_accepted(
    stack: Stack, ledger_url: str
) -> None:
    await stack.insert("entry", quantity=1)
    await stack.wait("entry", "filled")
    await _until(stack, "with the entry filled", lambda c: c.broker_net == 1 and c.ours == 1)

    _by_hand(stack, Side.BUY, 2)
    check = await _until(stack, "diverged", lambda c: c.diverged_since is not None)

    assert (check.broker_net, check.ours, check.unexplained) == (3, 1, 2)
    assert await _observed(stack) == [f"position:{ACCOUNT}:{CONTRACT}"]
    await _until_gauge(2.0)
    listed = await _cli("reconcile", "positions", "--database-url", ledger_url)
    assert listed.exit_code == 0, listed.output
    assert f"{ACCOUNT}  {CONTRACT}  broker +3  tradebridge +1" in listed.stdout
    assert "DIVERGED since" in listed.stdout
    assert "+2 unexplained" in listed.stdout
    nobody = await _cli("reconcile", "accept", "NOPE0000001", "--database-url", ledger_url)
    assert nobody.exit_code == 1
    assert "no position check of NOPE0000001 to accept" in nobody.output
    accepted = await _cli("reconcile", "accept", ACCOUNT, "--note", "my own trade",
                          "--database-url", ledger_url)  # fmt: skip
    assert accepted.exit_code == 0, accepted.output
    check = await _checked_after(stack, await _until(stack, "accepted", lambda c: True))
    assert (check.accepted, check.unexplained, check.diverged_since) == (2, 0, None)
    assert check.accepted_by == "operator: my own trade"
    assert await _observed(stack) == []
    await _until_gauge(0.0)


async def test_position_check_flatten_row_accepts_what_it_leaves(stack: Stack) -> None:
    await stack.insert("entry", quantity=1)
    await stack.wait("entry", "filled")
    await _until(stack, "with the entry filled", lambda c: c.broker_net == 1 and c.ours == 1)
    _by_hand(stack, Side.BUY, 1)
    await _until(stack, "diverged", lambda c: c.diverged_since is not None)

    await stack.insert("flat", intent="flatten", side=None, quantity=None, instrument=None)
    await stack.wait("flat", "filled")
    assert stack.net_position() == 0
    check = await _until(stack, "after the flatten", lambda c: c.broker_net == 0)
    check = await _checked_after(stack, check)

    assert (check.unexplained, check.diverged_since) == (0, None)
    assert await _observed(stack) == []

"""A continuous symbol across the roll, end to end: rows in, the dispatcher, a real simulator.

The account holds the old month (placed with an explicit month row the evening before the
roll); the simulator's clock then crosses midnight UTC into the roll date, and the
dispatcher's "today" with it, so ``MNQ1!`` names the next month while the old one still
trades. An exit (or target 0) on ``MNQ1!`` closes the old month, from a row or from the
webhook, and a lost answer is looked up there; an order beside it is denied naming both
months; a partial exit reduces it (docs/tradingview.md, ``symbol``).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, time, timedelta
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from _support.webhook_fuzz import SECRET
from tracking.conftest import ACCOUNT, ACCOUNT_IDS, Stack, StackFactory
from tradebridge.config import WebhookConfig
from tradebridge.domain.contracts import ContractSymbol, front_month
from tradebridge.domain.enums import Dialect
from tradebridge.intake.webhook import IntakeDeps, mount_webhook
from tradebridge.sim.clock import ManualClock

DIALECTS = [Dialect.NATIVE, Dialect.TVBRIDGE]
EXIT = {"intent": "exit", "side": None, "quantity": None}


def _eve_of_roll() -> tuple[ManualClock, ContractSymbol, ContractSymbol]:
    """Return a clock at 23:50 UTC the day before an MNQ roll, the month held then and the
    month the roll makes the front.

    The roll is one at least two days after the real date: the clock stays ahead of the real
    time, so the tokens the simulator issues look fresh to the adapters.
    """
    old = front_month("MNQ", datetime.now(UTC).date() + timedelta(days=2))
    new = front_month("MNQ", old.roll_date())
    eve = old.roll_date() - timedelta(days=1)
    return ManualClock(datetime.combine(eve, time(23, 50), tzinfo=UTC)), old, new


@asynccontextmanager
async def _rolled(
    make_stack: StackFactory, dialect: Dialect, held_as: str | None = None
) -> AsyncIterator[tuple[Stack, ManualClock, ContractSymbol, ContractSymbol]]:
    """Yield a stack whose account holds +2 of the old month, on the roll date; the row that
    bought it named ``held_as`` (the old month itself by default)."""
    clock, old, new = _eve_of_roll()
    async with make_stack(dialect=dialect, clock=clock) as stack:
        stack.start(stack.dispatcher(today=lambda: clock.now().date(), clock=clock.now))
        await stack.insert("held", instrument=held_as or old.name, quantity=2)
        row = await stack.wait("held", "filled", "denied", "failed")
        assert (row.status, row.error_message) == ("filled", None)
        assert _positions(stack) == {old.name: 2}

        clock.advance(20 * 60)  # 00:10 UTC on the roll date: MNQ1! is the next month now
        assert clock.now().date() == old.roll_date()
        assert _listed(stack) >= {old.name, new.name}  # the old month still trades
        yield stack, clock, old, new


def _listed(stack: Stack) -> set[str]:
    """Return the names of the contracts the simulator lists as tradable now."""
    return stack.sim.call(lambda: {c.name for c in stack.sim.ctx.engine.listed_contracts()})


def _positions(stack: Stack) -> dict[str, int]:
    """Return the simulator's net positions of the account, by contract name (flat ones out)."""

    def read() -> dict[str, int]:
        engine = stack.sim.ctx.engine
        held: dict[str, int] = {}
        for p in engine.positions(ACCOUNT_IDS[ACCOUNT]):
            contract = engine.contract(p.contract_id)
            assert contract is not None
            held[contract.name] = held.get(contract.name, 0) + p.net_pos
        return {name: qty for name, qty in held.items() if qty}

    return stack.sim.call(read)


def _sent(stack: Stack) -> list[tuple[str | None, str, str, int]]:
    """Return the orders the simulator received: client id, contract, side, quantity."""

    def read() -> list[tuple[str | None, str, str, int]]:
        engine = stack.sim.ctx.engine
        out = []
        for o in engine.orders(ACCOUNT_IDS[ACCOUNT]):
            if o.parent_id is not None:
                continue  # a bracket leg
            contract = engine.contract(o.contract_id)
            assert contract is not None
            out.append((o.cl_ord_id, contract.name, o.action.value, o.version.order_qty))
        return out

    return stack.sim.call(read)


@pytest.mark.parametrize("dialect", DIALECTS)
@pytest.mark.parametrize(
    "closing", [EXIT, {"intent": "target", "side": None, "quantity": None, "target_position": 0}]
)
async def test_roll_exit_on_continuous_symbol_closes_the_old_month(
    make_stack: StackFactory, dialect: Dialect, closing: dict[str, Any]
) -> None:
    async with _rolled(make_stack, dialect) as (stack, _, old, _):
        await stack.insert("out", instrument="MNQ1!", **closing)
        row = await stack.wait("out", "filled", "denied", "failed", "needs_review")

        assert (row.status, row.error_message) == ("filled", None)
        assert row.filled_qty == 2
        assert _positions(stack) == {}
        assert _sent(stack) == [("tb-held", old.name, "buy", 2), ("tb-out", old.name, "sell", 2)]
        [submitted] = [e for e in await stack.ledger.history("out") if e.event == "submitted"]
        assert isinstance(submitted.detail, dict)
        assert submitted.detail["contract"] == old.name
        assert "before the roll" in submitted.detail["note"]


@pytest.mark.parametrize("dialect", DIALECTS)
@pytest.mark.parametrize("side", ["buy", "sell"])
async def test_roll_order_on_continuous_symbol_beside_the_old_month_is_denied(
    make_stack: StackFactory, dialect: Dialect, side: str
) -> None:
    async with _rolled(make_stack, dialect) as (stack, _, old, new):
        await stack.insert("beside", instrument="MNQ1!", side=side, quantity=2)
        row = await stack.wait("beside", "filled", "denied", "failed", "needs_review")

        assert row.status == "denied"
        assert row.error_message is not None
        assert old.name in row.error_message
        assert new.name in row.error_message
        assert _positions(stack) == {old.name: 2}
        assert [cid for cid, *_ in _sent(stack)] == ["tb-held"]


@pytest.mark.parametrize("dialect", DIALECTS)
async def test_roll_partial_exit_on_continuous_symbol_reduces_the_old_month(
    make_stack: StackFactory, dialect: Dialect
) -> None:
    async with _rolled(make_stack, dialect) as (stack, _, old, _):
        await stack.insert("half", instrument="MNQ1!", intent="exit", side=None, quantity=1)
        row = await stack.wait("half", "filled", "denied", "failed", "needs_review")

        assert (row.status, row.error_message) == ("filled", None)
        assert row.filled_qty == 1
        assert _positions(stack) == {old.name: 1}
        assert _sent(stack)[1:] == [("tb-half", old.name, "sell", 1)]


@asynccontextmanager
async def _webhook(stack: Stack, clock: ManualClock) -> AsyncIterator[httpx.AsyncClient]:
    """Yield a client of the webhook over the stack's ledger, on the simulator's clock."""
    hook = WebhookConfig(secret=SECRET, default_account=ACCOUNT, rate_limit_per_minute=0)
    settings = stack.settings.model_copy(update={"webhook": hook})
    app = mount_webhook(FastAPI(), IntakeDeps(settings, stack.ledger, clock=clock.now))
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://hook") as client:
        yield client


@pytest.mark.parametrize("dialect", DIALECTS)
async def test_roll_webhook_exit_on_continuous_symbol_closes_the_old_month(
    make_stack: StackFactory, dialect: Dialect
) -> None:
    async with (
        # A strategy on MNQ1! all along: its buy went to the front month of the day before.
        _rolled(make_stack, dialect, held_as="MNQ1!") as (stack, clock, old, new),
        _webhook(stack, clock) as hook,
    ):
        answer = await hook.post(
            "/webhook", json={"secret": SECRET, "symbol": "CME_MINI:MNQ1!", "action": "exit"}
        )
        assert answer.status_code == 200, answer.text
        [signal_id] = answer.json()["signal_ids"]
        row = await stack.wait(signal_id, "filled", "denied", "failed", "needs_review")

        assert row.instrument == new.name  # the webhook stored the month it resolved
        assert (row.status, row.error_message) == ("filled", None)
        assert _positions(stack) == {}
        assert _sent(stack)[1:] == [(f"tb-{signal_id}", old.name, "sell", 2)]


def test_eve_of_roll_is_ahead_of_the_real_time_and_before_the_old_month_expires() -> None:
    clock, old, new = _eve_of_roll()

    assert clock.now() > datetime.now(UTC)
    assert front_month("MNQ", clock.now().date()) == old
    assert old.roll_date() == clock.now().date() + timedelta(days=1)
    assert old.expiry() > old.roll_date()  # the old month still trades after the roll
    assert new > old


@pytest.mark.parametrize("dialect", DIALECTS)
async def test_roll_exit_whose_answer_is_lost_is_found_on_the_old_month(
    make_stack: StackFactory, dialect: Dialect
) -> None:
    async with _rolled(make_stack, dialect) as (stack, _, old, _):
        faults = stack.sim.ctx.faults
        faults.drop_mode = "reset"
        faults.drop_after_accept_rate = 1.0
        await stack.insert("out", instrument="MNQ1!", **EXIT)
        deadline = asyncio.get_running_loop().time() + 15
        while len(_sent(stack)) < 2 and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.02)
        faults.drop_after_accept_rate = 0.0
        row = await stack.wait("out", "filled", "denied", "failed", "needs_review", timeout=30)

        # The lookup reads the plan stored with the submit: the old month, not MNQ1!'s now.
        assert row.status == "filled", row.error_message
        assert _positions(stack) == {}
        assert _sent(stack)[1:] == [("tb-out", old.name, "sell", 2)]  # sent once

"""Batch claims in the dispatcher: rows claimed together behind a row that did not finish
(or behind an unknown row they depend on) go back to pending unsent, and one account's rows
are sent strictly one after the other."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from itertools import pairwise
from typing import Any

import pytest

from tracking.conftest import ACCOUNT, ACCOUNT_2, Stack, StackFactory
from tradebridge.dispatch.placement import Placer
from tradebridge.domain.lifecycle import SignalStatus


async def _requeue_reasons(stack: Stack, signal_id: str) -> list[str]:
    return [
        e.detail.get("reason", "")
        for e in await stack.ledger.history(signal_id)
        if e.event == "requeued"
    ]


async def test_dispatcher_unknown_row_lets_plain_orders_behind_it_pass(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def lookup_fails(*_args: object, **_kw: object) -> SignalStatus:
        return SignalStatus.UNKNOWN  # as if every lookup of this round failed

    monkeypatch.setattr(Placer, "resolve", lookup_fails)
    stack.sim.ctx.faults.drop_after_accept_rate = 1.0
    await stack.insert("u0", side="sell")
    claimed = await stack.dispatcher().drain_once()
    stack.sim.ctx.faults.drop_after_accept_rate = 0.0
    await stack.insert("u1", side="buy")
    await stack.insert("u2", side="sell")

    claimed += await stack.dispatcher().drain_once()

    assert claimed == 3
    statuses = [(await stack.ledger.get(f"u{i}")) for i in range(3)]
    placed = {SignalStatus.WORKING, SignalStatus.FILLED}  # no tracker here: answer only
    assert statuses[0] is not None
    assert statuses[0].status is SignalStatus.UNKNOWN
    assert all(r is not None and r.status in placed for r in statuses[1:])
    assert len(stack.entries()) == 3


async def test_dispatcher_unknown_row_hands_back_the_exit_claimed_behind_it(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def lookup_fails(*_args: object, **_kw: object) -> SignalStatus:
        return SignalStatus.UNKNOWN

    monkeypatch.setattr(Placer, "resolve", lookup_fails)
    stack.sim.ctx.faults.drop_after_accept_rate = 1.0
    await stack.insert("u0", side="buy")
    await stack.insert("u1", intent="exit", side=None, quantity=None)
    await stack.insert("u2", side="sell")

    claimed = await stack.dispatcher().drain_once()

    assert claimed == 3  # one statement claimed the account's three rows
    statuses = [(await stack.ledger.get(f"u{i}")) for i in range(3)]
    assert [r.status if r else None for r in statuses] == [
        SignalStatus.UNKNOWN,
        SignalStatus.PENDING,
        SignalStatus.PENDING,
    ]
    assert len(stack.entries()) == 1  # only the first left
    reasons = await _requeue_reasons(stack, "u1")
    assert reasons == ["held back by an unknown row of its account"]


async def test_dispatcher_stopped_mid_batch_hands_back_what_was_not_sent(
    make_stack: StackFactory,
) -> None:
    async with make_stack(dispatcher={"handback_timeout_s": 0.2}) as stack:
        faults = stack.sim.ctx.faults
        faults.drop_mode = "hang"
        faults.drop_after_accept_rate = 1.0
        for i in range(3):
            await stack.insert(f"h{i}")
        # No tracker: its fill event would otherwise move h0 on while the answer hangs.
        task = stack.start(stack.dispatcher(tracking=False))
        await stack.wait("h0", "submitted")
        while not stack.entries():  # the request has reached the broker
            await asyncio.sleep(0.01)

        task.cancel()
        await asyncio.gather(task, return_exceptions=True)

        h0, h1, h2 = [await stack.ledger.get(f"h{i}") for i in range(3)]
        assert h0 is not None
        assert h0.status is SignalStatus.SUBMITTED  # sent: never handed back
        assert h1 is not None
        assert h2 is not None
        assert (h1.status, h2.status) == (SignalStatus.PENDING, SignalStatus.PENDING)
        assert await _requeue_reasons(stack, "h2") == ["worker stopping"]
        assert len(stack.entries()) == 1


async def test_dispatcher_batches_of_two_accounts_each_keep_their_order(stack: Stack) -> None:
    for i in range(10):
        await stack.insert(f"x{i}", account_name=ACCOUNT if i % 2 else ACCOUNT_2,
                           side="buy" if i % 4 < 2 else "sell")  # fmt: skip
    stack.start(stack.dispatcher())

    rows = [await stack.wait(f"x{i}", "filled") for i in range(10)]

    for account, parity in ((ACCOUNT, 1), (ACCOUNT_2, 0)):
        placed = [str(o.id) for o in sorted(stack.entries(account), key=lambda o: o.id)]
        assert placed == [r.tradovate_order_id for i, r in enumerate(rows) if i % 2 == parity]
        stamps = [r.ts_submitted for i, r in enumerate(rows) if i % 2 == parity]
        assert all(a is not None and b is not None and a < b for a, b in pairwise(stamps))


def _count_claims(stack: Stack, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Spy on the ledger's claims; return the list of rows each one claimed, as they happen."""
    claims: list[int] = []
    claim = stack.ledger.claim

    async def counted(*args: Any, **kwargs: Any) -> Any:
        claims.append(-1)
        found = await claim(*args, **kwargs)
        claims[claims.index(-1)] = len(found.rows)  # in the order the claims began
        return found

    monkeypatch.setattr(stack.ledger, "claim", counted)
    return claims


async def _until(condition: Callable[[], bool], timeout: float = 15.0) -> None:
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.01)


async def test_dispatcher_account_done_with_nothing_behind_claims_no_more(
    make_stack: StackFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The drain timer is out of the way: only notifications and finished accounts wake it.
    async with make_stack(dispatcher={"drain_interval_s": 60}) as stack:
        claims = _count_claims(stack, monkeypatch)
        dispatcher = stack.dispatcher(tracking=False)
        stack.start(dispatcher)
        # Started: listening, and the claims the start and the listener's connect asked for
        # (one or two, each empty) done, nothing more asked.
        await asyncio.wait_for(dispatcher.listening.wait(), 15)
        await _until(lambda: bool(claims) and -1 not in claims and not dispatcher._wake.is_set())
        started = list(claims)

        await stack.insert("n1")
        await stack.wait("n1", "working", "filled")
        await _until(lambda: not dispatcher._active)  # the account's task has ended

        assert set(started) == {0}
        assert claims[len(started) :] == [1]  # its notification's claim, and no empty one after
        assert not dispatcher._wake.is_set()


async def test_dispatcher_row_inserted_while_its_account_is_busy_claimed_when_it_is_done(
    make_stack: StackFactory,
) -> None:
    async with make_stack(dispatcher={"drain_interval_s": 60}) as stack:
        stack.sim.ctx.faults.latency_ms = 300
        stack.start(stack.dispatcher(tracking=False))
        await stack.insert("b1")
        await stack.wait("b1", "submitted")  # its request is on its way, slowly

        await stack.insert("b2")  # skipped by the claim its notification triggers: busy

        await stack.wait("b2", "working", "filled", timeout=10)  # not the 60 s timer


async def test_dispatcher_connects_to_the_broker_for_each_account_it_claims(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Each account's first order leaves after its write-ahead: its connection opens beside
    # it (a spy on the pool, which still connects).
    asked: list[list[str]] = []
    preconnect = stack.pool.preconnect

    async def spied(accounts: Sequence[str]) -> None:
        asked.append(sorted(accounts))
        await preconnect(accounts)

    monkeypatch.setattr(stack.pool, "preconnect", spied)
    await stack.insert("p0", account_name=ACCOUNT)
    await stack.insert("p1", account_name=ACCOUNT_2)
    await stack.insert("p2", account_name=ACCOUNT)

    assert await stack.dispatcher().drain_once() == 3

    assert asked == [sorted([ACCOUNT, ACCOUNT_2])]  # once per account, not per row
    rows = [await stack.ledger.get(f"p{i}") for i in range(3)]
    assert all(r is not None and r.status in {SignalStatus.WORKING, SignalStatus.FILLED}
               for r in rows)  # fmt: skip

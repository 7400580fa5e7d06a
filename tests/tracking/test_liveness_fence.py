"""A worker's sends are fenced by its liveness lock (dispatch/liveness.py).

Reconcile reads a worker whose liveness lock is free as dead: its ``submitted`` rows become
``unknown``, are looked up and, when absent, sent again. A live worker whose lock's
connection alone dropped, with a request still waiting to leave, would send it too.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import pytest

from _support.rig import order
from tracking.conftest import ACCOUNT, Stack, StackFactory, until
from tradebridge.dispatch import reconcile as reconcile_module
from tradebridge.dispatch.placement import WORKER_LOCK_NAMESPACE, plan_to_json
from tradebridge.dispatch.reconcile import Reconciler, dead_worker_hold_floor
from tradebridge.domain.lifecycle import SignalStatus
from tradebridge.pipeline.route import PlaceOrder
from tradebridge.store.ledger import sessions

# Probed every 0.4 s; a dead worker's lock held past the floor (1 + the 2 s request timeout).
FENCE = {"liveness_fresh_s": 1.0, "dead_worker_hold_s": 3.5}


class Gate:
    """Holds the first submit of ACCOUNT before it leaves, as a wait in the user's request
    budget does (the fence is checked after that wait, where the request would leave)."""

    def __init__(self) -> None:
        self.entered = asyncio.Event()
        self.release = asyncio.Event()
        self.returned = asyncio.Event()
        self.sent: list[str] = []
        self._first = True

    async def install(self, stack: Stack) -> None:
        broker = await stack.pool.get(ACCOUNT)
        real = broker.submit

        async def submit(command: Any) -> Any:
            held = self._first
            self._first = False
            if held:
                self.entered.set()
                await self.release.wait()
            try:
                self.sent.append(str(command.client_order_id))
                return await real(command)
            finally:
                if held:
                    self.returned.set()

        broker.submit = submit  # type: ignore[method-assign]


@contextlib.asynccontextmanager
async def another_process() -> AsyncIterator[None]:
    """Reconcile as another process would: none of this process's workers is its own."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(reconcile_module, "local_workers", frozenset)
        yield


@contextlib.asynccontextmanager
async def lock_dropped_mid_send(stack: Stack, gate: Gate, signal_id: str) -> AsyncIterator[Any]:
    """Run worker w1 until a row's write-ahead is written and its request held at the gate;
    then drop w1's liveness connection alone (reconnecting takes 2 s); yield w1."""
    slow = asyncio.Event()
    real_connect = sessions.connect

    async def connect(*a: Any, **kw: Any) -> Any:
        if slow.is_set():
            await asyncio.sleep(2.0)
        return await real_connect(*a, **kw)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(sessions, "connect", connect)
        dispatcher = stack.dispatcher("w1", tracking=False)
        stack.start(dispatcher)
        await asyncio.wait_for(dispatcher.live.wait(), 10)
        await stack.insert(signal_id)
        await asyncio.wait_for(gate.entered.wait(), 15)
        slow.set()
        await stack.ledger.pool.execute(
            "select pg_terminate_backend(pid) from pg_stat_activity "
            "where application_name = 'tradebridge-liveness'"
        )
        yield dispatcher


async def _until_lock_free(stack: Stack, worker: str) -> None:
    """Wait until no session holds ``worker``'s liveness lock."""
    async with asyncio.timeout(15):
        while await stack.ledger.pool.fetchval(
            "select count(*) from pg_locks where locktype = 'advisory' and granted "
            "and classid = $1 and objid = hashtext($2)::oid and objsubid = 2",
            WORKER_LOCK_NAMESPACE, worker,
        ):  # fmt: skip
            await asyncio.sleep(0.01)


def test_the_fence_settings_keep_the_safe_floor(make_stack: StackFactory) -> None:
    from tracking.conftest import make_settings

    settings = make_settings("http://127.0.0.1:1", dispatcher=FENCE)
    assert settings.dispatcher.dead_worker_hold_s >= dead_worker_hold_floor(settings)


async def test_a_live_worker_whose_lock_connection_drops_does_not_send_what_was_recovered(
    make_stack: StackFactory,
) -> None:
    # w1 wrote its write-ahead; its request waits to leave. Its liveness connection alone
    # drops and reconnecting takes 2 s; another process's reconcile reads w1 as dead, marks
    # the row unknown, proves it absent and sends it. w1's request, let go afterwards, must
    # not leave (without the fence: two orders).
    async with make_stack(dispatcher=FENCE) as stack:
        gate = Gate()
        await gate.install(stack)
        async with lock_dropped_mid_send(stack, gate, "lv") as dispatcher:
            await until(lambda: not dispatcher.live.is_set(), "w1 sees its lock lost")
            async with another_process():
                report = await Reconciler(stack.settings, stack.ledger, stack.pool).reconcile_once()
            gate.release.set()
            await asyncio.wait_for(gate.returned.wait(), 15)

        assert report.dead_workers == ["w1"]
        assert report.marked_unknown == ["lv"]
        assert [o.cl_ord_id for o in stack.entries()] == ["tb-lv"]
        row = await stack.ledger.get("lv")
        assert row is not None
        assert row.status in (SignalStatus.WORKING, SignalStatus.FILLED)
        assert row.placement_attempts == 2
        assert row.tradovate_order_id == str(stack.entries()[0].id)
        events = [e.event for e in await stack.ledger.history("lv")]
        assert "send_fenced" in events
        await until(dispatcher.live.is_set, "w1 holds its lock again")


async def test_a_send_let_go_as_its_lock_lapses_is_placed_once_whichever_way_it_goes(
    make_stack: StackFactory,
) -> None:
    # The same drop, but w1's request is let go at once. Either it leaves within
    # liveness_fresh_s of the lock's last confirmation, and reconcile, holding the free lock
    # for dead_worker_hold_s first, finds the order and adopts it; or (its confirmation
    # already too old: a loaded machine) it waits, reconcile proves it absent and sends it,
    # and w1 finds the row moved on. One order either way.
    async with make_stack(dispatcher=FENCE) as stack:
        gate = Gate()
        await gate.install(stack)
        async with lock_dropped_mid_send(stack, gate, "lf"):
            gate.release.set()
            await _until_lock_free(stack, "w1")  # the terminated session is gone
            async with another_process():
                report = await Reconciler(stack.settings, stack.ledger, stack.pool).reconcile_once()
            await asyncio.wait_for(gate.returned.wait(), 15)

        assert [o.cl_ord_id for o in stack.entries()] == ["tb-lf"]
        row = await stack.ledger.get("lf")
        assert row is not None
        assert row.status in (SignalStatus.WORKING, SignalStatus.FILLED)
        assert row.tradovate_order_id == str(stack.entries()[0].id)
        events = [e.event for e in await stack.ledger.history("lf")]
        if row.placement_attempts == 1:  # w1's request left: its answer, or reconcile, wrote it
            assert "send_fenced" not in events
        else:  # w1's request waited; reconcile sent it; w1 stood down
            assert row.placement_attempts == 2
            assert "send_fenced" in events
            assert report.dead_workers == ["w1"]


async def test_a_resend_is_the_resenders_claim_and_no_other_reconcile_sends_it_again(
    stack: Stack,
) -> None:
    # A worker ("ghost") wrote the write-ahead and died before its request left. Reconcile
    # beside worker "p" proves the row absent and sends it again; that request waits to
    # leave. Reconcile of another process must not take the row (it is p's claim now, and p
    # lives) and send it a third time.
    await stack.insert("rs")
    await stack.ledger.claim_next("ghost")
    plan = PlaceOrder(order("tb-rs", account=ACCOUNT))
    await stack.ledger.transition(
        "rs", SignalStatus.SUBMITTED, expected=SignalStatus.PROCESSING, owner="ghost",
        client_order_id="tb-rs", detail=plan_to_json(plan),
    )  # fmt: skip
    gate = Gate()
    await gate.install(stack)
    beside = stack.dispatcher("p", tracking=False)
    async with beside.liveness():
        mine = Reconciler(stack.settings, stack.ledger, stack.pool, liveness=beside.liveness_lock)
        round_ = asyncio.create_task(mine.reconcile_once())
        await asyncio.wait_for(gate.entered.wait(), 15)
        row = await stack.ledger.get("rs")
        assert row is not None
        assert (row.status, row.claimed_by) == (SignalStatus.SUBMITTED, "p")
        async with another_process():
            other = await Reconciler(stack.settings, stack.ledger, stack.pool).reconcile_once()
        gate.release.set()
        await round_

    assert other.marked_unknown == []
    assert [o.cl_ord_id for o in stack.entries()] == ["tb-rs"]


async def test_reconcile_moves_no_row_of_a_worker_that_takes_its_lock_back_during_the_hold(
    make_stack: StackFactory,
) -> None:
    # A free lock is held by reconcile for dead_worker_hold_s; a worker whose lock was free
    # for a moment (a remote one: another session) cannot take it back meanwhile, and once
    # reconcile moved its rows, it finds them moved. Here the remote worker takes its lock
    # before reconcile tries: reconcile reads it live and moves nothing.
    async with make_stack(dispatcher=FENCE) as stack:
        await stack.insert("rb")
        await stack.ledger.claim_next("remote")
        async with stack.ledger.pool.acquire() as conn:
            await conn.execute(
                "select pg_advisory_lock($1, hashtext($2))", WORKER_LOCK_NAMESPACE, "remote"
            )
            try:
                result = await stack.ledger.recover_workers(
                    WORKER_LOCK_NAMESPACE, ["remote"], hold_s=0.1
                )
            finally:
                await conn.execute("select pg_advisory_unlock_all()")
        assert result == {}
        row = await stack.ledger.get("rb")
        assert row is not None
        assert row.status is SignalStatus.PROCESSING

        # Free: held for the hold, during which the worker cannot take it.
        recovering = asyncio.create_task(
            stack.ledger.recover_workers(WORKER_LOCK_NAMESPACE, ["remote"], hold_s=1.0)
        )
        async with stack.ledger.pool.acquire() as conn:
            while not await conn.fetchval(
                "select count(*) from pg_locks where locktype = 'advisory' and granted "
                "and classid = $1 and objid = hashtext($2)::oid and objsubid = 2",
                WORKER_LOCK_NAMESPACE, "remote",
            ):  # fmt: skip
                await asyncio.sleep(0.01)  # recovery has not taken it yet
            # The worker trying to take it back: it gets it only once its rows have moved.
            seen_when_taken = None
            while seen_when_taken is None:
                if await conn.fetchval(
                    "select pg_try_advisory_lock($1, hashtext($2))", WORKER_LOCK_NAMESPACE,
                    "remote",
                ):  # fmt: skip
                    seen_when_taken = await conn.fetchval(
                        "select status from trading_signals where signal_id = 'rb'"
                    )
                else:
                    await asyncio.sleep(0.05)
            moved = await recovering
            await conn.execute("select pg_advisory_unlock_all()")
        assert seen_when_taken == "pending"
        assert moved["remote"].requeued == ("rb",)
        row = await stack.ledger.get("rb")
        assert row is not None
        assert row.status is SignalStatus.PENDING


async def test_the_liveness_connection_asks_the_server_to_drop_it_when_its_host_vanishes(
    stack: Stack,
) -> None:
    # Without it, a worker whose host vanished keeps its session (and its lock, so its rows)
    # until the kernel's keepalive, about two hours.
    async with stack.ledger.pool.acquire() as conn:
        await sessions._ask_keepalive(conn, 30, "w1")
        settings = {
            name: await conn.fetchval(f"show {name}")
            for name in (
                "tcp_keepalives_idle", "tcp_keepalives_interval", "tcp_keepalives_count",
                "tcp_user_timeout",
            )
        }  # fmt: skip
        await conn.execute("reset all")
    assert settings == {
        "tcp_keepalives_idle": "15",
        "tcp_keepalives_interval": "5",
        "tcp_keepalives_count": "3",
        "tcp_user_timeout": "30000",
    }

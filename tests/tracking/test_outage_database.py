"""PostgreSQL stopped and started again during traffic (issue 10, item 4).

A private PostgreSQL (the session's one must stay up for the other tests) is stopped while a
strategy keeps inserting rows, with the simulator slow enough that rows are claimed and being
sent when the database goes away. Afterwards: every row that was stored ends filled with
exactly one order of its own, none ends ``failed``, the running worker was never declared
dead by reconcile (no row recovered as "worker lost"), and it holds its liveness lock again.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections import Counter
from collections.abc import AsyncIterator

import asyncpg
import pytest

from _support.database import fresh_database
from _support.fixtures import private_postgres
from _support.rig import front
from tracking.conftest import ACCOUNT, ACCOUNT_2, Stack, StackFactory
from tradebridge.dispatch.placement import WORKER_LOCK_NAMESPACE
from tradebridge.dispatch.reconcile import Reconciler, ReconcileReport
from tradebridge.domain.lifecycle import FINAL_STATUSES, SignalStatus
from tradebridge.store.embedded import EmbeddedPostgres
from tradebridge.store.ledger import database_unavailable

__all__ = ["private_postgres"]  # fixtures

# How long the database stays down: until the strategy and the worker noticed, in the suite;
# the 40 s with TRADEBRIDGE_SLOW=1.
OUTAGE_S = 40.0 if os.environ.get("TRADEBRIDGE_SLOW") == "1" else 0.0
INSERT = """
insert into trading_signals (signal_id, strategy_name, instrument, side, order_type, quantity,
                             account_name)
values ($1, 'outage', $2, $3, 'market', 1, $4)
"""


@pytest.fixture
async def ledger_url(private_postgres: EmbeddedPostgres) -> AsyncIterator[str]:
    """Create and migrate the ledger database on the private server (overrides conftest's)."""
    async with fresh_database(private_postgres.url) as url:
        yield url


class Strategy:
    """Inserts rows one after the other, each until it is stored (as a strategy retries)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.stored: list[str] = []
        self.failures = 0
        self.stop = asyncio.Event()

    async def run(self) -> None:
        """Insert rows alternating accounts and sides until ``stop`` is set."""
        conn: asyncpg.Connection | None = None
        n = 0
        while not self.stop.is_set():
            signal_id = f"out-{n:04d}"
            account = ACCOUNT if n % 2 else ACCOUNT_2
            side = "buy" if n % 4 < 2 else "sell"
            try:
                if conn is None or conn.is_closed():
                    conn = await asyncpg.connect(self.url, timeout=2)
                await conn.execute(INSERT, signal_id, front().name, side, account)
            except asyncpg.UniqueViolationError:
                pass  # the commit of the try before went through; its answer was lost
            except (
                OSError,
                TimeoutError,
                asyncpg.PostgresError,
                asyncpg.InterfaceError,
                asyncpg.InternalClientError,
            ):
                self.failures += 1
                conn = None
                await asyncio.sleep(0.05)
                continue
            self.stored.append(signal_id)
            n += 1
            await asyncio.sleep(0.03)
        if conn is not None:
            await conn.close()


async def _until(predicate: object, what: str, timeout: float = 30.0) -> None:
    """Wait until ``predicate()`` (sync or async) is true."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        value = predicate()  # type: ignore[operator]
        if asyncio.iscoroutine(value):
            with contextlib.suppress(OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
                value = await value
        if value is True:
            return
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


async def test_postgres_restart_during_traffic_loses_nothing_and_no_live_worker_is_dead(
    make_stack: StackFactory, private_postgres: EmbeddedPostgres, ledger_url: str
) -> None:
    async with make_stack() as stack:
        # Slow answers: rows are claimed, and some are being sent, when the database stops.
        stack.sim.ctx.faults.latency_ms = 150
        dispatcher = stack.dispatcher("live")
        running = stack.start(dispatcher)
        strategy = Strategy(ledger_url)
        traffic = asyncio.create_task(strategy.run())
        try:
            await _until(
                lambda: _rows_in(stack, ("filled",), 4), "four rows filled before the outage"
            )
            await _until(
                lambda: _rows_in(stack, ("processing", "submitted"), 1),
                "a row in flight when the database stops",
            )
            await asyncio.to_thread(private_postgres.stop)
            failures, down = strategy.failures, asyncio.get_running_loop().time()
            await _until(
                lambda: (
                    strategy.failures >= failures + 5
                    and not dispatcher.live.is_set()
                    and asyncio.get_running_loop().time() - down >= OUTAGE_S
                ),
                "the strategy and the worker noticing the outage",
                timeout=OUTAGE_S + 30,
            )
            await asyncio.to_thread(private_postgres.start)
            back = asyncio.get_running_loop().time()
            await _until(
                lambda: _running(running) and dispatcher.live.is_set(),
                "the liveness lock taken again",
            )
            relocked_s = asyncio.get_running_loop().time() - back
            stored = len(strategy.stored)
            await _until(lambda: len(strategy.stored) >= stored + 10, "ten rows after the outage")
        finally:
            strategy.stop.set()
            await traffic
        stack.sim.ctx.faults.latency_ms = 0
        assert _running(running)
        for signal_id in strategy.stored:
            await stack.wait(signal_id, *[s.value for s in FINAL_STATUSES], timeout=60)

        rows = {s: await stack.ledger.get(s) for s in strategy.stored}
        statuses = Counter(r.status.value for r in rows.values() if r is not None)
        lost = await stack.ledger.pool.fetch(
            "select signal_id, event from order_history "
            "where detail ->> 'reason' = 'worker lost' order by id"
        )
        orders = stack.entries(ACCOUNT) + stack.entries(ACCOUNT_2)
        lock_free = await stack.ledger.pool.fetchval(
            "select pg_try_advisory_lock($1, hashtext($2))", WORKER_LOCK_NAMESPACE, "live"
        )

    assert statuses == {"filled": len(strategy.stored)}, statuses
    assert [tuple(r) for r in lost] == []  # the live worker was never declared dead
    by_client_id = Counter(o.cl_ord_id for o in orders)
    assert sorted(by_client_id) == sorted(f"tb-{s}" for s in strategy.stored)
    assert set(by_client_id.values()) == {1}
    assert {r.tradovate_order_id for r in rows.values() if r is not None} == {
        str(o.id) for o in orders
    }
    assert lock_free is False  # the worker took its liveness lock again after the restart
    assert relocked_s < 10  # measured 0.05-0.8 s on a loaded 2-core box


def _running(task: asyncio.Task[None]) -> bool:
    """Return True while ``task`` runs; raise what ended it (the worker must never stop)."""
    if task.done():
        task.result()
        raise AssertionError("the dispatcher stopped")
    return True


async def _rows_in(stack: Stack, statuses: tuple[str, ...], at_least: int) -> bool:
    found = await stack.ledger.pool.fetchval(
        "select count(*) from trading_signals where status = any($1::text[])", list(statuses)
    )
    return int(found) >= at_least


async def test_reconcile_after_restart_reads_no_worker_dead_until_the_grace_ends(
    make_stack: StackFactory, private_postgres: EmbeddedPostgres
) -> None:
    # A worker of another process ("remote") holds its lock, then the database restarts and
    # every lock is gone; the remote worker comes back late. Within the grace it is not
    # dead, and its rows stay as they are; past the grace, a lock still free is a dead worker.
    grace = 2.0
    async with make_stack(dispatcher={"liveness_grace_s": grace}) as stack:
        held = asyncio.Event()
        holder = asyncio.create_task(stack.ledger.hold_lock(WORKER_LOCK_NAMESPACE, "remote", held))
        await asyncio.wait_for(held.wait(), 10)
        await stack.insert("r1")
        await stack.ledger.claim_next("remote")
        reconciler = Reconciler(stack.settings, stack.ledger, stack.pool)
        await _until(lambda: _settled(reconciler), "the grace after the first start")
        assert await reconciler.dead_workers() == []

        holder.cancel()  # the remote process is slow to come back
        await asyncio.gather(holder, return_exceptions=True)
        await asyncio.to_thread(private_postgres.stop)
        restarted = asyncio.get_running_loop().time()  # the server starts after this
        await asyncio.to_thread(private_postgres.start)
        report = await _reconcile_when_reachable(reconciler)
        assert report.dead_workers == []
        row = await stack.ledger.get("r1")
        assert row is not None
        assert row.status is SignalStatus.PROCESSING

        dead: list[str] = []

        async def found_dead() -> bool:
            dead[:] = await reconciler.dead_workers()
            return bool(dead)

        await _until(found_dead, "the remote worker read as dead after the grace")
        waited = asyncio.get_running_loop().time() - restarted

    assert dead == ["remote"]
    assert waited >= grace


async def _settled(reconciler: Reconciler) -> bool:
    _, up = await reconciler.ledger.server_uptime()
    return up.total_seconds() > reconciler.config.liveness_grace_s


async def _reconcile_when_reachable(reconciler: Reconciler) -> ReconcileReport:
    """Run one reconcile round as soon as the pool reaches the restarted server."""
    deadline = asyncio.get_running_loop().time() + 30
    while True:
        try:
            return await reconciler.reconcile_once()
        except Exception as e:
            if not database_unavailable(e) or asyncio.get_running_loop().time() > deadline:
                raise
            await asyncio.sleep(0.05)

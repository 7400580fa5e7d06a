"""tradebridge behind a connection pooler, as users deploy it on Supabase (docs/supabase.md):
PgBouncer stands in for Supavisor (tests/_support/pgbouncer.py).

Session mode (Supabase's port 5432, the documented choice) must carry everything the workers
need: the migrations and their session lock, the claims and placements, LISTEN wake-ups, the
worker liveness lock and its takeover when the worker dies, the statement timeout.
Transaction mode (Supabase's port 6543) cannot (LISTEN and session locks are lost after each
transaction): ``serve`` and ``doctor`` must say so in plain words rather than start.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncpg
import httpx
import pytest

from _support.database import fresh_database
from _support.fixtures import redis_client
from _support.pgbouncer import PgBouncer, pgbouncer
from _support.runtime import serve_settings, serving, until_final
from tradebridge.config import load_settings
from tradebridge.dispatch.placement import WORKER_LOCK_NAMESPACE
from tradebridge.doctor.diagnosis import Status, run_doctor
from tradebridge.errors import ConfigError
from tradebridge.runtime.serve import run_serve
from tradebridge.sim.server import SimServer
from tradebridge.store.embedded import EmbeddedPostgres, EmbeddedRedis
from tradebridge.store.ledger import Ledger
from tradebridge.store.ledger.pool import open_pool
from tradebridge.store.tokens import TokenStore

__all__ = ["redis_client"]  # fixtures

SECRET = "serve-pooler-webhook-secret"
ACCOUNT = "DEMO0000001"


@pytest.fixture(scope="module")
def session_pooler(postgres_server: EmbeddedPostgres) -> Iterator[PgBouncer]:
    """PgBouncer in session mode (Supavisor on 5432) in front of the session PostgreSQL."""
    with pgbouncer(postgres_server, "session") as bouncer:
        yield bouncer


@pytest.fixture(scope="module")
def transaction_pooler(postgres_server: EmbeddedPostgres) -> Iterator[PgBouncer]:
    """PgBouncer in transaction mode (Supavisor on 6543) in front of the session PostgreSQL."""
    with pgbouncer(postgres_server, "transaction") as bouncer:
        yield bouncer


@pytest.fixture
async def direct_db(postgres_server: EmbeddedPostgres) -> AsyncIterator[str]:
    """A fresh migrated database, by its direct URL."""
    async with fresh_database(postgres_server.url, prefix="pool") as url:
        yield url


async def _until(predicate: object, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await predicate():  # type: ignore[operator]
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")


# --- session mode: everything holds ---------------------------------------------------------


async def test_serve_through_session_pooler_migrates_and_places_a_strategy_row_woken_by_notify(
    sim_tokens: SimServer,
    postgres_server: EmbeddedPostgres,
    session_pooler: PgBouncer,
    redis_server: EmbeddedRedis,
    tmp_path: Path,
) -> None:
    async with fresh_database(postgres_server.url, prefix="pool", migrated=False) as direct:
        pooled = session_pooler.url(direct)
        # Drained by SELECT only once a minute: a row placed within seconds was woken by
        # its insert's NOTIFY, which reached the LISTEN through the pooler.
        settings = serve_settings(
            sim_tokens, pooled, redis_server.url, tmp_path, secret=SECRET,
            serve={"migrate_on_start": True},
            dispatcher={"drain_interval_s": 60, "reconcile_interval_s": 60},
        )  # fmt: skip
        async with serving(settings) as found, httpx.AsyncClient() as client:
            conn = await asyncpg.connect(direct)
            try:
                await conn.execute(
                    "insert into trading_signals (signal_id, strategy_name, instrument, side, "
                    "order_type, quantity, account_name) "
                    "values ('pool-1', 'orb', 'MNQ1!', 'buy', 'market', 1, $1)",
                    ACCOUNT,
                )
            finally:
                await conn.close()
            async with await Ledger.connect(direct) as ledger:
                row = await until_final(ledger, "pool-1", timeout=10)
            health = (await client.get(found.healthz_url)).json()

    assert row.status.value == "filled"
    assert health["checks"]["database"]["ok"] is True


async def test_liveness_lock_through_session_pooler_is_held_then_taken_over_when_worker_dies(
    direct_db: str, session_pooler: PgBouncer
) -> None:
    key = "worker-behind-pooler"
    held = asyncio.Event()
    async with await Ledger.connect(session_pooler.url(direct_db)) as worker:
        holder = asyncio.create_task(
            worker.hold_lock(WORKER_LOCK_NAMESPACE, key, held, check_every_s=0.5)
        )
        await asyncio.wait_for(held.wait(), 10)
        other = await asyncpg.connect(direct_db)  # reconcile of another process
        try:
            try_lock = "select pg_try_advisory_lock($1, hashtext($2))"
            taken_while_alive = await other.fetchval(try_lock, WORKER_LOCK_NAMESPACE, key)
            await asyncio.sleep(1.2)  # two probes through the pooler: still held
            taken_after_probes = await other.fetchval(try_lock, WORKER_LOCK_NAMESPACE, key)
            holder.cancel()  # the worker dies: its connection to the pooler closes
            await asyncio.gather(holder, return_exceptions=True)

            async def taken() -> bool:
                return bool(await other.fetchval(try_lock, WORKER_LOCK_NAMESPACE, key))

            await _until(taken, 5, "the dead worker's liveness lock to be free")
        finally:
            await other.close()

    assert taken_while_alive is False
    assert taken_after_probes is False


async def test_statement_timeout_through_session_pooler_cancels_the_statement_on_the_server(
    direct_db: str, session_pooler: PgBouncer
) -> None:
    pool = await open_pool(
        session_pooler.url(direct_db), min_size=1, max_size=1, connect_timeout_s=5,
        statement_timeout_s=0.5,
    )  # fmt: skip
    watcher = await asyncpg.connect(direct_db)
    try:
        started = time.monotonic()
        with pytest.raises(TimeoutError):
            await pool.fetchval("select pg_sleep(30) /* pooled-sleep */")
        waited = time.monotonic() - started

        async def cancelled() -> bool:
            running = await watcher.fetchval(
                "select count(*) from pg_stat_activity "
                "where query like '%pooled-sleep%' and state = 'active' and pid <> pg_backend_pid()"
            )
            return running == 0

        await _until(cancelled, 5, "the server to end the timed-out statement")
        after = await pool.fetchval("select 1")
    finally:
        await watcher.close()
        await pool.close()

    assert waited < 3
    assert after == 1


# --- transaction mode: refused in plain words ---------------------------------------------


async def test_serve_through_transaction_pooler_refuses_to_start_in_plain_words(
    sim_tokens: SimServer,
    direct_db: str,
    transaction_pooler: PgBouncer,
    redis_server: EmbeddedRedis,
    tmp_path: Path,
) -> None:
    settings = serve_settings(
        sim_tokens, transaction_pooler.url(direct_db), redis_server.url, tmp_path, secret=SECRET
    )

    with pytest.raises(ConfigError) as refused:
        await asyncio.wait_for(run_serve(settings, stop=asyncio.Event()), 30)

    message = str(refused.value)
    assert "transaction" in message
    assert "session" in message
    assert "5432" in message


async def test_doctor_through_transaction_pooler_fails_the_database_check_in_plain_words(
    direct_db: str,
    transaction_pooler: PgBouncer,
    redis_server: EmbeddedRedis,
    redis_client: object,
    tmp_path: Path,
) -> None:
    settings = load_settings(
        None, data_dir=tmp_path, accounts=[{"name": ACCOUNT, "dialect": "native"}],
        redis={"url": redis_server.url},
        database={"url": transaction_pooler.url(direct_db)},
    )  # fmt: skip
    store = TokenStore(redis_client, settings.tokens)  # type: ignore[arg-type]

    report = await run_doctor(settings, store, ACCOUNT)

    database = next((c for c in report.checks if c.name == "database"), None)
    assert database is not None, [c.name for c in report.checks]
    assert database.status is Status.FAIL
    assert "transaction" in database.detail
    assert "5432" in database.fix


async def test_doctor_through_session_pooler_passes_the_database_check(
    direct_db: str,
    session_pooler: PgBouncer,
    redis_server: EmbeddedRedis,
    redis_client: object,
    tmp_path: Path,
) -> None:
    settings = load_settings(
        None, data_dir=tmp_path, accounts=[{"name": ACCOUNT, "dialect": "native"}],
        redis={"url": redis_server.url}, database={"url": session_pooler.url(direct_db)},
    )  # fmt: skip
    store = TokenStore(redis_client, settings.tokens)  # type: ignore[arg-type]

    report = await run_doctor(settings, store, ACCOUNT)

    database = next((c for c in report.checks if c.name == "database"), None)
    assert database is not None, [c.name for c in report.checks]
    assert database.status is Status.PASS, database.detail

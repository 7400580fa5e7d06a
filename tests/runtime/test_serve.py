"""``run_serve``: external PostgreSQL and Redis, the simulator as broker, HTTP and workers."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import asyncpg
import httpx
import pytest
import redis.asyncio as aioredis

from _support.runtime import reachable_tmp_dir, serve_settings, serving, until_final
from tradebridge.config import Settings, load_settings
from tradebridge.errors import ConfigError
from tradebridge.runtime.serve import redis_connections, run_serve
from tradebridge.runtime.up import simulator_settings
from tradebridge.sim.seed import TokenSeeder
from tradebridge.sim.server import SimServer
from tradebridge.store.embedded import EmbeddedRedis
from tradebridge.store.ledger import Ledger

WEBHOOK_SECRET = "serve-test-webhook-secret"


def _settings(
    sim: SimServer, database: str, redis: str, data_dir: Path, **serve: object
) -> Settings:
    return serve_settings(  # type: ignore[no-any-return]
        sim, database, redis, data_dir, secret=WEBHOOK_SECRET, serve=serve
    )


async def test_serve_external_stores_places_inserted_row_as_filled(
    sim_tokens: SimServer, fresh_db: str, redis_server: EmbeddedRedis, tmp_path: Path
) -> None:
    settings = _settings(sim_tokens, fresh_db, redis_server.url, tmp_path)
    async with serving(settings), await Ledger.connect(fresh_db) as ledger:
        await ledger.insert_signal(
            signal_id="serve-1", instrument="MNQ1!", side="buy", quantity=1,
            account_name="DEMO0000001",
        )  # fmt: skip
        row = await until_final(ledger, "serve-1")
    assert row.status.value == "filled"
    assert row.filled_qty == Decimal(1)
    assert row.tradovate_order_id


async def _connections(database: str) -> int:
    conn = await asyncpg.connect(database)
    try:
        return int(await conn.fetchval(
            "select count(*) from pg_stat_activity"
            " where datname = current_database() and pid <> pg_backend_pid()"
        ))  # fmt: skip
    finally:
        await conn.close()


async def test_serve_keeps_its_whole_pool_open_unless_min_pool_says_less(
    sim_tokens: SimServer, fresh_db: str, redis_server: EmbeddedRedis, tmp_path: Path
) -> None:
    # An alert after a quiet spell must not wait for connections to open (asyncpg closes
    # those above the floor after five idle minutes): by default the floor is the pool.
    settings = _settings(sim_tokens, fresh_db, redis_server.url, tmp_path)
    pool_size = settings.database.max_pool
    async with serving(settings):
        by_default = await _connections(fresh_db)
    one = settings.database.model_copy(update={"min_pool": 1})
    async with serving(settings.model_copy(update={"database": one})):
        with_one = await _connections(fresh_db)

    assert by_default >= pool_size
    assert with_one < pool_size


async def test_serve_opens_its_redis_connections_before_the_first_alert(
    sim_tokens: SimServer, fresh_db: str, redis_server: EmbeddedRedis, tmp_path: Path
) -> None:
    # One per account placed at once (16 here): a fan-out's rows never open their own.
    settings = _settings(sim_tokens, fresh_db, redis_server.url, tmp_path)
    observer = aioredis.Redis.from_url(redis_server.url)
    try:
        before = int((await observer.info("stats"))["total_connections_received"])
        async with serving(settings):
            opened = int((await observer.info("stats"))["total_connections_received"]) - before
    finally:
        await observer.aclose()
    assert redis_connections(settings) == 16
    assert opened >= 16


def test_the_server_loads_the_native_adapter_with_itself() -> None:
    # The broker factory imports it on first use: that was as a cold fan-out began, ~50-70
    # ms of pydantic models and websockets on the loop after the webhook answered.
    probe = "import sys, tradebridge.runtime.serve; print(sorted(sys.modules))"
    loaded = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=120
    ).stdout
    assert "'tradebridge.brokers.tradovate.usersync'" in loaded
    assert "'websockets.asyncio.client'" in loaded


async def test_serve_healthz_all_reachable_answers_ok_with_each_check(
    sim_tokens: SimServer, fresh_db: str, redis_server: EmbeddedRedis, tmp_path: Path
) -> None:
    settings = _settings(sim_tokens, fresh_db, redis_server.url, tmp_path)
    async with serving(settings) as found, httpx.AsyncClient() as client:
        answer = await client.get(found.healthz_url)
    assert answer.status_code == 200
    body = answer.json()
    assert body["status"] == "ok"
    assert {"database", "redis", "broker:native", "tokens"} <= set(body["checks"])
    assert all(check["ok"] for check in body["checks"].values())


async def test_serve_healthz_broker_unreachable_answers_503_naming_it(
    sim: SimServer, fresh_db: str, redis_server: EmbeddedRedis, tmp_path: Path
) -> None:
    settings = _settings(sim, fresh_db, redis_server.url, tmp_path)
    sim.stop()  # the configured broker host no longer answers
    async with serving(settings) as found, httpx.AsyncClient() as client:
        answer = await client.get(found.healthz_url)
    assert answer.status_code == 503
    checks = answer.json()["checks"]
    assert checks["broker:native"]["ok"] is False
    assert checks["database"]["ok"] is True


async def test_serve_metrics_answers_prometheus_text_with_tradebridge_series(
    sim_tokens: SimServer, fresh_db: str, redis_server: EmbeddedRedis, tmp_path: Path
) -> None:
    settings = _settings(sim_tokens, fresh_db, redis_server.url, tmp_path)
    async with serving(settings) as found, httpx.AsyncClient() as client:
        answer = await client.get(found.metrics_url)
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("text/plain")
    assert "tradebridge_signals_claimed_total" in answer.text
    assert "tradebridge_workers_running 1.0" in answer.text


async def test_serve_stop_while_idle_returns_and_closes_http(
    sim_tokens: SimServer, fresh_db: str, redis_server: EmbeddedRedis, tmp_path: Path
) -> None:
    settings = _settings(sim_tokens, fresh_db, redis_server.url, tmp_path)
    async with serving(settings) as found:
        url = found.healthz_url
    async with httpx.AsyncClient() as client:
        with pytest.raises(httpx.ConnectError):
            await client.get(url)


async def test_serve_no_urls_as_any_user_starts_embedded_stores_and_migrates(
    sim: SimServer,
) -> None:
    with reachable_tmp_dir("tb-embedded-") as data_dir:
        # Tokens reach the embedded Redis only once it runs: the tracker's first stream
        # fails and the reconciler settles the row, on a short interval here.
        base = load_settings(
            data_dir=data_dir / "data",
            serve={"port": 0},
            dispatcher={"reconcile_interval_s": 1.0},
            webhook={"enabled": False},
        )
        settings = simulator_settings(base, sim.url, sim.config.users)
        assert settings.database.url is None
        assert settings.redis.url is None
        async with serving(settings) as found, httpx.AsyncClient() as client:
            answer = await client.get(found.healthz_url)
            assert (data_dir / "data" / "postgres" / "data" / "PG_VERSION").exists()
            redis = aioredis.Redis.from_url(found.redis_url)
            await TokenSeeder(sim.ctx, redis).seed()
            await redis.aclose()
            async with await Ledger.connect(found.database_url) as ledger:
                await ledger.insert_signal(
                    signal_id="emb-1", instrument="MNQ1!", side="buy", quantity=1,
                    account_name="DEMO0000001",
                )  # fmt: skip
                row = await until_final(ledger, "emb-1")
        assert answer.status_code == 200, answer.text
        assert row.status.value == "filled"
        # Stopped on the way out, data kept.
        assert not (data_dir / "data" / "postgres" / "data" / "postmaster.pid").exists()
        assert (data_dir / "data" / "postgres" / "data" / "PG_VERSION").exists()


@pytest.mark.skipif(os.geteuid() != 0, reason="the private-parent fallback is for root only")
async def test_serve_data_dir_under_private_parent_as_root_uses_fallback_location(
    sim: SimServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    private = tmp_path / "private"
    private.mkdir(mode=0o700)
    with reachable_tmp_dir("tb-fallback-") as fallback:
        monkeypatch.setenv("TRADEBRIDGE_FALLBACK_DIR", str(fallback))
        base = load_settings(
            data_dir=private / "data", serve={"port": 0}, webhook={"enabled": False}
        )
        settings = simulator_settings(base, sim.url, sim.config.users)
        async with serving(settings) as found, httpx.AsyncClient() as client:
            answer = await client.get(found.healthz_url)
        location = Path((private / "data" / "postgres.location").read_text().strip())
        assert answer.json()["checks"]["database"]["ok"] is True
        assert location.parent == fallback
        assert (location / "data" / "PG_VERSION").exists()


async def test_serve_webhook_without_secret_refuses_to_start(tmp_path: Path) -> None:
    settings = load_settings(data_dir=tmp_path / "data", serve={"port": 0})
    with pytest.raises(ConfigError, match=r"webhook\.secret is not set"):
        await run_serve(settings, stop=asyncio.Event())
    assert not (tmp_path / "data").exists()  # refused before any store was started


async def test_serve_no_secret_for_local_tests_off_loopback_refuses_to_start(
    tmp_path: Path,
) -> None:
    settings = load_settings(
        data_dir=tmp_path / "data",
        serve={"port": 0, "host": "0.0.0.0"},
        webhook={"allow_no_secret_for_local_tests": True},
    )
    with pytest.raises(ConfigError, match="only on a loopback bind address"):
        await run_serve(settings, stop=asyncio.Event())
    assert not (tmp_path / "data").exists()


async def test_serve_intake_only_process_stores_webhook_rows_for_other_workers(
    sim_tokens: SimServer, fresh_db: str, redis_server: EmbeddedRedis, tmp_path: Path
) -> None:
    # workers=0: the webhook answers and stores; nothing in this process places the row.
    intake = _settings(sim_tokens, fresh_db, redis_server.url, tmp_path / "intake")
    intake = intake.model_copy(
        update={"dispatcher": intake.dispatcher.model_copy(update={"workers": 0})}
    )
    body = {"secret": WEBHOOK_SECRET, "symbol": "MNQ1!", "action": "buy", "quantity": 1,
            "account": "DEMO0000001"}  # fmt: skip
    async with serving(intake) as found, httpx.AsyncClient() as client:
        answer = await client.post(found.webhook_url, json=body)
        assert answer.status_code == 200, answer.text
        (signal_id,) = answer.json()["signal_ids"]
        metrics = await client.get(found.metrics_url)
        assert "tradebridge_workers_running 0.0" in metrics.text
        async with await Ledger.connect(fresh_db) as ledger:
            await asyncio.sleep(0.5)
            row = await ledger.get(signal_id)
            assert row is not None
            assert row.status.value == "pending"
    # A worker process on the same database then places it.
    workers = _settings(sim_tokens, fresh_db, redis_server.url, tmp_path / "workers")
    async with serving(workers), await Ledger.connect(fresh_db) as ledger:
        row = await until_final(ledger, signal_id)
    assert row.status.value == "filled"


async def test_serve_metrics_count_claimed_and_placed_rows(
    sim_tokens: SimServer, fresh_db: str, redis_server: EmbeddedRedis, tmp_path: Path
) -> None:
    from tradebridge.obs import metrics

    def value(name: str, **labels: str) -> float:
        return metrics.REGISTRY.get_sample_value(name, labels) or 0.0

    claimed = value("tradebridge_signals_claimed_total")
    placed = value("tradebridge_signals_outcome_total", outcome="placed")
    denied = value("tradebridge_signals_outcome_total", outcome="denied")
    settings = _settings(sim_tokens, fresh_db, redis_server.url, tmp_path)
    async with serving(settings), await Ledger.connect(fresh_db) as ledger:
        await ledger.insert_signal(
            signal_id="m-ok", instrument="MNQ1!", side="buy", quantity=1,
            account_name="DEMO0000001",
        )  # fmt: skip
        await ledger.insert_signal(
            signal_id="m-bad", instrument="MNQ1!", side="sideways", quantity=1,
            account_name="DEMO0000001",
        )  # fmt: skip
        await until_final(ledger, "m-ok")
        await until_final(ledger, "m-bad")
    assert value("tradebridge_signals_claimed_total") - claimed == 2
    assert value("tradebridge_signals_outcome_total", outcome="placed") - placed == 1
    assert value("tradebridge_signals_outcome_total", outcome="denied") - denied == 1

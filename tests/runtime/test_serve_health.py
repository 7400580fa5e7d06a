"""``/healthz`` tells the truth about rows a human must look at and about failing loops.

Rows ``needs_review`` (escalated unknown outcomes) and ``unknown`` rows older than
``dispatcher.unknown_bound_s`` turn the status to ``degraded`` (HTTP 200: the process still
takes alerts) and are listed by id; ``/metrics`` counts them.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import httpx
from test_serve import _settings

from _support.runtime import serving
from tradebridge.config import Settings
from tradebridge.domain.lifecycle import SignalStatus
from tradebridge.runtime.serve import _workers_condition
from tradebridge.sim.server import SimServer
from tradebridge.store.embedded import EmbeddedRedis
from tradebridge.store.ledger import Ledger

S = SignalStatus


async def _row_in(ledger: Ledger, signal_id: str, path: list[SignalStatus]) -> None:
    await ledger.insert_signal(
        signal_id=signal_id, instrument="MNQ1!", side="buy", quantity=1,
        account_name="DEMO0000001",
    )  # fmt: skip
    for status in path:
        await ledger.transition(signal_id, status, error_message=f"test: {status.value}")


def _no_workers(settings: Settings) -> Settings:
    """An intake-only process: nothing here takes or settles a row."""
    return settings.model_copy(
        update={"dispatcher": settings.dispatcher.model_copy(update={"workers": 0})}
    )


async def test_serve_healthz_row_needing_review_degraded_naming_it(
    sim_tokens: SimServer, fresh_db: str, redis_server: EmbeddedRedis, tmp_path: Path
) -> None:
    settings = _settings(sim_tokens, fresh_db, redis_server.url, tmp_path)
    async with await Ledger.connect(fresh_db) as ledger:
        await _row_in(ledger, "stuck", [S.PROCESSING, S.SUBMITTED, S.UNKNOWN, S.NEEDS_REVIEW])
    async with serving(settings) as found, httpx.AsyncClient() as client:
        answer = await client.get(found.healthz_url)
        metrics = await client.get(found.metrics_url)

    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["status"] == "degraded"
    check = body["checks"]["unresolved_rows"]
    assert check["level"] == "degraded"
    assert check["count"] == 1
    assert [(r["signal_id"], r["status"]) for r in check["rows"]] == [("stuck", "needs_review")]
    assert "tradebridge_rows_needing_review 1.0" in metrics.text


async def test_serve_healthz_unknown_row_past_the_bound_degraded(
    sim_tokens: SimServer, fresh_db: str, redis_server: EmbeddedRedis, tmp_path: Path
) -> None:
    # An intake-only process (no reconcile here to settle the row) sees it all the same.
    settings = _no_workers(_settings(sim_tokens, fresh_db, redis_server.url, tmp_path))
    async with await Ledger.connect(fresh_db) as ledger:
        await _row_in(ledger, "fresh", [S.PROCESSING, S.SUBMITTED, S.UNKNOWN])
        await _row_in(ledger, "old", [S.PROCESSING, S.SUBMITTED, S.UNKNOWN])
        await ledger.pool.execute(
            "update trading_signals set last_attempt_at = now() - interval '10 minutes' "
            "where signal_id = 'old'"
        )
    async with serving(settings) as found, httpx.AsyncClient() as client:
        answer = await client.get(found.healthz_url)

    check = answer.json()["checks"]["unresolved_rows"]
    assert answer.json()["status"] == "degraded"
    assert [(r["signal_id"], r["status"]) for r in check["rows"]] == [("old", "unknown")]


async def test_serve_healthz_nothing_unresolved_ok(
    sim_tokens: SimServer, fresh_db: str, redis_server: EmbeddedRedis, tmp_path: Path
) -> None:
    settings = _settings(sim_tokens, fresh_db, redis_server.url, tmp_path)
    async with serving(settings) as found, httpx.AsyncClient() as client:
        answer = await client.get(found.healthz_url)

    checks = answer.json()["checks"]
    assert checks["unresolved_rows"] == {"ok": True, "level": "ok"}
    assert checks["workers"]["level"] == "ok"


async def test_workers_condition_failing_claims_and_reconcile_degraded_without_detail() -> None:
    # A rare branch forced with stand-ins: the database answered errors carrying its URL.
    failing = SimpleNamespace(
        worker_id="w-1",
        claim_error="ConnectionDoesNotExistError: postgresql://tb:pw@db/x closed",
        reconciler=SimpleNamespace(last_error="OSError: postgresql://tb:pw@db/x refused"),
        liveness_lost=True,
        retrying_rows=lambda: {"s-1": ("RuntimeError", 3)},
    )

    condition = await _workers_condition([failing])()

    assert condition.level == "degraded"
    assert condition.detail == {
        "failing": {
            "claim:w-1": "ConnectionDoesNotExistError",
            "liveness:w-1": "lock not held, retaking",
            "reconcile": "OSError",
        },
        "retrying_rows": {"s-1": {"error": "RuntimeError", "tries": 3}},
    }
    assert "pw" not in str(condition.as_json())


async def test_serve_healthz_a_queue_that_stopped_moving_is_degraded(
    sim_tokens: SimServer, fresh_db: str, redis_server: EmbeddedRedis, tmp_path: Path
) -> None:
    # A pending row waiting past notify.queue_age_s: no worker is taking the queue (none
    # runs here), or its account is held. The notifier announced it; /healthz said ok.
    settings = _no_workers(_settings(sim_tokens, fresh_db, redis_server.url, tmp_path))
    async with await Ledger.connect(fresh_db) as ledger:
        await _row_in(ledger, "waiting", [])
        await _row_in(ledger, "new", [])
        await ledger.pool.execute(
            "update trading_signals set created_at = now() - interval '10 minutes' "
            "where signal_id = 'waiting'"
        )
    async with serving(settings) as found, httpx.AsyncClient() as client:
        answer = await client.get(found.healthz_url)

    body = answer.json()
    assert answer.status_code == 200, answer.text
    assert body["status"] == "degraded"
    check = body["checks"]["queue"]
    assert check["level"] == "degraded"
    assert check["pending"] == 2
    assert 590 < check["oldest_s"] < 900


async def test_serve_healthz_a_moving_queue_is_ok(
    sim_tokens: SimServer, fresh_db: str, redis_server: EmbeddedRedis, tmp_path: Path
) -> None:
    settings = _no_workers(_settings(sim_tokens, fresh_db, redis_server.url, tmp_path))
    async with await Ledger.connect(fresh_db) as ledger:
        await _row_in(ledger, "new", [])
    async with serving(settings) as found, httpx.AsyncClient() as client:
        answer = await client.get(found.healthz_url)

    assert answer.json()["checks"]["queue"]["level"] == "ok"
    assert answer.json()["checks"]["queue"]["pending"] == 1

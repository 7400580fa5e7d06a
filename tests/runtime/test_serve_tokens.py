"""``serve`` and tokens: self-managed logins, Redis-only tokens, lockouts, and ``/healthz``."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis.asyncio as aioredis

from _support.runtime import serve_settings, serving, until_final
from tradebridge.config import Settings
from tradebridge.sim.server import SimServer
from tradebridge.store.embedded import EmbeddedRedis
from tradebridge.store.ledger import Ledger

WEBHOOK_SECRET = "serve-tokens-webhook-secret"
DEMO = ("DEMO0000001", "DEMO0000002")
APEX = ("PAAPEX1361890000010", "PAAPEX1361890000011")


def _settings(
    sim: SimServer, database: str, redis: str, data_dir: Path, **sections: Any
) -> Settings:
    return serve_settings(  # type: ignore[no-any-return]
        sim, database, redis, data_dir, secret=WEBHOOK_SECRET, **sections
    )


def _self_managed(
    sim: SimServer, database: str, redis: str, data_dir: Path, workers: int
) -> Settings:
    """The demo user's two accounts, naming no user: the native credentials' user serves them."""
    settings = _settings(
        sim, database, redis, data_dir,
        tokens={"native": {"name": "demo", "password": "demo", "app_id": "tests"}},
        dispatcher={"workers": workers},
    )  # fmt: skip
    accounts = [a.model_copy(update={"user": None}) for a in settings.accounts if a.name in DEMO]
    return settings.model_copy(update={"accounts": accounts})


async def _tokens_check(url: str) -> tuple[int, dict[str, Any], str]:
    async with httpx.AsyncClient() as client:
        answer = await client.get(url)
    return answer.status_code, answer.json(), answer.text


@pytest.fixture
async def empty_redis(redis_server: EmbeddedRedis) -> AsyncIterator[aioredis.Redis]:
    """Return a client of the session Redis, emptied: no token, no lockout."""
    client = aioredis.Redis.from_url(redis_server.url)
    await client.flushdb()
    yield client
    await client.aclose()


async def test_serve_self_managed_empty_redis_two_processes_fill_rows_with_one_login(
    sim: SimServer,
    fresh_db: str,
    redis_server: EmbeddedRedis,
    empty_redis: aioredis.Redis,
    tmp_path: Path,
) -> None:
    one = _self_managed(sim, fresh_db, redis_server.url, tmp_path / "one", workers=2)
    two = _self_managed(sim, fresh_db, redis_server.url, tmp_path / "two", workers=2)
    async with (
        serving(one) as found,
        serving(two),
        await Ledger.connect(fresh_db) as ledger,
    ):
        for name in DEMO:
            await ledger.insert_signal(
                signal_id=f"self-{name}", instrument="MNQ1!", side="buy", quantity=1,
                account_name=name,
            )  # fmt: skip
        rows = [await until_final(ledger, f"self-{name}") for name in DEMO]
        status, health, text = await _tokens_check(found.healthz_url)

    assert [row.status.value for row in rows] == ["filled", "filled"]
    assert sim.ctx.auth.logins == 1  # one login for the user: two processes, four workers
    stored = [json.loads(await empty_redis.get(f"token:{name}")) for name in DEMO]
    assert {(s["kind"], s["userId"]) for s in stored} == {("native", 1)}
    assert status == 200
    tokens = health["checks"]["tokens"]
    assert tokens["level"] == "ok"
    assert {entry["state"] for entry in tokens["accounts"].values()} == {"ok"}
    assert stored[0]["accessToken"] not in text


@pytest.mark.parametrize("state", ["missing", "expired"])
async def test_serve_without_credentials_unusable_tokens_healthz_degraded_naming_accounts(
    sim: SimServer,
    fresh_db: str,
    redis_server: EmbeddedRedis,
    empty_redis: aioredis.Redis,
    tmp_path: Path,
    state: str,
) -> None:
    if state == "expired":
        past = (datetime.now(UTC) - timedelta(minutes=5)).isoformat()
        for name in (*DEMO, *APEX):
            value = {"kind": "native", "accessToken": f"stale-{name}", "expirationTime": past}
            await empty_redis.set(f"token:{name}", json.dumps(value))
    settings = _settings(sim, fresh_db, redis_server.url, tmp_path)

    async with serving(settings) as found:
        status, health, text = await _tokens_check(found.healthz_url)

    assert status == 200  # degraded: the process still takes alerts
    assert health["status"] == "degraded"
    tokens = health["checks"]["tokens"]
    assert tokens["level"] == "degraded"
    assert tokens["problems"] == [*DEMO, *APEX]
    assert {entry["state"] for entry in tokens["accounts"].values()} == {state}
    assert "stale-" not in text
    assert sim.ctx.auth.logins == 0


async def test_serve_locked_out_user_healthz_degraded_with_end_and_no_call_for_it(
    sim_tokens: SimServer, fresh_db: str, redis_server: EmbeddedRedis, tmp_path: Path
) -> None:
    redis = aioredis.Redis.from_url(redis_server.url)
    await redis.set("lockout:token:apex", "HTTP 429 on GET /account/list", px=60_000)
    until = datetime.now(UTC) + timedelta(seconds=60)
    settings = _settings(sim_tokens, fresh_db, redis_server.url, tmp_path)
    try:
        async with serving(settings) as found, await Ledger.connect(fresh_db) as ledger:
            await ledger.insert_signal(
                signal_id="locked-1", instrument="MNQ1!", side="buy", quantity=1,
                account_name=APEX[0],
            )  # fmt: skip
            await asyncio.sleep(1.0)
            status, health, text = await _tokens_check(found.healthz_url)
            row = await ledger.get("locked-1")
        token = json.loads(await redis.get(f"token:{APEX[0]}"))["accessToken"]
    finally:
        await redis.aclose()

    assert status == 200
    tokens = health["checks"]["tokens"]
    assert tokens["level"] == "degraded"
    assert tokens["problems"] == list(APEX)
    lockout = tokens["locked_out"]["apex"]
    assert lockout["reason"] == "HTTP 429 on GET /account/list"
    assert abs(datetime.fromisoformat(lockout["until"]) - until) < timedelta(seconds=3)
    assert tokens["accounts"][APEX[0]]["state"] == "locked_out"
    assert tokens["accounts"][DEMO[0]]["state"] == "ok"
    assert token not in text
    # Nothing was sent for the locked-out user: the row waits, the broker has no order.
    assert row is not None
    assert row.status.value in ("pending", "processing")
    assert sim_tokens.call(lambda: sim_tokens.ctx.engine.orders(200010)) == []

"""``AccountTokens``: each account's token from its user's login, or from Redis; kept fresh."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis

from _support.native import redis_client, sim, sim_clock
from tradebridge.brokers.auth import AccountTokens, TokenManager
from tradebridge.brokers.factory import build_account_tokens
from tradebridge.brokers.pool import BrokerPool
from tradebridge.config import Settings, load_settings
from tradebridge.errors import AuthError, Lockout
from tradebridge.sim.server import SimServer
from tradebridge.store.embedded import EmbeddedRedis
from tradebridge.store.tokens import TokenStore

__all__ = ["redis_client", "sim", "sim_clock"]  # fixtures

DEMO = ("DEMO0000001", "DEMO0000002")
APEX = "PAAPEX1361890000010"


def _settings(sim: SimServer, tmp_path: Path, password: str = "demo", **tokens: Any) -> Settings:
    """Two demo accounts that name no user (the credentials' user serves them), one apex."""
    return load_settings(
        data_dir=tmp_path,
        tradovate={"native_url": f"{sim.url}/v1", "bridge_url": sim.url, "ws_url": ""},
        tokens={"native": {"name": "demo", "password": password, "app_id": "tests"}, **tokens},
        accounts=[
            *({"name": name} for name in DEMO),
            {"name": APEX, "user": "apex"},
        ],
    )


@pytest.fixture
async def open_tokens(
    redis_server: EmbeddedRedis, redis_client: aioredis.Redis
) -> AsyncIterator[Callable[[Settings], AccountTokens]]:
    """Return ``open_tokens(settings)``: one process's token sources on the emptied Redis."""
    opened: list[tuple[aioredis.Redis, AccountTokens]] = []

    def open_(settings: Settings) -> AccountTokens:
        client = aioredis.Redis.from_url(redis_server.url)
        tokens = build_account_tokens(settings, client)
        opened.append((client, tokens))
        return tokens

    yield open_
    for client, tokens in opened:
        await tokens.aclose()
        await client.aclose()


async def test_account_tokens_credentials_user_shares_one_manager_others_read_redis(
    sim: SimServer, tmp_path: Path, open_tokens: Callable[[Settings], AccountTokens]
) -> None:
    tokens = open_tokens(_settings(sim, tmp_path))

    first, second = (tokens.managers[name] for name in DEMO)

    assert first is second
    assert isinstance(first, TokenManager)
    assert first.keys == ["token:DEMO0000001", "token:DEMO0000002"]
    assert APEX not in tokens.managers
    with pytest.raises(AuthError, match="no token in Redis"):
        await tokens.token(APEX)
    assert sim.ctx.auth.logins == 0


async def test_pool_accounts_of_credentials_user_share_one_adapter(
    sim: SimServer, tmp_path: Path, open_tokens: Callable[[Settings], AccountTokens]
) -> None:
    settings = _settings(sim, tmp_path)
    pool = BrokerPool(settings, open_tokens(settings))
    try:
        assert await pool.get(DEMO[0]) is await pool.get(DEMO[1])
        assert await pool.get(APEX) is not await pool.get(DEMO[0])
    finally:
        await pool.close()


async def test_account_tokens_two_processes_empty_redis_one_login_for_every_account(
    sim: SimServer,
    redis_client: aioredis.Redis,
    tmp_path: Path,
    open_tokens: Callable[[Settings], AccountTokens],
) -> None:
    settings = _settings(sim, tmp_path)
    one, two = open_tokens(settings), open_tokens(settings)

    got = await asyncio.gather(*(t.token(name) for t in (one, two) for name in DEMO))

    assert sim.ctx.auth.logins == 1
    assert len({token.access_token for token in got}) == 1
    for name in DEMO:
        stored = json.loads(await redis_client.get(f"token:{name}"))
        assert (stored["kind"], stored["userId"]) == ("native", 1)


async def test_keep_logs_in_once_then_renews_before_expiry_without_new_session(
    sim: SimServer,
    redis_client: aioredis.Redis,
    tmp_path: Path,
    open_tokens: Callable[[Settings], AccountTokens],
) -> None:
    sim.ctx.faults.token_lifetime_s = 4  # due for renewal after half its life: 2 s
    tokens = open_tokens(_settings(sim, tmp_path, expiry_margin_s=0.5))
    manager = tokens.managers[DEMO[0]]
    stop = asyncio.Event()
    keeper = asyncio.create_task(tokens.keep(stop))
    try:
        async with asyncio.timeout(15):
            while manager.renewals < 2:
                await asyncio.sleep(0.05)
    finally:
        stop.set()
        await keeper

    assert (manager.logins, sim.ctx.auth.logins) == (1, 1)
    stored = json.loads(await redis_client.get("token:DEMO0000002"))
    assert datetime.fromisoformat(stored["expirationTime"]) > datetime.now(UTC)


async def test_keep_stops_when_told_even_if_a_library_swallowed_the_cancellation(
    sim: SimServer,
    tmp_path: Path,
    open_tokens: Callable[[Settings], AccountTokens],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Under a loaded suite a stopped keeper went on renewing for minutes (a cancellation
    # lost inside a client call). A rare branch, forced: reseed swallows CancelledError.
    tokens = open_tokens(_settings(sim, tmp_path))
    manager = tokens.managers[DEMO[0]]
    inside = asyncio.Event()

    async def swallowing_reseed() -> list[str]:
        inside.set()
        with contextlib.suppress(asyncio.CancelledError):  # what a misbehaving library does
            await asyncio.sleep(0.2)
        return []

    monkeypatch.setattr(manager, "reseed", swallowing_reseed)
    stop = asyncio.Event()
    keeper = asyncio.create_task(tokens.keep(stop))
    async with asyncio.timeout(15):
        await inside.wait()  # the keeper is in reseed: the cancellation will be swallowed
        stop.set()
        await keeper

    assert keeper.done()


async def test_keep_login_refused_stops_without_looping(
    sim: SimServer, tmp_path: Path, open_tokens: Callable[[Settings], AccountTokens]
) -> None:
    tokens = open_tokens(_settings(sim, tmp_path, password="wrong"))
    manager = tokens.managers[DEMO[0]]

    async with asyncio.timeout(10):
        await manager.keep()  # returns: a refused login is never looped

    assert sim.ctx.auth.failed_logins == {"demo": 1}
    assert manager.failure is not None
    assert "wrong" not in manager.failure
    found = await tokens.health([*DEMO, APEX])
    assert found.level == "degraded"
    assert found.detail["problems"] == [*DEMO, APEX]
    assert found.detail["accounts"][DEMO[0]]["state"] == "missing"
    assert "login_error" in found.detail["accounts"][DEMO[0]]


async def test_health_self_managed_missing_token_is_obtainable_not_a_problem(
    sim: SimServer, tmp_path: Path, open_tokens: Callable[[Settings], AccountTokens]
) -> None:
    tokens = open_tokens(_settings(sim, tmp_path))

    found = await tokens.health(list(DEMO))

    assert found.level == "ok"
    assert {entry["state"] for entry in found.detail["accounts"].values()} == {"missing"}
    assert sim.ctx.auth.logins == 0  # health never logs in


async def test_token_store_without_users_checks_no_lockout(redis_client: aioredis.Redis) -> None:
    await redis_client.set("lockout:token:demo", "HTTP 429", ex=60)
    await redis_client.set("token:DEMO0000001", "opaque", ex=600)
    settings = load_settings(accounts=[{"name": "DEMO0000001", "user": "demo"}])

    # The plain store (tests, benchmarks) reads as before; serve's store knows the users.
    plain = TokenStore(redis_client, settings.tokens)
    assert (await plain.token("DEMO0000001")).access_token == "opaque"
    checked = build_account_tokens(settings, redis_client)
    with pytest.raises(Lockout, match="demo is locked out"):
        await checked.token("DEMO0000001")

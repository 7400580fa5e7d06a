"""Lockouts (423, 429, captcha) persist per Tradovate user in Redis until they end.

A lockout recorded by one process is honoured by any other, including one started later:
no request for that user leaves until the lockout's key expires. Counted on the
simulator's side (its server's request counter), not on ours.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis

from _support.native import login_json, native_config, redis_client, sim, sim_clock
from tradebridge.brokers.auth import AccountTokens, TokenManager
from tradebridge.brokers.factory import build_account_tokens
from tradebridge.brokers.http import BrokerHttp
from tradebridge.brokers.pool import BrokerPool
from tradebridge.config import NativeCredentials, Settings, TokenConfig, load_settings
from tradebridge.errors import Lockout
from tradebridge.runtime.up import simulator_settings
from tradebridge.sim.server import SimServer
from tradebridge.store.embedded import EmbeddedRedis
from tradebridge.store.tokens import Lockouts, TokenStore

__all__ = ["redis_client", "sim", "sim_clock"]  # fixtures

LOCKOUT_S = 2.0


def _sim_requests(sim: SimServer) -> int:
    """Return how many HTTP requests the simulator has received so far."""
    server = sim._server  # the simulator's uvicorn server counts the requests it served
    assert server is not None
    return int(server.server_state.total_requests)


def _settings(sim: SimServer, tmp_path: Path, **tokens: Any) -> Settings:
    base = load_settings(data_dir=tmp_path, tokens={"lockout_s": LOCKOUT_S, **tokens})
    return simulator_settings(base, sim.url, sim.config.users)


async def _seed(sim: SimServer, redis: aioredis.Redis, settings: Settings) -> None:
    values = {user: await login_json(sim, user) for user in ("demo", "apex")}
    for account in settings.accounts:
        assert account.user is not None
        await redis.set(f"token:{account.name}", values[account.user])


@pytest.fixture
async def open_pool(
    redis_server: EmbeddedRedis, redis_client: aioredis.Redis
) -> AsyncIterator[Callable[[Settings], BrokerPool]]:
    """Return ``open_pool(settings)``: a pool as ``serve`` builds it, on the emptied Redis."""
    opened: list[tuple[aioredis.Redis, AccountTokens, BrokerPool]] = []

    def open_(settings: Settings) -> BrokerPool:
        client = aioredis.Redis.from_url(redis_server.url)
        tokens = build_account_tokens(settings, client)
        pool = BrokerPool(settings, tokens)
        opened.append((client, tokens, pool))
        return pool

    yield open_
    for client, tokens, pool in opened:
        await pool.close()
        await tokens.aclose()
        await client.aclose()


async def test_pool_429_lockout_honoured_by_fresh_pool_without_request_until_it_expires(
    sim: SimServer,
    redis_client: aioredis.Redis,
    tmp_path: Path,
    open_pool: Callable[[Settings], BrokerPool],
) -> None:
    settings = _settings(sim, tmp_path)
    await _seed(sim, redis_client, settings)
    first = open_pool(settings)
    sim.ctx.faults.lockout_429_users = ["demo"]
    with pytest.raises(Lockout):
        await (await first.get("DEMO0000001")).accounts()
    recorded_at = datetime.now(UTC)
    assert isinstance(first.tokens, AccountTokens)
    await first.tokens.lockouts.flush()
    sim.ctx.faults.lockout_429_users = []  # Tradovate would still refuse; we must not ask
    before = _sim_requests(sim)

    fresh = open_pool(settings)  # a restarted process: nothing in memory
    for name in ("DEMO0000001", "DEMO0000002"):
        with pytest.raises(Lockout) as refused:
            await (await fresh.get(name)).accounts()
        until = recorded_at + timedelta(seconds=LOCKOUT_S)
        assert abs(refused.value.until - until) < timedelta(seconds=0.5)
    assert b"HTTP 429" in await redis_client.get("lockout:token:demo")
    assert 0 < await redis_client.pttl("lockout:token:demo") <= LOCKOUT_S * 1000
    assert _sim_requests(sim) == before
    assert await (await fresh.get("PAAPEX1361890000010")).accounts()  # another user calls

    await asyncio.sleep(max((refused.value.until - datetime.now(UTC)).total_seconds(), 0) + 0.2)
    assert [a.name for a in await (await fresh.get("DEMO0000001")).accounts()] == [
        "DEMO0000001",
        "DEMO0000002",
    ]


# Login faults of the simulator, each of which must lock the user out for LOCKOUT_S.
LOGIN_LOCKOUTS: dict[str, Callable[[SimServer], None]] = {
    "http_429": lambda sim: setattr(sim.ctx.faults, "lockout_429_users", ["*"]),
    "http_423": lambda sim: sim.ctx.auth.failed_logins.update(
        {"demo": sim.ctx.faults.failed_logins_before_423}
    ),
    "captcha": lambda sim: setattr(sim.ctx.faults, "login_penalty", "captcha"),
}


@pytest.mark.parametrize("fault", sorted(LOGIN_LOCKOUTS))
async def test_login_lockout_persisted_and_refused_by_fresh_store_for_every_account(
    sim: SimServer, redis_client: aioredis.Redis, redis_server: EmbeddedRedis, fault: str
) -> None:
    config = native_config(sim)
    token_config = TokenConfig(lockout_s=LOCKOUT_S)
    http = BrokerHttp(config.native_url, dialect="native")
    manager = TokenManager(
        TokenStore(redis_client, token_config), http,
        NativeCredentials(name="demo", password="demo", app_id="tests"),
        device_id="tests-device", account_names=["DEMO0000001"], alert=lambda _m: None,
        retry=config.retry,
    )  # fmt: skip
    LOGIN_LOCKOUTS[fault](sim)
    try:
        with pytest.raises(Lockout) as caught:
            await manager.token("DEMO0000001")
    finally:
        await http.aclose()
    # A token some service stored meanwhile does not lift the lockout in another process.
    await redis_client.set("token:DEMO0000002", await _token_json_without_sim_faults(sim))
    other = aioredis.Redis.from_url(redis_server.url)
    store = TokenStore(other, token_config, user_for=lambda _name: "demo")
    try:
        with pytest.raises(Lockout) as refused:
            await store.token("DEMO0000002")
        assert abs(refused.value.until - caught.value.until) < timedelta(seconds=1)
        await asyncio.sleep((refused.value.until - datetime.now(UTC)).total_seconds() + 0.2)
        assert (await store.token("DEMO0000002")).user_id == 1
    finally:
        await other.aclose()


async def _token_json_without_sim_faults(sim: SimServer) -> str:
    faults = sim.ctx.faults
    saved = (faults.lockout_429_users, faults.login_penalty, dict(sim.ctx.auth.failed_logins))
    faults.lockout_429_users, faults.login_penalty = [], "off"
    sim.ctx.auth.failed_logins.clear()
    try:
        return await login_json(sim)
    finally:
        faults.lockout_429_users, faults.login_penalty = saved[0], saved[1]
        sim.ctx.auth.failed_logins.update(saved[2])


async def test_lockout_noted_while_redis_unwritable_still_holds_in_process(
    redis_client: aioredis.Redis,
) -> None:
    broken = aioredis.Redis(host="127.0.0.1", port=1, socket_connect_timeout=0.2)
    lockouts = Lockouts(broken)
    try:
        state = lockouts.note("demo", "HTTP 429 on GET /account/list", 600)
        await lockouts.flush()

        with pytest.raises(Lockout) as refused:
            await lockouts.check("demo")
    finally:
        await broken.aclose()
    assert refused.value.until == state.until
    assert await redis_client.exists("lockout:token:demo") == 0


async def test_lockout_key_without_ttl_is_not_a_lockout(redis_client: aioredis.Redis) -> None:
    await redis_client.set("lockout:token:demo", "set by hand, no end")

    await Lockouts(redis_client).check("demo")  # no Lockout: an end is what makes one


async def _pttl_calls(redis: aioredis.Redis) -> int:
    stats = await redis.info("commandstats")
    return int(stats.get("cmdstat_pttl", {}).get("calls", 0))


async def test_concurrent_checks_of_one_user_share_one_read_and_its_answer(
    redis_client: aioredis.Redis,
) -> None:
    # A 20-account fan-out checks its user's lockout once per order, all at once.
    lockouts = Lockouts(redis_client)
    await redis_client.set("lockout:token:demo", "HTTP 429 on POST /order/placeorder", px=60_000)
    await redis_client.config_resetstat()

    checks = await asyncio.gather(
        *(lockouts.check("demo") for _ in range(20)), lockouts.check("apex"),
        return_exceptions=True,
    )  # fmt: skip

    assert all(isinstance(c, Lockout) for c in checks[:20])
    assert checks[20] is None  # another user: its own read, no lockout
    assert await _pttl_calls(redis_client) == 2
    await lockouts.check("apex")  # a later check reads again
    assert await _pttl_calls(redis_client) == 3


async def test_health_reports_lockout_end_and_never_the_token(
    sim: SimServer, redis_client: aioredis.Redis, tmp_path: Path
) -> None:
    settings = _settings(sim, tmp_path)
    await _seed(sim, redis_client, settings)
    tokens = build_account_tokens(settings, redis_client)
    state = await tokens.lockouts.record("apex", "HTTP 423 on POST /order/placeorder", 60)

    found = await tokens.health([a.name for a in settings.accounts])

    assert found.level == "degraded"
    (lockout,) = found.detail["locked_out"].values()
    assert found.detail["locked_out"] == {"apex": lockout}
    assert lockout["reason"] == "HTTP 423 on POST /order/placeorder"
    assert abs(datetime.fromisoformat(lockout["until"]) - state.until) < timedelta(seconds=1)
    assert found.detail["problems"] == ["PAAPEX1361890000010", "PAAPEX1361890000011"]
    assert found.detail["accounts"]["DEMO0000001"]["state"] == "ok"
    token = json.loads(await redis_client.get("token:DEMO0000001"))["accessToken"]
    assert token not in json.dumps(found.detail)

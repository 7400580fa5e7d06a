"""TokenStore and TokenManager against the session Redis and the simulator."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta

import pytest
import redis.asyncio as aioredis

from _support.native import login_json, native_config, redis_client, sim, sim_clock
from tradebridge.brokers.auth import AccountTokens, TokenManager
from tradebridge.brokers.http import BrokerHttp
from tradebridge.config import NativeCredentials, TokenConfig
from tradebridge.errors import AuthError, Lockout, LoginFailed
from tradebridge.sim.server import SimServer
from tradebridge.store.tokens import StoredToken, TokenStore, jwt_expiry

__all__ = ["redis_client", "sim", "sim_clock"]  # fixtures

KEY = "token:DEMO0000001"


def _iso(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


async def test_token_json_value_expiry_from_expiration_time(
    sim: SimServer, redis_client: aioredis.Redis
) -> None:
    value = json.loads(await login_json(sim))
    await redis_client.set(KEY, json.dumps(value))

    token = await TokenStore(redis_client, TokenConfig()).token("DEMO0000001")

    assert token.access_token == value["accessToken"]
    assert token.expires_at == datetime.fromisoformat(value["expirationTime"])
    assert (token.kind, token.user_id, token.key) == ("native", 1, KEY)


async def test_token_bare_value_expiry_from_jwt_exp(
    sim: SimServer, redis_client: aioredis.Redis
) -> None:
    bare = json.loads(await login_json(sim))["accessToken"]
    await redis_client.set(KEY, bare)

    token = await TokenStore(redis_client, TokenConfig()).token("DEMO0000001")

    assert token.access_token == bare
    assert token.expires_at == jwt_expiry(bare)
    assert token.expires_at > datetime.now(UTC)


async def test_token_bare_opaque_value_expiry_from_key_ttl(redis_client: aioredis.Redis) -> None:
    await redis_client.set(KEY, "opaque-token-value", ex=600)

    token = await TokenStore(redis_client, TokenConfig()).token("DEMO0000001")

    assert timedelta(seconds=590) < token.remaining(datetime.now(UTC)) <= timedelta(seconds=600)


async def test_token_missing_key_names_the_key(redis_client: aioredis.Redis) -> None:
    with pytest.raises(AuthError, match=r"no token in Redis under token:DEMO0000001"):
        await TokenStore(redis_client, TokenConfig()).token("DEMO0000001")


async def test_token_missing_or_expired_says_what_to_do(redis_client: aioredis.Redis) -> None:
    store = TokenStore(redis_client, TokenConfig())
    with pytest.raises(AuthError) as missing:
        await store.token("DEMO0000001")
    expired = _iso(datetime.now(UTC) - timedelta(minutes=1))
    await redis_client.set(KEY, json.dumps({"accessToken": "t", "expirationTime": expired}))
    with pytest.raises(AuthError) as stale:
        await store.token("DEMO0000001")

    for error in (missing.value, stale.value):
        assert "run `tradebridge tokens serve`" in str(error)
        assert "[[users]]" in str(error)
        assert "docs/tradovate.md" in str(error)
        assert f"have your own token writer fill {KEY}" in str(error)


@pytest.mark.parametrize(
    ("value", "match"),
    [
        ('{"accessToken": ', "not valid JSON"),
        ('{"expirationTime": "2030-01-01T00:00:00Z"}', "no accessToken"),
        ('{"accessToken": "secret-abc", "expirationTime": "soon"}', "unreadable"),
        ("two words", "neither"),
        ("opaque-without-ttl", "no exp claim"),
    ],
)
async def test_token_malformed_value_clear_error_without_token(
    redis_client: aioredis.Redis, value: str, match: str
) -> None:
    await redis_client.set(KEY, value)

    with pytest.raises(AuthError, match=match) as caught:
        await TokenStore(redis_client, TokenConfig()).token("DEMO0000001")

    assert "secret-abc" not in str(caught.value)


async def test_token_expired_error_never_shows_token(
    sim: SimServer, redis_client: aioredis.Redis
) -> None:
    value = json.loads(await login_json(sim))
    value["expirationTime"] = _iso(datetime.now(UTC) - timedelta(minutes=1))
    await redis_client.set(KEY, json.dumps(value))

    with pytest.raises(AuthError, match="expired") as caught:
        await TokenStore(redis_client, TokenConfig()).token("DEMO0000001")

    assert value["accessToken"] not in str(caught.value)


async def test_token_cached_then_reread_once_after_refusal(
    sim: SimServer, redis_client: aioredis.Redis
) -> None:
    first, second = await login_json(sim), await login_json(sim)
    await redis_client.set(KEY, first)
    store = TokenStore(redis_client, TokenConfig())
    cached = await store.token("DEMO0000001")
    await redis_client.set(KEY, second)

    again = await store.token("DEMO0000001")
    fresh = await store.after_refused("DEMO0000001", again)

    assert again.access_token == cached.access_token  # served from the cache
    assert fresh.access_token == json.loads(second)["accessToken"]
    with pytest.raises(AuthError, match="no newer one"):
        await store.after_refused("DEMO0000001", fresh)


async def test_token_refused_not_handed_out_again_until_the_key_changes(
    sim: SimServer, redis_client: aioredis.Redis
) -> None:
    first, second = await login_json(sim), await login_json(sim)
    await redis_client.set(KEY, first)
    store = TokenStore(redis_client, TokenConfig())
    tokens = AccountTokens(store, {})
    refused = await store.token("DEMO0000001")
    with pytest.raises(AuthError, match="no newer one"):
        await store.after_refused("DEMO0000001", refused)

    with pytest.raises(AuthError, match="refused the token under token:DEMO0000001") as caught:
        await store.token("DEMO0000001")  # Redis still holds it: not sent for another 401
    health = await tokens.health(["DEMO0000001"])
    await redis_client.set(KEY, second)
    fresh = await store.token("DEMO0000001")
    tokens = AccountTokens(store, {})  # health is cached briefly: a new view
    healed = await tokens.health(["DEMO0000001"])

    assert refused.access_token not in str(caught.value)
    assert health.level == "degraded"
    assert health.detail["accounts"]["DEMO0000001"]["state"] == "refused"
    assert health.detail["problems"] == ["DEMO0000001"]
    assert refused.access_token not in json.dumps(health.detail)
    assert fresh.access_token == json.loads(second)["accessToken"]
    assert healed.level == "ok"


async def test_token_near_expiry_not_cached(sim: SimServer, redis_client: aioredis.Redis) -> None:
    value = json.loads(await login_json(sim))
    value["expirationTime"] = _iso(datetime.now(UTC) + timedelta(seconds=30))
    await redis_client.set(KEY, json.dumps(value))
    store = TokenStore(redis_client, TokenConfig(expiry_margin_s=60))
    await store.token("DEMO0000001")
    await redis_client.delete(KEY)

    with pytest.raises(AuthError, match="no token"):
        await store.token("DEMO0000001")


def test_token_repr_masks_access_token() -> None:
    token = StoredToken("eyJhbGciOi.abcdefghij.klmnopqrst", datetime.now(UTC), key=KEY,
                        md_access_token="md-secret-value")  # fmt: skip

    assert "abcdefghij" not in repr(token)
    assert "md-secret-value" not in repr(token)
    assert "abcdefghij" not in str(token)


# --- TokenManager --------------------------------------------------------------------------
MakeManager = Callable[..., TokenManager]


@pytest.fixture
async def make_manager(sim: SimServer, redis_client: aioredis.Redis) -> AsyncIterator[MakeManager]:
    """Return ``make_manager(password=..., alerts=..., sleeps=..., **TokenConfig fields)``."""
    clients: list[BrokerHttp] = []

    def make(
        *,
        password: str = "demo",
        alerts: list[str] | None = None,
        sleeps: list[float] | None = None,
        **token_fields: object,
    ) -> TokenManager:
        config = native_config(sim)
        store = TokenStore(redis_client, TokenConfig.model_validate(token_fields))
        http = BrokerHttp(config.native_url, dialect="native")
        clients.append(http)

        async def sleep(seconds: float) -> None:
            if sleeps is not None:
                sleeps.append(seconds)
            await asyncio.sleep(seconds)

        return TokenManager(
            store, http, NativeCredentials(name="demo", password=password, app_id="tests"),
            device_id="tests-device", account_names=["DEMO0000001", "DEMO0000002"],
            alert=(alerts.append if alerts is not None else lambda _m: None), sleep=sleep,
            retry=config.retry,
        )  # fmt: skip

    yield make
    for http in clients:
        await http.aclose()


async def test_manager_login_writes_every_key_with_ttl(
    sim: SimServer, redis_client: aioredis.Redis, make_manager: MakeManager
) -> None:
    manager = make_manager()

    token = await manager.token("DEMO0000001")

    for key in ("token:DEMO0000001", "token:DEMO0000002"):
        stored = json.loads(await redis_client.get(key))
        assert stored["accessToken"] == token.access_token
        assert stored["userId"] == 1
        ttl = await redis_client.pttl(key)
        assert 0 < ttl <= token.remaining(datetime.now(UTC)).total_seconds() * 1000
    assert sim.ctx.auth.logins == 1
    assert (await manager.token("DEMO0000002")).access_token == token.access_token
    assert sim.ctx.auth.logins == 1


async def test_manager_bad_password_login_failed_once_no_loop(
    sim: SimServer, redis_client: aioredis.Redis, make_manager: MakeManager
) -> None:
    alerts: list[str] = []
    manager = make_manager(password="wrong", alerts=alerts)

    with pytest.raises(LoginFailed) as caught:
        await manager.token("DEMO0000001")

    assert sim.ctx.auth.failed_logins == {"demo": 1}
    assert "wrong" not in str(caught.value)
    assert len(alerts) == 1


async def test_manager_penalty_ticket_waits_and_resends(
    sim: SimServer, redis_client: aioredis.Redis, make_manager: MakeManager
) -> None:
    sim.ctx.faults.login_penalty = "ticket"
    sim.ctx.faults.penalty_seconds = 1
    sleeps: list[float] = []
    manager = make_manager(sleeps=sleeps)

    token = await manager.token("DEMO0000001")

    assert sleeps == [1.0]
    assert sim.ctx.auth.verify(token.access_token) is not None
    assert sim.ctx.auth.logins == 1


async def test_manager_captcha_lockout_alerts_and_stops(
    sim: SimServer, redis_client: aioredis.Redis, make_manager: MakeManager
) -> None:
    sim.ctx.faults.login_penalty = "captcha"
    alerts: list[str] = []
    manager = make_manager(alerts=alerts)

    with pytest.raises(Lockout) as caught:
        await manager.token("DEMO0000001")
    sim.ctx.faults.login_penalty = "off"
    with pytest.raises(Lockout):
        await manager.token("DEMO0000001")  # shared lockout: no second login attempt

    assert caught.value.until > datetime.now(UTC) + timedelta(minutes=59)
    assert len(alerts) == 1
    assert sim.ctx.auth.logins == 0


async def test_manager_http_423_lockout(sim: SimServer, make_manager: MakeManager) -> None:
    sim.ctx.faults.failed_logins_before_423 = 1
    sim.ctx.auth.failed_logins["demo"] = 1
    alerts: list[str] = []

    with pytest.raises(Lockout):
        await make_manager(alerts=alerts).token("DEMO0000001")

    assert len(alerts) == 1


async def test_manager_login_cap_per_hour_enforced(
    sim: SimServer, redis_client: aioredis.Redis, make_manager: MakeManager
) -> None:
    manager = make_manager(max_logins_per_hour=1)
    await manager.login()

    with pytest.raises(Lockout, match="logged in 1 times"):
        await manager.login()

    assert sim.ctx.auth.logins == 1


async def test_manager_two_processes_renew_once(
    sim: SimServer, redis_client: aioredis.Redis, make_manager: MakeManager
) -> None:
    value = json.loads(await login_json(sim))
    # Obtained long ago: more than 80 % of its life has passed, so it must be renewed.
    value["obtainedAt"] = _iso(datetime.now(UTC) - timedelta(hours=6))
    for key in ("token:DEMO0000001", "token:DEMO0000002"):
        await redis_client.set(key, json.dumps(value))
    first, second = make_manager(), make_manager()

    tokens = await asyncio.gather(first.token("DEMO0000001"), second.token("DEMO0000002"))

    assert first.renewals + second.renewals == 1
    assert first.logins + second.logins == 0
    assert tokens[0].access_token == tokens[1].access_token != value["accessToken"]
    assert not first.needs_renewal(tokens[0])
    assert await redis_client.get("lock:token:demo") is None


async def test_manager_refused_token_logs_in_once(
    sim: SimServer, redis_client: aioredis.Redis, make_manager: MakeManager
) -> None:
    manager = make_manager()
    old = await manager.token("DEMO0000001")
    refused = StoredToken(old.access_token + "x", old.expires_at, key=KEY)
    await redis_client.set(KEY, refused.to_json(), ex=3600)

    fresh = await manager.after_refused("DEMO0000001", refused)

    assert fresh.access_token != refused.access_token
    assert sim.ctx.auth.verify(fresh.access_token) is not None

"""BridgeTokenManager: self-managed TradingView-bridge logins against the simulator and Redis."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta

import pytest
import redis.asyncio as aioredis

from _support.native import FAST_RETRY, login_json, native_config, redis_client, sim, sim_clock
from _support.rawhttp import Answer, raw_http
from tradebridge.brokers.auth import BridgeTokenManager, TokenManager
from tradebridge.brokers.http import BrokerCall, BrokerHttp
from tradebridge.brokers.tvbridge.broker import TvBridgeBroker, TvBridgeOptions
from tradebridge.config import BridgeCredentials, NativeCredentials, TokenConfig
from tradebridge.domain.commands import SubmitOrder
from tradebridge.domain.contracts import resolve_symbol
from tradebridge.domain.enums import OrderType, Side
from tradebridge.domain.ids import AccountName, ClientOrderId
from tradebridge.errors import AuthError, Lockout, LoginFailed
from tradebridge.sim.server import SimServer
from tradebridge.store.tokens import TokenStore

__all__ = ["redis_client", "sim", "sim_clock"]  # fixtures

ACCOUNTS = ["DEMO0000001", "DEMO0000002"]
KEYS = [f"token:{name}" for name in ACCOUNTS]


class Made:
    """What ``make_manager`` built: the manager, its alerts and its calls on the wire."""

    def __init__(self, manager: BridgeTokenManager) -> None:
        self.manager = manager
        self.alerts: list[str] = []
        self.calls: list[BrokerCall] = []

    def logins_sent(self) -> int:
        return sum(1 for c in self.calls if c.path.startswith("/authorize"))


MakeManager = Callable[..., Made]


@pytest.fixture
async def make_manager(sim: SimServer, redis_client: aioredis.Redis) -> AsyncIterator[MakeManager]:
    """Return ``make_manager(password=..., url=..., **TokenConfig fields)``; ``url`` is the
    simulator's unless a test points the client at a server of its own."""
    clients: list[BrokerHttp] = []

    def make(
        *,
        password: str = "demo",
        url: str | None = None,
        **token_fields: object,
    ) -> Made:
        http = BrokerHttp(url or sim.url, dialect="tvbridge")
        clients.append(http)
        store = TokenStore(redis_client, TokenConfig.model_validate(token_fields))
        manager = BridgeTokenManager(
            store, http, BridgeCredentials(login="demo", password=password),
            account_names=ACCOUNTS, retry=FAST_RETRY,
        )  # fmt: skip
        made = Made(manager)
        manager.alert = made.alerts.append
        http.add_listener(made.calls.append)
        return made

    yield make
    for http in clients:
        await http.aclose()


async def test_bridge_manager_login_writes_tv_token_under_every_key_with_ttl(
    sim: SimServer, redis_client: aioredis.Redis, make_manager: MakeManager
) -> None:
    made = make_manager()

    token = await made.manager.token("DEMO0000001")

    session = sim.ctx.auth.verify(token.access_token)
    assert session is not None
    assert session.kind == "tv"
    for key in KEYS:
        stored = json.loads(await redis_client.get(key))
        assert (stored["kind"], stored["accessToken"]) == ("tv", token.access_token)
        ttl_s = await redis_client.pttl(key) / 1000
        left_s = token.remaining(datetime.now(UTC)).total_seconds()
        assert left_s - 60 < ttl_s <= left_s  # the key dies slightly before the token
    assert token.expires_at == session.expires.replace(microsecond=0)
    assert (await made.manager.token("DEMO0000002")).access_token == token.access_token
    assert made.logins_sent() == 1


async def test_bridge_manager_login_form_has_locale_and_masks_password(
    make_manager: MakeManager,
) -> None:
    made = make_manager(password="demo")

    token = await made.manager.login()

    (call,) = made.calls
    assert (call.method, call.path) == ("POST", "/authorize?locale=en")
    assert (call.request_body["locale"], call.request_body["login"]) == ("en", "demo")
    assert call.request_body["password"] != "demo"
    assert token.access_token not in json.dumps(call.response_body)


async def test_bridge_manager_bad_password_login_failed_once_with_alert(
    make_manager: MakeManager,
) -> None:
    made = make_manager(password="wrong-secret")

    with pytest.raises(LoginFailed, match="Invalid login or password") as caught:
        await made.manager.token("DEMO0000001")

    assert made.logins_sent() == 1
    assert len(made.alerts) == 1
    assert "wrong-secret" not in str(caught.value)


async def test_bridge_manager_http_429_locks_out_shared_and_alerts(
    sim: SimServer, make_manager: MakeManager
) -> None:
    sim.ctx.faults.lockout_429_users = ["*"]
    made, other = make_manager(), make_manager()

    with pytest.raises(Lockout) as caught:
        await made.manager.token("DEMO0000001")
    sim.ctx.faults.lockout_429_users = []
    with pytest.raises(Lockout):
        await other.manager.token("DEMO0000001")  # another process: no login attempt

    assert caught.value.until > datetime.now(UTC) + timedelta(minutes=59)
    assert (made.logins_sent(), other.logins_sent()) == (1, 0)
    assert len(made.alerts) == 1


async def test_bridge_manager_http_423_locks_out(make_manager: MakeManager) -> None:
    # The simulator's bridge never answers 423; a server of the test's own does.
    async with raw_http(lambda _n: Answer(423)) as server:
        made = make_manager(url=server.url)

        with pytest.raises(Lockout, match="HTTP 423"):
            await made.manager.token("DEMO0000001")

    assert len(made.alerts) == 1
    assert [r.target for r in server.requests] == ["/authorize?locale=en"]


async def test_bridge_manager_near_expiry_logs_in_again_once_for_two_processes(
    sim: SimServer, redis_client: aioredis.Redis, make_manager: MakeManager
) -> None:
    old = await make_manager().manager.token("DEMO0000001")
    first, second = make_manager(), make_manager()
    value = json.loads(await redis_client.get(KEYS[0]))
    # Obtained long ago: more than 80 % of its life has passed, so it must be replaced.
    value["obtainedAt"] = (datetime.now(UTC) - timedelta(hours=6)).isoformat()
    for key in KEYS:
        await redis_client.set(key, json.dumps(value))

    tokens = await asyncio.gather(
        first.manager.token("DEMO0000001"), second.manager.token("DEMO0000002")
    )

    assert first.logins_sent() + second.logins_sent() == 1
    assert tokens[0].access_token == tokens[1].access_token != old.access_token
    assert not first.manager.needs_renewal(tokens[0])
    assert await redis_client.get("lock:token:demo") is None


async def test_bridge_manager_native_token_under_key_replaced_by_tv_token(
    sim: SimServer, redis_client: aioredis.Redis, make_manager: MakeManager
) -> None:
    await redis_client.set(KEYS[0], await login_json(sim))
    made = make_manager()

    token = await made.manager.token("DEMO0000001")

    assert token.kind == "tv"
    assert made.logins_sent() == 1
    assert json.loads(await redis_client.get(KEYS[0]))["kind"] == "tv"


async def test_bridge_manager_shares_login_cap_with_native_manager(
    sim: SimServer, redis_client: aioredis.Redis, make_manager: MakeManager
) -> None:
    made = make_manager(max_logins_per_hour=1)
    native_http = BrokerHttp(native_config(sim).native_url, dialect="native")
    native = TokenManager(
        made.manager.store, native_http, NativeCredentials(name="demo", password="demo"),
        device_id="tests-device", account_names=["DEMO0000003"], retry=FAST_RETRY,
    )  # fmt: skip
    try:
        await native.login()
    finally:
        await native_http.aclose()

    with pytest.raises(Lockout, match="logged in 1 times"):
        await made.manager.login()

    assert native.lock_key == made.manager.lock_key == "lock:token:demo"
    assert made.logins_sent() == 0


@pytest.mark.parametrize(
    ("expiration", "expected_s"),
    [
        (None, 15 * 60),  # absent: the assumed lifetime
        ("EXP", 3600),  # unix seconds
        ("EXP_MS", 3600),  # unix milliseconds
    ],
)
async def test_bridge_manager_expiry_from_expiration_or_assumed(
    make_manager: MakeManager, expiration: str | None, expected_s: int
) -> None:
    exp = datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=expected_s)
    d: dict[str, object] = {"access_token": "opaque-bridge-token"}
    if expiration == "EXP":
        d["expiration"] = int(exp.timestamp())
    elif expiration == "EXP_MS":
        d["expiration"] = int(exp.timestamp()) * 1000
    answer = Answer(200, json.dumps({"s": "ok", "d": d}).encode())
    async with raw_http(lambda _n: answer) as server:
        token = await make_manager(url=server.url).manager.login()

    left = token.remaining(datetime.now(UTC)).total_seconds()
    assert expected_s - 5 < left <= expected_s


async def test_bridge_manager_answer_without_token_is_auth_error(make_manager: MakeManager) -> None:
    answer = Answer(200, b'{"s":"ok","d":{}}')
    async with raw_http(lambda _n: answer) as server:
        made = make_manager(url=server.url)

        with pytest.raises(AuthError, match="no access_token"):
            await made.manager.login()


async def test_bridge_adapter_with_manager_logs_in_then_places(
    sim: SimServer, redis_client: aioredis.Redis, make_manager: MakeManager
) -> None:
    made = make_manager()
    http = BrokerHttp(sim.url, dialect="tvbridge")
    broker = TvBridgeBroker(
        http, made.manager, token_account=AccountName("DEMO0000001"),
        accounts={AccountName("DEMO0000001"): None},
        options=TvBridgeOptions(lookup_absent_after_s=0), retry=FAST_RETRY,
    )  # fmt: skip
    command = SubmitOrder(
        client_order_id=ClientOrderId("tb-managed-1"),
        account=AccountName("DEMO0000001"),
        contract=resolve_symbol("MNQ1!", datetime.now(UTC).date()),
        side=Side.BUY,
        order_type=OrderType.MARKET,
        quantity=1,
    )
    try:
        order_id = await broker.submit(command)
    finally:
        await broker.close()

    assert order_id
    assert made.logins_sent() == 1
    assert sim.call(lambda: len(sim.ctx.engine.orders(100001))) == 1

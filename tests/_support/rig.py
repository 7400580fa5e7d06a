"""The contract suite's rig: one simulator, real tokens in the session Redis, an adapter.

Every contract case runs once per adapter (``native``: ``TradovateBroker``; ``tvbridge``:
``TvBridgeBroker``) against the same simulator build, so that both dialects are held to
the same behaviour. Tokens come from logging in to the simulator in each dialect's own way
(native ``accesstokenrequest``, bridge ``/authorize``) and are written to Redis as a token
service would.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import httpx
import pytest
import redis.asyncio as aioredis

from _support.fixtures import redis_client
from _support.native import (
    ACCOUNT,
    ACCOUNT_ID,
    FAST_RETRY,
    front,
    last_price,
    native_login,
    order,
    set_price,
)
from tradebridge.brokers.auth import BridgeTokenManager, TokenManager
from tradebridge.brokers.base import Broker
from tradebridge.brokers.http import BrokerCall, BrokerHttp
from tradebridge.brokers.tradovate import TradovateBroker
from tradebridge.brokers.tvbridge.broker import TvBridgeBroker, TvBridgeOptions
from tradebridge.config import (
    AccountConfig,
    BridgeCredentials,
    NativeCredentials,
    TokenConfig,
    TradovateConfig,
)
from tradebridge.domain.contracts import ContractSymbol
from tradebridge.domain.enums import Dialect
from tradebridge.domain.ids import AccountName
from tradebridge.sim.clock import Clock
from tradebridge.sim.config import SimConfig
from tradebridge.sim.engine import SimOrder
from tradebridge.sim.server import SimServer
from tradebridge.store.tokens import TokenProvider, TokenStore

# Fixtures and the helpers shared with ``native``, re-exported for the modules that use them.
__all__ = ["ACCOUNT", "ACCOUNT_ID", "FAST_RETRY", "front", "order", "redis_client"]

BRIDGE_ID = "D100001"
ADAPTERS = ["native", "tvbridge"]
ACCOUNT_NAMES = [ACCOUNT, AccountName("DEMO0000002")]
LOGIN_PATHS = ("/auth/accesstokenrequest", "/authorize")


@dataclass
class Rig:
    """A simulator, Redis with a token, and one adapter talking to the simulator."""

    dialect: Dialect
    sim: SimServer
    broker: Broker
    http: BrokerHttp
    redis: aioredis.Redis
    calls: list[BrokerCall] = field(default_factory=list)
    alerts: list[str] = field(default_factory=list)  # a self-managed login's operator alerts
    sleeps: list[float] = field(default_factory=list)  # and its penalty waits

    def logins(self) -> list[BrokerCall]:
        """Return the login requests a self-managed token provider sent."""
        return [c for c in self.calls if c.path.startswith(LOGIN_PATHS)]

    def submits(self) -> list[BrokerCall]:
        """Return the order-placing requests that were sent."""
        return [
            c
            for c in self.calls
            if c.method == "POST"
            and (
                c.path.startswith("/order/place")
                or c.path.startswith(f"/accounts/{BRIDGE_ID}/orders")
            )
        ]

    def sim_orders(self) -> list[SimOrder]:
        """Return the simulator's orders of the test account."""
        return self.sim.call(lambda: self.sim.ctx.engine.orders(ACCOUNT_ID))

    def last(self, contract: ContractSymbol) -> Decimal:
        """Return the simulator's last price."""
        return last_price(self.sim, contract)

    def set_price(self, contract: ContractSymbol, price: Decimal) -> None:
        """Move the simulator's price (resting orders match)."""
        set_price(self.sim, contract, price)


def ticks(price: Decimal, n: int, contract: ContractSymbol | None = None) -> Decimal:
    """Return ``price`` moved by ``n`` ticks, on the tick grid."""
    tick = (contract or front()).product.tick_size
    return (price / tick).to_integral_value() * tick + n * tick


async def login(sim: SimServer, dialect: Dialect, user: str = "demo") -> str:
    """Log in to the simulator in the dialect's own way; return the Redis value (§2.9)."""
    if dialect is Dialect.NATIVE:
        data = await native_login(sim, user)
        token, expires = data["accessToken"], data["expirationTime"]
    else:
        async with httpx.AsyncClient(base_url=sim.url, timeout=10) as client:
            answer = await client.post("/authorize", data={"login": user, "password": user})
        data = answer.json()["d"]
        token = data["access_token"]
        expires = datetime.fromtimestamp(data["expiration"], UTC).isoformat()
    kind = "native" if dialect is Dialect.NATIVE else "tv"
    return json.dumps(
        {"kind": kind, "env": "demo", "accessToken": token, "expirationTime": expires}
    )


def build_adapter(
    dialect: Dialect,
    sim: SimServer,
    tokens: TokenProvider,
    *,
    accounts: list[AccountConfig] | None = None,
    options: TvBridgeOptions | None = None,
    timeout_s: float = 5,
) -> tuple[Broker, BrokerHttp]:
    """Build one adapter on ``sim`` with instant retries and no request budget."""
    if dialect is Dialect.NATIVE:
        config = TradovateConfig(
            native_url=sim.url + "/v1",
            retry=FAST_RETRY,
            request_timeout_s=timeout_s,
            lookup_absent_after_s=0,
        )
        http = BrokerHttp(config.native_url, dialect="native", timeout_s=timeout_s)
        configured = accounts or [AccountConfig(name=ACCOUNT), AccountConfig(name="DEMO0000002")]
        return TradovateBroker(config, configured, tokens, http=http), http
    http = BrokerHttp(sim.url, dialect="tvbridge", timeout_s=timeout_s)
    configured = accounts or [AccountConfig(name=ACCOUNT, dialect=Dialect.TVBRIDGE)]
    broker = TvBridgeBroker(
        http,
        tokens,
        token_account=AccountName(configured[0].name),
        accounts={AccountName(a.name): a.bridge_id for a in configured},
        options=options or TvBridgeOptions(lookup_absent_after_s=0, poll_interval_s=0.1),
        retry=FAST_RETRY,
    )
    return broker, http


def self_managed(
    dialect: Dialect,
    sim: SimServer,
    store: TokenStore,
    password: str,
    *,
    alerts: list[str],
    sleeps: list[float],
    calls: list[BrokerCall],
) -> TokenManager | BridgeTokenManager:
    """Return the dialect's self-managed token provider for user ``demo``.

    Its operator alerts, penalty waits and login requests go to ``alerts``, ``sleeps`` and
    ``calls``.
    """

    async def sleep(seconds: float) -> None:
        sleeps.append(seconds)
        await asyncio.sleep(seconds)

    manager: TokenManager | BridgeTokenManager
    if dialect is Dialect.NATIVE:
        http = BrokerHttp(sim.url + "/v1", dialect="native")
        credentials = NativeCredentials(name="demo", password=password, app_id="tests")
        manager = TokenManager(
            store, http, credentials, device_id="tests-device", account_names=ACCOUNT_NAMES,
            alert=alerts.append, retry=FAST_RETRY, sleep=sleep,
        )  # fmt: skip
    else:
        http = BrokerHttp(sim.url, dialect="tvbridge")
        manager = BridgeTokenManager(
            store, http, BridgeCredentials(login="demo", password=password),
            account_names=ACCOUNT_NAMES, alert=alerts.append, retry=FAST_RETRY, sleep=sleep,
        )  # fmt: skip
    http.add_listener(calls.append)
    return manager


RigFactory = Callable[..., Any]


@pytest.fixture
def make_rig(redis_client: aioredis.Redis) -> RigFactory:
    """Return ``make_rig(dialect, config=None, clock=None, token_config=None, password=None,
    **adapter_kw)`` (a context manager); with ``password`` the adapter logs in by itself."""

    @asynccontextmanager
    async def make(
        dialect: Dialect,
        config: SimConfig | None = None,
        clock: Clock | None = None,
        token_config: TokenConfig | None = None,
        password: str | None = None,
        **adapter_kw: Any,
    ) -> AsyncIterator[Rig]:
        with SimServer(config or SimConfig(port=0), clock) as sim:
            store = TokenStore(redis_client, token_config or TokenConfig())
            calls: list[BrokerCall] = []
            alerts: list[str] = []
            sleeps: list[float] = []
            manager = None
            if password is None:
                value = await login(sim, dialect)
                for name in ACCOUNT_NAMES:
                    await redis_client.set(f"token:{name}", value)
            else:
                manager = self_managed(
                    dialect, sim, store, password, alerts=alerts, sleeps=sleeps, calls=calls
                )
            broker, http = build_adapter(dialect, sim, manager or store, **adapter_kw)
            http.add_listener(calls.append)
            try:
                yield Rig(dialect, sim, broker, http, redis_client, calls, alerts, sleeps)
            finally:
                await broker.close()
                await http.aclose()
                if manager is not None:
                    await manager.aclose()

    return make


@pytest.fixture(params=ADAPTERS)
def dialect(request: pytest.FixtureRequest) -> Dialect:
    """Return each adapter's dialect in turn."""
    return Dialect(request.param)


@pytest.fixture
async def rig(make_rig: RigFactory, dialect: Dialect) -> AsyncIterator[Rig]:
    """Return the default rig for the adapter under test."""
    async with make_rig(dialect) as built:
        yield built

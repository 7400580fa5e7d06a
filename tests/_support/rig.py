"""The contract suite's rig: one simulator, real tokens in the session Redis, an adapter.

Every contract case runs once per adapter (``native``: ``TradovateBroker``; ``tvbridge``:
``TvBridgeBroker``) against the same simulator build, so that both dialects are held to
the same behaviour. Tokens come from logging in to the simulator in each dialect's own way
(native ``accesstokenrequest``, bridge ``/authorize``) and are written to Redis as a token
service would.
"""

from __future__ import annotations

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
from tradebridge.brokers._http import BrokerCall, BrokerHttp
from tradebridge.brokers.base import Broker
from tradebridge.brokers.tradovate import TradovateBroker
from tradebridge.brokers.tvbridge.broker import TvBridgeBroker, TvBridgeOptions
from tradebridge.config import AccountConfig, RetryConfig, TokenConfig, TradovateConfig
from tradebridge.domain.commands import SubmitOrder
from tradebridge.domain.contracts import ContractSymbol, resolve_symbol
from tradebridge.domain.enums import Dialect, OrderType, Side, TimeInForce
from tradebridge.domain.ids import AccountName, ClientOrderId
from tradebridge.sim.clock import Clock
from tradebridge.sim.config import SimConfig
from tradebridge.sim.engine import SimOrder
from tradebridge.sim.server import SimServer
from tradebridge.store.tokens import TokenStore

__all__ = ["redis_client"]  # a fixture, re-exported for the modules that use this one

ACCOUNT = AccountName("DEMO0000001")
ACCOUNT_ID = 100001
BRIDGE_ID = "D100001"
ADAPTERS = ["native", "tvbridge"]
FAST_RETRY = RetryConfig(attempts=3, timeout_s=5, wait_initial_s=0, wait_max_s=0, wait_jitter_s=0)


@dataclass
class Rig:
    """A simulator, Redis with a token, and one adapter talking to the simulator."""

    dialect: Dialect
    sim: SimServer
    broker: Broker
    http: BrokerHttp
    redis: aioredis.Redis
    calls: list[BrokerCall] = field(default_factory=list)

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

        def read() -> Decimal:
            found = self.sim.ctx.engine.find_contract(contract.name)
            assert found is not None
            return self.sim.ctx.engine.quote(found.id).last

        return self.sim.call(read)

    def set_price(self, contract: ContractSymbol, price: Decimal) -> None:
        """Move the simulator's price (resting orders match)."""

        def move() -> None:
            found = self.sim.ctx.engine.find_contract(contract.name)
            assert found is not None
            self.sim.ctx.engine.set_price(found.id, price)

        self.sim.call(move)


def front(root: str = "MNQ") -> ContractSymbol:
    """Return today's front month of ``root``."""
    return resolve_symbol(f"{root}1!", datetime.now(UTC).date())


def order(
    cid: str,
    order_type: OrderType = OrderType.MARKET,
    *,
    side: Side = Side.BUY,
    quantity: int = 1,
    limit: Decimal | None = None,
    stop: Decimal | None = None,
    tif: TimeInForce = TimeInForce.DAY,
    contract: ContractSymbol | None = None,
    account: str = ACCOUNT,
    **extra: Any,
) -> SubmitOrder:
    """Build a submit command with the suite's defaults."""
    return SubmitOrder(
        client_order_id=ClientOrderId(cid),
        account=AccountName(account),
        contract=contract or front(),
        side=side,
        order_type=order_type,
        quantity=quantity,
        limit_price=limit,
        stop_price=stop,
        tif=tif,
        **extra,
    )


def ticks(price: Decimal, n: int, contract: ContractSymbol | None = None) -> Decimal:
    """Return ``price`` moved by ``n`` ticks, on the tick grid."""
    tick = (contract or front()).product.tick_size
    return (price / tick).to_integral_value() * tick + n * tick


async def login(sim: SimServer, dialect: Dialect, user: str = "demo") -> str:
    """Log in to the simulator in the dialect's own way; return the Redis value (§2.9)."""
    async with httpx.AsyncClient(base_url=sim.url, timeout=10) as client:
        if dialect is Dialect.NATIVE:
            answer = await client.post(
                "/v1/auth/accesstokenrequest",
                json={
                    "name": user,
                    "password": user,
                    "appId": "tests",
                    "appVersion": "1.0",
                    "cid": 0,
                    "sec": "",
                    "deviceId": "tests-device",
                },
            )
            data = answer.json()
            token, expires = data["accessToken"], data["expirationTime"]
        else:
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
    store: TokenStore,
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
        return TradovateBroker(config, configured, store, http=http), http
    http = BrokerHttp(sim.url, dialect="tvbridge", timeout_s=timeout_s)
    configured = accounts or [AccountConfig(name=ACCOUNT, dialect=Dialect.TVBRIDGE)]
    broker = TvBridgeBroker(
        http,
        store,
        token_account=AccountName(configured[0].name),
        accounts={AccountName(a.name): a.bridge_id for a in configured},
        options=options or TvBridgeOptions(lookup_absent_after_s=0, poll_interval_s=0.1),
        retry=FAST_RETRY,
    )
    return broker, http


RigFactory = Callable[..., Any]


@pytest.fixture
def make_rig(redis_client: aioredis.Redis) -> RigFactory:
    """Return ``make_rig(dialect, config=None, clock=None, **adapter_kw)`` (a context manager)."""

    @asynccontextmanager
    async def make(
        dialect: Dialect,
        config: SimConfig | None = None,
        clock: Clock | None = None,
        token_config: TokenConfig | None = None,
        **adapter_kw: Any,
    ) -> AsyncIterator[Rig]:
        with SimServer(config or SimConfig(port=0), clock) as sim:
            value = await login(sim, dialect)
            for name in (ACCOUNT, "DEMO0000002"):
                await redis_client.set(f"token:{name}", value)
            store = TokenStore(redis_client, token_config or TokenConfig())
            broker, http = build_adapter(dialect, sim, store, **adapter_kw)
            rig = Rig(dialect, sim, broker, http, redis_client)
            http.add_listener(rig.calls.append)
            try:
                yield rig
            finally:
                await broker.close()
                await http.aclose()

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

"""Fixtures for native-dialect client tests: a simulator, the session Redis, real tokens.

Tokens are minted by logging in to the simulator (never hard-coded) and written to the
session Redis under the default key template, exactly as a token service would.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import httpx
import pytest
import redis.asyncio as aioredis

from _support.fixtures import redis_client
from tradebridge.brokers.http import BrokerCall, BrokerHttp, RequestBudget
from tradebridge.brokers.tradovate import TradovateBroker
from tradebridge.config import AccountConfig, RetryConfig, TokenConfig, TradovateConfig
from tradebridge.domain.commands import SubmitOrder
from tradebridge.domain.contracts import ContractSymbol, resolve_symbol
from tradebridge.domain.enums import OrderType, Side, TimeInForce
from tradebridge.domain.ids import AccountName, ClientOrderId
from tradebridge.sim.clock import Clock
from tradebridge.sim.config import SimConfig
from tradebridge.sim.server import SimServer
from tradebridge.store.tokens import TokenStore

__all__ = ["redis_client"]  # a fixture, re-exported for the modules that use this one

ACCOUNT = AccountName("DEMO0000001")
ACCOUNT_ID = 100001
ACCOUNTS = [AccountConfig(name="DEMO0000001"), AccountConfig(name="DEMO0000002")]
FAST_RETRY = RetryConfig(attempts=3, timeout_s=5, wait_initial_s=0, wait_max_s=0, wait_jitter_s=0)

# Request budget windows no test reaches (the simulator has no limits of its own).
UNLIMITED_BUDGET: dict[str, int] = {
    "requests_per_second": 1_000_000,
    "requests_per_hour": 1_000_000_000,
    "orders_per_minute": 1_000_000_000,
    "reads_per_minute": 1_000_000_000,
}


def native_config(sim: SimServer, **fields: Any) -> TradovateConfig:
    """Return client settings pointing at ``sim``, with instant retries and no budget wait."""
    base: dict[str, Any] = {
        "native_url": sim.url + "/v1",
        "retry": FAST_RETRY,
        **UNLIMITED_BUDGET,
        "request_timeout_s": 5,
        "lookup_absent_after_s": 0,
        "ws_heartbeat_s": 0.5,
        "ws_dead_after_s": 5,
        "ws_reconnect_max_s": 0.5,
    }
    return TradovateConfig.model_validate({**base, **fields})


async def native_login(sim: SimServer, user: str = "demo", password: str | None = None) -> Any:
    """Log in to the simulator with ``auth/accesstokenrequest``; return its answer."""
    async with httpx.AsyncClient(base_url=sim.url, timeout=10) as client:
        response = await client.post(
            "/v1/auth/accesstokenrequest",
            json={"name": user, "password": password or user, "appId": "tests",
                  "appVersion": "1.0", "cid": 0, "sec": "", "deviceId": "tests-device"},
        )  # fmt: skip
    data = response.json()
    assert "accessToken" in data, "the simulator refused the test login"
    return data


async def login_json(sim: SimServer, user: str = "demo", password: str | None = None) -> str:
    """Log in to the simulator; return the Redis value of reference §2.9."""
    data = await native_login(sim, user, password)
    return json.dumps(
        {
            "kind": "native",
            "env": "demo",
            "accessToken": data["accessToken"],
            "mdAccessToken": data.get("mdAccessToken"),
            "expirationTime": data["expirationTime"],
            "userId": data["userId"],
            "obtainedAt": datetime.now(UTC).isoformat(),
        }
    )


def front(root: str = "MNQ") -> ContractSymbol:
    """Return the front-month contract of ``root`` today."""
    return resolve_symbol(f"{root}1!", datetime.now(UTC).date())


def last_price(sim: SimServer, contract: ContractSymbol) -> Decimal:
    """Return the simulator's last price of a contract."""

    def read() -> Decimal:
        found = sim.ctx.engine.find_contract(contract.name)
        assert found is not None
        return sim.ctx.engine.quote(found.id).last

    return sim.call(read)


def set_price(sim: SimServer, contract: ContractSymbol, price: Decimal) -> None:
    """Move the simulator's price of a contract (resting orders match)."""

    def move() -> None:
        found = sim.ctx.engine.find_contract(contract.name)
        assert found is not None
        sim.ctx.engine.set_price(found.id, price)

    sim.call(move)


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
    """Build a submit command with test defaults (one MNQ front month on DEMO0000001)."""
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


@dataclass
class NativeRig:
    """A simulator, a Redis with a token for every demo account, and a broker on both."""

    sim: SimServer
    redis: aioredis.Redis
    store: TokenStore
    broker: TradovateBroker
    http: BrokerHttp
    calls: list[BrokerCall]


@pytest.fixture
def sim_clock() -> Clock | None:
    """Return the simulator's clock (None: the system clock); override per module."""
    return None


@pytest.fixture
def sim(sim_clock: Clock | None) -> Iterator[SimServer]:
    """Start a simulator on a free loopback port."""
    with SimServer(SimConfig(port=0), sim_clock) as server:
        yield server


@pytest.fixture
async def rig(sim: SimServer, redis_client: aioredis.Redis) -> AsyncIterator[NativeRig]:
    """Return a ``TradovateBroker`` on the simulator with tokens in Redis."""
    value = await login_json(sim)
    for account in ACCOUNTS:
        await redis_client.set(f"token:{account.name}", value)
    store = TokenStore(redis_client, TokenConfig())
    config = native_config(sim)
    http = BrokerHttp(
        config.native_url, dialect="native", timeout_s=config.request_timeout_s,
        budget=RequestBudget(config),
    )  # fmt: skip
    calls: list[BrokerCall] = []
    http.add_listener(calls.append)
    broker = TradovateBroker(config, ACCOUNTS, store, http=http)
    yield NativeRig(sim, redis_client, store, broker, http, calls)
    await broker.close()
    await http.aclose()

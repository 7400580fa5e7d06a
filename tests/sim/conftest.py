"""Fixtures for simulator tests: a real simulator on loopback, one per test.

Use ``sim_server`` for the defaults. To change settings, either override the
``sim_config`` (or ``sim_clock``) fixture in a test module, or call ``make_sim(**fields)``
(``make_sim(clock=manual_clock, faults={...}, lowercase_enums="accept")``). Switches and
faults can also be flipped while a server runs: ``sim_server.ctx.faults.latency_ms = 50``;
reach into the engine only through ``sim_server.call(fn)``, which runs ``fn`` on the
server's event loop.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import httpx
import pytest

from tradebridge.sim.clock import Clock, ManualClock
from tradebridge.sim.config import SimConfig
from tradebridge.sim.server import SimServer

MakeSim = Callable[..., SimServer]


@pytest.fixture
def sim_config() -> SimConfig:
    """Return a simulator configuration on a free loopback port."""
    return SimConfig(port=0)


@pytest.fixture
def sim_clock() -> Clock | None:
    """Return the clock of ``sim_server``; None is the system clock (override per module)."""
    return None


@pytest.fixture
def make_sim() -> Iterator[MakeSim]:
    """Start simulators on demand: ``make_sim(clock=..., faults=..., **SimConfig fields)``."""
    servers: list[SimServer] = []

    def make(*, clock: Clock | None = None, **fields: Any) -> SimServer:
        config = SimConfig.model_validate({"port": 0, **fields})
        server = SimServer(config, clock).start()
        servers.append(server)
        return server

    yield make
    for server in reversed(servers):
        server.stop()


@pytest.fixture
def sim_server(sim_config: SimConfig, sim_clock: Clock | None) -> Iterator[SimServer]:
    """Start a simulator from ``sim_config`` and stop it after the test."""
    with SimServer(sim_config, sim_clock) as server:
        yield server


@pytest.fixture
def manual_clock() -> ManualClock:
    """Return a clock that only moves when told to."""
    return ManualClock()


@pytest.fixture
async def sim_client(sim_server: SimServer) -> AsyncIterator[httpx.AsyncClient]:
    """Return an HTTP client on ``sim_server`` (no token)."""
    async with httpx.AsyncClient(base_url=sim_server.url, timeout=10) as client:
        yield client


NativeLogin = Callable[..., Awaitable[str]]


async def _native_login(
    client: httpx.AsyncClient, name: str = "demo", password: str = "demo", **extra: Any
) -> str:
    """Log in on the native dialect and return the access token (fails the test otherwise)."""
    body = {
        "name": name,
        "password": password,
        "appId": "tradebridge-tests",
        "appVersion": "1.0",
        "deviceId": "tests-device",
        "cid": 0,
        "sec": "",
        **extra,
    }
    response = await client.post("/v1/auth/accesstokenrequest", json=body)
    response.raise_for_status()
    payload = response.json()
    assert "accessToken" in payload, payload
    return str(payload["accessToken"])


@pytest.fixture
def native_login() -> NativeLogin:
    """Return ``await native_login(client, name="demo", password="demo", **body) -> token``."""
    return _native_login


@pytest.fixture
async def native_token(sim_client: httpx.AsyncClient) -> str:
    """Return a native access token of the user ``demo``."""
    return await _native_login(sim_client)


@pytest.fixture
async def native_client(
    sim_server: SimServer, native_token: str
) -> AsyncIterator[httpx.AsyncClient]:
    """Return an HTTP client on ``sim_server`` that sends ``demo``'s bearer token."""
    headers = {"Authorization": f"Bearer {native_token}"}
    async with httpx.AsyncClient(base_url=sim_server.url, headers=headers, timeout=10) as client:
        yield client


async def _front_month(client: httpx.AsyncClient, root: str = "MNQ") -> str:
    """Return the name of the front-month contract of ``root`` (needs a token on ``client``)."""
    response = await client.get("/v1/contract/suggest", params={"t": root, "l": 1})
    response.raise_for_status()
    return str(response.json()[0]["name"])


@pytest.fixture
async def front_month(native_client: httpx.AsyncClient) -> str:
    """Return the name of MNQ's front-month contract."""
    return await _front_month(native_client)


NativePlace = Callable[..., Awaitable[httpx.Response]]


@pytest.fixture
def native_place(front_month: str) -> NativePlace:
    """Return ``await native_place(client, endpoint="placeorder", **fields) -> response``.

    The body defaults to a market buy of one front-month MNQ on ``DEMO0000001``; a field
    given as None is left out of the body.
    """

    async def place(
        client: httpx.AsyncClient, endpoint: str = "placeorder", **fields: Any
    ) -> httpx.Response:
        body: dict[str, Any] = {
            "accountSpec": "DEMO0000001",
            "accountId": 100001,
            "action": "Buy",
            "symbol": front_month,
            "orderQty": 1,
            "orderType": "Market",
            "isAutomated": True,
            **fields,
        }
        body = {key: value for key, value in body.items() if value is not None}
        return await client.post(f"/v1/order/{endpoint}", json=body)

    return place

"""The native REST surface's front door (``NativeFront``): the router's answers, served ahead
of FastAPI's routing.

Two apps over one simulator state: the simulator's own (front door, faults) and one with the
native router alone behind the same faults. Every request is sent to both, one after the
other, and the answers compared byte for byte (status, content type, body).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from starlette.types import Receive, Scope, Send

from tradebridge.sim import native
from tradebridge.sim.app import build_app
from tradebridge.sim.clock import SystemClock
from tradebridge.sim.config import SimConfig
from tradebridge.sim.context import SimContext
from tradebridge.sim.faults import FaultMiddleware

_LOGIN = {
    "name": "demo", "password": "demo", "appId": "tradebridge-tests", "appVersion": "1.0",
    "deviceId": "tests-device", "cid": 0, "sec": "",
}  # fmt: skip


@dataclass
class Pair:
    ctx: SimContext
    front: httpx.AsyncClient
    plain: httpx.AsyncClient


@pytest.fixture
async def pair() -> AsyncIterator[Pair]:
    ctx = SimContext.build(SimConfig(port=0), SystemClock())
    front_app = build_app(ctx)
    plain_app = FastAPI(redirect_slashes=False)
    plain_app.include_router(native.build_router(ctx, front_app.state.native_api))
    plain_app.add_middleware(FaultMiddleware, ctx=ctx, closing=asyncio.Event())
    base = "http://sim"
    async with (
        httpx.AsyncClient(transport=httpx.ASGITransport(app=front_app), base_url=base) as front,
        httpx.AsyncClient(transport=httpx.ASGITransport(app=plain_app), base_url=base) as plain,
    ):
        yield Pair(ctx, front, plain)


def _answer(response: httpx.Response) -> tuple[int, str | None, bytes]:
    return response.status_code, response.headers.get("content-type"), response.content


async def _both(pair: Pair, method: str, url: str, **kwargs: Any) -> httpx.Response:
    front = await pair.front.request(method, url, **kwargs)
    plain = await pair.plain.request(method, url, **kwargs)
    assert _answer(front) == _answer(plain), (method, url)
    return front


async def _token(pair: Pair) -> str:
    response = await pair.front.post("/v1/auth/accesstokenrequest", json=_LOGIN)
    assert response.status_code == 200
    return str(response.json()["accessToken"])


async def test_front_door_answers_reads_and_refusals_as_the_router(pair: Pair) -> None:
    token = await _token(pair)
    auth = {"Authorization": f"Bearer {token}"}
    front_month = (await _both(pair, "GET", "/v1/contract/suggest?t=MNQ&l=1", headers=auth)).json()
    name = front_month[0]["name"]

    assert (await _both(pair, "GET", "/v1/auth/me")).status_code == 401
    assert (await _both(pair, "GET", "/v1/account/list", headers=auth)).status_code == 200
    # A repeated query key: the last one counts, as Starlette reads it.
    found = await _both(pair, "GET", f"/v1/contract/find?name=NOPE&name={name}", headers=auth)
    assert found.json()["name"] == name
    assert (await _both(pair, "GET", "/v1/no/such/endpoint", headers=auth)).status_code == 404
    assert (await _both(pair, "GET", "/v1/", headers=auth)).status_code == 404
    not_json = await _both(pair, "POST", "/v1/order/placeorder", content=b"{not json", headers=auth)
    assert not_json.status_code == 400
    # Other methods and paths are the app's: the router's 405, the app's 404.
    assert (await _both(pair, "PUT", "/v1/order/list", headers=auth)).status_code == 405
    assert (await _both(pair, "GET", "/v1", headers=auth)).status_code == 404


async def test_front_door_places_orders_and_the_faults_still_apply(pair: Pair) -> None:
    token = await _token(pair)
    auth = {"Authorization": f"Bearer {token}"}
    suggested = await pair.front.get("/v1/contract/suggest?t=MNQ&l=1", headers=auth)
    order = {
        "accountSpec": "DEMO0000001", "accountId": 100001, "action": "Buy",
        "symbol": suggested.json()[0]["name"], "orderQty": 1, "orderType": "Market",
        "isAutomated": True,
    }  # fmt: skip

    placed = await pair.front.post("/v1/order/placeorder", json=order, headers=auth)
    assert placed.status_code == 200
    assert set(placed.json()) == {"orderId"}

    # An accepted order whose answer is lost: the faults wrap the front door too.
    pair.ctx.faults.drop_after_accept_rate = 1.0
    pair.ctx.faults.drop_mode = "http_500"
    dropped = await pair.front.post("/v1/order/placeorder", json=order, headers=auth)
    assert dropped.status_code == 500
    listed = await pair.front.get("/v1/order/list", headers=auth)
    assert len(listed.json()) == 2


async def test_front_door_answers_its_requests_itself_and_passes_the_rest_on() -> None:
    ctx = SimContext.build(SimConfig(port=0), SystemClock())

    async def behind(scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 599, "headers": []})
        await send({"type": "http.response.body", "body": b"behind"})

    front = native.NativeFront(behind, native.NativeApi(ctx))
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=front), base_url="http://sim"
    ) as client:
        login = await client.post("/v1/auth/accesstokenrequest", json=_LOGIN)
        token = login.json()["accessToken"]
        auth = {"Authorization": f"Bearer {token}"}
        listed = await client.get("/v1/account/list", headers=auth)
        put = await client.put("/v1/account/list", headers=auth)
        bridge = await client.get("/accounts", headers=auth)

    assert listed.status_code == 200
    assert listed.json()[0]["name"] == "DEMO0000001"
    assert (put.status_code, bridge.status_code) == (599, 599)


def test_the_simulators_app_serves_through_the_front_door_inside_the_faults() -> None:
    app = build_app(SimContext.build(SimConfig(port=0), SystemClock()))

    # Starlette lists its user middleware outermost first.
    assert [m.cls for m in app.user_middleware] == [FaultMiddleware, native.NativeFront]

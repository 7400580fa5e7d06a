"""Fault switches of the simulator (``sim/faults.py``), seen by a real HTTP client."""

from __future__ import annotations

import time
from typing import Any

import httpx
import pytest
from pydantic import ValidationError

from tradebridge.sim.config import FaultConfig
from tradebridge.sim.faults import roll
from tradebridge.sim.server import SimServer

LOGIN = "/v1/auth/accesstokenrequest"


async def order_count(client: httpx.AsyncClient) -> int:
    response = await client.get("/v1/order/list")
    assert response.status_code == 200
    return len(response.json())


@pytest.mark.parametrize(("rate", "expected"), [(0.0, False), (1.0, True)])
def test_roll_extreme_rates_are_certain(rate: float, expected: bool) -> None:
    assert {roll(rate) for _ in range(200)} == {expected}


def test_roll_half_rate_gives_both_outcomes() -> None:
    outcomes = [roll(0.5) for _ in range(400)]

    assert 100 < sum(outcomes) < 300


# --- latency --------------------------------------------------------------------------------


async def test_latency_fault_delays_every_answer(
    sim_server: SimServer, native_client: httpx.AsyncClient
) -> None:
    started = time.monotonic()
    await native_client.get("/v1/account/list")
    baseline = time.monotonic() - started
    sim_server.ctx.faults.latency_ms = 300

    started = time.monotonic()
    response = await native_client.get("/v1/account/list")
    delayed = time.monotonic() - started

    assert response.status_code == 200
    assert baseline < 0.3 <= delayed < 3


# --- 5xx ------------------------------------------------------------------------------------


async def test_error_5xx_fault_answers_server_error_without_placing(
    sim_server: SimServer, native_client: httpx.AsyncClient, native_place: Any
) -> None:
    sim_server.ctx.faults.error_5xx_rate = 1.0

    answers = [await native_place(native_client, clOrdId=f"tb-{i}") for i in range(6)]
    sim_server.ctx.faults.error_5xx_rate = 0.0

    assert {a.status_code for a in answers} <= {500, 502, 503}
    assert await order_count(native_client) == 0


async def test_error_5xx_fault_login_is_not_executed(
    sim_server: SimServer, sim_client: httpx.AsyncClient
) -> None:
    sim_server.ctx.faults.error_5xx_rate = 1.0

    response = await sim_client.post(LOGIN, json={"name": "demo", "password": "demo"})

    assert response.status_code in {500, 502, 503}
    assert sim_server.ctx.auth.logins == 0


async def test_faults_leave_sim_admin_routes_alone(
    sim_server: SimServer, sim_client: httpx.AsyncClient
) -> None:
    sim_server.ctx.faults.error_5xx_rate = 1.0
    sim_server.ctx.faults.lockout_429_users = ["*"]

    response = await sim_client.get("/_sim/openapi.json")

    assert response.status_code == 200


# --- 429 ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("locked", "demo_status", "apex_status"),
    [(["demo"], 429, 200), (["apex"], 200, 429), ([], 200, 200), (["*"], 429, 429)],
)
async def test_lockout_429_fault_answers_empty_429_per_user(
    sim_server: SimServer,
    sim_client: httpx.AsyncClient,
    native_login: Any,
    locked: list[str],
    demo_status: int,
    apex_status: int,
) -> None:
    tokens = {name: await native_login(sim_client, name, name) for name in ("demo", "apex")}
    sim_server.ctx.faults.lockout_429_users = locked

    answers = {
        name: await sim_client.get("/v1/account/list", headers={"Authorization": f"Bearer {t}"})
        for name, t in tokens.items()
    }

    assert (answers["demo"].status_code, answers["apex"].status_code) == (demo_status, apex_status)
    for answer in answers.values():
        if answer.status_code == 429:
            assert answer.headers["content-length"] == "0"
            assert answer.content == b""


async def test_lockout_429_fault_star_refuses_logins(
    sim_server: SimServer, sim_client: httpx.AsyncClient
) -> None:
    sim_server.ctx.faults.lockout_429_users = ["*"]

    response = await sim_client.post(LOGIN, json={"name": "demo", "password": "demo"})

    assert (response.status_code, response.content) == (429, b"")
    assert sim_server.ctx.auth.logins == 0


# --- drop after accept ----------------------------------------------------------------------


async def test_drop_after_accept_reset_client_gets_error_and_order_exists_once(
    sim_server: SimServer, native_client: httpx.AsyncClient, native_place: Any
) -> None:
    faults = sim_server.ctx.faults
    faults.drop_mode = "reset"
    faults.drop_after_accept_rate = 1.0

    with pytest.raises(httpx.RemoteProtocolError):
        await native_place(native_client, clOrdId="tb-reset")
    faults.drop_after_accept_rate = 0.0

    listed = (await native_client.get("/v1/command/list")).json()
    assert [c["clOrdId"] for c in listed] == ["tb-reset"]
    assert await order_count(native_client) == 1


async def test_drop_after_accept_hang_client_times_out_and_order_exists_once(
    sim_server: SimServer, native_client: httpx.AsyncClient, front_month: str
) -> None:
    faults = sim_server.ctx.faults
    faults.drop_mode = "hang"
    faults.hang_seconds = 30
    faults.drop_after_accept_rate = 1.0
    body = {"accountId": 100001, "action": "Buy", "orderQty": 1, "orderType": "Market"}

    started = time.monotonic()
    with pytest.raises(httpx.ReadTimeout):
        await native_client.post(
            "/v1/order/placeorder",
            json={**body, "symbol": front_month, "clOrdId": "tb-hang"},
            timeout=0.3,
        )
    faults.drop_after_accept_rate = 0.0

    assert time.monotonic() - started < 5
    assert await order_count(native_client) == 1


async def test_drop_after_accept_hang_closes_connection_after_hang_seconds(
    sim_server: SimServer, native_client: httpx.AsyncClient, native_place: Any
) -> None:
    faults = sim_server.ctx.faults
    faults.drop_mode = "hang"
    faults.hang_seconds = 0.3
    faults.drop_after_accept_rate = 1.0

    started = time.monotonic()
    with pytest.raises(httpx.RemoteProtocolError):
        await native_place(native_client)

    assert 0.3 <= time.monotonic() - started < 5


async def test_drop_after_accept_http_500_answers_500_and_order_exists_once(
    sim_server: SimServer, native_client: httpx.AsyncClient, native_place: Any
) -> None:
    faults = sim_server.ctx.faults
    faults.drop_mode = "http_500"
    faults.drop_after_accept_rate = 1.0

    response = await native_place(native_client)
    faults.drop_after_accept_rate = 0.0

    assert response.status_code == 500
    assert await order_count(native_client) == 1


async def test_drop_after_accept_http_401_answers_access_denied_and_order_exists_once(
    sim_server: SimServer, native_client: httpx.AsyncClient, native_place: Any
) -> None:
    faults = sim_server.ctx.faults
    faults.drop_mode = "http_401"
    faults.drop_after_accept_rate = 1.0

    response = await native_place(native_client)
    faults.drop_after_accept_rate = 0.0

    assert (response.status_code, response.text) == (401, "Access is denied")
    assert await order_count(native_client) == 1  # executed; the token still works


@pytest.mark.parametrize("endpoint", ["placeoso", "placeoco"])
async def test_drop_after_accept_bracket_orders_are_dropped_too(
    sim_server: SimServer, native_client: httpx.AsyncClient, native_place: Any, endpoint: str
) -> None:
    faults = sim_server.ctx.faults
    faults.drop_mode = "http_500"
    faults.drop_after_accept_rate = 1.0
    leg = {"action": "Sell", "orderType": "Limit", "price": 30000}

    response = await native_place(
        native_client, endpoint, orderType="Limit", price=1000, bracket1=leg, other=leg
    )

    assert response.status_code == 500
    faults.drop_after_accept_rate = 0.0
    assert await order_count(native_client) == 2


async def test_drop_after_accept_refused_order_answer_is_kept(
    sim_server: SimServer, native_client: httpx.AsyncClient, native_place: Any
) -> None:
    faults = sim_server.ctx.faults
    faults.drop_mode = "reset"
    faults.drop_after_accept_rate = 1.0

    response = await native_place(native_client, symbol="XXXZ6")

    assert response.status_code == 200
    assert response.json()["failureReason"] == "UnknownReason"


async def test_drop_after_accept_server_stops_quickly_with_hanging_request(
    make_sim: Any, native_login: Any
) -> None:
    server = make_sim(faults={"drop_mode": "hang", "hang_seconds": 60})
    async with httpx.AsyncClient(base_url=server.url) as client:
        token = await native_login(client)
        headers = {"Authorization": f"Bearer {token}"}
        front = (await client.get("/v1/contract/suggest?t=MNQ&l=1", headers=headers)).json()
        server.ctx.faults.drop_after_accept_rate = 1.0
        body = {
            "accountId": 100001,
            "action": "Buy",
            "symbol": front[0]["name"],
            "orderQty": 1,
            "orderType": "Market",
        }
        with pytest.raises(httpx.ReadTimeout):
            await client.post(
                "/v1/order/placeorder",
                json=body,
                headers=headers,
                timeout=0.2,
            )

    started = time.monotonic()
    server.stop()

    assert time.monotonic() - started < 1.5


# --- missing routes -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("patterns", "path", "status"),
    [
        (["*/ldeps"], "fill/ldeps?masterids=1", 404),
        (["*/ldeps"], "orderVersion/ldeps?masterids=1", 404),
        (["*/ldeps"], "orderVersion/deps?masterid=1", 200),
        (["*/ldeps", "*/deps"], "command/deps?masterid=1", 404),
        (["*/ldeps", "*/deps"], "command/list", 200),
        (["/v1/ExecutionReport/Deps"], "executionReport/deps?masterid=1", 404),
        (["order/*"], "order/list", 404),
        (["order/*"], "position/list", 200),
        ([], "fill/ldeps?masterids=1", 200),
    ],
)
async def test_missing_routes_fault_answers_matching_routes_like_undefined_ones(
    sim_server: SimServer,
    native_client: httpx.AsyncClient,
    patterns: list[str],
    path: str,
    status: int,
) -> None:
    undefined = await native_client.get("/v1/nosuch/list")
    sim_server.ctx.faults.missing_routes = patterns

    response = await native_client.get(f"/v1/{path}")

    assert response.status_code == status
    if status == 404:
        assert (response.headers["content-type"], response.text) == (
            undefined.headers["content-type"],
            undefined.text,
        )


async def test_missing_routes_fault_without_token_answers_401_like_undefined_routes(
    sim_server: SimServer, sim_client: httpx.AsyncClient
) -> None:
    undefined = await sim_client.get("/v1/nosuch/list")
    sim_server.ctx.faults.missing_routes = ["*/ldeps"]

    response = await sim_client.get("/v1/fill/ldeps?masterids=1")

    assert (response.status_code, undefined.status_code) == (401, 401)


async def test_missing_routes_fault_order_route_places_nothing(
    sim_server: SimServer, native_client: httpx.AsyncClient, native_place: Any
) -> None:
    sim_server.ctx.faults.missing_routes = ["order/placeorder"]

    response = await native_place(native_client)

    assert response.status_code == 404
    assert await order_count(native_client) == 0


def test_missing_routes_fault_patterns_normalised_and_empty_refused() -> None:
    faults = FaultConfig(missing_routes=["/v1/Fill/LDEPS", " command/deps "])

    assert faults.missing_routes == ["fill/ldeps", "command/deps"]
    with pytest.raises(ValidationError, match="must not be empty"):
        faults.missing_routes = ["/"]


# --- p-ticket penalties on order commands (reference §2.3, §5.5, §6.3, §8.8) ----------------


async def test_order_penalty_ticket_executes_only_the_resend_carrying_the_ticket(
    sim_server: SimServer, native_client: httpx.AsyncClient, native_place: Any
) -> None:
    faults = sim_server.ctx.faults
    faults.order_penalty = "ticket"
    faults.penalty_seconds = 0

    first = await native_place(native_client, clOrdId="tb-pen")
    penalty = first.json()
    assert first.status_code == 200
    assert set(penalty) == {"p-ticket", "p-time", "p-captcha"}
    assert penalty["p-captcha"] is False
    assert await order_count(native_client) == 0  # "not executed" (§6.3)

    again = await native_place(native_client, clOrdId="tb-pen")  # no ticket: penalised again
    assert "p-ticket" in again.json()
    resent = await native_place(
        native_client, clOrdId="tb-pen", **{"p-ticket": penalty["p-ticket"]}
    )
    assert set(resent.json()) == {"orderId"}
    assert await order_count(native_client) == 1


async def test_order_penalty_ticket_applies_to_cancel_and_is_per_command(
    sim_server: SimServer, native_client: httpx.AsyncClient, native_place: Any
) -> None:
    placed = await native_place(native_client, orderType="Limit", price=1000)
    order_id = placed.json()["orderId"]
    faults = sim_server.ctx.faults
    faults.order_penalty = "ticket"
    faults.penalty_seconds = 0

    refused = (await native_client.post("/v1/order/cancelorder", json={"orderId": order_id})).json()
    assert "p-ticket" in refused
    item = (await native_client.get("/v1/order/item", params={"id": order_id})).json()
    assert item["ordStatus"] == "Working"
    # A place's ticket does not open a cancel.
    place_ticket = (await native_place(native_client)).json()["p-ticket"]
    wrong = {"orderId": order_id, "p-ticket": place_ticket}
    assert "p-ticket" in (await native_client.post("/v1/order/cancelorder", json=wrong)).json()
    body = {"orderId": order_id, "p-ticket": refused["p-ticket"]}
    done = (await native_client.post("/v1/order/cancelorder", json=body)).json()
    assert set(done) == {"commandId"}


async def test_order_penalty_captcha_never_executes(
    sim_server: SimServer, native_client: httpx.AsyncClient, native_place: Any
) -> None:
    sim_server.ctx.faults.order_penalty = "captcha"
    answer = (await native_place(native_client)).json()
    assert answer["p-captcha"] is True
    resent = (await native_place(native_client, **{"p-ticket": answer["p-ticket"]})).json()
    assert resent["p-captcha"] is True
    assert await order_count(native_client) == 0

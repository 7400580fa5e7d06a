"""Native authentication of the simulator (reference §2, §6.2, checklist §12), over sockets."""

from __future__ import annotations

import re
from datetime import datetime, timedelta
from typing import Any

import httpx
import pytest

from tradebridge.sim.clock import ManualClock
from tradebridge.sim.server import SimServer

ISO_MS_Z = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
TOKEN_KEYS = {
    "accessToken",
    "mdAccessToken",
    "expirationTime",
    "userStatus",
    "userId",
    "name",
    "hasLive",
}
LOGIN = "/v1/auth/accesstokenrequest"


def login_body(name: str = "demo", password: str = "demo", **extra: Any) -> dict[str, Any]:
    return {
        "name": name,
        "password": password,
        "appId": "tests",
        "appVersion": "1.0",
        "deviceId": "device-1",
        "cid": 0,
        "sec": "",
        **extra,
    }


def expiry(body: dict[str, Any]) -> datetime:
    return datetime.fromisoformat(body["expirationTime"])


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
def clocked(make_sim: Any, manual_clock: ManualClock) -> Any:
    """Return ``clocked(**fields) -> SimServer`` on the manual clock."""

    def make(**fields: Any) -> SimServer:
        server: SimServer = make_sim(clock=manual_clock, **fields)
        return server

    return make


# --- accesstokenrequest ---------------------------------------------------------------------


async def test_access_token_request_valid_credentials_returns_token_body(
    sim_server: SimServer, sim_client: httpx.AsyncClient
) -> None:
    response = await sim_client.post(LOGIN, json=login_body())

    assert response.status_code == 200
    body = response.json()
    assert set(body) == TOKEN_KEYS
    assert ISO_MS_Z.match(body["expirationTime"])
    assert (body["userId"], body["name"], body["userStatus"], body["hasLive"]) == (
        1,
        "demo",
        "Active",
        False,
    )
    assert body["accessToken"].count(".") == 2
    assert sim_server.ctx.auth.logins == 1


@pytest.mark.parametrize(
    "path",
    ["/v1/auth/accesstokenrequest", "/v1/auth/accessTokenRequest", "/v1/Auth/ACCESSTOKENREQUEST"],
)
async def test_access_token_request_any_path_case_returns_token(
    sim_client: httpx.AsyncClient, path: str
) -> None:
    response = await sim_client.post(path, json=login_body())

    assert response.status_code == 200
    assert "accessToken" in response.json()


@pytest.mark.parametrize(
    ("name", "password"),
    [("demo", "wrong"), ("demo", "DEMO"), ("nobody", "demo"), ("", "")],
)
async def test_access_token_request_bad_credentials_returns_error_text_with_200(
    sim_server: SimServer, sim_client: httpx.AsyncClient, name: str, password: str
) -> None:
    response = await sim_client.post(LOGIN, json=login_body(name, password))

    assert response.status_code == 200
    assert response.json() == {
        "errorText": "Incorrect username or password. Please try again. "
        "Note: passwords are case-sensitive."
    }
    assert sim_server.ctx.auth.logins == 0


@pytest.mark.parametrize(
    ("cid", "sec", "accepted"),
    [
        (7, "s3cret", True),
        ("7", "s3cret", True),  # the old schema's string cid
        (7, "wrong", False),
        (8, "s3cret", False),
        (None, None, False),
        (True, "s3cret", False),
    ],
)
async def test_access_token_request_app_secrets_checks_cid_and_sec(
    make_sim: Any, cid: Any, sec: Any, accepted: bool
) -> None:
    server = make_sim(app_secrets={7: "s3cret"})
    body = login_body()
    body.update(cid=cid, sec=sec)
    async with httpx.AsyncClient(base_url=server.url) as client:
        response = await client.post(LOGIN, json={k: v for k, v in body.items() if v is not None})

    assert response.status_code == 200
    if accepted:
        assert "accessToken" in response.json()
    else:
        assert response.json() == {"errorText": "The app is not registered"}


@pytest.mark.parametrize(
    ("content", "status"),
    [
        (b'{"password": "demo"}', 400),
        (b'{"name": 5, "password": "demo"}', 400),
        (b"[1, 2]", 400),
        (b"not json", 400),
        (b"", 400),
    ],
)
async def test_access_token_request_malformed_body_returns_400(
    sim_client: httpx.AsyncClient, content: bytes, status: int
) -> None:
    response = await sim_client.post(
        LOGIN, content=content, headers={"content-type": "application/json"}
    )

    assert response.status_code == status


async def test_access_token_request_get_method_returns_405(sim_client: httpx.AsyncClient) -> None:
    response = await sim_client.get(LOGIN)

    assert response.status_code == 405


async def test_access_token_request_after_n_failures_returns_423_until_counter_cleared(
    make_sim: Any,
) -> None:
    server = make_sim(faults={"failed_logins_before_423": 3})
    async with httpx.AsyncClient(base_url=server.url) as client:
        failures = [await client.post(LOGIN, json=login_body(password="bad")) for _ in range(3)]
        locked_good = await client.post(LOGIN, json=login_body())
        other_user = await client.post(LOGIN, json=login_body("apex", "apex"))
        server.call(server.ctx.auth.failed_logins.clear)
        after_clear = await client.post(LOGIN, json=login_body())

    assert [(r.status_code, "errorText" in r.json()) for r in failures] == [(200, True)] * 3
    assert locked_good.status_code == 423
    assert "accessToken" in other_user.json()
    assert "accessToken" in after_clear.json()


async def test_access_token_request_success_before_limit_resets_failure_count(
    make_sim: Any,
) -> None:
    server = make_sim(faults={"failed_logins_before_423": 3})
    async with httpx.AsyncClient(base_url=server.url) as client:
        for _ in range(2):
            await client.post(LOGIN, json=login_body(password="bad"))
        await client.post(LOGIN, json=login_body())
        for _ in range(2):
            await client.post(LOGIN, json=login_body(password="bad"))
        response = await client.post(LOGIN, json=login_body())

    assert response.status_code == 200
    assert "accessToken" in response.json()


# --- penalty tickets ------------------------------------------------------------------------


async def test_access_token_request_ticket_penalty_resend_after_p_time_succeeds(
    clocked: Any, manual_clock: ManualClock
) -> None:
    server = clocked(faults={"login_penalty": "ticket", "penalty_seconds": 15})
    async with httpx.AsyncClient(base_url=server.url) as client:
        first = (await client.post(LOGIN, json=login_body())).json()
        manual_clock.advance(15)
        resent = await client.post(LOGIN, json=login_body(**{"p-ticket": first["p-ticket"]}))

    assert set(first) == {"p-ticket", "p-time", "p-captcha"}
    assert (first["p-time"], first["p-captcha"]) == (15, False)
    assert isinstance(first["p-ticket"], str)
    assert first["p-ticket"]
    assert "accessToken" in resent.json()
    assert server.ctx.auth.logins == 1


async def test_access_token_request_ticket_resent_too_early_gets_new_penalty(
    clocked: Any, manual_clock: ManualClock
) -> None:
    server = clocked(faults={"login_penalty": "ticket", "penalty_seconds": 15})
    async with httpx.AsyncClient(base_url=server.url) as client:
        first = (await client.post(LOGIN, json=login_body())).json()
        manual_clock.advance(14)
        early = (
            await client.post(LOGIN, json=login_body(**{"p-ticket": first["p-ticket"]}))
        ).json()

    assert set(early) == {"p-ticket", "p-time", "p-captcha"}
    assert early["p-ticket"] != first["p-ticket"]
    assert server.ctx.auth.logins == 0


@pytest.mark.parametrize(
    "ticket_of",
    [
        pytest.param(lambda t: "forged" + t, id="forged"),
        pytest.param(lambda t: t[:-2], id="truncated"),
        pytest.param(lambda _t: 12345, id="not-a-string"),
    ],
)
async def test_access_token_request_ticket_penalty_bad_ticket_gets_new_penalty(
    clocked: Any, manual_clock: ManualClock, ticket_of: Any
) -> None:
    server = clocked(faults={"login_penalty": "ticket", "penalty_seconds": 1})
    async with httpx.AsyncClient(base_url=server.url) as client:
        first = (await client.post(LOGIN, json=login_body())).json()
        manual_clock.advance(5)
        body = login_body(**{"p-ticket": ticket_of(first["p-ticket"])})
        resent = (await client.post(LOGIN, json=body)).json()

    assert "p-ticket" in resent
    assert server.ctx.auth.logins == 0


async def test_access_token_request_ticket_of_another_user_gets_new_penalty(
    clocked: Any, manual_clock: ManualClock
) -> None:
    server = clocked(faults={"login_penalty": "ticket", "penalty_seconds": 1})
    async with httpx.AsyncClient(base_url=server.url) as client:
        apex_ticket = (await client.post(LOGIN, json=login_body("apex", "apex"))).json()
        manual_clock.advance(5)
        body = login_body(**{"p-ticket": apex_ticket["p-ticket"]})
        resent = (await client.post(LOGIN, json=body)).json()

    assert "p-ticket" in resent


async def test_access_token_request_captcha_penalty_never_accepts(
    clocked: Any, manual_clock: ManualClock
) -> None:
    server = clocked(faults={"login_penalty": "captcha", "penalty_seconds": 2})
    async with httpx.AsyncClient(base_url=server.url) as client:
        first = (await client.post(LOGIN, json=login_body())).json()
        manual_clock.advance(60)
        resent = (
            await client.post(LOGIN, json=login_body(**{"p-ticket": first["p-ticket"]}))
        ).json()

    assert (first["p-captcha"], first["p-time"]) == (True, 2)
    assert resent["p-captcha"] is True
    assert "accessToken" not in resent
    assert server.ctx.auth.logins == 0


# --- renew, me, expiry ----------------------------------------------------------------------


async def test_renew_access_token_valid_token_extends_same_session(
    clocked: Any, manual_clock: ManualClock
) -> None:
    server = clocked()
    async with httpx.AsyncClient(base_url=server.url) as client:
        first = (await client.post(LOGIN, json=login_body())).json()
        manual_clock.advance(600)
        response = await client.get(
            "/v1/auth/renewAccessToken", headers=bearer(first["accessToken"])
        )
        renewed = response.json()
        me = await client.get("/v1/auth/me", headers=bearer(renewed["accessToken"]))

    assert response.status_code == 200
    assert set(renewed) == TOKEN_KEYS
    assert expiry(renewed) - expiry(first) == timedelta(seconds=600)
    assert me.status_code == 200
    assert server.ctx.auth.logins == 1
    assert server.ctx.auth.live_sessions() == 1


@pytest.mark.parametrize(
    ("methods", "method", "status"),
    [
        (("GET",), "GET", 200),
        (("GET",), "POST", 405),
        (("POST",), "GET", 405),
        (("GET", "POST"), "POST", 200),
    ],
)
async def test_renew_access_token_method_follows_renew_methods(
    make_sim: Any, native_login: Any, methods: tuple[str, ...], method: str, status: int
) -> None:
    server = make_sim(renew_methods=methods)
    async with httpx.AsyncClient(base_url=server.url) as client:
        token = await native_login(client)
        response = await client.request(method, "/v1/auth/renewaccesstoken", headers=bearer(token))

    assert response.status_code == status


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer not.a.token"}])
async def test_renew_access_token_without_valid_token_returns_401(
    sim_client: httpx.AsyncClient, headers: dict[str, str]
) -> None:
    response = await sim_client.get("/v1/auth/renewaccesstoken", headers=headers)

    assert response.status_code == 401


async def test_renew_access_token_expired_token_returns_401(
    clocked: Any, manual_clock: ManualClock, native_login: Any
) -> None:
    server = clocked(token_lifetime_s=60)
    async with httpx.AsyncClient(base_url=server.url) as client:
        token = await native_login(client)
        manual_clock.advance(61)
        response = await client.get("/v1/auth/renewaccesstoken", headers=bearer(token))

    assert response.status_code == 401


async def test_auth_me_valid_token_returns_user(
    sim_client: httpx.AsyncClient, native_token: str
) -> None:
    response = await sim_client.get("/v1/auth/me", headers=bearer(native_token))

    assert response.status_code == 200
    body = response.json()
    assert set(body) == {"userId", "name", "fullName", "email", "emailVerified", "isTrial"}
    assert (body["userId"], body["name"]) == (1, "demo")


async def test_token_lifetime_fault_expired_token_returns_401(
    clocked: Any, manual_clock: ManualClock, native_login: Any
) -> None:
    server = clocked(faults={"token_lifetime_s": 5})
    async with httpx.AsyncClient(base_url=server.url) as client:
        body = (await client.post(LOGIN, json=login_body())).json()
        before = await client.get("/v1/auth/me", headers=bearer(body["accessToken"]))
        manual_clock.advance(5)
        after = await client.get("/v1/auth/me", headers=bearer(body["accessToken"]))

    assert expiry(body) == manual_clock.now()
    assert before.status_code == 200
    assert after.status_code == 401


# --- 401 and 404 ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/v1/auth/me"),
        ("GET", "/v1/account/list"),
        ("GET", "/v1/order/list"),
        ("GET", "/v1/contract/find?name=MNQZ6"),
        ("GET", "/v1/no/such/endpoint"),
        ("POST", "/v1/order/placeorder"),
        ("POST", "/v1/cashBalance/getcashbalancesnapshot"),
    ],
)
@pytest.mark.parametrize(
    "authorization",
    [None, "Bearer", "Bearer garbage", "Basic ZGVtbzpkZW1v", "Bearer a.b.c"],
)
async def test_native_endpoint_without_valid_token_returns_401(
    sim_client: httpx.AsyncClient, method: str, path: str, authorization: str | None
) -> None:
    headers = {"Authorization": authorization} if authorization else {}
    response = await sim_client.request(method, path, headers=headers, json={})

    assert response.status_code == 401


async def test_native_endpoint_token_of_other_simulator_returns_401(
    make_sim: Any, native_login: Any
) -> None:
    first, second = make_sim(), make_sim()
    async with httpx.AsyncClient(base_url=first.url) as client:
        token = await native_login(client)
    async with httpx.AsyncClient(base_url=second.url) as client:
        response = await client.get("/v1/auth/me", headers=bearer(token))

    assert response.status_code == 401


@pytest.mark.parametrize(
    "path",
    [
        "/v1/nothing/list",
        "/v1/order/explode",
        "/v1/order",
        "/v1/account/list/extra",
        "/v1/account/list/",
        "/v1/account//list",
        "/v1/",
    ],
)
async def test_native_unknown_endpoint_with_token_returns_404(
    sim_client: httpx.AsyncClient, native_token: str, path: str
) -> None:
    response = await sim_client.get(path, headers=bearer(native_token))

    assert response.status_code == 404


@pytest.mark.parametrize("path", ["/docs", "/openapi.json", "/redoc", "/nothing", "/v2/auth/me"])
async def test_sim_app_unknown_route_returns_404(sim_client: httpx.AsyncClient, path: str) -> None:
    response = await sim_client.get(path)

    assert response.status_code == 404


async def test_sim_app_docs_live_under_sim_prefix(sim_client: httpx.AsyncClient) -> None:
    response = await sim_client.get("/_sim/openapi.json")

    assert response.status_code == 200
    assert "paths" in response.json()

"""BrokerHttp: audit events, error translation, the token bucket, the retry policy."""

from __future__ import annotations

import io
import json
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime

import httpx
import pytest

from _support.fixtures import logs_to
from _support.native import login_json, sim, sim_clock
from tradebridge.brokers.http import (
    BrokerCall,
    BrokerHttp,
    HttpAnswer,
    raise_for_status,
)
from tradebridge.brokers.retry import RetryPolicy, no_retry
from tradebridge.config import RetryConfig
from tradebridge.errors import (
    AuthError,
    BrokerError,
    BrokerRejected,
    BrokerUnavailable,
    ConnectionLost,
    Lockout,
    NotFound,
    RateLimited,
)
from tradebridge.obs.logging import configure_logging
from tradebridge.sim.server import SimServer
from tradebridge.store.embedded import free_port

__all__ = ["sim", "sim_clock"]  # fixtures


@pytest.fixture
async def http(sim: SimServer) -> AsyncIterator[BrokerHttp]:
    """Return a native client on the simulator."""
    client = BrokerHttp(sim.url + "/v1", dialect="native", timeout_s=5)
    yield client
    await client.aclose()


@pytest.fixture
def log_output() -> Iterator[io.StringIO]:
    """Send structured logs to a buffer for one test, then restore the defaults."""
    with logs_to("INFO") as out:
        yield out


async def test_request_one_broker_call_event_redacted(
    sim: SimServer, http: BrokerHttp, log_output: io.StringIO
) -> None:
    out = log_output
    configure_logging("DEBUG", stream=out)  # bodies are logged at DEBUG only
    calls: list[BrokerCall] = []
    http.add_listener(calls.append)

    answer = await http.request(
        "POST", "/auth/accesstokenrequest",
        json_body={"name": "demo", "password": "demo", "appId": "t", "appVersion": "1",
                   "cid": 0, "sec": "sec-value-x", "deviceId": "d"},
        client_order_id="tb-1",
    )  # fmt: skip

    token = answer.body["accessToken"]
    lines = [json.loads(line) for line in out.getvalue().splitlines() if line.startswith("{")]
    events = [line for line in lines if line["event"] == "broker_call"]
    assert len(events) == 1
    event = events[0]
    assert (event["dialect"], event["method"], event["path"], event["status"]) == (
        "native", "POST", "/auth/accesstokenrequest", 200,
    )  # fmt: skip
    assert event["client_order_id"] == "tb-1"
    assert event["latency_ms"] >= 0
    assert event["request"]["password"] == "***"
    for secret in ("sec-value-x", token):
        assert secret not in out.getvalue()
    assert len(calls) == 1
    assert calls[0].request_body["password"] == "***"
    assert calls[0].response_body["accessToken"] == "***"


async def test_request_secret_query_parameter_masked_in_path(
    sim: SimServer, http: BrokerHttp
) -> None:
    token = json.loads(await login_json(sim))["accessToken"]
    calls: list[BrokerCall] = []
    http.add_listener(calls.append)

    await http.request("GET", "/account/list", params={"token": token}, token=token)

    assert token not in calls[0].path
    assert calls[0].path == "/account/list?token=***"


async def test_request_listener_failure_never_breaks_the_call(http: BrokerHttp) -> None:
    def broken(call: BrokerCall) -> None:
        raise RuntimeError("sink down")

    http.add_listener(broken)

    answer = await http.request("GET", "/account/list")

    assert answer.status == 401


async def test_request_refused_connection_broker_unavailable() -> None:
    client = BrokerHttp(f"http://127.0.0.1:{free_port()}/v1", dialect="native", timeout_s=2)
    calls: list[BrokerCall] = []
    client.add_listener(calls.append)
    try:
        with pytest.raises(BrokerUnavailable, match="cannot connect"):
            await client.request("GET", "/account/list")
    finally:
        await client.aclose()
    assert calls[0].status is None
    assert calls[0].error is not None


async def test_request_read_timeout_after_sending_connection_lost(sim: SimServer) -> None:
    sim.ctx.faults.latency_ms = 1500
    client = BrokerHttp(sim.url + "/v1", dialect="native", timeout_s=0.3)
    try:
        with pytest.raises(ConnectionLost, match="no answer after sending"):
            await client.request("GET", "/account/list")
    finally:
        await client.aclose()


async def test_request_reset_after_accept_connection_lost(sim: SimServer) -> None:
    token = json.loads(await login_json(sim))["accessToken"]
    sim.ctx.faults.drop_after_accept_rate = 1.0
    client = BrokerHttp(sim.url + "/v1", dialect="native", timeout_s=5)
    body = {"accountSpec": "DEMO0000001", "accountId": 100001, "action": "Buy",
            "symbol": sim.call(lambda: sim.ctx.engine.listed_contracts()[0].name),
            "orderQty": 1, "orderType": "Market", "isAutomated": True}  # fmt: skip
    try:
        with pytest.raises(ConnectionLost):
            await client.request("POST", "/order/placeorder", json_body=body, token=token)
    finally:
        await client.aclose()


def _answer(status: int, text: str = "") -> HttpAnswer:
    return HttpAnswer(status, text or None, text, {})


@pytest.mark.parametrize(
    ("status", "error"),
    [
        (401, AuthError),
        (404, NotFound),
        (423, Lockout),
        (429, Lockout),
        (400, BrokerRejected),
        (500, BrokerUnavailable),
        (503, BrokerUnavailable),
    ],
)
def test_raise_for_status_maps_codes_to_tree(status: int, error: type[BrokerError]) -> None:
    with pytest.raises(error):
        raise_for_status(_answer(status, "x"), "GET /thing")


def test_raise_for_status_2xx_passes() -> None:
    raise_for_status(_answer(200), "GET /thing")


def test_raise_for_status_lockout_until_one_hour() -> None:
    with pytest.raises(Lockout) as caught:
        raise_for_status(_answer(429), "GET /thing")
    assert 3590 < (caught.value.until - datetime.now(UTC)).total_seconds() <= 3600


def _flaky(failures: list[Exception]) -> tuple[list[int], object]:
    attempts: list[int] = []

    async def call() -> str:
        attempts.append(1)
        if failures:
            raise failures.pop(0)
        return "ok"

    return attempts, call


FAST = RetryConfig(attempts=3, timeout_s=5, wait_initial_s=0, wait_max_s=0, wait_jitter_s=0)


@pytest.mark.parametrize(
    "failure",
    [BrokerUnavailable("5xx"), ConnectionLost("reset"), RateLimited("p", retry_after=0.01)],
)
async def test_retry_transient_then_success(failure: Exception) -> None:
    attempts, call = _flaky([failure])

    assert await RetryPolicy(FAST).run(call) == "ok"  # type: ignore[arg-type]
    assert len(attempts) == 2


async def test_retry_attempts_capped() -> None:
    attempts, call = _flaky([ConnectionLost("a"), ConnectionLost("b"), ConnectionLost("c")])

    with pytest.raises(ConnectionLost):
        await RetryPolicy(FAST).run(call)  # type: ignore[arg-type]
    assert len(attempts) == 3


@pytest.mark.parametrize("failure", [BrokerRejected("no", reason="TooLate"), AuthError("401")])
async def test_retry_final_errors_not_retried(failure: Exception) -> None:
    attempts, call = _flaky([failure])

    with pytest.raises(type(failure)):
        await RetryPolicy(FAST).run(call)  # type: ignore[arg-type]
    assert len(attempts) == 1


async def test_retry_no_retry_policy_calls_once() -> None:
    attempts, call = _flaky([ConnectionLost("a")])

    with pytest.raises(ConnectionLost):
        await no_retry().run(call)  # type: ignore[arg-type]
    assert len(attempts) == 1


async def test_http_module_translates_every_transport_error() -> None:
    class Exploding(httpx.AsyncBaseTransport):
        async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
            raise httpx.RemoteProtocolError("server vanished", request=request)

    client = BrokerHttp("http://broker.invalid/v1", dialect="native", transport=Exploding())
    try:
        with pytest.raises(ConnectionLost) as caught:
            await client.request("POST", "/order/placeorder", json_body={})
    finally:
        await client.aclose()
    assert isinstance(caught.value.__cause__, httpx.RemoteProtocolError)

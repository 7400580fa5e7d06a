"""BrokerHttp: audit events, error translation, the token bucket, the retry policy."""

from __future__ import annotations

import asyncio
import gc
import io
import json
import time
import warnings
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from typing import Any

import aiohttp
import pytest

from _support.fixtures import logs_to
from _support.native import login_json, sim, sim_clock
from _support.rawhttp import (
    Answer,
    Behaviour,
    Close,
    Garbage,
    Hang,
    Reset,
    raw_http,
    unanswered_port,
)
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


async def test_request_garbled_answer_connection_lost() -> None:
    async with raw_http(lambda _n: Garbage()) as server:
        client = BrokerHttp(server.url + "/v1", dialect="native", timeout_s=5)
        try:
            with pytest.raises(ConnectionLost, match="no answer after sending") as caught:
                await client.request("POST", "/order/placeorder", json_body={})
        finally:
            await client.aclose()
    assert isinstance(caught.value.__cause__, aiohttp.ClientError)
    assert len(server.requests) == 1


# --- not sent (BrokerUnavailable) and maybe sent (ConnectionLost), on real sockets ---------


@pytest.mark.parametrize(
    ("timeout_s", "connect_timeout_s"),
    [
        (5.0, 0.3),  # the connect timeout
        (0.3, 5.0),  # the overall timeout, still connecting: nothing was sent either
    ],
)
async def test_request_connect_never_completes_broker_unavailable(
    timeout_s: float, connect_timeout_s: float
) -> None:
    with unanswered_port() as port:
        client = BrokerHttp(f"http://127.0.0.1:{port}/v1", dialect="native",
                            timeout_s=timeout_s, connect_timeout_s=connect_timeout_s)  # fmt: skip
        calls: list[BrokerCall] = []
        client.add_listener(calls.append)
        try:
            with pytest.raises(BrokerUnavailable, match="cannot connect"):
                await client.request("POST", "/order/placeorder", json_body={})
        finally:
            await client.aclose()
    assert calls[0].status is None
    assert "cannot connect" in str(calls[0].error)


async def test_request_no_free_connection_in_time_broker_unavailable() -> None:
    # 100 connections (the pool's cap) wait for answers that never come; the 101st request
    # cannot get one within the connect timeout and never reaches the server.
    async with raw_http(lambda _n: Hang()) as server:
        client = BrokerHttp(server.url + "/v1", dialect="native", connect_timeout_s=0.5)
        # Their own 60 s (connect included): on a loaded machine 100 connects take a while.
        held = [asyncio.create_task(client.request("GET", "/order/item", params={"n": n},
                                                   timeout_s=60))
                for n in range(100)]  # fmt: skip
        try:
            deadline = time.monotonic() + 30
            while len(server.requests) < 100 and time.monotonic() < deadline:
                await asyncio.sleep(0.01)
            assert len(server.requests) == 100

            with pytest.raises(BrokerUnavailable, match="cannot connect"):
                await client.request("POST", "/order/placeorder", json_body={})

            assert len(server.requests) == 100
        finally:
            for task in held:
                task.cancel()
            await asyncio.gather(*held, return_exceptions=True)
            await client.aclose()


@pytest.mark.parametrize(
    ("behaviour", "cause"),
    [
        (Reset(), aiohttp.ClientError),
        (Close(), aiohttp.ServerDisconnectedError),
        (Hang(), TimeoutError),
    ],
)
@pytest.mark.parametrize("method", ["POST", "GET", "PUT", "DELETE"])
async def test_request_failed_after_the_server_read_it_connection_lost_never_resent(
    method: str, behaviour: Behaviour, cause: type[BaseException]
) -> None:
    # The first request is answered, so the second goes out on a reused keep-alive
    # connection: aiohttp would resend a GET, PUT or DELETE that fails there, once.
    async with raw_http(lambda n: Answer(200, b"{}") if n == 0 else behaviour) as server:
        client = BrokerHttp(server.url + "/v1", dialect="native", timeout_s=0.5)
        try:
            await client.request("GET", "/account/list")
            with pytest.raises(ConnectionLost, match="no answer after sending") as caught:
                await client.request(method, "/order/thing")
        finally:
            await client.aclose()
    assert isinstance(caught.value.__cause__, cause)
    assert [r.method for r in server.requests] == ["GET", method]  # sent once, never again
    assert server.connections == 1


async def test_request_keeps_the_connection_alive() -> None:
    async with raw_http(lambda _n: Answer(200, b"{}")) as server:
        client = BrokerHttp(server.url + "/v1", dialect="native")
        try:
            for _ in range(3):
                await client.request("POST", "/order/placeorder", json_body={"n": 1})
        finally:
            await client.aclose()
    assert (len(server.requests), server.connections) == (3, 1)


async def test_request_after_close_broker_unavailable_nothing_sent() -> None:
    # A task still running at shutdown, after its client was closed: no new pool is opened
    # behind the caller's back (it would never be closed), and nothing reaches the broker.
    async with raw_http(lambda _n: Answer(200, b"{}")) as server:
        client = BrokerHttp(server.url + "/v1", dialect="native")
        await client.request("GET", "/account/list")
        await client.aclose()

        with pytest.raises(BrokerUnavailable, match="the client is closed"):
            await client.request("POST", "/order/placeorder", json_body={})

    assert [r.method for r in server.requests] == ["GET"]


# --- on the wire: bytes as the simulator's strict parsers (and Tradovate) expect -----------

WIRE = [
    pytest.param(
        {"method": "POST", "path": "/order/placeorder", "token": "tok",
         "json_body": {"symbol": "MNQZ5", "text": "é ü", "qty": 1, "price": 1.5, "n": None}},
        ("POST", "/v1/order/placeorder", "application/json",
         '{"symbol":"MNQZ5","text":"é ü","qty":1,"price":1.5,"n":null}'.encode()),
        id="json-compact-utf8",
    ),
    pytest.param(
        {"method": "POST", "path": "/accounts/D100001/orders",
         "params": {"locale": "en", "requestId": "r1"},
         "form": {"instrument": "MNQZ5", "qty": 1, "note": "a b&c=é"},
         "headers": {"Content-Type": "application/x-www-form-urlencoded"}},
        ("POST", "/v1/accounts/D100001/orders?locale=en&requestId=r1",
         "application/x-www-form-urlencoded", b"instrument=MNQZ5&qty=1&note=a+b%26c%3D%C3%A9"),
        id="form",
    ),
    pytest.param(
        {"method": "GET", "path": "/order/item", "params": {"id": 12, "q": "a b+c/é", "f": True}},
        ("GET", "/v1/order/item?id=12&q=a+b%2Bc%2F%C3%A9&f=true", None, b""),
        id="query",
    ),
    pytest.param(
        {"method": "POST", "path": "/order/cancelorder"},
        ("POST", "/v1/order/cancelorder", None, b""),
        id="post-without-body",
    ),
]  # fmt: skip


@pytest.mark.parametrize(("call", "expected"), WIRE)
async def test_request_on_the_wire_as_before(
    call: dict[str, Any], expected: tuple[str, str, str | None, bytes]
) -> None:
    async with raw_http(lambda _n: Answer(200, b"{}")) as server:
        client = BrokerHttp(server.url + "/v1", dialect="native")
        calls: list[BrokerCall] = []
        client.add_listener(calls.append)
        try:
            await client.request(call.pop("method"), call.pop("path"), **call)
        finally:
            await client.aclose()
    (request,) = server.requests
    method, target, content_type, body = expected
    assert (request.method, request.target, request.body) == (method, target, body)
    assert request.headers.get("content-type") == content_type
    assert request.headers.get("content-length") == (None if method == "GET" else str(len(body)))
    assert (request.headers["accept"], request.headers["user-agent"]) == (
        "application/json", "tradebridge",
    )  # fmt: skip
    if "token" in call:
        assert request.headers["authorization"] == f"Bearer {call['token']}"
    assert calls[0].path == target.removeprefix("/v1")


async def test_request_answer_text_json_and_headers() -> None:
    body = '{"s":"ok","é":1}'.encode()
    async with raw_http(lambda _n: Answer(201, body, "application/json; charset=utf-8")) as server:
        client = BrokerHttp(server.url, dialect="tvbridge")
        try:
            answer = await client.request("GET", "/accounts")
        finally:
            await client.aclose()
    assert (answer.status, answer.body, answer.text) == (201, {"s": "ok", "é": 1}, body.decode())
    assert answer.headers["content-type"] == "application/json; charset=utf-8"


async def _accepted(server: Any, count: int) -> int:
    """Return the server's accepted connections once ``count`` are in (or after 5 s)."""
    deadline = time.monotonic() + 5.0
    while server.connections < count and time.monotonic() < deadline:
        await asyncio.sleep(0.01)
    return int(server.connections)


async def test_preconnect_opens_the_connections_the_next_requests_use() -> None:
    # An alert's orders after a quiet spell each opened a connection after the write-ahead:
    # opened beside it, the orders find them open and idle, and nothing is sent on them.
    async with raw_http(lambda _n: Answer(200, b"{}")) as server:
        client = BrokerHttp(server.url + "/v1", dialect="native")
        try:
            assert await client.preconnect(4) == 4
            opened = await _accepted(server, 4)
            sent_before = len(server.requests)
            await asyncio.gather(*(
                client.request("POST", "/order/placeorder", json_body={"n": n}) for n in range(4)
            ))  # fmt: skip
        finally:
            await client.aclose()
    assert (opened, sent_before) == (4, 0)
    assert (len(server.requests), server.connections) == (4, 4)


async def test_preconnect_reuses_open_connections_and_never_raises() -> None:
    async with raw_http(lambda _n: Answer(200, b"{}")) as server:
        client = BrokerHttp(server.url + "/v1", dialect="native")
        try:
            await client.request("GET", "/account/list")
            assert await client.preconnect(2) == 2  # the open one, and one more
            assert await _accepted(server, 2) == 2
        finally:
            await client.aclose()
        assert await client.preconnect(2) == 0  # closed: nothing is opened
    assert server.connections == 2
    refused = BrokerHttp(f"http://127.0.0.1:{free_port()}/v1", dialect="native")
    try:
        assert await refused.preconnect(3) == 0
    finally:
        await refused.aclose()


async def test_preconnect_leaves_proxied_requests_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    # Through a proxy the pool's connections are keyed by it: the requests connect.
    async with raw_http(lambda _n: Answer(200, b"{}")) as proxy:
        monkeypatch.setenv("HTTP_PROXY", proxy.url)
        monkeypatch.delenv("NO_PROXY", raising=False)
        monkeypatch.delenv("no_proxy", raising=False)
        client = BrokerHttp("http://broker.invalid/v1", dialect="native")
        try:
            assert await client.preconnect(2) == 0
        finally:
            await client.aclose()
    assert proxy.connections == 0


async def test_preconnect_holds_at_most_half_the_pool() -> None:
    # The connections are held until the last one is open: requests leaving meanwhile
    # must still find free slots in the pool (100).
    async with raw_http(lambda _n: Answer(200, b"{}")) as server:
        client = BrokerHttp(server.url + "/v1", dialect="native")
        try:
            assert await client.preconnect(80) == 50
            assert await _accepted(server, 50) == 50
        finally:
            await client.aclose()


async def test_preconnect_cancelled_midway_leaves_no_connection_unreleased(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A shutdown cancels a preconnect whose connections are partly open: those must go back
    # to the pool (closed with it), not be dropped unreleased ("Unclosed connection" at GC).
    async with raw_http(lambda _n: Answer(200, b"{}")) as server:
        client = BrokerHttp(server.url + "/v1", dialect="native")
        try:
            await client.request("GET", "/account/list")  # the session and its pool exist
            connector = client._session_now().connector  # to stall one connect
            assert connector is not None
            real_connect = connector.connect
            calls, opened, both = 0, 0, asyncio.Event()

            async def connect(*args: Any, **kwargs: Any) -> Any:
                nonlocal calls, opened
                calls += 1
                if calls == 3:
                    await asyncio.Event().wait()  # this one never opens
                connection = await real_connect(*args, **kwargs)
                opened += 1
                if opened == 2:
                    both.set()
                return connection

            monkeypatch.setattr(connector, "connect", connect)
            preconnect = asyncio.create_task(client.preconnect(3))
            await asyncio.wait_for(both.wait(), 5)  # two connections are out, one pending
            preconnect.cancel()
            with pytest.raises(asyncio.CancelledError):
                await preconnect
        finally:
            await client.aclose()
        del preconnect
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            gc.collect()
    unclosed = [str(w.message) for w in caught if "Unclosed" in str(w.message)]
    assert unclosed == []

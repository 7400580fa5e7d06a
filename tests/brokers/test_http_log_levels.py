"""The broker_call log event: a summary at INFO, the (redacted) bodies only at DEBUG."""

from __future__ import annotations

import io
import json
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from _support.fixtures import logs_to
from _support.native import sim, sim_clock
from tradebridge.brokers.http import BrokerCall, BrokerHttp
from tradebridge.errors import BrokerUnavailable
from tradebridge.obs.logging import configure_logging
from tradebridge.sim.server import SimServer
from tradebridge.store.embedded import free_port

__all__ = ["sim", "sim_clock"]  # fixtures

LOGIN = {"name": "demo", "password": "demo", "appId": "t", "appVersion": "1", "cid": 0,
         "sec": "sec-value-x", "deviceId": "d"}  # fmt: skip


@pytest.fixture
async def http(sim: SimServer) -> AsyncIterator[BrokerHttp]:
    """Return a native client on the simulator."""
    client = BrokerHttp(sim.url + "/v1", dialect="native", timeout_s=5)
    yield client
    await client.aclose()


@pytest.fixture
def log_output() -> Iterator[io.StringIO]:
    """Send structured logs to a buffer for one test, then restore the defaults."""
    with logs_to(None) as out:
        yield out


async def _login_logged(
    http: BrokerHttp, out: io.StringIO, level: str
) -> tuple[dict[str, Any], BrokerCall]:
    configure_logging(level, stream=out)
    calls: list[BrokerCall] = []
    http.add_listener(calls.append)

    await http.request("POST", "/auth/accesstokenrequest", json_body=LOGIN, account="DEMO0000001")

    lines = [json.loads(line) for line in out.getvalue().splitlines() if line.startswith("{")]
    [event] = [line for line in lines if line["event"] == "broker_call"]
    [call] = calls
    return event, call


async def test_broker_call_at_info_summary_without_bodies(
    http: BrokerHttp, log_output: io.StringIO
) -> None:
    event, call = await _login_logged(http, log_output, "INFO")

    assert event["level"] == "info"
    assert (event["dialect"], event["method"], event["path"], event["status"]) == (
        "native", "POST", "/auth/accesstokenrequest", 200,
    )  # fmt: skip
    assert event["account"] == "DEMO0000001"
    assert event["latency_ms"] >= 0
    assert event["request_bytes"] == len(json.dumps(LOGIN, separators=(",", ":")))
    assert event["response_bytes"] > 0
    assert "request" not in event
    assert "answer" not in event
    assert "userId" not in log_output.getvalue()  # a field of the login answer
    assert "userId" in call.response_body  # the audit record keeps the whole answer
    assert call.response_body["accessToken"] == "***"
    assert call.request_body["password"] == "***"


async def test_broker_call_at_debug_carries_redacted_bodies(
    http: BrokerHttp, log_output: io.StringIO
) -> None:
    event, call = await _login_logged(http, log_output, "DEBUG")

    assert event["answer"] == call.response_body
    assert event["answer"]["accessToken"] == "***"
    assert "userId" in event["answer"]
    assert event["request"]["password"] == "***"
    assert event["request"]["name"] == "demo"
    assert "sec-value-x" not in log_output.getvalue()


async def test_broker_call_refused_connection_summary_has_no_answer_size(
    log_output: io.StringIO,
) -> None:
    configure_logging("INFO", stream=log_output)
    http = BrokerHttp(f"http://127.0.0.1:{free_port()}/v1", dialect="native", timeout_s=2)
    try:
        with pytest.raises(BrokerUnavailable):
            await http.request("GET", "/account/list")
    finally:
        await http.aclose()

    [event] = [json.loads(line) for line in log_output.getvalue().splitlines()
               if line.startswith("{") and '"broker_call"' in line]  # fmt: skip
    assert (event["status"], event["response_bytes"], event["request_bytes"]) == (None, None, 0)
    assert event["error"]


async def _login_calls(http: BrokerHttp, keep: bool) -> list[BrokerCall]:
    calls: list[BrokerCall] = []
    http.add_listener(calls.append, bodies=lambda: keep)
    await http.request("POST", "/auth/accesstokenrequest", json_body=LOGIN, account="DEMO0000001")
    return calls


@pytest.mark.parametrize("level", ["INFO", "WARNING"])
async def test_broker_call_bodies_left_out_when_no_listener_keeps_them(
    http: BrokerHttp, log_output: io.StringIO, level: str
) -> None:
    configure_logging(level, stream=log_output)

    [call] = await _login_calls(http, keep=False)

    assert (call.path, call.status) == ("/auth/accesstokenrequest", 200)
    assert (call.request_body, call.response_body) == (None, None)


async def test_broker_call_bodies_redacted_for_a_listener_that_keeps_them(
    http: BrokerHttp, log_output: io.StringIO
) -> None:
    configure_logging("WARNING", stream=log_output)
    http.add_listener(lambda _call: None, bodies=lambda: False)

    [call] = await _login_calls(http, keep=True)

    assert call.response_body["accessToken"] == "***"
    assert "userId" in call.response_body
    assert call.request_body["password"] == "***"


async def test_broker_call_bodies_kept_at_debug_whoever_listens(
    http: BrokerHttp, log_output: io.StringIO
) -> None:
    configure_logging("DEBUG", stream=log_output)

    [call] = await _login_calls(http, keep=False)

    assert call.response_body["accessToken"] == "***"
    assert call.request_body["password"] == "***"


async def test_broker_call_penalty_answer_keeps_its_body_for_every_listener(
    sim: SimServer, http: BrokerHttp, log_output: io.StringIO
) -> None:
    # The pool's lockout listener keeps no bodies, yet must see p-captcha (reference §2.3).
    configure_logging("INFO", stream=log_output)
    sim.ctx.faults.login_penalty = "captcha"

    [call] = await _login_calls(http, keep=False)

    assert call.response_body["p-captcha"] is True
    assert call.response_body["p-ticket"] == "***"

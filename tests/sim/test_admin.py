"""The simulator's ``/_sim`` admin surface: faults, prices, counters, sockets, health."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
from _bridge_support import DEMO_ACCOUNT, Bridge, login, running_bridge
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

from tradebridge.sim.config import FaultConfig


@pytest.fixture
def bridge() -> Iterator[Bridge]:
    with running_bridge() as running:
        yield running


def test_health_answers_ok(bridge: Bridge) -> None:
    answer = bridge.http.get("/_sim/health")
    assert answer.status_code == 200
    assert answer.json()["status"] == "ok"


def test_faults_get_returns_defaults(bridge: Bridge) -> None:
    assert bridge.http.get("/_sim/faults").json() == FaultConfig().model_dump(mode="json")


def test_faults_patch_latency_slows_bridge_answers(bridge: Bridge) -> None:
    answer = bridge.http.patch("/_sim/faults", json={"latency_ms": 150})
    assert answer.status_code == 200
    assert answer.json()["latency_ms"] == 150
    started = time.perf_counter()
    bridge.d("/accounts")
    assert time.perf_counter() - started >= 0.15


def test_faults_patch_error_rate_answers_5xx_but_admin_still_works(bridge: Bridge) -> None:
    bridge.http.patch("/_sim/faults", json={"error_5xx_rate": 1.0}).raise_for_status()
    assert bridge.get("/accounts").status_code >= 500
    assert bridge.http.get("/_sim/health").status_code == 200


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        ({"latency_ms": -1}, "latency_ms"),
        ({"error_5xx_rate": 2}, "error_5xx_rate"),
        ({"drop_mode": "explode"}, "drop_mode"),
        ({"bogus": 1}, "bogus"),
        ({"latency_ms": 5, "error_5xx_rate": 2}, "error_5xx_rate"),
        ([1, 2], "JSON object"),
        ({"missing_routes": ["fill/ldeps", "/"]}, "missing_routes"),
    ],
)
def test_faults_patch_invalid_answers_422_and_changes_nothing(
    bridge: Bridge, body: Any, needle: str
) -> None:
    answer = bridge.http.patch("/_sim/faults", json=body)
    assert answer.status_code == 422
    assert needle in answer.json()["detail"]
    assert bridge.http.get("/_sim/faults").json() == FaultConfig().model_dump(mode="json")


def test_faults_reset_restores_defaults(bridge: Bridge) -> None:
    bridge.http.patch(
        "/_sim/faults", json={"latency_ms": 5, "lockout_429_users": ["demo"]}
    ).raise_for_status()
    assert bridge.get("/accounts").status_code == 429
    answer = bridge.http.post("/_sim/faults/reset")
    assert answer.json() == FaultConfig().model_dump(mode="json")
    assert bridge.get("/accounts").status_code == 200


def test_price_moves_quote_and_fills_resting_order(bridge: Bridge) -> None:
    last = bridge.quote_last(bridge.front)
    order_id = bridge.place_ok(type="limit", limitPrice=str(last - 100))
    answer = bridge.http.post("/_sim/price", json={"symbol": bridge.front, "price": last - 101})
    assert answer.status_code == 200
    assert float(answer.json()["last"]) == last - 101
    assert bridge.quote_last(bridge.front) == last - 101
    assert bridge.order(order_id)["status"] == "filled"


@pytest.mark.parametrize(
    ("body", "status", "needle"),
    [
        ({"symbol": "FOOZ6", "price": 1}, 404, "FOOZ6"),
        ({"price": 1}, 422, "symbol"),
        ({"symbol": "MNQZ6", "price": "lots"}, 422, "price"),
        ({"symbol": "MNQZ6", "price": -5}, 422, "price"),
        ({"symbol": "MNQZ6", "price": "21000.1"}, 422, "tick"),
    ],
)
def test_price_invalid_answers_error(
    bridge: Bridge, body: dict[str, Any], status: int, needle: str
) -> None:
    answer = bridge.http.post("/_sim/price", json=body)
    assert answer.status_code == status
    assert needle in answer.json()["detail"]


def test_state_counts_logins_orders_and_fills(bridge: Bridge) -> None:
    before = bridge.http.get("/_sim/state").json()
    login(bridge.http)
    bridge.place_ok()
    after = bridge.http.get("/_sim/state").json()
    assert after["logins"] == before["logins"] + 1
    assert after["orders"] == before["orders"] + 1
    assert after["fills"] >= before["fills"] + 1
    assert after["sessions"] == before["sessions"] + 1
    assert after["open_positions"] == 1


def drain(socket: ClientConnection) -> None:
    while True:
        socket.recv(timeout=5)


def test_ws_drop_closes_every_open_socket(bridge: Bridge) -> None:
    ws_url = bridge.server.ws_url
    with connect(ws_url) as first, connect(ws_url) as second:
        assert first.recv(timeout=5) == "o"
        assert second.recv(timeout=5) == "o"
        assert bridge.http.get("/_sim/state").json()["sockets"] == 2
        answer = bridge.http.post("/_sim/ws/drop")
        assert answer.json() == {"dropped": 2}
        for socket in (first, second):
            with pytest.raises(ConnectionClosed):
                drain(socket)
    assert bridge.http.get("/_sim/state").json()["sockets"] == 0


def test_tokens_expire_without_seeder_refuses_every_token_and_writes_none(
    bridge: Bridge,
) -> None:
    answer = bridge.http.post("/_sim/tokens/expire")
    assert answer.status_code == 200
    assert answer.json() == {"expired_sessions": 1, "keys_rewritten": 0}
    assert bridge.get(f"/accounts/{DEMO_ACCOUNT}/state").status_code == 401
    fresh = login(bridge.http)  # logging in again still works
    path = f"/accounts/{DEMO_ACCOUNT}/state"
    assert bridge.http.get(path, headers=bridge.headers(fresh)).status_code == 200


def test_admin_needs_no_token_and_bridge_still_does(bridge: Bridge) -> None:
    assert bridge.http.get("/_sim/state").status_code == 200
    assert bridge.http.get(f"/accounts/{DEMO_ACCOUNT}/state").status_code == 401

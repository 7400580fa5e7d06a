"""Life cycle of ``SimServer``: fast start, clean stop, loop-safe calls."""

from __future__ import annotations

import threading
import time

import httpx
import pytest

from tradebridge.domain.enums import OrderType, Side
from tradebridge.sim.config import SimConfig
from tradebridge.sim.engine import OrderRequest
from tradebridge.sim.server import SimServer


def test_sim_server_start_port_zero_serves_on_a_free_port() -> None:
    # How fast it starts is a benchmark's business, not a test's (it fails on a busy box).
    with SimServer(SimConfig(port=0)) as server:
        response = httpx.get(f"{server.url}/v1/auth/me")

    assert server.url.startswith("http://127.0.0.1:")
    assert not server.url.endswith(":0")
    assert server.ws_url == server.url.replace("http://", "ws://") + "/v1/websocket"
    assert response.status_code == 401


def test_sim_server_stop_leaves_no_thread_and_closes_port() -> None:
    before = set(threading.enumerate())
    server = SimServer(SimConfig(port=0)).start()
    url = server.url

    server.stop()

    assert set(threading.enumerate()) == before
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{url}/v1/auth/me")


def test_sim_server_stop_twice_is_harmless() -> None:
    server = SimServer(SimConfig(port=0)).start()

    server.stop()
    server.stop()


def test_sim_server_start_twice_is_refused() -> None:
    with SimServer(SimConfig(port=0)) as server, pytest.raises(RuntimeError):
        server.start()


def test_sim_server_call_runs_on_server_loop_and_returns(sim_server: SimServer) -> None:
    names = sim_server.call(lambda: threading.current_thread().name)

    assert names == "sim-server"


def test_sim_server_call_raises_exception_of_function(sim_server: SimServer) -> None:
    def fail() -> None:
        raise ValueError("boom")

    with pytest.raises(ValueError, match="boom"):
        sim_server.call(fail)


def test_sim_server_call_after_stop_is_refused() -> None:
    server = SimServer(SimConfig(port=0)).start()
    server.stop()

    with pytest.raises(RuntimeError):
        server.call(lambda: None)


def test_sim_server_price_ticker_matches_resting_orders() -> None:
    # A buy limit at the last price and a sell limit at the ask: whichever way the price
    # moves, one of them fills, but only if something steps the market (nobody reads quotes).
    server = SimServer(SimConfig(port=0, price_step_s=0.02)).start()
    engine = server.ctx.engine
    try:

        def place_pair() -> None:
            contract = engine.suggest_contracts("MNQ", 1)[0]
            quote = engine.quote(contract.id)
            for side, price in ((Side.BUY, quote.last), (Side.SELL, quote.ask)):
                request = OrderRequest(100001, contract.name, side, OrderType.LIMIT, 1, price)
                assert engine.place_order(request).ok

        server.call(place_pair)
        deadline = time.monotonic() + 5
        filled = 0
        while not filled and time.monotonic() < deadline:
            time.sleep(0.02)
            filled = server.call(lambda: sum(o.filled_qty for o in engine.orders()))
    finally:
        server.stop()

    assert filled == 1

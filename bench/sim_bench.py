"""Benchmark the simulator's order path: latency and throughput of placing orders.

Starts ``tradebridge sim`` on a free loopback port in a subprocess (so client and server do
not share an event loop or a GIL), logs in, then measures:

* native ``POST /v1/order/placeorder``: round-trip latency of sequential orders, and
  throughput with N concurrent clients;
* the TradingView bridge's ``POST /accounts/{id}/orders``: the same two figures.

Orders are 1-lot market orders alternating buy and sell, so the position stays flat.

    .venv/bin/python bench/sim_bench.py [--orders 2000] [--concurrency 8]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx

from tradebridge.store.embedded import free_port

ACCOUNT_NAME = "DEMO0000001"
ACCOUNT_ID = 100001
BRIDGE_ID = "D100001"


@dataclass
class Result:
    """One measured run."""

    name: str
    orders: int
    concurrency: int
    seconds: float
    latencies_ms: list[float]
    failures: int

    def row(self) -> list[str]:
        lat = sorted(self.latencies_ms)

        def pct(p: float) -> str:
            return f"{lat[min(len(lat) - 1, int(p * len(lat)))]:.2f}"

        return [
            self.name,
            str(self.concurrency),
            str(self.orders),
            f"{self.orders / self.seconds:,.0f}",
            f"{statistics.median(lat):.2f}",
            pct(0.90),
            pct(0.99),
            f"{lat[-1]:.2f}",
            str(self.failures),
        ]


def start_simulator() -> tuple[subprocess.Popen[bytes], str]:
    """Start ``tradebridge sim`` on a free port; return the process and its base URL."""
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "tradebridge", "sim", "--port", str(port), "--seed", "1"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/_sim/health", timeout=1).status_code == 200:
                return process, url
        except httpx.TransportError:
            time.sleep(0.05)
    process.kill()
    raise SystemExit("the simulator did not start")


def native_login(url: str) -> str:
    body = {
        "name": "demo",
        "password": "demo",
        "appId": "sim-bench",
        "appVersion": "1.0",
        "deviceId": "sim-bench",
        "cid": 0,
        "sec": "",
    }
    payload = httpx.post(f"{url}/v1/auth/accesstokenrequest", json=body).json()
    return str(payload["accessToken"])


def bridge_login(url: str) -> str:
    payload = httpx.post(f"{url}/authorize", data={"login": "demo", "password": "demo"}).json()
    return str(payload["d"]["access_token"])


def front_month(url: str, token: str) -> str:
    answer = httpx.get(
        f"{url}/v1/contract/suggest",
        params={"t": "MNQ", "l": 1},
        headers={"Authorization": f"Bearer {token}"},
    )
    return str(answer.json()[0]["name"])


Request = Callable[[int], tuple[str, dict[str, Any]]]


def native_request(symbol: str) -> Request:
    def build(n: int) -> tuple[str, dict[str, Any]]:
        body = {
            "accountSpec": ACCOUNT_NAME,
            "accountId": ACCOUNT_ID,
            "action": "Buy" if n % 2 == 0 else "Sell",
            "symbol": symbol,
            "orderQty": 1,
            "orderType": "Market",
            "isAutomated": True,
        }
        return "/v1/order/placeorder", {"json": body}

    return build


def bridge_request(symbol: str) -> Request:
    def build(n: int) -> tuple[str, dict[str, Any]]:
        form = {
            "instrument": symbol,
            "qty": "1",
            "side": "buy" if n % 2 == 0 else "sell",
            "type": "market",
            "durationType": "Day",
        }
        return f"/accounts/{BRIDGE_ID}/orders?locale=en", {"data": form}

    return build


def accepted(answer: httpx.Response) -> bool:
    if answer.status_code != 200:
        return False
    payload = answer.json()
    return "orderId" in payload or payload.get("s") == "ok"


def run_sequential(name: str, url: str, token: str, build: Request, orders: int) -> Result:
    latencies: list[float] = []
    failures = 0
    headers = {"Authorization": f"Bearer {token}"}
    with httpx.Client(base_url=url, headers=headers, timeout=30) as client:
        for n in range(20):  # warm up the connection and the server's code paths
            path, kwargs = build(n)
            client.post(path, **kwargs)
        started = time.perf_counter()
        for n in range(orders):
            path, kwargs = build(n)
            t0 = time.perf_counter()
            answer = client.post(path, **kwargs)
            latencies.append((time.perf_counter() - t0) * 1000)
            failures += not accepted(answer)
        seconds = time.perf_counter() - started
    return Result(name, orders, 1, seconds, latencies, failures)


async def run_concurrent(
    name: str, url: str, token: str, build: Request, orders: int, concurrency: int
) -> Result:
    latencies: list[float] = []
    failures = 0
    counter = iter(range(orders))
    headers = {"Authorization": f"Bearer {token}"}
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)

    async def worker(client: httpx.AsyncClient) -> None:
        nonlocal failures
        for n in counter:
            path, kwargs = build(n)
            t0 = time.perf_counter()
            answer = await client.post(path, **kwargs)
            latencies.append((time.perf_counter() - t0) * 1000)
            failures += not accepted(answer)

    async with httpx.AsyncClient(
        base_url=url, headers=headers, timeout=30, limits=limits
    ) as client:
        started = time.perf_counter()
        async with asyncio.TaskGroup() as group:
            for _ in range(concurrency):
                group.create_task(worker(client))
        seconds = time.perf_counter() - started
    return Result(name, orders, concurrency, seconds, latencies, failures)


def print_table(results: list[Result]) -> None:
    header = ["path", "clients", "orders", "orders/s", "p50 ms", "p90 ms", "p99 ms", "max ms",
              "failed"]  # fmt: skip
    rows = [header, *(r.row() for r in results)]
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    for index, row in enumerate(rows):
        cells = [
            c.ljust(w) if i == 0 else c.rjust(w)
            for i, (c, w) in enumerate(zip(row, widths, strict=True))
        ]
        print("  ".join(cells))
        if index == 0:
            print("  ".join("-" * w for w in widths))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--orders", type=int, default=2000, help="orders per run")
    parser.add_argument("--concurrency", type=int, default=8, help="concurrent clients")
    args = parser.parse_args()

    process, url = start_simulator()
    try:
        native_token = native_login(url)
        bridge_token = bridge_login(url)
        symbol = front_month(url, native_token)
        native = native_request(symbol)
        bridge = bridge_request(symbol)
        results = [
            run_sequential("native placeorder", url, native_token, native, args.orders),
            asyncio.run(
                run_concurrent(
                    "native placeorder", url, native_token, native, args.orders, args.concurrency
                )
            ),
            run_sequential("bridge POST orders", url, bridge_token, bridge, args.orders),
            asyncio.run(
                run_concurrent(
                    "bridge POST orders", url, bridge_token, bridge, args.orders, args.concurrency
                )
            ),
        ]
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
    print(
        f"tradebridge simulator on {url} ({symbol}); Python {platform.python_version()}, "
        f"{platform.machine()}, {os.cpu_count()} CPUs; latency = client-side round trip"
    )
    print_table(results)


if __name__ == "__main__":
    main()

"""Benchmark the simulator's order path: latency and throughput of placing orders.

Starts ``tradebridge sim`` on a free loopback port in a subprocess (so client and server do
not share an event loop or a GIL), logs in, then measures:

* native ``POST /v1/order/placeorder``: round-trip latency of sequential orders, and
  throughput with N concurrent clients;
* the TradingView bridge's ``POST /accounts/{id}/orders``: the same two figures;
* then (``--lookups``) reads of one order's entities by id (``order/item``, ``order/items``,
  ``fill/deps``, ``command/deps``) with every order of the runs above in the simulator:
  what a lookup of an unknown outcome or reconcile asks.

Orders are 1-lot market orders alternating buy and sell, so the position stays flat.

    .venv/bin/python bench/sim_bench.py [--orders 2000] [--concurrency 8] [--lookups 200]
"""

from __future__ import annotations

import argparse
import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx

from _common import (
    BRIDGE_ID,
    accepted,
    bridge_login,
    bridge_market_form,
    front_month,
    latency_cells,
    machine,
    native_login,
    native_market_body,
    print_table,
    running_simulator,
)


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
        return [
            self.name,
            str(self.concurrency),
            str(self.orders),
            f"{self.orders / self.seconds:,.0f}",
            *latency_cells(self.latencies_ms),
            str(self.failures),
        ]


Request = Callable[[int], tuple[str, dict[str, Any]]]


def native_request(symbol: str) -> Request:
    def build(n: int) -> tuple[str, dict[str, Any]]:
        return "/v1/order/placeorder", {"json": native_market_body(n, symbol)}

    return build


def bridge_request(symbol: str) -> Request:
    def build(n: int) -> tuple[str, dict[str, Any]]:
        return f"/accounts/{BRIDGE_ID}/orders?locale=en", {"data": bridge_market_form(n, symbol)}

    return build


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


# Reads of one entity, as a lookup of an unknown outcome or reconcile makes them.
LOOKUPS = {
    "native GET order/item": lambda order_id: ("/v1/order/item", {"id": order_id}),
    "native GET order/items (5 ids)": lambda order_id: (
        "/v1/order/items", {"ids": ",".join(str(order_id - i) for i in range(5))}),
    "native GET fill/deps": lambda order_id: ("/v1/fill/deps", {"masterid": order_id}),
    "native GET command/deps": lambda order_id: ("/v1/command/deps", {"masterid": order_id}),
}  # fmt: skip


def run_lookups(url: str, token: str, lookups: int) -> list[Result]:
    """Time ``lookups`` sequential reads of one order's entities, per kind of read."""
    headers = {"Authorization": f"Bearer {token}"}
    results = []
    with httpx.Client(base_url=url, headers=headers, timeout=30) as client:
        ids = [int(o["id"]) for o in client.get("/v1/order/list").json()]
        for name, build in LOOKUPS.items():
            latencies: list[float] = []
            failures = 0
            started = time.perf_counter()
            for n in range(lookups):
                path, params = build(ids[(n * 7919) % len(ids)])
                t0 = time.perf_counter()
                answer = client.get(path, params=params)
                latencies.append((time.perf_counter() - t0) * 1000)
                failures += answer.status_code != 200
            seconds = time.perf_counter() - started
            results.append(Result(f"{name} ({len(ids)} orders)", lookups, 1, seconds,
                                  latencies, failures))  # fmt: skip
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--orders", type=int, default=2000, help="orders per run")
    parser.add_argument("--concurrency", type=int, default=8, help="concurrent clients")
    parser.add_argument(
        "--lookups", type=int, default=200, help="reads by id after the orders (0: none)"
    )
    args = parser.parse_args()

    with running_simulator() as url:
        native_token = str(native_login(url)["accessToken"])
        bridge_token = str(bridge_login(url)["access_token"])
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
        if args.lookups:
            results += run_lookups(url, native_token, args.lookups)
    print(f"tradebridge simulator on {url} ({symbol}); {machine()}; latency = client round trip")
    header = ["path", "clients", "orders", "orders/s", "p50 ms", "p90 ms", "p99 ms", "max ms",
              "failed"]  # fmt: skip
    print_table(header, [r.row() for r in results])


if __name__ == "__main__":
    main()

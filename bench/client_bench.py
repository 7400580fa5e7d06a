"""Benchmark ``BrokerHttp`` alone: sequential order POSTs to the simulator, CPU per request.

Starts ``tradebridge sim`` on a free loopback port in a subprocess, logs in once, then
places ``--requests`` 1-lot market orders one after another through ``BrokerHttp.request``
(``POST /v1/order/placeorder`` JSON, or the bridge's form ``POST /accounts/{id}/orders``
with ``--dialect bridge``), alternating buy and sell. Each run is a child process of its
own, so that its CPU time (user + system, ``time.process_time``) is the client's alone:
building the request, the HTTP client, parsing the answer, the ``broker_call`` event (JSON
at INFO into /dev/null) and the metrics. The simulator's CPU is not counted.

``--against REF`` measures the code of a git revision too (``git archive REF src`` into a
temporary directory, first on the child's ``PYTHONPATH``), interleaved with this checkout's
run by run (ABBA), so that a shared, loaded machine and the simulator's growing order book
weigh on both alike.

    .venv/bin/python bench/client_bench.py [--requests 2000] [--rounds 3] [--against main] \
        [--dialect native|bridge] [--loop auto|asyncio|uvloop]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from _common import (
    BRIDGE_ID,
    bridge_login,
    bridge_market_form,
    machine,
    native_login,
    native_market_body,
    percentile,
    print_table,
    start_simulator,
    stop_simulator,
)

WARMUP = 50
ROOT = Path(__file__).resolve().parent.parent


async def child_run(url: str, token: str, symbol: str, dialect: str, count: int, tag: str) -> None:
    """Place ``count`` orders through ``BrokerHttp``; print one JSON line with the figures."""
    import tradebridge
    from tradebridge.brokers.http import BrokerHttp

    if dialect == "native":
        http = BrokerHttp(url + "/v1", dialect="native")

        async def place(n: int) -> bool:
            answer = await http.request("POST", "/order/placeorder", token=token,
                                        json_body=native_market_body(n, symbol))  # fmt: skip
            return answer.status == 200 and "orderId" in answer.body
    else:
        http = BrokerHttp(url, dialect="tvbridge")

        async def place(n: int) -> bool:
            answer = await http.request(
                "POST", f"/accounts/{BRIDGE_ID}/orders", token=token,
                params={"locale": "en", "requestId": f"cb{tag}{n}"},
                form=bridge_market_form(n, symbol),
                headers={"Content-Type": "application/x-www-form-urlencoded"},
            )  # fmt: skip
            return answer.status == 200 and answer.body.get("s") == "ok"

    failed = 0
    for n in range(WARMUP):
        failed += not await place(n)
    latencies: list[float] = []
    cpu_started = time.process_time()
    for n in range(WARMUP, WARMUP + count):
        started = time.perf_counter()
        failed += not await place(n)
        latencies.append(time.perf_counter() - started)
    cpu_s = time.process_time() - cpu_started
    await http.aclose()
    print(json.dumps({"module": tradebridge.__file__, "latencies": latencies, "cpu_s": cpu_s,
                      "failed": failed}))  # fmt: skip


def child_main(args: argparse.Namespace) -> None:
    """Run one measurement in this process (``--child``)."""
    from tradebridge.obs.logging import configure_logging

    with Path("/dev/null").open("w", encoding="utf-8") as sink:
        configure_logging("INFO", json_output=True, stream=sink)
        run = child_run(args.url, args.token, args.symbol, args.dialect, args.requests, args.tag)
        if args.loop == "asyncio":
            asyncio.run(run)
        else:
            import uvloop

            uvloop.run(run)


def export(ref: str, into: Path) -> Path:
    """Write ``src`` of git revision ``ref`` under ``into``; return the directory to import."""
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", ref, "src"],
                             check=True, capture_output=True).stdout  # fmt: skip
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    return into / "src"


def measure(src: Path, args: argparse.Namespace, url: str, token: str, symbol: str,
            tag: str) -> dict[str, Any]:  # fmt: skip
    """Run one child on the code under ``src``; return its figures."""
    argv = [sys.executable, __file__, "--child", "--url", url, "--token", token,
            "--symbol", symbol, "--dialect", args.dialect, "--requests", str(args.requests),
            "--loop", args.loop, "--tag", tag]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": f"{src}{os.pathsep}{Path(__file__).parent}"}
    out = subprocess.run(argv, env=env, check=True, capture_output=True, text=True).stdout
    result: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    if not result["module"].startswith(str(src)):
        raise SystemExit(f"the child imported {result['module']}, not the code under {src}")
    return result


def summary(name: str, runs: list[dict[str, Any]]) -> list[str]:
    """Return a table row: p50/p90/p99/max latency and CPU per request over all runs."""
    latencies = sorted(x * 1000 for run in runs for x in run["latencies"])
    cpu_us = [run["cpu_s"] / len(run["latencies"]) * 1e6 for run in runs]
    total_cpu_us = sum(run["cpu_s"] for run in runs) / len(latencies) * 1e6
    return [
        name,
        str(len(latencies)),
        *(f"{percentile(latencies, p):.3f}" for p in (0.5, 0.9, 0.99)),
        f"{latencies[-1]:.2f}",
        f"{total_cpu_us:.0f}",
        " ".join(f"{c:.0f}" for c in cpu_us),
        str(sum(run["failed"] for run in runs)),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=2000, help="measured orders per run")
    parser.add_argument("--rounds", type=int, default=3, help="runs per version")
    parser.add_argument("--against", help="a git revision to measure beside this checkout")
    parser.add_argument("--dialect", choices=["native", "bridge"], default="native")
    parser.add_argument("--loop", choices=["auto", "asyncio", "uvloop"], default="auto",
                        help="auto: uvloop where installed, as serve and up")  # fmt: skip
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    for name in ("--url", "--token", "--symbol", "--tag"):
        parser.add_argument(name, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.loop == "auto":
        try:
            import uvloop  # noqa: F401
        except ImportError:
            args.loop = "asyncio"
        else:
            args.loop = "uvloop"
    if args.child:
        child_main(args)
        return

    from tradebridge.domain.contracts import resolve_symbol

    process, url = start_simulator()
    try:
        if args.dialect == "native":
            token = str(native_login(url)["accessToken"])
        else:
            token = str(bridge_login(url)["access_token"])
        symbol = resolve_symbol("MNQ1!", datetime.now(UTC).date()).name
        with tempfile.TemporaryDirectory() as tmp:
            versions = [("HEAD (this checkout)", ROOT / "src")]
            if args.against:
                versions.insert(0, (args.against, export(args.against, Path(tmp))))
            runs: dict[str, list[dict[str, Any]]] = {name: [] for name, _ in versions}
            for round_ in range(args.rounds):
                order = versions if round_ % 2 == 0 else versions[::-1]
                for index, (name, src) in enumerate(order):
                    tag = f"r{round_}v{index}"
                    runs[name].append(measure(src, args, url, token, symbol, tag))
                    print(f"  round {round_ + 1} {name}: done, load {os.getloadavg()[0]:.1f}",
                          file=sys.stderr)  # fmt: skip
    finally:
        stop_simulator(process)
    load = os.getloadavg()[0]
    print(f"BrokerHttp, {args.requests} sequential {args.dialect} order POSTs per run, "
          f"{args.rounds} runs per version (interleaved), loop {args.loop}; simulator on "
          f"{url} ({symbol}); {machine()}; load average {load:.1f} at the end")  # fmt: skip
    header = ["code", "orders", "p50 ms", "p90 ms", "p99 ms", "max ms", "CPU µs/req",
              "per run", "failed"]  # fmt: skip
    print_table(header, [summary(name, runs[name]) for name in runs])


if __name__ == "__main__":
    main()

"""Webhook benchmark: answer latency at a fixed alert rate, and sustained accepted alerts/s.

    .venv/bin/python bench/webhook_bench.py [--rate 200] [--seconds 10] [--alerts 5000]
                                            [--concurrency 32]

Starts a private PostgreSQL (``store.embedded``), migrates it, and serves the webhook router
over that ledger with uvicorn in a subprocess (client and server share no event loop and no
GIL). Every alert is a distinct, valid tradebridge-format buy (its own ``id`` and ``time``),
so every one is stored: one ``webhook_alerts`` row plus one ``trading_signals`` row.
No dispatcher runs: this measures webhook -> stored -> answered, not broker submission.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import httpx
import uvloop

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import latency_cells, machine, print_table
from tradebridge.store.embedded import EmbeddedPostgres, free_port

SECRET = "bench-secret-0123456789"


def serve(database_url: str, port: int) -> None:
    """Child process: serve the webhook router over a ledger on ``database_url``."""
    import uvicorn
    from fastapi import FastAPI

    from tradebridge.config import load_settings
    from tradebridge.intake.webhook import IntakeDeps, build_router
    from tradebridge.ops.logging import configure_logging
    from tradebridge.store.ledger import Ledger

    configure_logging(level="WARNING")
    settings = load_settings(
        accounts=[{"name": "BENCH1"}],
        webhook={"secret": SECRET, "rate_limit_per_minute": 0},
        data_dir="/nonexistent",
    )

    async def main() -> None:
        ledger = await Ledger.connect(database_url, min_size=4, max_size=10)
        app = FastAPI()
        app.include_router(build_router(IntakeDeps(settings=settings, ledger=ledger)))
        config = uvicorn.Config(
            app, host="127.0.0.1", port=port, lifespan="off", access_log=False,
            log_level="warning", proxy_headers=False, timeout_keep_alive=120,
        )  # fmt: skip
        await uvicorn.Server(config).serve()

    asyncio.run(main())


def body(n: int) -> bytes:
    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return (
        f'{{"secret":"{SECRET}","symbol":"MNQ1!","action":"buy","quantity":"1",'
        f'"id":"bench-{n}","time":"{now}","stop_loss":{{"ticks":20}}}}'
    ).encode()


class Connection:
    """A minimal keep-alive HTTP/1.1 client: httpx's per-request cost would be the bottleneck."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader = reader
        self._writer = writer

    @classmethod
    async def open(cls, port: int) -> Connection:
        """Connect to the webhook on loopback."""
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        return cls(reader, writer)

    async def post(self, payload: bytes) -> tuple[int, bytes]:
        """POST ``payload`` to /webhook; return the status and the body."""
        self._writer.write(
            b"POST /webhook HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\n"
            b"Content-Length: " + str(len(payload)).encode() + b"\r\n\r\n" + payload
        )
        head = await self._reader.readuntil(b"\r\n\r\n")
        status = int(head.split(b" ", 2)[1])
        length = 0
        for line in head.split(b"\r\n"):
            if line.lower().startswith(b"content-length:"):
                length = int(line.split(b":", 1)[1])
        return status, await self._reader.readexactly(length)

    def close(self) -> None:
        """Close the socket."""
        self._writer.close()


def _accepted(status: int, answer: bytes) -> bool:
    return status == 200 and b'"status":"accepted"' in answer


async def paced(port: int, rate: float, seconds: float) -> tuple[list[float], int]:
    """Send ``rate`` alerts/s (open loop) for ``seconds``; return latencies (ms) and failures."""
    total = int(rate * seconds)
    latencies: list[float] = []
    failed = 0
    idle = [await Connection.open(port) for _ in range(32)]

    async def one(n: int, record: bool = True) -> None:
        nonlocal failed
        conn = idle.pop() if idle else await Connection.open(port)
        start = time.perf_counter()
        status, answer = await conn.post(body(n))
        if record:
            latencies.append((time.perf_counter() - start) * 1000)
        idle.append(conn)
        if not _accepted(status, answer):
            failed += 1

    for n in range(50):  # warm-up: connections, pools, caches
        await one(-1 - n, record=False)
    began = time.perf_counter()
    tasks = []
    for n in range(total):
        delay = began + n / rate - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(n)))
    await asyncio.gather(*tasks)
    for conn in idle:
        conn.close()
    return latencies, failed


async def sustained(port: int, alerts: int, concurrency: int) -> tuple[list[float], int, float]:
    """Send ``alerts`` with ``concurrency`` in flight; return latencies, failures, alerts/s."""
    latencies: list[float] = []
    failed = 0
    queue = iter(range(1_000_000, 1_000_000 + alerts))

    async def worker() -> None:
        nonlocal failed
        conn = await Connection.open(port)
        for n in queue:
            start = time.perf_counter()
            status, answer = await conn.post(body(n))
            latencies.append((time.perf_counter() - start) * 1000)
            if not _accepted(status, answer):
                failed += 1
        conn.close()

    began = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    elapsed = time.perf_counter() - began
    return latencies, failed, (alerts - failed) / elapsed


def main() -> None:
    """Run both measurements and print a table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=200.0)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--alerts", type=int, default=5000)
    parser.add_argument("--concurrency", type=int, default=16)
    args = parser.parse_args()

    from tradebridge.store.migrate import migrate

    postgres = EmbeddedPostgres().start()
    child = None
    try:
        asyncio.run(migrate(postgres.url))
        port = free_port()
        child = subprocess.Popen(
            [sys.executable, __file__, "--serve", postgres.url, str(port)],
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        url = f"http://127.0.0.1:{port}/webhook"
        deadline = time.monotonic() + 30
        while True:
            try:
                httpx.post(url, content=b"{}", timeout=1)
                break
            except httpx.TransportError:
                if time.monotonic() > deadline or child.poll() is not None:
                    raise SystemExit("the webhook server did not start") from None
                time.sleep(0.1)
        paced_ms, paced_failed = uvloop.run(paced(port, args.rate, args.seconds))
        load_ms, load_failed, per_s = uvloop.run(sustained(port, args.alerts, args.concurrency))
    finally:
        if child is not None:
            child.terminate()
            child.wait(timeout=10)
        postgres.stop()

    print(f"webhook benchmark on {machine()}")
    print_table(
        ["run", "alerts", "failed", "alerts/s", "p50 ms", "p90 ms", "p99 ms", "max ms"],
        [
            [f"paced {args.rate:g}/s", str(len(paced_ms)), str(paced_failed),
             f"{args.rate:g}", *latency_cells(sorted(paced_ms))],
            [f"sustained, {args.concurrency} in flight", str(len(load_ms)), str(load_failed),
             f"{per_s:.0f}", *latency_cells(sorted(load_ms))],
        ],
    )  # fmt: skip


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--serve":
        serve(sys.argv[2], int(sys.argv[3]))
    else:
        main()

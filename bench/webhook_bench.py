"""Webhook benchmark: alert → answer and alert → broker submit latency, and accepted alerts/s.

    .venv/bin/python bench/webhook_bench.py [--rates 100,200] [--seconds 10] [--accounts 8]
        [--alerts 5000] [--concurrency 16] [--intake-only]

By default it runs the whole stack as a trader would: a private PostgreSQL and Redis
(``store.embedded``), ``tradebridge sim`` in a subprocess writing its tokens into that Redis
(``bench/_common.py``), and ``python -m tradebridge serve`` in another subprocess on them
(webhook secret set, one dispatcher with tracking, logs at WARNING, production defaults
otherwise except the client-side request budget, which is raised: the simulator has none).
Every alert is a distinct, valid tradebridge-format 1-lot market order (its own ``id`` and
``time``, alternating buy and sell, round-robin over ``--accounts`` accounts), so every one
is stored and placed (``order/placeorder``). No stop loss: in ticks it needs an entry
reference the native adapter has no quote for, and the row would be denied, not sent.

* **paced**, for each of ``--rates`` alerts/s during ``--seconds`` (open loop, keep-alive
  connections): per alert, the answer latency (client, monotonic clock), and the time from
  sending the alert until the row is written ``submitted`` (``ts_submitted``: committed
  immediately before the broker request leaves) and until the broker's answer is written
  back (``ts_accepted``). Those two compare the client's ``time.time()`` at send with the
  database's ``clock_timestamp()``: both read the same host's realtime clock (everything
  runs on this machine). ``stored → submitted`` (``ts_submitted - created_at``, the database
  clock alone) is shown as a cross-check.
* **sustained**: ``--alerts`` alerts with ``--concurrency`` in flight; accepted alerts/s =
  accepted answers / wall time of the run. With the full stack the dispatcher places them
  meanwhile; ``placed/s`` = alerts / (last ``ts_accepted`` - first send).

``--intake-only`` serves the webhook router alone over the ledger (no dispatcher, simulator
or Redis): webhook → stored → answered, the intake's own ceiling.
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
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import asyncpg
import httpx
import redis.asyncio as aioredis
import uvloop

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (
    RISK_OFF_TOML,
    Connection,
    accounts_toml,
    bench_account,
    latency_cells,
    machine,
    open_loop,
    print_table,
    sim_config,
    start_simulator,
    stop_simulator,
    wait_placed,
    wait_tokens,
)
from tradebridge.store.embedded import EmbeddedPostgres, EmbeddedRedis, free_port

SECRET = "bench-secret-0123456789"
WARM_UP = 50


def serve_intake_only(database_url: str, port: int, accounts: int) -> None:
    """Child process: serve the webhook router alone over a ledger on ``database_url``."""
    import uvicorn
    from fastapi import FastAPI

    from tradebridge.config import load_settings
    from tradebridge.intake.webhook import IntakeDeps, build_router
    from tradebridge.obs.logging import configure_logging
    from tradebridge.store.kill import KillSwitchWatch
    from tradebridge.store.ledger import Ledger

    configure_logging(level="WARNING")
    settings = load_settings(
        accounts=[{"name": bench_account(i)} for i in range(accounts)],
        webhook={"secret": SECRET, "rate_limit_per_minute": 0},
        data_dir="/nonexistent",
    )

    async def main() -> None:
        ledger = await Ledger.connect(database_url, min_size=4, max_size=10)
        # As serve does: one watch keeps the kill switches current (no read per alert).
        kill = KillSwitchWatch(ledger)
        watching = asyncio.create_task(kill.run())
        app = FastAPI()
        app.include_router(build_router(IntakeDeps(settings=settings, ledger=ledger, kill=kill)))
        config = uvicorn.Config(
            app, host="127.0.0.1", port=port, lifespan="off", access_log=False,
            log_level="warning", proxy_headers=False, timeout_keep_alive=120,
        )  # fmt: skip
        await uvicorn.Server(config).serve()
        watching.cancel()

    asyncio.run(main())


def serve_config(sim_url: str, accounts: int) -> str:
    """Return the ``tradebridge serve`` settings (TOML) of the full-stack run."""
    listed = accounts_toml(accounts)
    return f"""
[logging]
level = "WARNING"

[tradovate]
native_url = "{sim_url}/v1"
bridge_url = "{sim_url}"
requests_per_s = 100000.0
request_burst = 100000

[webhook]
secret = "{SECRET}"
rate_limit_per_minute = 0

{RISK_OFF_TOML}
{listed}
"""


def body(n: int, accounts: int) -> bytes:
    """Return alert ``n``: a 1-lot market order (even buys, odd sells)."""
    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    side = "buy" if n % 2 == 0 else "sell"
    return (
        f'{{"secret":"{SECRET}","symbol":"MNQ1!","action":"{side}","quantity":"1",'
        f'"id":"bench-{n}","time":"{now}",'
        f'"account":"{bench_account(n % accounts)}"}}'
    ).encode()


def _accepted(status: int, answer: bytes) -> bool:
    return status == 200 and b'"status":"accepted"' in answer


@dataclass
class Paced:
    """One paced run: answer latencies, failures, and each accepted row's send time."""

    rate: float
    answer_ms: list[float] = field(default_factory=list)
    failed: int = 0
    sent_at: dict[str, float] = field(default_factory=dict)  # signal_id: time.time() at send


async def paced(port: int, rate: float, seconds: float, first: int, accounts: int) -> Paced:
    """Send ``rate`` alerts/s (open loop) for ``seconds``, numbered from ``first``."""
    run = Paced(rate)
    idle = [await Connection.open(port) for _ in range(32)]

    async def one(n: int) -> None:
        # `tradebridge serve` closes connections idle for 5 s (uvicorn's default keep-alive).
        while idle and idle[-1].closed:
            idle.pop().close()
        conn = idle.pop() if idle else await Connection.open(port)
        payload = body(n, accounts)
        wall = time.time()
        start = time.perf_counter()
        conn.send(payload)
        status, answer = await conn.answer()
        run.answer_ms.append((time.perf_counter() - start) * 1000)
        idle.append(conn)
        if not _accepted(status, answer):
            run.failed += 1
            return
        for signal_id in json.loads(answer)["signal_ids"]:
            run.sent_at[signal_id] = wall

    await open_loop(rate, seconds, lambda n: one(first + n))
    for conn in idle:
        conn.close()
    return run


async def sustained(
    port: int, alerts: int, concurrency: int, first: int, accounts: int
) -> tuple[list[float], int, float, float]:
    """Send ``alerts`` with ``concurrency`` in flight.

    Return the latencies (ms), failures, accepted alerts/s and the wall time of the first send.
    """
    latencies: list[float] = []
    failed = 0
    queue = iter(range(first, first + alerts))

    async def worker() -> None:
        nonlocal failed
        conn = await Connection.open(port)
        for n in queue:
            start = time.perf_counter()
            status, answer = await conn.post(body(n, accounts))
            latencies.append((time.perf_counter() - start) * 1000)
            if not _accepted(status, answer):
                failed += 1
        conn.close()

    wall = time.time()
    began = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    elapsed = time.perf_counter() - began
    return latencies, failed, (alerts - failed) / elapsed, wall


async def warm_up(port: int, accounts: int) -> None:
    """Send a few alerts one at a time: connections, pools, caches, adapters."""
    conn = await Connection.open(port)
    for n in range(WARM_UP):
        await conn.post(body(-1 - n, accounts))
    conn.close()


async def submit_latencies(db: asyncpg.Connection, run: Paced) -> dict[str, list[float]]:
    """Return send → submitted, send → accepted and stored → submitted (ms) of ``run``'s rows."""
    rows = await db.fetch(
        "select signal_id, created_at, ts_submitted, ts_accepted from trading_signals "
        "where signal_id = any($1::text[])",
        list(run.sent_at),
    )
    out: dict[str, list[float]] = {"submitted": [], "accepted": [], "stored": []}
    for row in rows:
        sent = run.sent_at[row["signal_id"]]
        out["submitted"].append((row["ts_submitted"].timestamp() - sent) * 1000)
        out["accepted"].append((row["ts_accepted"].timestamp() - sent) * 1000)
        out["stored"].append((row["ts_submitted"] - row["created_at"]).total_seconds() * 1000)
    return out


@dataclass
class Results:
    """What one invocation measured."""

    paced: list[tuple[Paced, dict[str, list[float]]]] = field(default_factory=list)
    load_ms: list[float] = field(default_factory=list)
    load_failed: int = 0
    per_s: float = 0.0
    placed_per_s: float | None = None


async def measure(args: argparse.Namespace, port: int, database_url: str) -> Results:
    """Run the paced and sustained series against the webhook on ``port``."""
    results = Results()
    full = not args.intake_only
    db = await asyncpg.connect(database_url)
    try:
        await warm_up(port, args.accounts)
        placed = WARM_UP
        if full:
            await wait_placed(db, placed, 60, like="tv-%")
        first = 0
        for rate in args.rates:
            run = await paced(port, rate, args.seconds, first, args.accounts)
            first += int(rate * args.seconds)
            placed += len(run.sent_at)
            submit: dict[str, list[float]] = {}
            if full:
                await wait_placed(db, placed, 120, like="tv-%")
                submit = await submit_latencies(db, run)
            results.paced.append((run, submit))
        load_ms, failed, per_s, wall = await sustained(
            port, args.alerts, args.concurrency, first, args.accounts
        )
        results.load_ms, results.load_failed, results.per_s = load_ms, failed, per_s
        if full:
            await wait_placed(db, placed + args.alerts - failed, 600, like="tv-%")
            last = await db.fetchval("select max(ts_accepted) from trading_signals")
            results.placed_per_s = (args.alerts - failed) / (last.timestamp() - wall)
    finally:
        await db.close()
    return results


def wait_http(url: str, child: subprocess.Popen[bytes], log: Path | None) -> None:
    """Wait until the webhook answers at all (any status)."""
    deadline = time.monotonic() + 60
    while True:
        try:
            httpx.post(url, content=b"{}", timeout=1)
            return
        except httpx.TransportError:
            if time.monotonic() > deadline or child.poll() is not None:
                tail = log.read_text(encoding="utf-8")[-2000:] if log else ""
                raise SystemExit(f"the webhook server did not start\n{tail}") from None
            time.sleep(0.1)


def run_full(args: argparse.Namespace) -> Results:
    """Run the series against ``tradebridge serve`` with the simulator as broker."""
    postgres = EmbeddedPostgres().start()
    redis = EmbeddedRedis().start()
    sim = None
    child = None
    try:
        with tempfile.TemporaryDirectory() as tmp:
            sim_file = Path(tmp) / "sim.json"
            sim_file.write_text(json.dumps(sim_config(args.accounts)), encoding="utf-8")
            sim, sim_url = start_simulator(config=sim_file, redis_url=redis.url)
            names = [bench_account(i) for i in range(args.accounts)]
            asyncio.run(_wait_tokens(redis.url, names))
            config = Path(tmp) / "tradebridge.toml"
            config.write_text(serve_config(sim_url, args.accounts), encoding="utf-8")
            port = free_port()
            log = Path(tmp) / "serve.log"
            with log.open("wb") as out:
                child = subprocess.Popen(
                    [sys.executable, "-m", "tradebridge", "serve", "--config", str(config),
                     "--data-dir", tmp, "--port", str(port), "--migrate"],
                    env={**os.environ, "DATABASE_URL": postgres.url, "REDIS_URL": redis.url},
                    stdout=out, stderr=subprocess.STDOUT,
                )  # fmt: skip
            wait_http(f"http://127.0.0.1:{port}/webhook", child, log)
            try:
                return uvloop.run(measure(args, port, postgres.url))
            except SystemExit:
                print(log.read_text(encoding="utf-8")[-3000:], file=sys.stderr)
                raise
    finally:
        if child is not None:
            child.terminate()
            child.wait(timeout=30)
        if sim is not None:
            stop_simulator(sim)
        redis.stop()
        postgres.stop()


async def _wait_tokens(redis_url: str, names: list[str]) -> None:
    client = aioredis.Redis.from_url(redis_url)
    try:
        await wait_tokens(client, names)
    finally:
        await client.aclose()


def run_intake_only(args: argparse.Namespace) -> Results:
    """Run the series against the webhook router alone."""
    from tradebridge.store.migrate import migrate

    postgres = EmbeddedPostgres().start()
    child = None
    try:
        asyncio.run(migrate(postgres.url))
        port = free_port()
        child = subprocess.Popen(
            [sys.executable, __file__, "--serve-intake", postgres.url, str(port),
             str(args.accounts)],
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )  # fmt: skip
        wait_http(f"http://127.0.0.1:{port}/webhook", child, None)
        return uvloop.run(measure(args, port, postgres.url))
    finally:
        if child is not None:
            child.terminate()
            child.wait(timeout=10)
        postgres.stop()


def report(args: argparse.Namespace, results: Results) -> None:
    """Print the figures."""
    stack = (
        "webhook router alone (no dispatcher)"
        if args.intake_only
        else "tradebridge serve (1 dispatcher) + simulator"
    )
    print(f"webhook benchmark, {stack}, {args.accounts} accounts, on {machine()}\n")
    header = ["paced", "alerts", "failed", "p50 ms", "p90 ms", "p99 ms", "max ms"]
    rows = []
    for run, submit in results.paced:
        rows.append([f"{run.rate:g}/s  send → answer", str(len(run.answer_ms)),
                     str(run.failed), *latency_cells(run.answer_ms)])  # fmt: skip
        if submit:
            for key, label in (("submitted", "send → submitted"),
                               ("accepted", "send → broker accepted"),
                               ("stored", "stored → submitted (db clock)")):  # fmt: skip
                rows.append([f"{run.rate:g}/s  {label}", str(len(submit[key])), "",
                             *latency_cells(submit[key])])  # fmt: skip
    print_table(header, rows)
    print()
    placed = "" if results.placed_per_s is None else f"{results.placed_per_s:.0f}"
    print_table(
        ["sustained", "alerts", "failed", "accepted/s", "placed/s", "p50 ms", "p90 ms",
         "p99 ms", "max ms"],
        [[f"{args.concurrency} in flight", str(len(results.load_ms)),
          str(results.load_failed), f"{results.per_s:.0f}", placed,
          *latency_cells(results.load_ms)]],
    )  # fmt: skip
    print("\ntargets: p99 send → answer < 10 ms at 200/s; >= 1,000 accepted alerts/s")


def main() -> None:
    """Run the benchmark and print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rates", default="100,200", help="paced alerts/s, comma-separated")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--accounts", type=int, default=8)
    parser.add_argument("--alerts", type=int, default=5000)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--intake-only", action="store_true")
    args = parser.parse_args()
    args.rates = [float(r) for r in args.rates.split(",")]
    results = run_intake_only(args) if args.intake_only else run_full(args)
    report(args, results)


if __name__ == "__main__":
    if len(sys.argv) == 5 and sys.argv[1] == "--serve-intake":
        serve_intake_only(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))
    else:
        main()

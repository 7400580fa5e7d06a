"""Ledger → broker benchmark: sustained signals/s and insert → submit latency.

    .venv/bin/python bench/ledger_bench.py [--rows 3000] [--accounts 8] [--workers 1]
        [--rate 100] [--seconds 10] [--loop asyncio|uvloop] [--processes 1]

Starts a private PostgreSQL and Redis (``store.embedded``) and the simulator in a subprocess
(``bench/_common.py``; tokens seeded into Redis by ``tradebridge sim --redis-url``), runs
``--workers`` dispatchers in this process (and in each of ``--processes`` - 1 more processes,
as several ``tradebridge serve`` on one database would), and measures:

* **throughput**: ``--rows`` market rows spread over ``--accounts`` accounts are inserted
  first, then the dispatchers start; signals/s = rows / time from the start to the last
  broker answer written (``ts_accepted``), both on the database clock;
* **latency** at ``--rate`` signals/s for ``--seconds``: rows are inserted one by one (the
  NOTIFY path). "submit" is ``ts_submitted``, the database time at which the row was written
  ``submitted``, committed immediately before the request leaves; insert is ``created_at``.
  Both come from the database clock. insert → accepted (``ts_accepted``, the broker's answer
  written back) is shown too.

Log output is switched off (WARNING) so that it does not dominate the measurement.
``--loop uvloop`` runs this process (dispatchers, adapters, asyncpg) on uvloop instead of
asyncio's default loop; the simulator subprocess always runs its own default.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Coroutine
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis
import uvloop

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (
    RISK_OFF,
    bench_account,
    latency_cells,
    machine,
    print_table,
    sim_config,
    start_simulator,
    wait_placed,
    wait_tokens,
)
from tradebridge.brokers.pool import BrokerPool
from tradebridge.config import AccountConfig, Settings
from tradebridge.dispatch.dispatcher import Dispatcher
from tradebridge.domain.contracts import resolve_symbol
from tradebridge.obs.logging import configure_logging
from tradebridge.store.embedded import EmbeddedPostgres, EmbeddedRedis
from tradebridge.store.ledger import Ledger
from tradebridge.store.migrate import migrate
from tradebridge.store.tokens import TokenStore

USER = "bench"  # the user of sim_config


def _settings(args: argparse.Namespace, names: list[str], sim_url: str) -> Settings:
    return Settings(
        accounts=[AccountConfig(name=n, user=USER) for n in names],
        tradovate={"native_url": sim_url + "/v1", "requests_per_s": 100_000,
                   "request_burst": 100_000},
        dispatcher={"max_accounts": args.accounts, "workers": args.workers},
        database={"max_pool": 20},
        risk=RISK_OFF,
    )  # fmt: skip


def _runner(loop: str) -> Callable[[Coroutine[Any, Any, None]], None]:
    return uvloop.run if loop == "uvloop" else asyncio.run


def _start_workers(args: argparse.Namespace, db_url: str, redis_url: str, sim_url: str
                   ) -> list[subprocess.Popen[bytes]]:  # fmt: skip
    """Start ``--processes`` - 1 more dispatcher processes; they wait for "go" on stdin."""
    workers = [
        subprocess.Popen(
            [sys.executable, __file__, "--worker-process", str(k), "--db-url", db_url,
             "--redis-url", redis_url, "--sim-url", sim_url, "--accounts", str(args.accounts),
             "--workers", str(args.workers), "--loop", args.loop],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE,
        )
        for k in range(1, args.processes)
    ]  # fmt: skip
    for worker in workers:
        assert worker.stdout is not None
        if worker.stdout.readline().strip() != b"ready":
            raise SystemExit("a worker process did not start")
    return workers


async def _worker_process(args: argparse.Namespace) -> None:
    """Run dispatchers in this process from "go" on stdin until stdin closes."""
    names = [bench_account(i) for i in range(args.accounts)]
    settings = _settings(args, names, args.sim_url)
    redis = aioredis.Redis.from_url(args.redis_url)
    ledger = await Ledger.connect(args.db_url, min_size=20, max_size=20)
    pool = BrokerPool(settings, TokenStore(redis, settings.tokens))
    for name in names:  # warm: adapters, tokens, account lists
        await pool.account_info(name)
    loop = asyncio.get_running_loop()
    print("ready", flush=True)
    await loop.run_in_executor(None, sys.stdin.readline)  # "go"
    tasks = [
        asyncio.create_task(Dispatcher(settings, ledger, pool, tracking=False,
                                       worker_id=f"bench-p{args.worker_process}-{i}").run())
        for i in range(args.workers)
    ]  # fmt: skip
    await loop.run_in_executor(None, sys.stdin.readline)  # EOF: stop
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    await pool.close()
    await ledger.close()
    await redis.aclose()


async def _bench(
    args: argparse.Namespace,
    db_url: str,
    redis_url: str,
    sim_url: str,
    workers: list[subprocess.Popen[bytes]],
) -> None:
    names = [bench_account(i) for i in range(args.accounts)]
    settings = _settings(args, names, sim_url)
    redis = aioredis.Redis.from_url(redis_url)
    await wait_tokens(redis, names)
    contract = resolve_symbol("MNQ1!", datetime.now(UTC).date())
    # A warm pool, as in a service that has been running: connections are not opened mid-run.
    ledger = await Ledger.connect(db_url, min_size=20, max_size=20)
    pool = BrokerPool(settings, TokenStore(redis, settings.tokens))

    def dispatchers() -> list[asyncio.Task[None]]:
        return [
            asyncio.create_task(
                Dispatcher(settings, ledger, pool, worker_id=f"bench-{i}", tracking=False).run()
            )
            for i in range(args.workers)
        ]

    async def stop(tasks: list[asyncio.Task[None]]) -> None:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    # Warm up: adapters, account and contract caches, connection pools.
    warm = dispatchers()
    for i, name in enumerate(names):
        await ledger.insert_signal(signal_id=f"warm-{i}", instrument=contract.name, side="buy",
                                   quantity=1, account_name=name)  # fmt: skip
    await wait_placed(ledger.pool, len(names), 60)
    await stop(warm)

    # Throughput: a backlog, drained as fast as possible.
    rows = [
        (f"tp-{i}", "bench", contract.name, "buy" if i % 2 else "sell", "market", 1,
         names[i % len(names)])
        for i in range(args.rows)
    ]  # fmt: skip
    await ledger.pool.executemany(
        "insert into trading_signals (signal_id, strategy_name, instrument, side, order_type, "
        "quantity, account_name) values ($1, $2, $3, $4, $5, $6, $7)",
        rows,
    )
    base = len(names)
    started = await ledger.pool.fetchval("select clock_timestamp()")
    running = dispatchers()
    for worker in workers:
        assert worker.stdin is not None
        worker.stdin.write(b"go\n")
        worker.stdin.flush()
    await wait_placed(ledger.pool, base + args.rows, 600)
    # From the dispatchers' start to the last broker answer written, on the database clock.
    ended = await ledger.pool.fetchval(
        "select max(ts_accepted) from trading_signals where signal_id like 'tp-%'"
    )
    elapsed = (ended - started).total_seconds()
    rate = args.rows / elapsed

    # Latency at a steady rate, through NOTIFY.
    interval = 1.0 / args.rate
    total = int(args.rate * args.seconds)
    t0 = time.perf_counter()
    for i in range(total):
        await ledger.insert_signal(signal_id=f"lat-{i}", instrument=contract.name,
                                   side="buy" if i % 2 else "sell", quantity=1,
                                   account_name=names[i % len(names)])  # fmt: skip
        delay = t0 + (i + 1) * interval - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
    await wait_placed(ledger.pool, base + args.rows + total, 120)
    await stop(running)
    for worker in workers:
        assert worker.stdin is not None
        worker.stdin.close()
        worker.wait(timeout=30)
    lat = await ledger.pool.fetch(
        "select extract(epoch from ts_submitted - created_at) * 1000 as submit_ms, "
        "extract(epoch from ts_accepted - created_at) * 1000 as accept_ms "
        "from trading_signals where signal_id like 'lat-%'"
    )
    submit = [float(r["submit_ms"]) for r in lat]
    accept = [float(r["accept_ms"]) for r in lat]
    await pool.close()
    await ledger.close()
    await redis.aclose()

    print(f"ledger → simulator, {machine()}")
    print(f"{args.accounts} accounts, {args.workers} dispatcher(s) per process in "
          f"{args.processes} process(es), {args.loop} loop, simulator in a subprocess, "
          "PostgreSQL and Redis private (embedded)\n")  # fmt: skip
    print_table(["throughput", "rows", "seconds", "signals/s", "target"],
                [["backlog drain", str(args.rows), f"{elapsed:.2f}", f"{rate:.0f}",
                  ">= 500"]])  # fmt: skip
    print()
    print_table(
        [f"latency at {args.rate}/s (ms)", "p50", "p90", "p99", "max"],
        [["insert → submitted", *latency_cells(submit)],
         ["insert → accepted", *latency_cells(accept)]],
    )  # fmt: skip
    print("\np99 insert → submitted target: < 20 ms")


def main() -> None:
    """Run the benchmark and print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=3000)
    parser.add_argument("--accounts", type=int, default=8)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--rate", type=float, default=100.0)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--loop", choices=["asyncio", "uvloop"], default="asyncio")
    parser.add_argument("--processes", type=int, default=1, help="dispatcher processes")
    # Internal: one of the extra dispatcher processes of --processes.
    parser.add_argument("--worker-process", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--db-url", help=argparse.SUPPRESS)
    parser.add_argument("--redis-url", help=argparse.SUPPRESS)
    parser.add_argument("--sim-url", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker_process is not None:
        # stdout is the handshake with the main process; logs go to stderr.
        configure_logging("WARNING", json_output=False, stream=sys.stderr)
        logging.getLogger().setLevel(logging.WARNING)
        _runner(args.loop)(_worker_process(args))
        return
    configure_logging("WARNING", json_output=False)
    logging.getLogger().setLevel(logging.WARNING)
    postgres = EmbeddedPostgres().start()
    redis = EmbeddedRedis().start()
    try:
        asyncio.run(migrate(postgres.url))
        with tempfile.TemporaryDirectory() as tmp:
            config = Path(tmp) / "sim.json"
            config.write_text(json.dumps(sim_config(args.accounts)), encoding="utf-8")
            process, url = start_simulator(config=config, redis_url=redis.url)
            workers: list[subprocess.Popen[bytes]] = []
            try:
                workers = _start_workers(args, postgres.url, redis.url, url)
                _runner(args.loop)(_bench(args, postgres.url, redis.url, url, workers))
            finally:
                for worker in workers:
                    worker.kill()
                process.terminate()
                process.wait(timeout=10)
    finally:
        redis.stop()
        postgres.stop()


if __name__ == "__main__":
    main()

"""Fan-out benchmark: one TradingView alert to N accounts of one Tradovate user.

    .venv/bin/python bench/fanout_bench.py [--accounts 20] [--rounds 30] [--cold]
        [--interval S] [--max-accounts N] [--timeout 600] [--log-level L] [--keep-log F]

It runs the stack as a trader would, with the production defaults (request budget
included): a private PostgreSQL and Redis (``store.embedded``), ``tradebridge sim`` in a
subprocess with ONE user owning ``--accounts`` accounts (``_common.sim_config``; it writes
their tokens into that Redis), and ``python -m tradebridge serve --migrate`` in another
subprocess, whose settings name the accounts (no ids: the adapter resolves them), their user,
and a webhook group ``fan`` of all of them. Logs at WARNING; the webhook rate limit is off.

Each round sends one alert, ``"accounts": ["group:fan"]``, a 1-lot market order (buy and
sell alternate), and waits until every one of its rows stands working or filled. Times run
from the client's ``time.time()`` just before the alert is written to the socket ("alert
received", an upper bound: it includes the webhook hop) to each order's creation time at the
simulator (``timestamp`` of ``GET /v1/order/list``, milliseconds, the same host's clock):
the order on the wire. Per round: the first and the last order of the fan-out.

* warm (default): one ``serve``; a first alert (reported apart: the first after start),
  then ``--rounds`` rounds, one every ``--interval`` seconds (default: 60 s over the whole
  rounds that fit in the default ``orders_per_minute = 72``, plus 0.5 s: 20.5 s for 20
  accounts, so successive rounds stay inside Tradovate's field-reported 80 orders a minute;
  faster rounds would measure the budget's wait, as they should).
* ``--cold``: a fresh ``serve`` per round, one every ``--interval`` seconds too; the alert
  goes as soon as the webhook answers.

What each alert costs (issue 12's "CPU per alert and SQL statements per alert"): the CPU
seconds of the ``serve`` process and of PostgreSQL (postmaster, backends; the bench's own
backend left out) from ``/proc``, and the bridge's statements as ``pg_stat_statements``
counts them (the bench reads as a role of its own, ``_costs.py``), from just before the alert
until its rows have stood filled for ``SETTLED_S``: the fan-out, its fills, and whatever
else the processes did in that second (timers, polls). Printed per alert and per order.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import shutil
import statistics
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

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (
    bench_account,
    latency_cells,
    machine,
    print_table,
    sim_config,
    start_simulator,
    steady_rows,
    stop_simulator,
    wait_tokens,
)
from _costs import (
    Costs,
    bench_url,
    costs_now,
    grant_reads,
    postmaster_pid,
    with_statements,
)
from tradebridge.store.embedded import EmbeddedPostgres, EmbeddedRedis, free_port

SECRET = "bench-secret-0123456789"
ORDERS_PER_MINUTE = 72  # tradovate.orders_per_minute's default
FINAL = ("filled", "cancelled", "rejected", "expired")
SETTLED_S = 0.5  # a round's costs are read once its rows have stood final this long


def serve_config(
    sim_url: str, accounts: int, max_accounts: int | None, log_level: str = "WARNING"
) -> str:
    """Return the ``tradebridge serve`` settings: defaults, the accounts, one group."""
    names = [bench_account(i) for i in range(accounts)]
    listed = "\n".join(f'[[accounts]]\nname = "{n}"\nuser = "bench"\n' for n in names)
    dispatcher = "" if max_accounts is None else f"[dispatcher]\nmax_accounts = {max_accounts}\n"
    return f"""
[logging]
level = "{log_level}"

[tradovate]
native_url = "{sim_url}/v1"
bridge_url = "{sim_url}"

[webhook]
secret = "{SECRET}"
rate_limit_per_minute = 0

[webhook.groups]
fan = {json.dumps(names)}

# Any hour (the rules' other defaults stay: one lot, alternating sides, a few a minute).
[risk]
trading_hours = "always"

{dispatcher}
{listed}
"""


def alert(n: int) -> bytes:
    """Return alert ``n``: a 1-lot market order to the whole group (even buys, odd sells)."""
    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    side = "buy" if n % 2 == 0 else "sell"
    return (
        f'{{"secret":"{SECRET}","symbol":"MNQ1!","action":"{side}","quantity":"1",'
        f'"id":"fan-{n}-{time.time_ns()}","time":"{now}","accounts":["group:fan"]}}'
    ).encode()


@dataclass
class Round:
    """One alert's fan-out: ms from the alert to its first and its last order on the wire."""

    first_ms: float
    last_ms: float
    orders: int
    stored_ms: float  # the alert's last row committed (database clock)
    claimed_ms: float  # the last row claimed by the dispatcher
    submitted_ms: float  # the last row's write-ahead committed, just before its request
    costs: Costs  # from just before the alert until its rows stood filled for SETTLED_S


@dataclass
class Results:
    """What one invocation measured."""

    first_after_start: list[Round] = field(default_factory=list)
    rounds: list[Round] = field(default_factory=list)


def sim_token(sim_url: str) -> str:
    """Log in as the simulator's bench user; return the access token."""
    body = {"name": "bench", "password": "bench", "appId": "bench", "appVersion": "1.0",
            "deviceId": "bench-fanout", "cid": 0, "sec": ""}  # fmt: skip
    answer = httpx.post(f"{sim_url}/v1/auth/accesstokenrequest", json=body, timeout=10)
    return str(answer.json()["accessToken"])


async def one_round(
    n: int, port: int, db: asyncpg.Connection, stack: Stack, bridge: int, timeout_s: float
) -> Round:
    """Send alert ``n`` and wait for its fan-out; return its times and its costs."""
    sim_url, token = stack.sim_url, stack.token
    async with httpx.AsyncClient(timeout=10) as client:
        payload = alert(n)
        before = await costs_now(db, bridge, stack.postmaster)
        sent = time.time()
        answer = await client.post(
            f"http://127.0.0.1:{port}/webhook",
            content=payload,
            headers={"Content-Type": "application/json"},
        )
        if answer.status_code != 200:
            raise SystemExit(f"alert {n}: HTTP {answer.status_code} {answer.text[:300]}")
        signal_ids = answer.json()["signal_ids"]
        deadline = time.monotonic() + timeout_s
        while True:
            rows = await db.fetch(
                "select signal_id, status, tradovate_order_id, created_at, ts_claimed, "
                "ts_submitted from trading_signals "
                "where signal_id = any($1::text[])",
                signal_ids,
            )
            placed = [r for r in rows if r["status"] in ("working", "filled")]
            if len(placed) == len(signal_ids):
                break
            if time.monotonic() > deadline:
                states = sorted({r["status"] for r in rows})
                raise SystemExit(
                    f"alert {n}: {len(placed)} of {len(signal_ids)} placed within "
                    f"{timeout_s:.0f} s (statuses {states})"
                )
            await asyncio.sleep(0.05)
        order_ids = {int(r["tradovate_order_id"]) for r in placed}
        # Costs read once every row is final (a market order fills) and stood so SETTLED_S.
        await steady_rows(db, signal_ids, _all_final, SETTLED_S, deadline)
        costs = (await costs_now(db, bridge, stack.postmaster)).minus(before)
        listed = await client.get(
            f"{sim_url}/v1/order/list", headers={"Authorization": f"Bearer {token}"}
        )
    created = [
        datetime.fromisoformat(o["timestamp"]).timestamp()
        for o in listed.json()
        if o["id"] in order_ids
    ]
    if len(created) != len(order_ids):
        raise SystemExit(f"alert {n}: the simulator lists {len(created)} of {len(order_ids)}")
    return Round(
        first_ms=(min(created) - sent) * 1000,
        last_ms=(max(created) - sent) * 1000,
        orders=len(created),
        stored_ms=(max(r["created_at"] for r in placed).timestamp() - sent) * 1000,
        claimed_ms=(max(r["ts_claimed"] for r in placed).timestamp() - sent) * 1000,
        submitted_ms=(max(r["ts_submitted"] for r in placed).timestamp() - sent) * 1000,
        costs=costs,
    )


def _all_final(counts: dict[str, int]) -> bool:
    return all(status in FINAL for status in counts)


class Stack:
    """PostgreSQL, Redis and the simulator, shared by every ``serve`` of a run."""

    def __init__(self, accounts: int, tmp: Path) -> None:
        self.tmp = tmp
        tmp.chmod(0o711)  # as root, the postgres user must reach its directory inside
        # pg_stat_statements counts the bridge's statements; the bench reads as its own role.
        self.postgres = EmbeddedPostgres(directory=tmp / "pg")
        with_statements(self.postgres)
        self.postmaster = postmaster_pid(self.postgres)
        self.granted = False
        self.redis = EmbeddedRedis().start()
        sim_file = tmp / "sim.json"
        sim_file.write_text(json.dumps(sim_config(accounts)), encoding="utf-8")
        self.sim, self.sim_url = start_simulator(config=sim_file, redis_url=self.redis.url)
        names = [bench_account(i) for i in range(accounts)]
        asyncio.run(_wait_tokens(self.redis.url, names))
        self.token = sim_token(self.sim_url)

    def serve(self, config: str) -> tuple[subprocess.Popen[bytes], int, Path]:
        """Start ``tradebridge serve`` on ``config``; return it, its port and its log."""
        path = self.tmp / "tradebridge.toml"
        path.write_text(config, encoding="utf-8")
        port = free_port()
        log = self.tmp / f"serve-{port}.log"
        with log.open("wb") as out:
            child = subprocess.Popen(
                [sys.executable, "-m", "tradebridge", "serve", "--config", str(path),
                 "--data-dir", str(self.tmp), "--port", str(port), "--migrate"],
                env={**os.environ, "DATABASE_URL": self.postgres.url, "REDIS_URL": self.redis.url},
                stdout=out, stderr=subprocess.STDOUT,
            )  # fmt: skip
        wait_http(f"http://127.0.0.1:{port}/webhook", child, log)
        if not self.granted:  # once the ledger is migrated
            asyncio.run(grant_reads(self.postgres.url))
            self.granted = True
        return child, port, log

    def close(self) -> None:
        """Stop the simulator and the stores."""
        stop_simulator(self.sim)
        self.redis.stop()
        self.postgres.stop()


def stop(child: subprocess.Popen[bytes]) -> None:
    """Stop a ``serve`` child (SIGTERM, then kill)."""
    child.terminate()
    try:
        child.wait(timeout=30)
    except subprocess.TimeoutExpired:
        child.kill()


def wait_http(url: str, child: subprocess.Popen[bytes], log: Path) -> None:
    """Wait until the webhook answers at all (any status)."""
    deadline = time.monotonic() + 60
    while True:
        try:
            httpx.post(url, content=b"{}", timeout=1)
            return
        except httpx.TransportError:
            if time.monotonic() > deadline or child.poll() is not None:
                tail = log.read_text(encoding="utf-8")[-2000:]
                raise SystemExit(f"the webhook server did not start\n{tail}") from None
            time.sleep(0.02)


async def _wait_tokens(redis_url: str, names: list[str]) -> None:
    client = aioredis.Redis.from_url(redis_url)
    try:
        await wait_tokens(client, names)
    finally:
        await client.aclose()


async def _rounds(
    args: argparse.Namespace,
    stack: Stack,
    serve: tuple[int, int],
    first: int,
    count: int,
    paced: bool,
) -> list[Round]:
    bridge, port = serve
    db = await asyncpg.connect(bench_url(stack.postgres))
    out = []
    # The client's first request in this process costs it ~25-40 ms of its own (httpx and
    # httpcore finish importing then), between the clock reading and the send: paid here,
    # on the simulator, not by the first round's alert.
    async with httpx.AsyncClient(timeout=10) as client:
        await client.get(f"{stack.sim_url}/v1/account/list")
    # The client's own full collections (~30 ms) would land between an alert's clock reading
    # and its send: measured, not the bridge.
    gc.collect()
    gc.freeze()
    try:
        for i in range(count):
            began = time.monotonic()
            out.append(await one_round(first + i, port, db, stack, bridge, args.timeout))
            rest = args.interval - (time.monotonic() - began)
            if paced and i < count - 1 and rest > 0:
                await asyncio.sleep(rest)
    finally:
        await db.close()
    return out


def run(args: argparse.Namespace) -> Results:
    """Run the rounds; return the times."""
    results = Results()
    config_of = lambda stack: serve_config(  # noqa: E731
        stack.sim_url, args.accounts, args.max_accounts, args.log_level
    )
    with tempfile.TemporaryDirectory() as tmp:
        stack = Stack(args.accounts, Path(tmp))
        try:
            if args.cold:
                began = time.monotonic()
                for i in range(args.rounds):
                    # Paced as the warm rounds: back-to-back fan-outs would measure the
                    # orders_per_minute window (kept in Redis, across serves), as they should.
                    if i:
                        time.sleep(max(0.0, args.interval - (time.monotonic() - began)))
                    began = time.monotonic()
                    child, port, log = stack.serve(config_of(stack))
                    try:
                        results.rounds += asyncio.run(
                            _rounds(args, stack, (child.pid, port), i, 1, False)
                        )
                    except SystemExit:
                        print(log.read_text(encoding="utf-8")[-3000:], file=sys.stderr)
                        raise
                    finally:
                        stop(child)
                        if args.keep_log is not None:
                            with args.keep_log.open("ab") as kept:
                                kept.write(log.read_bytes())
                return results
            child, port, log = stack.serve(config_of(stack))
            try:
                serve = (child.pid, port)
                results.first_after_start = asyncio.run(_rounds(args, stack, serve, 0, 1, False))
                time.sleep(args.interval)
                results.rounds = asyncio.run(_rounds(args, stack, serve, 1, args.rounds, True))
            except SystemExit:
                print(log.read_text(encoding="utf-8")[-3000:], file=sys.stderr)
                raise
            finally:
                stop(child)
                if args.keep_log is not None:
                    shutil.copyfile(log, args.keep_log)
        finally:
            stack.close()
    return results


def report(args: argparse.Namespace, results: Results) -> None:
    """Print the figures."""
    mode = "cold (a fresh serve per round)" if args.cold else f"warm (every {args.interval:.1f} s)"
    slots = "default" if args.max_accounts is None else str(args.max_accounts)
    print(f"fan-out benchmark, 1 alert → {args.accounts} accounts of one user, {mode}, "
          f"max_accounts {slots}, on {machine()}\n")  # fmt: skip
    rows = []
    series = [("", results.rounds)]
    if results.first_after_start:
        series.insert(0, ("first after start ", results.first_after_start))
    for label, rounds in series:
        if not rounds:
            continue
        rows.append([f"{label}alert → first order", str(len(rounds)),
                     *latency_cells([r.first_ms for r in rounds])])  # fmt: skip
        rows.append([f"{label}alert → last order", str(len(rounds)),
                     *latency_cells([r.last_ms for r in rounds])])  # fmt: skip
        rows.append([f"{label}  (alert → last row stored)", str(len(rounds)),
                     *latency_cells([r.stored_ms for r in rounds])])  # fmt: skip
        rows.append([f"{label}  (alert → last claimed)", str(len(rounds)),
                     *latency_cells([r.claimed_ms for r in rounds])])  # fmt: skip
        rows.append([f"{label}  (alert → last write-ahead)", str(len(rounds)),
                     *latency_cells([r.submitted_ms for r in rounds])])  # fmt: skip
    print_table(["series", "rounds", "p50 ms", "p90 ms", "p99 ms", "max ms"], rows)
    print(
        f"\ncost per alert (its {args.accounts} orders), from just before it until its rows "
        f"stood filled for {SETTLED_S:g} s;\nmean over the rounds (per order in brackets; /proc "
        "counts CPU in 10 ms ticks: one round's figure is coarse, a mean over many is not)"
    )
    costs = []
    for label, rounds in series:
        if not rounds:
            continue
        orders = statistics.mean(r.orders for r in rounds)
        bridge = statistics.mean(r.costs.bridge_s * 1000 for r in rounds)
        pg = statistics.mean(r.costs.postgres_s * 1000 for r in rounds)
        both = bridge + pg
        calls = statistics.mean(r.costs.statements for r in rounds)
        costs.append([label.strip() or "rounds", str(len(rounds))] + [
            f"{v:.1f} ({v / orders:.2f})" for v in (bridge, pg, both, calls)
        ])  # fmt: skip
    print_table(
        ["series", "rounds", "CPU ms, bridge", "CPU ms, PostgreSQL", "CPU ms, both",
         "SQL statements"],
        costs,
    )  # fmt: skip
    if args.each:
        print(
            "\neach round, ms: first order, last order (last stored, claimed, write-ahead); costs"
        )
        for i, r in enumerate([*results.first_after_start, *results.rounds]):
            print(f"  {i:3d}  {r.first_ms:8.2f}  {r.last_ms:8.2f}  ({r.stored_ms:.2f}, "
                  f"{r.claimed_ms:.2f}, {r.submitted_ms:.2f}); CPU ms bridge "
                  f"{r.costs.bridge_s * 1000:.0f}, PostgreSQL {r.costs.postgres_s * 1000:.0f}; "
                  f"{r.costs.statements} statements")  # fmt: skip
    print("\ntarget: alert → last order p99 <= 100 ms, warm or cold, default settings")


def main() -> None:
    """Run the benchmark and print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--accounts", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=None, help="default: 30 warm, 5 cold")
    parser.add_argument("--cold", action="store_true", help="a fresh serve per round")
    parser.add_argument("--interval", type=float, default=None, help="seconds between rounds")
    parser.add_argument("--max-accounts", type=int, default=None, help="dispatcher.max_accounts")
    parser.add_argument("--timeout", type=float, default=600.0, help="per round, seconds")
    parser.add_argument("--log-level", choices=["DEBUG", "INFO", "WARNING"], default="WARNING",
                        help="[logging] level of serve")  # fmt: skip
    parser.add_argument("--keep-log", type=Path, default=None,
                        help="copy serve's log here (cold: every serve's, appended)")  # fmt: skip
    parser.add_argument("--each", action="store_true", help="also print every round's times")
    args = parser.parse_args()
    if args.rounds is None:
        args.rounds = 5 if args.cold else 30
    if args.interval is None:
        # Whole rounds per rolling minute inside the orders' window, plus a margin.
        args.interval = 60 / max(1, ORDERS_PER_MINUTE // args.accounts) + 0.5
    report(args, run(args))


if __name__ == "__main__":
    main()

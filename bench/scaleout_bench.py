"""Scale-out benchmark: placed orders/s and alert → order latency for 1, 2 and 4 processes.

    .venv/bin/python bench/scaleout_bench.py [--processes 1,2,4] [--accounts 20] \
        [--rate 50] [--seconds 10] [--alerts 2000] [--concurrency 16] [--split] \
        [--budget redis|local] [--admissions 2000] [--top-statements N]

One PostgreSQL (non-durable, with ``pg_stat_statements`` preloaded), one Redis and
``tradebridge sim`` in a subprocess with ONE user owning ``--accounts`` accounts (it writes
their tokens into that Redis) are shared by every run. For each count N of ``--processes``,
N ``python -m tradebridge serve`` processes (one dispatcher each, tracking on, logs at
WARNING) run on them, as N hosts behind a load balancer would: the alerts go round-robin to
their webhooks, and every process claims rows from the one ledger (SKIP LOCKED, one account's
rows in order). Every request to the simulator goes through the request budget **shared
through Redis** (``tradovate.budget = "redis"``, the default), with limits raised so that
the bench measures the bridge, not Tradovate's windows (the simulator has none); the budget
used is printed. Each alert is a distinct 1-lot market order (buy and sell alternating),
round-robin over the accounts, so each is stored and placed with ``placeorder``.

Per N, after a warm-up of one alert per account and process:

* **paced**: ``--rate`` alerts/s for ``--seconds`` (open loop): the answer's latency, and
  from the client's ``time.time()`` at send to the row's write-ahead (``ts_submitted``,
  committed just before the request leaves) and to the order's creation at the simulator
  (``timestamp`` of ``/v1/order/list``, ms), all on this host's clock;
* **sustained**: ``--alerts`` alerts with ``--concurrency`` in flight: placed/s = alerts /
  (last ``ts_accepted`` - first send); CPU per alert of the bridge processes, PostgreSQL
  (postmaster and backends), Redis and the simulator (``/proc``: user + system, children
  reaped included); SQL statements per alert (``pg_stat_statements`` calls of the bridge's
  role, the bench's own queries run as another role), and Redis commands per alert.

Before the runs, one order admission is timed alone, 2,000 in a row in this process: the
in-process budget against the one shared through Redis (the round trip every broker request
pays for sharing). ``--split`` runs N worker processes with the webhook off and one
intake-only process that takes every alert; ``--budget local`` gives each process its own
budget (for comparison only: N processes would then send N times the limits).

The machine's load average is printed before and after: other work on the machine shows in
every figure.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
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
    accounts_toml,
    bench_account,
    latency_cells,
    machine,
    open_loop,
    percentile,
    print_table,
    sim_config,
    start_simulator,
    stop_simulator,
    wait_tokens,
)
from tradebridge.store.embedded import EmbeddedPostgres, EmbeddedRedis, free_port
from tradebridge.store.migrate import migrate
from webhook_bench import Connection

SECRET = "bench-secret-0123456789"
OBSERVER = "scaleout_observer"  # the bench's own role: its queries are not the bridge's
# High enough that the bench measures the bridge: the simulator has no windows of its own.
BUDGET = {
    "requests_per_second": 100_000,
    "requests_per_hour": 100_000_000,
    "orders_per_minute": 100_000_000,
    "reads_per_minute": 100_000_000,
}
TICK = os.sysconf("SC_CLK_TCK")


def serve_config(sim_url: str, accounts: int, budget_kind: str) -> str:
    """Return the settings of every ``serve``: the accounts, the raised budget, the webhook."""
    listed = accounts_toml(accounts)
    budget = "\n".join(f"{k} = {v}" for k, v in BUDGET.items())
    return f"""
[logging]
level = "WARNING"

[tradovate]
native_url = "{sim_url}/v1"
bridge_url = "{sim_url}"
budget = "{budget_kind}"
{budget}

[serve]
max_connections_per_address = 0
keep_alive_timeout_s = 120

[webhook]
secret = "{SECRET}"
rate_limit_per_minute = 0

{RISK_OFF_TOML}
{listed}
"""


def body(tag: str, n: int, accounts: int) -> bytes:
    """Return alert ``n`` of run ``tag``: a 1-lot market order (even buys, odd sells)."""
    side = "buy" if n % 2 == 0 else "sell"
    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return (
        f'{{"secret":"{SECRET}","symbol":"MNQ1!","action":"{side}","quantity":"1",'
        f'"id":"{tag}-{n}","time":"{now}","account":"{bench_account(n % accounts)}"}}'
    ).encode()


# CPU accounting from /proc.


def _ticks(pid: int) -> tuple[int, int, int] | None:
    """Return (parent pid, own ticks, reaped children's ticks) of ``pid``; None if gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text[text.rindex(")") + 2 :].split()
    # fields[0] is field 3 (state): ppid is field 4, utime..cstime fields 14..17.
    return int(fields[1]), int(fields[11]) + int(fields[12]), int(fields[13]) + int(fields[14])


def cpu_s(pid: int, *, tree: bool = False) -> float:
    """Return the CPU seconds ``pid`` used (and its reaped children); ``tree``: and its live
    children (PostgreSQL's backends)."""
    own = _ticks(pid)
    if own is None:
        return 0.0
    total = own[1] + own[2]
    if tree:
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                child = _ticks(int(entry.name))
                if child is not None and child[0] == pid:
                    total += child[1] + child[2]
    return total / TICK


@dataclass
class Stack:
    """PostgreSQL, Redis and the simulator shared by every run."""

    postgres: EmbeddedPostgres
    pg_dir: Path
    redis: EmbeddedRedis
    sim: subprocess.Popen[bytes]
    sim_url: str
    statements: bool  # pg_stat_statements loaded
    observer_url: str

    def postmaster(self) -> int:
        """Return the pid of PostgreSQL's postmaster."""
        return int((self.pg_dir / "data" / "postmaster.pid").read_text().split()[0])

    def redis_pid(self) -> int:
        """Return the pid of redis-server."""
        assert self.redis.directory is not None
        return int((self.redis.directory / "redis.pid").read_text().strip())


def start_stack(accounts: int, tmp: Path) -> Stack:
    """Start the shared servers; load pg_stat_statements if this PostgreSQL has it."""
    pg_dir = Path(tempfile.mkdtemp(prefix="tradebridge-scaleout-pg-"))
    pg_dir.chmod(0o755)
    postgres = EmbeddedPostgres(directory=pg_dir).start()
    statements = asyncio.run(_preload_statements(postgres.url))
    if statements:
        postgres.stop()
        postgres.start()
    asyncio.run(migrate(postgres.url))
    observer_url = asyncio.run(_observer(postgres.url, statements))
    redis = EmbeddedRedis().start()
    sim_file = tmp / "sim.json"
    sim_file.write_text(json.dumps(sim_config(accounts)), encoding="utf-8")
    sim, sim_url = start_simulator(config=sim_file, redis_url=redis.url)
    asyncio.run(_wait_tokens(redis.url, [bench_account(i) for i in range(accounts)]))
    return Stack(postgres, pg_dir, redis, sim, sim_url, statements, observer_url)


async def _preload_statements(url: str) -> bool:
    db = await asyncpg.connect(url)
    try:
        available = await db.fetchval(
            "select count(*) from pg_available_extensions where name = 'pg_stat_statements'"
        )
        if available:
            await db.execute("alter system set shared_preload_libraries = 'pg_stat_statements'")
        return bool(available)
    finally:
        await db.close()


async def _observer(url: str, statements: bool) -> str:
    """Create the bench's own role; return its URL."""
    db = await asyncpg.connect(url)
    try:
        if statements:
            await db.execute("create extension if not exists pg_stat_statements")
        await db.execute(f"create role {OBSERVER} login password 'observer'")
        await db.execute(f"grant pg_read_all_stats to {OBSERVER}")
        await db.execute(f"grant select on all tables in schema public to {OBSERVER}")
    finally:
        await db.close()
    host = url.split("@", 1)[1]
    return f"postgresql://{OBSERVER}:observer@{host}"


async def _wait_tokens(redis_url: str, names: list[str]) -> None:
    client = aioredis.Redis.from_url(redis_url)
    try:
        await wait_tokens(client, names)
    finally:
        await client.aclose()


def stop_stack(stack: Stack) -> None:
    """Stop the simulator and the stores."""
    stop_simulator(stack.sim)
    stack.redis.stop()
    stack.postgres.stop()
    shutil.rmtree(stack.pg_dir, ignore_errors=True)


Started = list[tuple[subprocess.Popen[bytes], int, Path]]  # each serve, its port and log


def start_serves(stack: Stack, count: int, tmp: Path, args: argparse.Namespace) -> Started:
    """Start ``count`` ``tradebridge serve`` processes (``--split``: ``count`` workers with
    the webhook off, then one intake-only process); return each with its port and log."""
    config = tmp / "tradebridge.toml"
    config.write_text(serve_config(stack.sim_url, args.accounts, args.budget), encoding="utf-8")
    env = {**os.environ, "DATABASE_URL": stack.postgres.url, "REDIS_URL": stack.redis.url}
    kinds = [("serve", env, [])] * count
    if args.split:
        kinds = [("worker", {**env, "TRADEBRIDGE_WEBHOOK__ENABLED": "false"}, [])] * count
        kinds.append(("intake", env, ["--workers", "0"]))
    started = []
    for k, (kind, child_env, extra) in enumerate(kinds):
        port = free_port()
        log = tmp / f"{kind}-{count}-{k}.log"
        with log.open("wb") as out:
            child = subprocess.Popen(
                [sys.executable, "-m", "tradebridge", "serve", "--config", str(config),
                 "--data-dir", str(tmp), "--port", str(port), "--no-migrate", *extra],
                env=child_env, stdout=out, stderr=subprocess.STDOUT,
            )  # fmt: skip
        started.append((child, port, log))
    for child, port, log in started:
        wait_http(f"http://127.0.0.1:{port}/webhook", child, log)
    return started


def wait_http(url: str, child: subprocess.Popen[bytes], log: Path) -> None:
    """Wait until the webhook answers at all (any status)."""
    deadline = time.monotonic() + 90
    while True:
        try:
            httpx.post(url, content=b"{}", timeout=1)
            return
        except httpx.TransportError:
            if time.monotonic() > deadline or child.poll() is not None:
                tail = log.read_text(encoding="utf-8")[-2000:]
                raise SystemExit(f"a serve process did not start\n{tail}") from None
            time.sleep(0.05)


def stop_serves(started: Started) -> None:
    """Stop the serve processes (SIGTERM, then kill)."""
    for child, _, _ in started:
        child.terminate()
    for child, _, _ in started:
        try:
            child.wait(timeout=30)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()


# Sending alerts.


@dataclass
class Sent:
    """Alerts of one phase: each row's send time, answer latencies, failures."""

    sent_at: dict[str, float] = field(default_factory=dict)  # signal_id: time.time()
    answer_ms: list[float] = field(default_factory=list)
    failed: int = 0
    statuses: dict[int, int] = field(default_factory=dict)  # of the failed


async def send_one(conn: Connection, payload: bytes, sent: Sent) -> None:
    """Send one alert on ``conn`` and note its rows."""
    wall = time.time()
    began = time.perf_counter()
    status, answer = await conn.post(payload)
    sent.answer_ms.append((time.perf_counter() - began) * 1000)
    if status != 200 or b'"status":"accepted"' not in answer:
        sent.failed += 1
        sent.statuses[status] = sent.statuses.get(status, 0) + 1
        return
    for signal_id in json.loads(answer)["signal_ids"]:
        sent.sent_at[signal_id] = wall


async def paced(ports: list[int], rate: float, seconds: float, tag: str, accounts: int) -> Sent:
    """Send ``rate`` alerts/s for ``seconds``, round-robin over ``ports`` (open loop)."""
    sent = Sent()
    idle: dict[int, list[Connection]] = {p: [] for p in ports}

    async def one(n: int) -> None:
        port = ports[n % len(ports)]
        pool = idle[port]
        while pool and pool[-1].closed:
            pool.pop().close()
        conn = pool.pop() if pool else await Connection.open(port)
        await send_one(conn, body(tag, n, accounts), sent)
        pool.append(conn)

    await open_loop(rate, seconds, one)
    for pool in idle.values():
        for conn in pool:
            conn.close()
    return sent


async def sustained(
    ports: list[int], alerts: int, concurrency: int, tag: str, accounts: int
) -> Sent:
    """Send ``alerts`` with ``concurrency`` in flight, the connections spread over ``ports``."""
    sent = Sent()
    numbers = iter(range(alerts))

    async def worker(port: int) -> None:
        conn = await Connection.open(port)
        for n in numbers:
            await send_one(conn, body(tag, n, accounts), sent)
        conn.close()

    await asyncio.gather(*(worker(ports[k % len(ports)]) for k in range(concurrency)))
    return sent


async def wait_placed(db: asyncpg.Connection, signal_ids: list[str], within_s: float) -> None:
    """Wait until every row of ``signal_ids`` stands working or filled."""
    deadline = time.monotonic() + within_s
    done = 0
    while time.monotonic() < deadline:
        done = await db.fetchval(
            "select count(*) from trading_signals where signal_id = any($1::text[]) "
            "and status in ('working', 'filled')",
            signal_ids,
        )
        if done >= len(signal_ids):
            return
        await asyncio.sleep(0.1)
    raise SystemExit(f"only {done} of {len(signal_ids)} rows placed within {within_s:.0f} s")


# One run.


@dataclass
class Run:
    """What one count of processes measured."""

    processes: int
    answer_ms: list[float] = field(default_factory=list)
    submitted_ms: list[float] = field(default_factory=list)
    order_ms: list[float] = field(default_factory=list)
    paced_failed: int = 0
    placed: int = 0
    placed_per_s: float = 0.0
    sustained_failed: int = 0
    cpu_ms: dict[str, float] = field(default_factory=dict)  # per alert
    statements: float | None = None  # SQL statements per alert
    top_statements: list[tuple[float, str]] = field(default_factory=list)  # per alert, text
    redis_commands: float = 0.0  # per alert
    statuses: dict[int, int] = field(default_factory=dict)  # answers of the failed alerts


async def order_times(sim_url: str) -> dict[str, float]:
    """Return every order's creation time at the simulator (epoch seconds) by order id."""
    login = {"name": "bench", "password": "bench", "appId": "bench", "appVersion": "1.0",
             "deviceId": "bench-scaleout", "cid": 0, "sec": ""}  # fmt: skip
    async with httpx.AsyncClient(base_url=sim_url, timeout=60) as client:
        token = (await client.post("/v1/auth/accesstokenrequest", json=login)).json()
        listed = await client.get(
            "/v1/order/list", headers={"Authorization": f"Bearer {token['accessToken']}"}
        )
    return {str(o["id"]): datetime.fromisoformat(o["timestamp"]).timestamp() for o in listed.json()}


async def measure(
    args: argparse.Namespace, stack: Stack, ports: list[int], pids: list[int], count: int
) -> Run:
    """Warm up, run the paced and the sustained phase against ``ports``."""
    run = Run(count)
    tag = f"{'split' if args.split else 'n'}{count}-"
    db = await asyncpg.connect(stack.observer_url)
    redis = aioredis.Redis.from_url(stack.redis.url)
    try:
        warm = await sustained(ports, args.accounts * count, 4, f"{tag}w", args.accounts)
        await wait_placed(db, list(warm.sent_at), 120)

        paced_sent = await paced(ports, args.rate, args.seconds, f"{tag}p", args.accounts)
        await wait_placed(db, list(paced_sent.sent_at), 300)
        run.answer_ms, run.paced_failed = paced_sent.answer_ms, paced_sent.failed
        run.statuses = dict(paced_sent.statuses)
        rows = await db.fetch(
            "select signal_id, ts_submitted, tradovate_order_id from trading_signals "
            "where signal_id = any($1::text[])",
            list(paced_sent.sent_at),
        )
        created = await order_times(stack.sim_url)
        for row in rows:
            at = paced_sent.sent_at[row["signal_id"]]
            run.submitted_ms.append((row["ts_submitted"].timestamp() - at) * 1000)
            order = created.get(str(row["tradovate_order_id"]))
            if order is not None:
                run.order_ms.append((order - at) * 1000)

        cpu_before = cpu_snapshot(stack, pids)
        statements_before = await statement_calls(db, stack)
        commands_before = await redis_commands(redis)
        began = time.time()
        load = await sustained(ports, args.alerts, args.concurrency, f"{tag}s", args.accounts)
        await wait_placed(db, list(load.sent_at), 900)
        cpu_after = cpu_snapshot(stack, pids)
        statements_after = await statement_calls(db, stack)
        commands_after = await redis_commands(redis)
        last = await db.fetchval(
            "select max(ts_accepted) from trading_signals where signal_id = any($1::text[])",
            list(load.sent_at),
        )
        run.placed = len(load.sent_at)
        run.sustained_failed = load.failed
        for status, times in load.statuses.items():
            run.statuses[status] = run.statuses.get(status, 0) + times
        run.placed_per_s = run.placed / (last.timestamp() - began)
        run.cpu_ms = {k: (cpu_after[k] - cpu_before[k]) * 1000 / run.placed for k in cpu_after}
        if statements_before is not None and statements_after is not None:
            per_query = {
                query: (calls - statements_before.get(query, 0)) / run.placed
                for query, calls in statements_after.items()
            }
            run.statements = sum(per_query.values())
            run.top_statements = sorted(
                ((n, q) for q, n in per_query.items() if n > 0), reverse=True
            )[: args.top_statements]
        run.redis_commands = (commands_after - commands_before - 2) / run.placed
    finally:
        await db.close()
        await redis.aclose()
    return run


def cpu_snapshot(stack: Stack, pids: list[int]) -> dict[str, float]:
    """Return the CPU seconds used so far by each part of the stack."""
    return {
        "bridge": sum(cpu_s(pid) for pid in pids),
        "postgres": cpu_s(stack.postmaster(), tree=True),
        "redis": cpu_s(stack.redis_pid()),
        "simulator": cpu_s(stack.sim.pid),
    }


async def statement_calls(db: asyncpg.Connection, stack: Stack) -> dict[str, int] | None:
    """Return the calls of each statement the bridge's role ran so far, by query text
    (None: no pg_stat_statements)."""
    if not stack.statements:
        return None
    rows = await db.fetch(
        "select s.query, sum(s.calls)::bigint as calls from pg_stat_statements s "
        "join pg_roles r on r.oid = s.userid where r.rolname <> $1 group by s.query",
        OBSERVER,
    )
    return {row["query"]: int(row["calls"]) for row in rows}


async def redis_commands(redis: aioredis.Redis) -> int:
    """Return the commands Redis has processed (this query included)."""
    info = await redis.info("stats")
    return int(info["total_commands_processed"])


@dataclass
class BudgetCost:
    """One budget's admission, measured alone: latency (µs) and CPU (µs) per admission."""

    name: str
    latency_us: list[float]
    client_cpu_us: float
    redis_cpu_us: float


async def budget_cost(stack: Stack, admissions: int) -> list[BudgetCost]:
    """Time ``admissions`` order admissions, one after the other, by each kind of budget."""
    from tradebridge.brokers.budget import BudgetLimits, RequestBudget, RequestKind
    from tradebridge.brokers.redis_budget import RedisBudget

    limits = BudgetLimits(**BUDGET)
    client = aioredis.Redis.from_url(stack.redis.url)
    out = []
    try:
        for name, budget in (
            ("local (in process)", RequestBudget(limits)),
            ("redis (shared)", RedisBudget(limits, client, timeout_s=5.0)),
        ):
            user = budget.bucket("cost")
            for _ in range(100):  # warm: the script loaded, the connection open
                await user.acquire(RequestKind.ORDER)
            latencies = []
            cpu, redis_cpu = time.process_time(), cpu_s(stack.redis_pid())
            for _ in range(admissions):
                began = time.perf_counter()
                await user.acquire(RequestKind.ORDER)
                latencies.append((time.perf_counter() - began) * 1e6)
            cpu, redis_cpu = time.process_time() - cpu, cpu_s(stack.redis_pid()) - redis_cpu
            out.append(BudgetCost(name, latencies, cpu * 1e6 / admissions,
                                  redis_cpu * 1e6 / admissions))  # fmt: skip
    finally:
        await client.aclose()
    return out


def run_all(args: argparse.Namespace) -> tuple[list[BudgetCost], list[Run]]:
    """Time the budgets alone, then run every count of processes on one stack."""
    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        stack = start_stack(args.accounts, Path(tmp))
        try:
            costs = uvloop.run(budget_cost(stack, args.admissions))
            for count in args.processes:
                started = start_serves(stack, count, Path(tmp), args)
                try:
                    # Alerts go to every serve, or (--split) to the intake alone.
                    ports = [port for _, port, _ in started[-1:] if args.split] or [
                        port for _, port, _ in started
                    ]
                    pids = [child.pid for child, _, _ in started]
                    runs.append(uvloop.run(measure(args, stack, ports, pids, count)))
                except SystemExit:
                    for _, _, log in started:
                        print(log.read_text(encoding="utf-8")[-2000:], file=sys.stderr)
                    raise
                finally:
                    stop_serves(started)
                    if args.keep_logs is not None:
                        args.keep_logs.mkdir(parents=True, exist_ok=True)
                        for _, _, log in started:
                            shutil.copy(log, args.keep_logs / log.name)
                print(f"  {count} process(es) done", file=sys.stderr)
        finally:
            stop_stack(stack)
    return costs, runs


def report(
    args: argparse.Namespace, costs: list[BudgetCost], runs: list[Run], loads: tuple[str, str]
) -> None:
    """Print the figures."""
    layout = ("N worker processes (webhook off) + 1 intake-only process" if args.split
              else "N serve processes (webhook and 1 dispatcher each)")  # fmt: skip
    print(f"scale-out benchmark: {args.accounts} accounts of one user, {layout}, "
          f"on {machine()}")  # fmt: skip
    shared = "shared by every process" if args.budget == "redis" else "one per process"
    print(f"budget: tradovate.budget = {args.budget} ({shared}), "
          f"{', '.join(f'{k} = {v:,}' for k, v in BUDGET.items())}")  # fmt: skip
    print(f"load average before: {loads[0]}; after: {loads[1]}\n")
    print(f"one order admission, alone ({args.admissions} in a row, this process, uvloop)")
    rows = []
    for cost in costs:
        lat = sorted(cost.latency_us)
        cells = [percentile(lat, 0.5), percentile(lat, 0.9), percentile(lat, 0.99), lat[-1]]
        rows.append([cost.name, *(f"{v:,.0f}" for v in cells),
                     f"{cost.client_cpu_us:,.0f}", f"{cost.redis_cpu_us:,.0f}"])  # fmt: skip
    print_table(
        ["budget", "p50 µs", "p90 µs", "p99 µs", "max µs", "client CPU µs", "Redis CPU µs"], rows
    )
    print()
    rows = []
    for run in runs:
        for label, values in (
            ("send → answer", run.answer_ms),
            ("send → write-ahead", run.submitted_ms),
            ("send → order at simulator", run.order_ms),
        ):
            rows.append([f"{run.processes}  {label}", str(len(values)), *latency_cells(values)])
    print(f"paced: {args.rate:g} alerts/s for {args.seconds:g} s, round-robin over the processes")
    print_table(["processes  series", "alerts", "p50 ms", "p90 ms", "p99 ms", "max ms"], rows)
    print(f"\nsustained: {args.alerts} alerts, {args.concurrency} in flight")
    rows = []
    for run in runs:
        cpu = run.cpu_ms
        statements = "n/a" if run.statements is None else f"{run.statements:.1f}"
        rows.append([
            str(run.processes), str(run.placed), str(run.sustained_failed + run.paced_failed),
            f"{run.placed_per_s:,.0f}", f"{cpu['bridge']:.2f}", f"{cpu['postgres']:.2f}",
            f"{cpu['redis']:.2f}", f"{cpu['simulator']:.2f}", statements,
            f"{run.redis_commands:.1f}",
        ])  # fmt: skip
    print_table(
        ["processes", "placed", "failed", "placed/s", "bridge CPU ms/alert", "PG CPU ms",
         "Redis CPU ms", "sim CPU ms", "SQL stmts/alert", "Redis cmds/alert"],
        rows,
    )  # fmt: skip
    for run in runs:
        if run.top_statements:
            print(f"\n{run.processes} process(es), statements per alert (the most frequent):")
            for per_alert, query in run.top_statements:
                print(f"  {per_alert:6.2f}  {' '.join(query.split())[:110]}")
    for run in runs:
        if run.statuses:
            print(f"{run.processes} process(es): failed answers by status {run.statuses}")
    if runs and runs[0].statements is None:
        print("\nSQL statements: n/a, pg_stat_statements is not installed with this PostgreSQL")


def loadavg() -> str:
    """Return the 1/5/15-minute load averages."""
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def main() -> None:
    """Run the benchmark and print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--processes", default="1,2,4", help="counts of serve processes")
    parser.add_argument("--accounts", type=int, default=20)
    parser.add_argument("--rate", type=float, default=50.0, help="paced alerts/s")
    parser.add_argument("--seconds", type=float, default=10.0, help="paced duration")
    parser.add_argument("--alerts", type=int, default=2000, help="sustained alerts")
    parser.add_argument("--concurrency", type=int, default=16, help="sustained in flight")
    parser.add_argument(
        "--admissions", type=int, default=2000, help="admissions timed per budget, alone"
    )
    parser.add_argument(
        "--top-statements", type=int, default=0,
        help="also list the N most frequent SQL statements per alert of each run",
    )  # fmt: skip
    parser.add_argument(
        "--split", action="store_true",
        help="one intake-only serve takes every alert; the N processes run workers only",
    )  # fmt: skip
    parser.add_argument(
        "--budget", choices=["redis", "local"], default="redis",
        help="tradovate.budget (local: each process its own, for comparison)",
    )  # fmt: skip
    parser.add_argument(
        "--keep-logs", type=Path, default=None, metavar="DIR",
        help="copy each serve process's log (WARNING and above) into DIR",
    )  # fmt: skip
    args = parser.parse_args()
    args.processes = [int(p) for p in args.processes.split(",")]
    before = loadavg()
    costs, runs = run_all(args)
    report(args, costs, runs, (before, loadavg()))


if __name__ == "__main__":
    main()

"""Hop benchmark: alert received → order on the wire at a steady rate over many accounts, and
what each alert costs in CPU and SQL statements.

    .venv/bin/python bench/hop_bench.py [--rate 200] [--accounts 20] [--seconds 20]
        [--warm-up 5] [--log-level INFO] [--loop auto|asyncio|uvloop]
        [--profile stacks.txt] [--keep-log FILE]

The stack as ``tradebridge up`` runs it, except that the simulator runs in a process of its
own (in ``up`` it is a thread of the bridge process, and would be measured with it):

* a private **durable** PostgreSQL (``EmbeddedPostgres(durable=True)``: fsync on, as ``up``'s
  embedded ledger), started with ``pg_stat_statements`` preloaded so that every statement the
  bridge sends is counted by the server; a private Redis;
* ``tradebridge sim`` in a subprocess with one user owning ``--accounts`` accounts (it writes
  their tokens into Redis, as ``up`` does);
* ONE ``python -m tradebridge serve --migrate`` process, configured as ``up`` configures
  itself for the simulator (``runtime/up.py``: the accounts with their ids, native dialect,
  the user-sync socket on, the request budget raised to ``up``'s ``_SIM_BUDGET``): webhook,
  one dispatcher, tracker and reconcile. Logs at ``--log-level`` (``up``'s default, INFO),
  JSON, to a file. Webhook rate limit and the per-address connection cap are off (every
  alert comes from 127.0.0.1; TradingView's own addresses are exempt from both anyway).

After ``--warm-up`` alerts per account (placed and settled), the measured window: alerts at
``--rate`` per second (open loop, keep-alive connections, a minimal HTTP client on uvloop)
for ``--seconds``, each a distinct 1-lot market order (buy and sell alternating) to the next
account round-robin; then the bench waits until every row is placed and the stream of its
fills has settled. Over that window:

* latency per alert, from the client's ``time.time()`` just before the alert is written
  ("alert received": an upper bound, the webhook hop is in it) to: the webhook's answer
  (monotonic clock); the row's write-ahead committed (``ts_submitted``, just before the
  request leaves); the order's creation at the simulator ("on the wire": ``timestamp`` of
  ``GET /v1/order/list``, **millisecond resolution**, the same host clock); the broker's
  answer written back (``ts_accepted``);
* CPU seconds per alert from ``/proc/<pid>/stat`` (user + system): the bridge process;
  PostgreSQL (the postmaster with its reaped children, plus every live child: backends,
  WAL writer, checkpointer...; the bench's own backend excluded); the simulator, for
  reference;
* SQL statements per alert: ``pg_stat_statements`` calls of the bridge's database user
  (the bench reads as a role of its own, so its polling is not counted), asyncpg's reset
  queries, BEGIN and COMMIT included, with the statements that cost the most listed;
* log bytes and lines per alert written by the bridge.

The machine may be loaded by other work: latency tails move with it; CPU per alert and
statements per alert much less.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
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
    RISK_COUNTED_TOML,
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
    steady_rows,
    stop_simulator,
    wait_tokens,
)
from _costs import (
    bench_url,
    bridge_statements,
    cluster_cpu_s,
    grant_reads,
    kernel_cpu_s,
    postmaster_pid,
    process_cpu_s,
    statement_text,
    with_statements,
)
from tradebridge.runtime.up import _SIM_BUDGET
from tradebridge.store.embedded import EmbeddedPostgres, EmbeddedRedis, free_port

SECRET = "bench-secret-0123456789"
CONNECTIONS = 32
IDLE_REUSE_S = 2.0
PLACED = ("working", "filled", "partially_filled")


def serve_config(
    sim_url: str, accounts: int, log_level: str, loop: str | None = None, risk: str = "off"
) -> str:
    """Return the settings ``up`` would run with against this simulator (TOML); the risk
    rules off (the hop alone), or on with limits never reached (``counted``: their reads)."""
    listed = accounts_toml(accounts)
    budget = "\n".join(f"{key} = {value}" for key, value in _SIM_BUDGET.items())
    return f"""
[logging]
level = "{log_level}"

[serve]
max_connections_per_address = 0
{"" if loop is None else f'event_loop = "{loop}"'}

[tradovate]
native_url = "{sim_url}/v1"
bridge_url = "{sim_url}"
{budget}

[webhook]
secret = "{SECRET}"
rate_limit_per_minute = 0

{RISK_OFF_TOML if risk == "off" else RISK_COUNTED_TOML}
{listed}
"""


def alert(n: int, accounts: int) -> bytes:
    """Return alert ``n``: a 1-lot market order to account ``n % accounts``."""
    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    side = "buy" if n % 2 == 0 else "sell"
    return (
        f'{{"secret":"{SECRET}","symbol":"MNQ1!","action":"{side}","quantity":"1",'
        f'"id":"hop-{n}","time":"{now}","account":"{bench_account(n % accounts)}"}}'
    ).encode()


# The bridge under cProfile, timed by its main thread's CPU clock (a process descheduled
# while another one runs would charge that wall time to whatever it was doing).
_CPROFILED = """
import cProfile, runpy, sys, time
out = sys.argv[1]
sys.argv = sys.argv[2:]
profile = cProfile.Profile(time.thread_time)
try:
    profile.runcall(runpy.run_module, sys.argv[0], run_name="__main__", alter_sys=True)
except SystemExit:
    pass
finally:
    profile.dump_stats(out)
"""


def wait_http(url: str, child: subprocess.Popen[bytes], log: Path) -> None:
    """Wait until the webhook answers at all (any status)."""
    deadline = time.monotonic() + 120
    while True:
        try:
            httpx.post(url, content=b"{}", timeout=1)
            return
        except httpx.TransportError:
            if time.monotonic() > deadline or child.poll() is not None:
                tail = log.read_text(encoding="utf-8", errors="replace")[-3000:]
                raise SystemExit(f"the bridge did not start\n{tail}") from None
            time.sleep(0.05)


def sim_token(sim_url: str) -> str:
    """Log in as the simulator's bench user; return the access token."""
    body = {"name": "bench", "password": "bench", "appId": "bench", "appVersion": "1.0",
            "deviceId": "bench-hop", "cid": 0, "sec": ""}  # fmt: skip
    answer = httpx.post(f"{sim_url}/v1/auth/accesstokenrequest", json=body, timeout=10)
    return str(answer.json()["accessToken"])


def start_profiler(path: Path | None, pid: int) -> subprocess.Popen[bytes] | None:
    """Start ``py-spy record`` on the bridge (collapsed stacks to ``path``), if asked."""
    if path is None:
        return None
    spy = Path(sys.executable).parent / "py-spy"
    return subprocess.Popen(
        [str(spy), "record", "--pid", str(pid), "--format", "raw", "--rate", "200",
         "--output", str(path), "--nonblocking"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip


def stop_profiler(profiler: subprocess.Popen[bytes] | None) -> None:
    """Stop ``py-spy`` (SIGINT: it writes its output on the way out)."""
    if profiler is not None:
        profiler.send_signal(signal.SIGINT)
        profiler.wait(timeout=60)


async def _wait_tokens(redis_url: str, names: list[str]) -> None:
    client = aioredis.Redis.from_url(redis_url)
    try:
        await wait_tokens(client, names)
    finally:
        await client.aclose()


# --- one measured run -----------------------------------------------------------------------


@dataclass
class Sent:
    """The alerts of one paced series: answer latencies and each row's send time."""

    answer_ms: list[float] = field(default_factory=list)
    failed: int = 0
    failures: dict[str, int] = field(default_factory=dict)  # "status: body" of each kind
    sent_at: dict[str, float] = field(default_factory=dict)  # signal_id: time.time() at send


@dataclass
class Snapshot:
    """Counters read at one moment."""

    bridge_s: float
    bridge_kernel_s: float
    postgres_s: float
    sim_s: float
    statements: dict[int, tuple[str, int, float]]  # queryid: (text, calls, execution ms)
    log_bytes: int
    log_lines: int
    wall: float


@dataclass
class Results:
    """What the measured window gave."""

    sent: Sent
    latencies: dict[str, list[float]]
    before: Snapshot
    after: Snapshot
    load: tuple[float, float]


async def paced(port: int, rate: float, seconds: float, first: int, accounts: int) -> Sent:
    """Send ``rate`` alerts/s (open loop) for ``seconds``, numbered from ``first``."""
    run = Sent()
    # (connection, monotonic time it was last used), the most recent last: a connection idle
    # near the server's keep-alive timeout (5 s) is not reused, it may be closing.
    idle = [(await Connection.open(port), time.monotonic()) for _ in range(CONNECTIONS)]

    async def one(n: int) -> None:
        conn = None
        while idle and conn is None:
            candidate, used = idle.pop()
            if candidate.closed or time.monotonic() - used > IDLE_REUSE_S:
                candidate.close()
            else:
                conn = candidate
        conn = conn or await Connection.open(port)
        payload = alert(n, accounts)
        wall = time.time()
        start = time.perf_counter()
        try:
            conn.send(payload)
            status, answer = await conn.answer()
        except (ConnectionError, asyncio.IncompleteReadError) as e:
            # Closed by the server as it was reused (its keep-alive timeout): not resent.
            conn.close()
            run.failed += 1
            kind = f"connection lost: {type(e).__name__}"
            run.failures[kind] = run.failures.get(kind, 0) + 1
            return
        run.answer_ms.append((time.perf_counter() - start) * 1000)
        idle.append((conn, time.monotonic()))
        if status != 200 or b'"status":"accepted"' not in answer:
            run.failed += 1
            kind = f"{status}: {answer[:200].decode(errors='replace')}"
            run.failures[kind] = run.failures.get(kind, 0) + 1
            return
        for signal_id in json.loads(answer)["signal_ids"]:
            run.sent_at[signal_id] = wall

    await open_loop(rate, seconds, lambda n: one(first + n))
    for conn, _ in idle:
        conn.close()
    return run


async def settle(db: asyncpg.Connection, signal_ids: list[str], within_s: float) -> None:
    """Wait until every row is placed and no row's status has changed for a second."""

    def placed(counts: dict[str, int]) -> bool:
        return sum(n for status, n in counts.items() if status in PLACED) == len(signal_ids)

    await steady_rows(db, signal_ids, placed, 1.0, time.monotonic() + within_s)


class Meter:
    """Reads the counters of the bridge, PostgreSQL, the simulator and the bridge's log."""

    def __init__(
        self, db: asyncpg.Connection, bridge: int, postmaster: int, sim: int, log: Path
    ) -> None:
        self.db = db
        self.bridge = bridge
        self.postmaster = postmaster
        self.sim = sim
        self.log = log

    async def snapshot(self) -> Snapshot:
        """Read every counter now."""
        own = {int(await self.db.fetchval("select pg_backend_pid()"))}
        text = self.log.read_bytes()
        return Snapshot(
            bridge_s=process_cpu_s(self.bridge),
            bridge_kernel_s=kernel_cpu_s(self.bridge),
            postgres_s=cluster_cpu_s(self.postmaster, own),
            sim_s=process_cpu_s(self.sim),
            statements=await bridge_statements(self.db),
            log_bytes=len(text),
            log_lines=text.count(b"\n"),
            wall=time.monotonic(),
        )


async def latencies(
    db: asyncpg.Connection, sent: Sent, sim_url: str, token: str
) -> dict[str, list[float]]:
    """Return, per alert, ms from its send to the write-ahead, the wire, and the answer."""
    rows = await db.fetch(
        "select signal_id, created_at, ts_claimed, ts_submitted, ts_accepted, tradovate_order_id "
        "from trading_signals where signal_id = any($1::text[])",
        list(sent.sent_at),
    )
    async with httpx.AsyncClient(timeout=60) as client:
        listed = await client.get(
            f"{sim_url}/v1/order/list", headers={"Authorization": f"Bearer {token}"}
        )
    created = {str(o["id"]): datetime.fromisoformat(o["timestamp"]).timestamp()
               for o in listed.json()}  # fmt: skip
    out: dict[str, list[float]] = {"submitted": [], "wire": [], "accepted": [], "claimed": []}
    for row in rows:
        at = sent.sent_at[row["signal_id"]]
        out["claimed"].append((row["ts_claimed"] - row["created_at"]).total_seconds() * 1000)
        out["submitted"].append((row["ts_submitted"].timestamp() - at) * 1000)
        out["accepted"].append((row["ts_accepted"].timestamp() - at) * 1000)
        out["wire"].append((created[row["tradovate_order_id"]] - at) * 1000)
    return out


async def measure(
    args: argparse.Namespace, port: int, db_url: str, sim_url: str, meter_of: dict[str, object]
) -> Results:
    """Warm up, then run the measured window."""
    db = await asyncpg.connect(db_url)
    try:
        meter = Meter(db, **meter_of)  # type: ignore[arg-type]
        # Connections, caches, statement caches, the simulator's sockets; a warm-up alert
        # answered 503 on a busy machine (the webhook's 2 s store timeout) only warms less.
        warm = await paced(port, 20, args.warm_up * args.accounts / 20, -1_000_000, args.accounts)
        if not warm.sent_at:
            raise SystemExit(f"no warm-up alert was accepted: {warm.failures}")
        await settle(db, list(warm.sent_at), 300)
        load_before = os.getloadavg()[0]
        profiler = start_profiler(args.profile, meter.bridge)
        before = await meter.snapshot()
        sent = await paced(port, args.rate, args.seconds, 0, args.accounts)
        await settle(db, list(sent.sent_at), 600)
        after = await meter.snapshot()
        stop_profiler(profiler)
        load_after = os.getloadavg()[0]
        token = await asyncio.to_thread(sim_token, sim_url)
        found = await latencies(db, sent, sim_url, token)
    finally:
        await db.close()
    return Results(sent, found, before, after, (load_before, load_after))


def run(args: argparse.Namespace) -> Results:
    """Start the stack, measure, stop the stack."""
    tmp = Path(tempfile.mkdtemp(prefix="hop-bench-"))
    tmp.chmod(0o711)  # as root, the postgres user must reach its directory inside
    postgres = EmbeddedPostgres(directory=tmp / "pg", durable=True)
    redis = EmbeddedRedis()
    sim = None
    child = None
    try:
        with_statements(postgres)
        redis.start()
        sim_file = tmp / "sim.json"
        sim_file.write_text(json.dumps(sim_config(args.accounts)), encoding="utf-8")
        sim, sim_url = start_simulator(config=sim_file, redis_url=redis.url)
        asyncio.run(_wait_tokens(redis.url, [bench_account(i) for i in range(args.accounts)]))
        config = tmp / "tradebridge.toml"
        settings = serve_config(sim_url, args.accounts, args.log_level, args.loop, args.risk)
        config.write_text(settings, encoding="utf-8")
        port = free_port()
        log = tmp / "bridge.log"
        with log.open("wb") as out:
            profiled = ["-c", _CPROFILED, str(args.cprofile)] if args.cprofile else ["-m"]
            child = subprocess.Popen(
                [sys.executable, *profiled, "tradebridge", "serve", "--config", str(config),
                 "--data-dir", str(tmp / "data"), "--port", str(port), "--migrate"],
                env={**os.environ, "DATABASE_URL": postgres.url, "REDIS_URL": redis.url},
                stdout=out, stderr=subprocess.STDOUT,
            )  # fmt: skip
        wait_http(f"http://127.0.0.1:{port}/webhook", child, log)
        asyncio.run(grant_reads(postgres.url))
        meter_of = {"bridge": child.pid, "postmaster": postmaster_pid(postgres),
                    "sim": sim.pid, "log": log}  # fmt: skip
        try:
            return uvloop.run(measure(args, port, bench_url(postgres), sim_url, meter_of))
        except SystemExit:
            lines = log.read_text(encoding="utf-8", errors="replace").splitlines()
            worse = [line for line in lines if '"level": "info"' not in line]
            print("\n".join(worse[-30:]), file=sys.stderr)
            raise
    finally:
        if child is not None:
            child.terminate()
            child.wait(timeout=30)
            if args.keep_log is not None:
                shutil.copyfile(tmp / "bridge.log", args.keep_log)
        if sim is not None:
            stop_simulator(sim)
        redis.stop()
        postgres.stop()
        subprocess.run(["rm", "-rf", str(tmp)], check=False)


# --- the report -----------------------------------------------------------------------------


def report(args: argparse.Namespace, results: Results) -> None:
    """Print the figures."""
    sent, before, after = results.sent, results.before, results.after
    alerts = len(sent.sent_at)
    loop = "" if args.loop is None else f", event loop {args.loop}"
    print(f"hop benchmark, {args.rate:g} alerts/s over {args.accounts} accounts for "
          f"{args.seconds:g} s; one `serve` as `up` runs it (logs {args.log_level}{loop}), the "
          f"simulator in its own process, durable PostgreSQL; on {machine()}")  # fmt: skip
    print(f"load average (1 min) before / after the window: {results.load[0]:.1f} / "
          f"{results.load[1]:.1f}\n")  # fmt: skip
    rows = [["alert → webhook answer", str(len(sent.answer_ms)), str(sent.failed),
             *latency_cells(sent.answer_ms)]]  # fmt: skip
    for key, label in (("claimed", "  (row stored → claimed, db clock)"),
                       ("submitted", "alert → write-ahead committed"),
                       ("wire", "alert → order on the wire (sim, 1 ms res.)"),
                       ("accepted", "alert → broker answer written")):  # fmt: skip
        rows.append([label, str(len(results.latencies[key])), "",
                     *latency_cells(results.latencies[key])])  # fmt: skip
    print_table(["series", "alerts", "failed", "p50 ms", "p90 ms", "p99 ms", "max ms"], rows)
    for kind, count in sorted(sent.failures.items(), key=lambda item: -item[1]):
        print(f"  failed x {count}: {kind}")

    window = after.wall - before.wall
    bridge = (after.bridge_s - before.bridge_s) * 1000 / alerts
    kernel = (after.bridge_kernel_s - before.bridge_kernel_s) * 1000 / alerts
    pg = (after.postgres_s - before.postgres_s) * 1000 / alerts
    sim = (after.sim_s - before.sim_s) * 1000 / alerts
    calls: dict[str, int] = {}
    executing: dict[str, float] = {}
    for queryid, (text, count, ms) in after.statements.items():
        _, count_before, ms_before = before.statements.get(queryid, ("", 0, 0.0))
        if count - count_before:
            key = statement_text(text)
            calls[key] = calls.get(key, 0) + count - count_before
            executing[key] = executing.get(key, 0.0) + ms - ms_before
    statements = sum(calls.values())
    print(f"\nwindow {window:.1f} s (sending {args.seconds:g} s, then until settled), "
          f"{alerts} alerts placed\n")  # fmt: skip
    print_table(
        ["cost per alert", "value"],
        [
            ["CPU ms, bridge process", f"{bridge:.2f}"],
            ["  of which in the kernel (system)", f"{kernel:.2f}"],
            ["CPU ms, PostgreSQL", f"{pg:.2f}"],
            ["CPU ms, bridge + PostgreSQL", f"{bridge + pg:.2f}"],
            ["CPU ms, simulator (not counted)", f"{sim:.2f}"],
            ["SQL statements", f"{statements / alerts:.2f}"],
            ["  their execution, ms (server side)", f"{sum(executing.values()) / alerts:.2f}"],
            ["log lines", f"{(after.log_lines - before.log_lines) / alerts:.1f}"],
            ["log bytes", f"{(after.log_bytes - before.log_bytes) / alerts:,.0f}"],
        ],
    )
    print("\nSQL statements per alert, by statement (pg_stat_statements, bridge's user):")
    ranked = sorted(calls.items(), key=lambda item: -item[1])
    print_table(
        ["statement", "per alert", "ms per alert"],
        [
            [text[:100], f"{n / alerts:.2f}", f"{executing[text] / alerts:.3f}"]
            for text, n in ranked[:25]
        ],
    )
    print(
        "\ntargets (issue 12): alert → order on the wire p99 <= 5 ms, webhook answer p99 "
        "<= 10 ms;\nbridge + PostgreSQL CPU <= 2 ms and <= 6 SQL statements per alert"
    )


def main() -> None:
    """Run the benchmark and print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=200.0, help="alerts per second")
    parser.add_argument("--accounts", type=int, default=20)
    parser.add_argument(
        "--risk",
        choices=["off", "counted"],
        default="off",
        help="risk rules off (the hop alone) or on, never reached",
    )
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--warm-up", type=int, default=5, help="alerts per account before")
    parser.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING"])
    parser.add_argument("--keep-log", type=Path, default=None, help="copy the bridge's log here")
    parser.add_argument("--loop", choices=["auto", "asyncio", "uvloop"], default=None,
                        help="[serve] event_loop of the bridge (default: its default)")  # fmt: skip
    parser.add_argument("--profile", type=Path, default=None,
                        help="py-spy (if installed) samples the bridge during the window, "
                        "collapsed stacks to this file")  # fmt: skip
    parser.add_argument("--cprofile", type=Path, default=None,
                        help="run the bridge under cProfile (its main thread's CPU time, "
                        "start to stop, slower), the stats to this file (python -m pstats "
                        "FILE)")  # fmt: skip
    args = parser.parse_args()
    report(args, run(args))


if __name__ == "__main__":
    main()

"""Long fuzz and slowloris run against ``tradebridge serve``: no 5xx, no rows from bad input.

    .venv/bin/python bench/fuzz_webhook.py [--bodies 100000] [--concurrency 8] [--seed 1]
        [--slow-connections 300] [--slow-seconds 60]

It starts a private PostgreSQL and Redis (``store.embedded``) and ``tradebridge serve`` in a
subprocess on them: webhook only (``--workers 0``: nothing is sent to any broker; the broker
URLs point at a closed loopback port all the same), production defaults except the rate
limit, which is off (as in issue 10's measurement), and the accounts ACC1..ACC3.

1. **Fuzz**: ``--bodies`` requests from ``--concurrency`` keep-alive connections, each a
   case of ``tests/_support/webhook_fuzz.py`` (the fuzz suite's bodies): mutations of every
   documented template, damaged bytes, random bytes, deep nesting, huge numbers, every
   content type and secret placement. Then every stored row is judged by the suite's oracle.
   Printed: bodies tried, answers by status, 5xx, connection resets, rows stored, rows from
   invalid input (from a body that could not be valid, a row no answer named, or a row the
   oracle refuses: out of bounds, or one a worker's validation or routing raises on),
   internal errors the server logged, and the server's RSS before, after warm-up, after.
2. **Slowloris**: ``--slow-connections`` clients from 127.0.0.2 (in a child process) drip
   request headers a byte every 0.5 s and reconnect 0.5 s after the server closes them, for
   ``--slow-seconds``, while a trader sends an alert from 127.0.0.1, waiting 0.2 s after
   each answer. Printed: attack connections,
   how the server ended them (408 at the header deadline, 429 over the per-address cap), the
   longest any was held, the alerts' statuses and latency, and the server's RSS.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import asyncpg
import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from _common import latency_cells, machine, print_table
from _support import webhook_fuzz as fz
from tradebridge.store.embedded import EmbeddedPostgres, EmbeddedRedis, free_port

WARM_UP = 2000


def serve_config() -> str:
    """Return the settings (TOML) of the webhook-only ``serve``."""
    groups = "\n".join(f"{k} = {_toml(v)}" for k, v in fz.WEBHOOK_SETTINGS["groups"].items())
    accounts = "\n".join(f'[[accounts]]\nname = "{name}"\n' for name in fz.ACCOUNTS)
    return f"""
[logging]
level = "WARNING"

[tradovate]
native_url = "http://127.0.0.1:9/v1"
bridge_url = "http://127.0.0.1:9"
ws_url = "ws://127.0.0.1:9/v1/websocket"

[webhook]
secret = "{fz.SECRET}"
default_account = "ACC1"
rate_limit_per_minute = 0

[webhook.symbol_map]
NQ = "MNQ"

[webhook.groups]
{groups}

{accounts}
"""


def _toml(value: object) -> str:
    if isinstance(value, list):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k} = {_toml(v)}" for k, v in value.items()) + "}"
    return f'"{value}"'


def rss_mb(pid: int) -> float:
    """Return the resident set size of process ``pid`` in MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


# --- a raw HTTP/1.1 client: any bytes in headers, no client-side checks -----------------------


class Conn:
    """One keep-alive connection; reopened by the caller when the server closes it."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def open(cls, port: int, source: str = "127.0.0.1") -> Conn:
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", port, local_addr=(source, 0), limit=2**20
        )
        return cls(reader, writer)

    async def exchange(self, request: bytes) -> tuple[int, bytes, bool]:
        """Send one request; return the status, the body, and whether the server closes."""
        self.writer.write(request)
        await self.writer.drain()
        head = await self.reader.readuntil(b"\r\n\r\n")
        status = int(head.split(b" ", 2)[1])
        length, closes = 0, False
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
            elif name.strip().lower() == b"connection" and b"close" in value.lower():
                closes = True
        return status, await self.reader.readexactly(length), closes

    def close(self) -> None:
        self.writer.close()


# --- 1. fuzz ------------------------------------------------------------------------------------


@dataclass
class FuzzResults:
    """What the fuzz run saw."""

    tried: int = 0
    statuses: Counter[int] = field(default_factory=Counter)
    kinds: Counter[str] = field(default_factory=Counter)
    resets: int = 0
    answered_ids: set[str] = field(default_factory=set)
    forbidden_ids: set[str] = field(default_factory=set)  # rows of bodies that cannot be valid
    findings: list[str] = field(default_factory=list)
    seconds: float = 0.0
    rss: list[tuple[str, float]] = field(default_factory=list)


async def fuzz(port: int, bodies: int, concurrency: int, seed: int, pid: int) -> FuzzResults:
    """Send ``bodies`` fuzz cases from ``concurrency`` connections."""
    results = FuzzResults()
    rng = random.Random(seed)
    cases = iter(range(bodies))
    results.rss.append(("before", rss_mb(pid)))

    async def worker() -> None:
        local = random.Random(rng.random())
        conn = await Conn.open(port)
        for n in cases:
            case = fz.random_case(local)
            results.tried += 1
            results.kinds[case.kind.split(":")[0]] += 1
            try:
                status, body, closes = await conn.exchange(fz.wire(case))
            except (ConnectionError, asyncio.IncompleteReadError):
                results.resets += 1
                conn.close()
                conn = await Conn.open(port)
                continue
            results.statuses[status] += 1
            if status >= 500 and len(results.findings) < 5:
                results.findings.append(f"{case.kind} {case.body[:200]!r} -> {body[:200]!r}")
            if status == 200:
                answer = json.loads(body)
                if answer.get("status") in {"accepted", "rejected"}:
                    ids = set(answer.get("signal_ids", ()))
                    results.answered_ids |= ids
                    if not case.may_store:
                        results.forbidden_ids |= ids
                        results.findings.append(f"stored from {case} -> {body[:200]!r}")
            if closes:
                conn.close()
                conn = await Conn.open(port)
            if n == WARM_UP:
                results.rss.append((f"after {WARM_UP:,}", rss_mb(pid)))
        conn.close()

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    results.seconds = time.perf_counter() - started
    results.rss.append(("after", rss_mb(pid)))
    return results


async def judge_rows(database_url: str, results: FuzzResults) -> tuple[int, int, list[str]]:
    """Return rows stored, rows from invalid input, and the oracle's first findings."""
    db = await asyncpg.connect(database_url)
    try:
        rows = await db.fetch("select * from trading_signals")
    finally:
        await db.close()
    ids = {r["signal_id"] for r in rows}
    problems = fz.check_stored_rows(rows, datetime.now(UTC).date())
    bad_ids = {p.split(":", 1)[0] for p in problems}
    unexplained = ids - results.answered_ids
    invalid = bad_ids | unexplained | (results.forbidden_ids & ids)
    findings = problems[:5] + [
        f"{i}: stored, but no answer named it" for i in list(unexplained)[:5]
    ]
    return len(rows), len(invalid), findings


# --- 2. slowloris -------------------------------------------------------------------------------


@dataclass
class SlowResults:
    """What the slowloris run saw."""

    connections: int = 0
    ended: Counter[str] = field(default_factory=Counter)
    held_max: float = 0.0
    alert_statuses: Counter[int] = field(default_factory=Counter)
    alert_ms: list[float] = field(default_factory=list)
    rss: list[tuple[str, float]] = field(default_factory=list)


async def attack(port: int, clients: int, seconds: float) -> SlowResults:
    """Run ``clients`` dripping connections for ``seconds`` (in the ``--attack`` child)."""
    results = SlowResults()
    deadline = time.monotonic() + seconds
    request = b"POST /webhook HTTP/1.1\r\nHost: tradebridge\r\nX-Slow: " + b"a" * 10_000

    async def attacker() -> None:
        while time.monotonic() < deadline:
            try:
                conn = await Conn.open(port, source="127.0.0.2")
            except OSError:
                results.ended["connect failed"] += 1
                await asyncio.sleep(0.5)
                continue
            results.connections += 1
            opened = time.monotonic()
            outcome = "held to the end of the run"
            try:
                for i in range(len(request)):
                    if time.monotonic() >= deadline:
                        break
                    conn.writer.write(request[i : i + 1])
                    await conn.writer.drain()
                    got = await _read_for(conn, 0.5)
                    if got is not None:
                        outcome = _ending(got)
                        break
            except (ConnectionError, asyncio.IncompleteReadError):
                outcome = "reset"
            results.ended[outcome] += 1
            if outcome != "held to the end of the run":
                results.held_max = max(results.held_max, time.monotonic() - opened)
            conn.close()
            await asyncio.sleep(0.5)

    await asyncio.gather(*(attacker() for _ in range(clients)))
    return results


async def slowloris(port: int, clients: int, seconds: float, pid: int) -> SlowResults:
    """Run the attack in a child process for ``seconds`` while a trader sends alerts.

    The attackers get their own process: in this one they would slow the trader's own
    event loop, and its latencies would measure the client instead of the server.
    """
    attacker = await asyncio.create_subprocess_exec(
        sys.executable, __file__, "--attack", str(port), str(clients), str(seconds),
        stdout=subprocess.PIPE,
    )  # fmt: skip
    results = SlowResults()
    results.rss.append(("before", rss_mb(pid)))
    deadline = time.monotonic() + seconds

    async def trader() -> None:
        async with httpx.AsyncClient(timeout=10) as client:
            n = 0
            while time.monotonic() < deadline:
                n += 1
                started = time.perf_counter()
                try:
                    answer = await client.post(
                        f"http://127.0.0.1:{port}/webhook",
                        content=fz.encode(fz.fill({**fz.TEMPLATES["tb_indicator_buy"],
                                                   "id": f"slowloris-{n}"})),
                    )  # fmt: skip
                    results.alert_statuses[answer.status_code] += 1
                except httpx.TransportError:
                    results.alert_statuses[0] += 1
                results.alert_ms.append((time.perf_counter() - started) * 1000)
                await asyncio.sleep(0.2)

    async def sample_rss() -> None:
        peak = 0.0
        while time.monotonic() < deadline:
            peak = max(peak, rss_mb(pid))
            await asyncio.sleep(1)
        results.rss.append(("peak during", peak))

    await asyncio.gather(trader(), sample_rss())
    async with asyncio.timeout(60):
        out, _ = await attacker.communicate()
    seen = json.loads(out)
    results.connections = seen["connections"]
    results.ended = Counter(seen["ended"])
    results.held_max = seen["held_max"]
    results.rss.append(("after", rss_mb(pid)))
    return results


def run_attack(port: int, clients: int, seconds: float) -> None:
    """The ``--attack`` child: run the attackers, print what they saw as JSON."""
    seen = asyncio.run(attack(port, clients, seconds))
    print(json.dumps({"connections": seen.connections, "ended": dict(seen.ended),
                      "held_max": seen.held_max}))  # fmt: skip


async def _read_for(conn: Conn, seconds: float) -> bytes | None:
    """Return what the server sent within ``seconds`` (b"" when it closed), or None."""
    try:
        return await asyncio.wait_for(conn.reader.read(64), seconds)
    except TimeoutError:
        return None


def _ending(data: bytes) -> str:
    if data.startswith(b"HTTP/1.1 "):
        return f"answered {data[9:12].decode()} and closed"
    return "closed without an answer"


# --- the run ------------------------------------------------------------------------------------


def main() -> None:
    """Run both phases and print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bodies", type=int, default=100_000)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--slow-connections", type=int, default=300)
    parser.add_argument("--slow-seconds", type=float, default=60.0)
    args = parser.parse_args()

    postgres = EmbeddedPostgres().start()
    redis = EmbeddedRedis().start()
    child = None
    try:
        with tempfile.TemporaryDirectory() as tmp:
            config = Path(tmp) / "tradebridge.toml"
            config.write_text(serve_config(), encoding="utf-8")
            port = free_port()
            log = Path(tmp) / "serve.log"
            with log.open("wb") as out:
                child = subprocess.Popen(
                    [sys.executable, "-m", "tradebridge", "serve", "--config", str(config),
                     "--data-dir", tmp, "--port", str(port), "--workers", "0", "--migrate"],
                    env={**os.environ, "DATABASE_URL": postgres.url, "REDIS_URL": redis.url},
                    stdout=out, stderr=subprocess.STDOUT,
                )  # fmt: skip
            wait_http(port, child, log)
            print(f"webhook fuzz and slowloris run, tradebridge serve --workers 0, on {machine()}")
            if args.bodies:
                found = asyncio.run(fuzz(port, args.bodies, args.concurrency, args.seed, child.pid))
                stored, invalid, findings = asyncio.run(judge_rows(postgres.url, found))
                internal = log.read_text(errors="replace").count("webhook alert not read")
                report_fuzz(args, found, stored, invalid, findings, internal)
            if args.slow_connections:
                slow = asyncio.run(
                    slowloris(port, args.slow_connections, args.slow_seconds, child.pid)
                )
                report_slowloris(args, slow)
    finally:
        if child is not None:
            child.terminate()
            child.wait(timeout=30)
        redis.stop()
        postgres.stop()


def wait_http(port: int, child: subprocess.Popen[bytes], log: Path) -> None:
    """Wait until the server answers at all."""
    deadline = time.monotonic() + 90
    while True:
        try:
            httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1)
            return
        except httpx.TransportError:
            if time.monotonic() > deadline or child.poll() is not None:
                raise SystemExit(f"serve did not start\n{log.read_text()[-3000:]}") from None
            time.sleep(0.2)


def report_fuzz(
    args: argparse.Namespace,
    found: FuzzResults,
    stored: int,
    invalid: int,
    findings: list[str],
    internal: int,
) -> None:
    """Print the fuzz figures."""
    five = sum(n for status, n in found.statuses.items() if status >= 500)
    print(f"\n1. fuzz: {found.tried:,} bodies (seed {args.seed}, {args.concurrency} connections) "
          f"in {found.seconds:.0f} s, {found.tried / found.seconds:,.0f}/s")  # fmt: skip
    print("   kinds:   " + ", ".join(f"{k} {n:,}" for k, n in found.kinds.most_common()))
    print("   answers: " + ", ".join(f"{s} x {n:,}" for s, n in sorted(found.statuses.items())))
    print_table(
        ["figure", "value"],
        [["bodies tried", f"{found.tried:,}"], ["5xx answers", str(five)],
         ["connection resets", str(found.resets)], ["rows stored", f"{stored:,}"],
         ["rows from invalid input", str(invalid)],
         ["internal errors logged (answered 400)", str(internal)],
         *[[f"server RSS {label}", f"{mb:.1f} MB"] for label, mb in found.rss]],
    )  # fmt: skip
    for line in found.findings + findings:
        print("   ! " + line)


def report_slowloris(args: argparse.Namespace, slow: SlowResults) -> None:
    """Print the slowloris figures."""
    print(f"\n2. slowloris: {args.slow_connections} clients from 127.0.0.2 for "
          f"{args.slow_seconds:g} s; alerts from 127.0.0.1, 0.2 s apart")  # fmt: skip
    rows = [["attack connections", f"{slow.connections:,}"]]
    rows += [[f"  {how}", f"{n:,}"] for how, n in slow.ended.most_common()]
    rows += [["longest held", f"{slow.held_max:.1f} s"],
             ["alerts: statuses", ", ".join(f"{s} x {n}" for s, n in
                                            sorted(slow.alert_statuses.items()))]]  # fmt: skip
    rows += [[f"server RSS {label}", f"{mb:.1f} MB"] for label, mb in slow.rss]
    print_table(["figure", "value"], rows)
    if slow.alert_ms:
        print_table(["alert latency", "p50 ms", "p90 ms", "p99 ms", "max ms"],
                    [["during the attack", *latency_cells(slow.alert_ms)]])  # fmt: skip


if __name__ == "__main__":
    if len(sys.argv) == 5 and sys.argv[1] == "--attack":
        run_attack(int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4]))
    else:
        main()

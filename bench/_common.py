"""Helpers the benchmarks share: the simulator subprocess, logins, percentiles, tables.

Every benchmark starts ``tradebridge sim`` on a free loopback port in a subprocess, so that
client and server share neither an event loop nor a GIL, and stops it when done.
"""

from __future__ import annotations

import asyncio
import os
import platform
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

from tradebridge.store.embedded import free_port

ACCOUNT_NAME = "DEMO0000001"
ACCOUNT_ID = 100001
BRIDGE_ID = "D100001"
USER = "demo"

# The risk rules a benchmark switches off (docs/risk.md): it sends more orders a minute and
# builds larger positions than the defaults allow, at any hour. What it measures is placement.
RISK_OFF: dict[str, object] = {
    "trading_hours": "always",
    **dict.fromkeys(("max_order_qty", "max_position", "max_account_position", "max_open_orders",
                     "max_orders_per_minute", "max_orders_per_day"), "off"),
}  # fmt: skip
RISK_OFF_TOML = "[risk]\n" + "".join(f'{k} = "{v}"\n' for k, v in RISK_OFF.items())
# The default rules on, with limits no bench reaches: what the rules' reads cost (the position
# before each order, the ledger's counts before each entry), without a denial.
RISK_COUNTED_TOML = '[risk]\ntrading_hours = "always"\n' + "".join(
    f"{k} = 1000000\n"
    for k in ("max_order_qty", "max_position", "max_account_position", "max_open_orders",
              "max_orders_per_minute", "max_orders_per_day")
)  # fmt: skip


def sim_config(accounts: int, user: str = "bench") -> dict[str, object]:
    """Return simulator settings: one user owning ``BENCH0000``.. ``accounts`` accounts."""
    return {
        "users": [
            {
                "id": 9,
                "name": user,
                "password": user,
                "accounts": [
                    {"id": 900000 + i, "name": bench_account(i), "bridge_id": f"D{900000 + i}"}
                    for i in range(accounts)
                ],
            }
        ]
    }


def bench_account(index: int) -> str:
    """Return the name of account ``index`` of ``sim_config``."""
    return f"BENCH{index:04d}"


def accounts_toml(accounts: int) -> str:
    """Return the ``[[accounts]]`` tables of ``sim_config``'s accounts, with their ids (as
    ``up`` configures them: no account list read at start)."""
    return "\n".join(
        f'[[accounts]]\nname = "{bench_account(i)}"\ndialect = "native"\n'
        f'native_id = {900000 + i}\nbridge_id = "D{900000 + i}"\nuser = "bench"\n'
        for i in range(accounts)
    )


async def open_loop(rate: float, seconds: float, one: Callable[[int], Awaitable[None]]) -> None:
    """Call ``one(0)``, ``one(1)``, … at ``rate`` per second for ``seconds`` (open loop: each
    starts on time whatever the earlier ones are doing); return when all are done."""
    began = time.perf_counter()
    tasks = []
    for n in range(int(rate * seconds)):
        delay = began + n / rate - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(n)))
    await asyncio.gather(*tasks)


def start_simulator(
    seed: int = 1, *, config: Path | None = None, redis_url: str | None = None
) -> tuple[subprocess.Popen[bytes], str]:
    """Start ``tradebridge sim`` on a free port; return the process and its base URL.

    ``config``: a settings file (``sim_config`` as JSON); ``redis_url``: the simulator writes
    every account's token there (``token:<account name>``) and keeps it fresh.
    """
    port = free_port()
    argv = [sys.executable, "-m", "tradebridge", "sim", "--port", str(port), "--seed", str(seed)]
    if config is not None:
        argv += ["--config", str(config)]
    if redis_url is not None:
        argv += ["--redis-url", redis_url]
    process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
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


def stop_simulator(process: subprocess.Popen[bytes]) -> None:
    """Stop the simulator gracefully (SIGINT), killing it after 10 s."""
    process.send_signal(signal.SIGINT)
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()


@contextmanager
def running_simulator(seed: int = 1) -> Iterator[str]:
    """Run the simulator for the ``with`` block; yield its base URL."""
    process, url = start_simulator(seed)
    try:
        yield url
    finally:
        stop_simulator(process)


async def wait_tokens(redis: Any, names: Sequence[str]) -> None:
    """Wait (up to 30 s) until Redis (``redis.asyncio``) holds every account's token key."""
    for _ in range(300):
        if all([await redis.exists(f"token:{n}") for n in names]):
            return
        await asyncio.sleep(0.1)
    raise SystemExit("the simulator did not seed tokens into Redis")


async def wait_placed(db: Any, count: int, within_s: float, like: str = "%") -> None:
    """Wait until ``count`` rows whose signal_id is ``like`` stand working or filled.

    ``db`` is an asyncpg pool or connection. Polled every 50 ms: the count is a scan of the
    table, and polling faster only takes CPU from the system under test; the times measured
    come from the rows, not from here.
    """
    started = time.perf_counter()
    done = 0
    while time.perf_counter() - started < within_s:
        done = await db.fetchval(
            "select count(*) from trading_signals "
            "where status in ('working', 'filled') and signal_id like $1",
            like,
        )
        if done >= count:
            return
        await asyncio.sleep(0.05)
    raise SystemExit(f"only {done} of {count} rows placed within {within_s} s")


async def steady_rows(
    db: Any,
    signal_ids: Sequence[str],
    done: Callable[[dict[str, int]], bool],
    steady_s: float,
    deadline: float,
) -> None:
    """Wait until the rows' statuses (status: count) are ``done`` and have not changed for
    ``steady_s`` (a monotonic ``deadline``: SystemExit past it). Polled every 50 ms."""
    last: dict[str, int] = {}
    since = time.monotonic()
    while True:
        rows = await db.fetch(
            "select status, count(*) from trading_signals where signal_id = any($1::text[]) "
            "group by status",
            list(signal_ids),
        )
        counts = {str(r[0]): int(r[1]) for r in rows}
        now = time.monotonic()
        if counts != last:
            last, since = counts, now
        elif done(counts) and now - since >= steady_s:
            return
        if now > deadline:
            raise SystemExit(f"rows not settled in time: {counts}")
        await asyncio.sleep(0.05)


def native_login(url: str) -> dict[str, object]:
    """Log in on the native dialect; return the answer (``accessToken``, ``expirationTime``)."""
    body = {
        "name": USER,
        "password": USER,
        "appId": "bench",
        "appVersion": "1.0",
        "deviceId": "bench",
        "cid": 0,
        "sec": "",
    }
    payload: dict[str, object] = httpx.post(f"{url}/v1/auth/accesstokenrequest", json=body).json()
    return payload


def bridge_login(url: str) -> dict[str, object]:
    """Log in on the bridge (``/authorize``); return ``d`` (``access_token``, ``expiration``)."""
    answer = httpx.post(
        f"{url}/authorize", params={"locale": "en"}, data={"login": USER, "password": USER}
    )
    payload: dict[str, object] = answer.json()["d"]
    return payload


def front_month(url: str, token: str, root: str = "MNQ") -> str:
    """Return the simulator's front-month contract of ``root``."""
    answer = httpx.get(
        f"{url}/v1/contract/suggest",
        params={"t": root, "l": 1},
        headers={"Authorization": f"Bearer {token}"},
    )
    return str(answer.json()[0]["name"])


def native_market_body(n: int, symbol: str) -> dict[str, object]:
    """Return the ``placeorder`` body of 1-lot market order ``n`` (even buys, odd sells)."""
    return {
        "accountSpec": ACCOUNT_NAME,
        "accountId": ACCOUNT_ID,
        "action": "Buy" if n % 2 == 0 else "Sell",
        "symbol": symbol,
        "orderQty": 1,
        "orderType": "Market",
        "isAutomated": True,
    }


def bridge_market_form(n: int, symbol: str) -> dict[str, str]:
    """Return the bridge order form of 1-lot market order ``n`` (even buys, odd sells)."""
    return {
        "instrument": symbol,
        "qty": "1",
        "side": "buy" if n % 2 == 0 else "sell",
        "type": "market",
        "durationType": "Day",
    }


def accepted(answer: httpx.Response) -> bool:
    """Return whether a bare answer is an accepted order in either dialect."""
    if answer.status_code != 200:
        return False
    payload = answer.json()
    return "orderId" in payload or payload.get("s") == "ok"


def percentile(sorted_values: Sequence[float], p: float) -> float:
    """Return the nearest-rank ``p`` quantile (0..1) of already sorted values."""
    return sorted_values[min(len(sorted_values) - 1, int(p * len(sorted_values)))]


def latency_cells(latencies_ms: Sequence[float]) -> list[str]:
    """Return p50, p90, p99 and max of latencies, formatted in ms."""
    lat = sorted(latencies_ms)
    return [
        f"{statistics.median(lat):.2f}",
        f"{percentile(lat, 0.90):.2f}",
        f"{percentile(lat, 0.99):.2f}",
        f"{lat[-1]:.2f}",
    ]


def print_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    """Print a plain-text table: first column left-aligned, the others right-aligned."""
    table = [list(header), *(list(r) for r in rows)]
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    for index, row in enumerate(table):
        cells = [
            c.ljust(w) if i == 0 else c.rjust(w)
            for i, (c, w) in enumerate(zip(row, widths, strict=True))
        ]
        print("  ".join(cells))
        if index == 0:
            print("  ".join("-" * w for w in widths))


def machine() -> str:
    """Return a one-line description of the interpreter and the machine."""
    return f"Python {platform.python_version()}, {platform.machine()}, {os.cpu_count()} CPUs"


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

    @property
    def closed(self) -> bool:
        """Return whether the server has closed the connection (its keep-alive timeout)."""
        return self._reader.at_eof()

    def send(self, payload: bytes) -> None:
        """Write a POST of ``payload`` to /webhook."""
        self._writer.write(
            b"POST /webhook HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\n"
            b"Content-Length: " + str(len(payload)).encode() + b"\r\n\r\n" + payload
        )

    async def answer(self) -> tuple[int, bytes]:
        """Read one answer; return the status and the body."""
        head = await self._reader.readuntil(b"\r\n\r\n")
        status = int(head.split(b" ", 2)[1])
        length = 0
        for line in head.split(b"\r\n"):
            if line.lower().startswith(b"content-length:"):
                length = int(line.split(b":", 1)[1])
        return status, await self._reader.readexactly(length)

    async def post(self, payload: bytes) -> tuple[int, bytes]:
        """POST ``payload`` to /webhook; return the status and the body."""
        self.send(payload)
        return await self.answer()

    def close(self) -> None:
        """Close the socket."""
        self._writer.close()

"""Crash safety (issue 4): kill -9 real workers at random moments; every row still ends right.

A real simulator process (``tradebridge sim``) and two real worker processes (``tradebridge
serve``) share a fresh database on the session PostgreSQL and a Redis database of their own.
Rows are inserted continuously while a seeded schedule kills a worker with SIGKILL and starts
a new one, again and again, with the simulator's accept-then-drop fault switched on for part
of the time. At the end every row must be final (or resting ``working``), and the simulator
must hold exactly one order per placed row and none for a row that was not placed.

The short version runs in the suite (about 20 kills in about 45 s). ``TRADEBRIDGE_SLOW=1``
runs the long one (about 200 kills in about 10 minutes); ``TRADEBRIDGE_CRASH_SEED`` picks
another schedule.
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path

import httpx
import pytest
import redis.asyncio as aioredis
from runtime_stack import TRADEBRIDGE, Proc, sim_commands

from tradebridge.store.embedded import EmbeddedRedis, free_port
from tradebridge.store.ledger import Ledger, LedgerRow, LedgerStatus

SLOW = os.environ.get("TRADEBRIDGE_SLOW") == "1"
SEED = int(os.environ.get("TRADEBRIDGE_CRASH_SEED", "20240604"))
KILLS = 200 if SLOW else 20
CHAOS_S = 600.0 if SLOW else 45.0
INSERTS_PER_S = 8.0
SETTLE_S = 90.0
WORKERS = 2
REDIS_DB = 7  # apart from the keys other tests flush
ACCOUNTS = (
    ("DEMO0000001", 100001, "D100001", "demo"),
    ("DEMO0000002", 100002, "D100002", "demo"),
    ("PAAPEX1361890000010", 200010, "D200010", "apex"),
    ("PAAPEX1361890000011", 200011, "D200011", "apex"),
)
IN_FLIGHT = frozenset(
    {LedgerStatus.PENDING, LedgerStatus.PROCESSING, LedgerStatus.SUBMITTED, LedgerStatus.UNKNOWN}
)
# Rows whose order reached the broker; rows in the other end states sent nothing that rests.
PLACED = frozenset(
    {
        LedgerStatus.WORKING,
        LedgerStatus.PARTIALLY_FILLED,
        LedgerStatus.FILLED,
        LedgerStatus.CANCELLED,
        LedgerStatus.EXPIRED,
        LedgerStatus.REJECTED,
    }
)


def _config(path: Path, sim_port: int) -> Path:
    accounts = "\n".join(
        f'[[accounts]]\nname = "{name}"\nnative_id = {nid}\nbridge_id = "{bid}"\nuser = "{user}"\n'
        for name, nid, bid, user in ACCOUNTS
    )
    path.write_text(
        f"""
[tradovate]
native_url = "http://127.0.0.1:{sim_port}/v1"
bridge_url = "http://127.0.0.1:{sim_port}"
requests_per_s = 1000.0
request_burst = 1000
request_timeout_s = 3.0
lookup_absent_after_s = 1.0

[webhook]
enabled = false

[serve]
port = 0
migrate_on_start = false
shutdown_grace_s = 2.0

[dispatcher]
workers = 1
drain_interval_s = 0.5
reconcile_interval_s = 1.0

[logging]
level = "INFO"

{accounts}
"""
    )
    return path


@dataclass
class Cluster:
    """The simulator process and the worker processes of one crash run."""

    tmp: Path
    config: Path
    env: dict[str, str]
    sim_url: str
    workers: list[Proc] = field(default_factory=list)
    started: int = 0

    def start_worker(self) -> Proc:
        self.started += 1
        proc = Proc(
            [TRADEBRIDGE, "serve"],
            self.tmp / f"worker-{self.started:03d}.log",
            env={**self.env, "TRADEBRIDGE_DATA_DIR": str(self.tmp / f"w{self.started}")},
        )
        self.workers.append(proc)
        return proc

    def alive(self) -> list[Proc]:
        return [w for w in self.workers if w.alive()]

    def faults(self, drop_rate: float) -> None:
        answer = httpx.patch(
            f"{self.sim_url}/_sim/faults",
            json={"drop_after_accept_rate": drop_rate, "drop_mode": "reset"},
            timeout=10,
        )
        answer.raise_for_status()

    def logs(self) -> str:
        tails = [
            f"--- {w.log.name} (rc={w.popen.poll()})\n{w.output()[-3000:]}" for w in self.workers
        ]
        return "\n".join(tails)


@pytest.fixture
def cluster(tmp_path: Path, fresh_db: str, redis_server: EmbeddedRedis) -> Iterator[Cluster]:
    sim_port = free_port()
    redis_url = f"redis://127.0.0.1:{redis_server.port}/{REDIS_DB}"
    sim = Proc(
        [TRADEBRIDGE, "sim", "--port", str(sim_port), "--seed", str(SEED % 1000),
         "--redis-url", redis_url],
        tmp_path / "sim.log",
    )  # fmt: skip
    env = {
        "DATABASE_URL": fresh_db,
        "REDIS_URL": redis_url,
        "TRADEBRIDGE_CONFIG": str(_config(tmp_path / "tradebridge.toml", sim_port)),
    }
    made = Cluster(tmp_path, Path(env["TRADEBRIDGE_CONFIG"]), env, f"http://127.0.0.1:{sim_port}")
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            assert sim.alive(), sim.output()
            if "Tokens written to Redis" in sim.output():
                break
            time.sleep(0.05)
        else:
            pytest.fail(f"the simulator did not start:\n{sim.output()}")
        yield made
    finally:
        for worker in made.workers:
            worker.stop()
        sim.stop()


async def _insert_rows(ledger: Ledger, until: float, rng: random.Random) -> list[str]:
    ids: list[str] = []
    period = 1.0 / INSERTS_PER_S
    while time.monotonic() < until:
        name = ACCOUNTS[len(ids) % len(ACCOUNTS)][0]
        signal_id = f"crash-{len(ids):05d}"
        side = "buy" if rng.random() < 0.5 else "sell"
        # Mostly market orders (they fill at once); some limits far away (they rest).
        if rng.random() < 0.8:
            await ledger.insert_signal(
                signal_id=signal_id, instrument="MNQ1!", side=side, quantity=1,
                account_name=name, strategy_name="crash",
            )  # fmt: skip
        else:
            price = Decimal(1000) if side == "buy" else Decimal(99000)
            await ledger.insert_signal(
                signal_id=signal_id, instrument="MNQ1!", side=side, quantity=1,
                account_name=name, order_type="limit", price=price, strategy_name="crash",
            )  # fmt: skip
        ids.append(signal_id)
        await asyncio.sleep(period)
    return ids


async def _chaos(cluster: Cluster, until: float, rng: random.Random) -> int:
    kills = 0
    gap = (until - time.monotonic()) / KILLS
    while kills < KILLS and time.monotonic() < until:
        await asyncio.sleep(rng.uniform(0.2 * gap, 1.0 * gap))
        if kills % 5 == 0:
            cluster.faults(0.35 if (kills // 5) % 2 == 0 else 0.0)
        victims = cluster.alive()
        if victims:
            victim = rng.choice(victims)
            os.kill(victim.pid, signal.SIGKILL)
            await asyncio.to_thread(victim.wait, 10)
            kills += 1
        # Sometimes the replacement comes at once, sometimes after a gap with one worker.
        await asyncio.sleep(rng.choice([0.0, 0.0, 0.5, 1.5]))
        while len(cluster.alive()) < WORKERS:
            cluster.start_worker()
    return kills


async def _settled(ledger: Ledger, ids: list[str]) -> list[LedgerRow]:
    deadline = time.monotonic() + SETTLE_S
    while True:
        rows = [await ledger.get(signal_id) for signal_id in ids]
        present = [r for r in rows if r is not None]
        stuck = [r for r in present if r.status in IN_FLIGHT]
        if len(present) == len(ids) and not stuck:
            return present
        if time.monotonic() > deadline:
            detail = ", ".join(f"{r.signal_id}={r.status.value}" for r in stuck[:20])
            pytest.fail(f"{len(stuck)} rows still in flight after {SETTLE_S:.0f}s: {detail}")
        await asyncio.sleep(0.5)


@pytest.fixture
async def crash_ledger(fresh_db: str) -> AsyncIterator[Ledger]:
    ledger = await Ledger.connect(fresh_db, min_size=1, max_size=4)
    yield ledger
    await ledger.close()


@pytest.mark.timeout(1200 if SLOW else 240)
async def test_crash_kill9_workers_at_random_moments_every_row_final_with_one_order_each(
    cluster: Cluster, crash_ledger: Ledger, redis_server: EmbeddedRedis
) -> None:
    client = aioredis.Redis.from_url(f"redis://127.0.0.1:{redis_server.port}/{REDIS_DB}")
    assert await client.exists("token:DEMO0000001"), "the simulator wrote no tokens"
    await client.aclose()
    for _ in range(WORKERS):
        cluster.start_worker()
    rng = random.Random(SEED)
    until = time.monotonic() + CHAOS_S
    ids, kills = await asyncio.gather(
        _insert_rows(crash_ledger, until, random.Random(SEED + 1)), _chaos(cluster, until, rng)
    )
    cluster.faults(0.0)
    while len(cluster.alive()) < WORKERS:
        cluster.start_worker()
    try:
        rows = await _settled(crash_ledger, ids)
    except BaseException:
        print(cluster.logs())  # noqa: T201 - shown by pytest on failure
        raise
    assert kills >= KILLS * 3 // 4, f"only {kills} kills happened"

    commands = [c for c in sim_commands(cluster.sim_url) if c.get("commandType") == "New"]
    per_cl_ord_id = Counter(c.get("clOrdId") for c in commands)
    problems: list[str] = []
    ours = set()
    for row in rows:
        sent = per_cl_ord_id.get(row.client_order_id, 0) if row.client_order_id else 0
        ours.add(row.client_order_id)
        if row.status in PLACED and sent != 1:
            problems.append(f"{row.signal_id} {row.status.value}: {sent} orders at the broker")
        if row.status not in PLACED and sent != 0:
            problems.append(f"{row.signal_id} {row.status.value}: {sent} orders, expected none")
        if row.status is LedgerStatus.FILLED and row.filled_qty != row.quantity:
            problems.append(f"{row.signal_id} filled {row.filled_qty} of {row.quantity}")
    strangers = [c for c in commands if c.get("clOrdId") not in ours]
    if strangers:
        problems.append(f"{len(strangers)} orders at the broker match no row: {strangers[:5]}")
    statuses = Counter(r.status.value for r in rows)
    assert not problems, f"{statuses}, {kills} kills:\n" + "\n".join(problems[:40])
    assert statuses["filled"] > len(rows) // 2, statuses
    # The run must have hit both kinds of trouble, or it proved nothing.
    events = Counter(
        r["event"]
        for r in await crash_ledger.pool.fetch(
            "select event from order_history where event in ('unknown', 'adopted', "
            "'adopted_probable', 'requeued', 'resubmitted')"
        )
    )
    assert events["unknown"] > 0, f"no answer was ever lost: {events}"
    assert events["adopted"] + events["adopted_probable"] > 0, events
    print(f"crash run: {len(rows)} rows, {kills} kills, {dict(statuses)}, {dict(events)}")  # noqa: T201

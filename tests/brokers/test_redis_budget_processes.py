"""Three worker processes share one Tradovate user's budget through Redis (reference §7).

Each worker (``_support/budget_worker.py``, a separate Python process) starts all its
requests at once through its own ``RedisBudget``; together they ask for far more than the
windows hold. Every admission carries the Redis time it was counted at, and the test checks
each window over all three workers' admissions: in no span do more than its limit fall. Three
per-process budgets would each admit up to the limits, three times what is allowed.

The minute and hour windows are shortened (``Spans``) so that the run takes seconds; the
per-second window is Tradovate's. Nothing here depends on how fast the machine is: a slower
machine only spreads the admissions further apart.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import subprocess
import sys
import time
from pathlib import Path

import redis.asyncio as aioredis

from _support.fixtures import redis_client
from tradebridge.store.embedded import EmbeddedRedis

__all__ = ["redis_client"]  # fixtures

WORKER = Path(__file__).resolve().parents[1] / "_support" / "budget_worker.py"
LIMITS = {"requests_per_second": 4, "requests_per_hour": 10,
          "orders_per_minute": 6, "reads_per_minute": 4}  # fmt: skip
SPANS = {"second": 1.0, "minute": 2.0, "hour": 3.0}
ORDERS, READS, WORKERS = 5, 3, 3


def over_limit(times: list[float], span: float, limit: int) -> list[float]:
    """Return the admission times at which more than ``limit`` fell in the ``span`` before
    (a window counts what is younger than ``span``, as the script does)."""
    times = sorted(times)
    bad, first = [], 0
    for last, at in enumerate(times):
        while times[first] <= at - span:
            first += 1
        if last - first + 1 > limit:
            bad.append(at)
    return bad


def test_over_limit_finds_a_crowded_window() -> None:
    assert over_limit([0.0, 0.5, 0.9, 1.0], 1.0, 2) == [0.9, 1.0]
    assert over_limit([0.0, 0.5, 1.0, 1.5], 1.0, 2) == []


async def test_redis_budget_three_worker_processes_stay_within_every_window(
    redis_server: EmbeddedRedis, redis_client: aioredis.Redis
) -> None:
    user = f"shared-{secrets.token_hex(3)}"
    spec = {"user": user, "limits": LIMITS, "spans": SPANS, "orders": ORDERS, "reads": READS,
            "go": f"go:{user}", "ready": f"ready:{user}"}  # fmt: skip
    workers = [
        subprocess.Popen(
            [sys.executable, str(WORKER), redis_server.url, json.dumps(spec)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        for _ in range(WORKERS)
    ]
    try:
        deadline = time.monotonic() + 120
        while await redis_client.scard(spec["ready"]) < WORKERS:
            assert time.monotonic() < deadline, "the workers did not start"
            assert all(w.poll() is None for w in workers), "a worker exited early"
            await asyncio.sleep(0.02)
        await redis_client.set(spec["go"], 1)
        outputs = [w.communicate(timeout=180) for w in workers]
    finally:
        for worker in workers:
            if worker.poll() is None:
                worker.kill()
                worker.wait()
    assert [w.returncode for w in workers] == [0] * WORKERS, [e.decode() for _, e in outputs]

    admitted: dict[str, list[float]] = {"order": [], "read": []}
    for out, _ in outputs:
        for line in out.decode().splitlines():
            admission = json.loads(line)
            admitted[admission["kind"]] += [admission["at"]] * admission["count"]
    every = admitted["order"] + admitted["read"]

    assert (len(admitted["order"]), len(admitted["read"])) == (WORKERS * ORDERS, WORKERS * READS)
    assert over_limit(every, SPANS["second"], LIMITS["requests_per_second"]) == []
    assert over_limit(every, SPANS["hour"], LIMITS["requests_per_hour"]) == []
    assert over_limit(admitted["order"], SPANS["minute"], LIMITS["orders_per_minute"]) == []
    assert over_limit(admitted["read"], SPANS["minute"], LIMITS["reads_per_minute"]) == []

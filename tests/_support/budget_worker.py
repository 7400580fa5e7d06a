"""One worker process of ``test_redis_budget_processes.py``: requests through a RedisBudget.

    python tests/_support/budget_worker.py REDIS_URL SPEC_JSON

``SPEC_JSON``: ``user``, ``limits`` (``BudgetLimits`` fields), ``spans`` (``second``,
``minute``, ``hour`` in seconds), ``orders``, ``reads``, ``go`` (a Redis key: the worker
starts its requests once it exists, so that every worker starts together) and ``ready`` (a
Redis set the worker adds itself to once it waits for ``go``). It starts all its requests at
once (orders, then reads) and prints one JSON line per admission: ``kind``, ``count`` and
``at`` (Redis's time of the admission, seconds).
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from typing import Any

import redis.asyncio as aioredis

from tradebridge.brokers.budget import BudgetLimits, RequestKind
from tradebridge.brokers.redis_budget import RedisBudget, Spans


async def main(url: str, spec: dict[str, Any]) -> None:
    """Wait for the go key, send the requests through the budget, print the admissions."""
    client = aioredis.Redis.from_url(url)
    admissions: list[dict[str, object]] = []
    budget = RedisBudget(
        BudgetLimits(**spec["limits"]),
        client,
        spans=Spans(**spec["spans"]),
        timeout_s=10.0,  # a busy machine is no outage: this test is about the windows
        listener=lambda _user, kind, count, at: admissions.append(
            {"kind": kind.value, "count": count, "at": at}
        ),
    )
    user = budget.bucket(str(spec["user"]))
    await client.sadd(str(spec["ready"]), budget.process_id)
    deadline = time.monotonic() + 120
    while not await client.exists(str(spec["go"])):
        if time.monotonic() > deadline:
            raise SystemExit("no go within 120 s")
        await asyncio.sleep(0.01)
    kinds = [RequestKind.ORDER] * spec["orders"] + [RequestKind.READ] * spec["reads"]
    await asyncio.gather(*(user.acquire(kind) for kind in kinds))
    await client.aclose()
    for admission in admissions:
        sys.stdout.write(json.dumps(admission) + "\n")


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], json.loads(sys.argv[2])))

"""PostgreSQL and Redis stop and start again under a stream of alerts (issue 10, item 6).

A careful sender resends an alert answered 503 ("not stored, send it again") or not answered
at all; the webhook's idempotency key makes a resend of a stored alert a ``duplicate``.
Afterwards every alert answered 200 has its rows, each final (or visibly escalated), each
with exactly one order of its own at the simulator; no worker was declared dead; and
``/healthz`` said ``failing`` while the store was down and ``ok`` once all was settled.
``TRADEBRIDGE_SLOW=1``: longer outages (40 s for PostgreSQL, 30 s for Redis) and more alerts.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from typing import Any

import pytest
import redis.asyncio as aioredis

from _support.chaos import (
    DIALECTS,
    SLOW,
    Rig,
    Serving,
    healthz_until,
    judge,
    print_histories,
    settled,
)
from tradebridge.domain.lifecycle import SignalStatus
from tradebridge.store.embedded import EmbeddedPostgres, EmbeddedRedis
from tradebridge.store.ledger import LedgerRow

AROUND = 200 if SLOW else 16  # alerts accepted before and after an outage
POSTGRES_DOWN_S = 40.0 if SLOW else 3.0
REDIS_DOWN_S = 30.0 if SLOW else 3.0
# The slow outages are longer than the default bound: rows stored before one may end
# failed ("not sent late") rather than go out a minute late, as the operator configured.
BOUND_S = 90.0 if SLOW else 20.0


@pytest.mark.timeout(1800 if SLOW else 300)
async def test_postgres_stopped_during_alerts_nothing_lost_healthz_failing_then_ok(
    postgres_rig: Rig, private_postgres: EmbeddedPostgres
) -> None:
    rig = postgres_rig
    async with rig.serve(per_s=8.0, dispatcher={"unknown_bound_s": BOUND_S}) as bridge:
        during = await _outage(
            bridge,
            stop=private_postgres.stop,
            start=private_postgres.start,
            down_s=POSTGRES_DOWN_S,
            broken="database",
        )
        rows, verdict, after = await _judged(rig, bridge, "postgres")
        lost_workers = await bridge.ledger.pool.fetchval(
            "select count(*) from order_history where detail ->> 'reason' = 'worker lost'"
        )

    _assert_clean(bridge, rows, verdict, after)
    assert lost_workers == 0  # the live workers were never declared dead
    assert bridge.alerts.answers["503"] > 0, bridge.alerts.answers  # alerts met the outage
    assert during, "no /healthz answer while the database was down"
    assert all(body["status"] == "failing" for body in during), during
    assert all(body["checks"]["database"]["ok"] is False for body in during), during


@pytest.mark.timeout(1800 if SLOW else 300)
@pytest.mark.parametrize("comes_back", ["kept", "empty"])
async def test_redis_stopped_during_alerts_nothing_lost_healthz_failing_then_ok(
    rig: Rig, private_redis: EmbeddedRedis, comes_back: str
) -> None:
    saved: list[tuple[bytes, int, bytes]] = []

    def stop() -> None:
        if comes_back == "kept":  # a Redis with persistence: its keys survive the restart
            saved.extend(asyncio.run(_dump(private_redis.url)))
        private_redis.stop()

    def start() -> None:
        private_redis.start()
        if saved:
            asyncio.run(_restore(private_redis.url, saved))

    async with rig.serve(per_s=8.0, dispatcher={"unknown_bound_s": BOUND_S}) as bridge:
        during = await _outage(bridge, stop, start, REDIS_DOWN_S, "redis")
        rows, verdict, after = await _judged(rig, bridge, f"redis {comes_back}")

    _assert_clean(bridge, rows, verdict, after)
    assert during, "no /healthz answer while Redis was down"
    assert all(body["status"] == "failing" for body in during), during
    assert all(body["checks"]["redis"]["ok"] is False for body in during), during
    if comes_back == "kept":
        assert saved, "nothing to keep: the tokens were not in Redis"


async def _outage(
    bridge: Serving, stop: Any, start: Any, down_s: float, broken: str
) -> list[dict[str, Any]]:
    """Run alerts; stop the store mid-stream for ``down_s``; return /healthz while down."""
    halt = asyncio.Event()
    traffic = asyncio.create_task(bridge.alerts.run(halt))
    health = asyncio.create_task(bridge.health.run(halt))
    try:
        await bridge.alerts.until_accepted(AROUND, 60 + AROUND, "alerts before the outage")
        await asyncio.to_thread(stop)
        down = time.monotonic()
        # The outage lasts ``down_s``, and at least until /healthz said so once.
        while time.monotonic() - down < down_s or not _said(bridge, down, broken):
            assert time.monotonic() - down < down_s + 30, "/healthz never saw the outage"
            await asyncio.sleep(0.1)
        await asyncio.to_thread(start)
        back = time.monotonic()
        accepted = len(bridge.alerts.accepted)
        await bridge.alerts.until_accepted(
            accepted + AROUND, 90 + AROUND, "alerts after the outage"
        )
    finally:
        halt.set()
        await asyncio.gather(traffic, health)
    return [b for b in bridge.health.between(down, back) if b and not b["checks"][broken]["ok"]]


def _said(bridge: Serving, since: float, broken: str) -> bool:
    return any(b and not b["checks"][broken]["ok"] for b in bridge.health.between(since, 1e12))


async def _judged(
    rig: Rig, bridge: Serving, name: str
) -> tuple[list[LedgerRow], Any, dict[str, Any]]:
    ids = list(bridge.alerts.accepted)
    rows = await settled(bridge.ledger, ids, quiet_s=BOUND_S + 60)
    verdict = judge(rows, DIALECTS, rig.sim_url)
    review = [r for r in rows if r.status is SignalStatus.NEEDS_REVIEW]
    after = await healthz_until(
        bridge.endpoints.healthz_url, "degraded" if review else "ok", 60, "after the outage"
    )
    statuses = Counter(r.status.value for r in rows)
    print(  # noqa: T201 - the run's figures, shown with -s
        f"chaos [{name}]: {len(rows)} rows, statuses {dict(statuses)}, {verdict.summary()}, "
        f"alert answers {dict(bridge.alerts.answers)}"
    )
    for row in rows:
        if row.status in (SignalStatus.FAILED, SignalStatus.NEEDS_REVIEW):
            print(f"  {row.status.value}: {row.signal_id}: {row.error_message}")  # noqa: T201
    if verdict.problems():
        await print_histories(bridge.ledger, verdict.problems(), r"tv-[0-9a-f]{16}-\d+")
    return rows, verdict, after


def _assert_clean(
    bridge: Serving, rows: list[LedgerRow], verdict: Any, after: dict[str, Any]
) -> None:
    assert not verdict.problems(), "\n".join(verdict.problems()[:40])
    assert not bridge.alerts.failures, bridge.alerts.failures[:5]
    assert not bridge.alerts.unanswered, bridge.alerts.unanswered[:3]
    assert len(rows) == len(bridge.alerts.accepted)
    statuses = Counter(r.status.value for r in rows)
    assert set(statuses) <= {"filled", "working", "failed", "needs_review"}, statuses
    for row in rows:  # never an internal error: only a rule may end a row unplaced
        if row.status is SignalStatus.FAILED:
            assert "not sent late" in (row.error_message or ""), row.error_message
    if not SLOW:
        assert set(statuses) <= {"filled", "working"}, statuses
    review = sorted(r.signal_id for r in rows if r.status is SignalStatus.NEEDS_REVIEW)
    if review:
        listed = sorted(r["signal_id"] for r in after["checks"]["unresolved_rows"]["rows"])
        assert listed == review[:20]


async def _dump(url: str) -> list[tuple[bytes, int, bytes]]:
    client = aioredis.Redis.from_url(url)
    try:
        out = []
        async for key in client.scan_iter():
            ttl, value = await client.pttl(key), await client.dump(key)
            if value is not None:
                out.append((key, max(ttl, 0), value))
        return out
    finally:
        await client.aclose()


async def _restore(url: str, saved: list[tuple[bytes, int, bytes]]) -> None:
    client = aioredis.Redis.from_url(url)
    try:
        for key, ttl, value in saved:
            await client.restore(key, ttl, value, replace=True)
    finally:
        await client.aclose()

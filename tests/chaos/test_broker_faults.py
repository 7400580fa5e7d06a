"""The broker misbehaves under a stream of alerts: submits answered 5xx without being
executed, and accepted orders whose answer is lost (reset, hang, 500) (issue 10, item 6).

Alerts reach a running ``serve`` (two native and two bridge accounts) while the simulator's
fault stays on; then it is switched off and every row must settle. The judge compares each
row with the orders the simulator holds under the row's own client id: no duplicate, no lost
order, no wrong adoption; every row final, or ``needs_review`` (bridge accounts only) and
then named by ``/healthz``. The run must also have met its fault (the evidence is asserted).
``TRADEBRIDGE_SLOW=1`` sends 600 alerts instead of 40.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

import pytest

from _support.chaos import (
    DIALECTS,
    SLOW,
    UNKNOWN_BOUND_S,
    Rig,
    healthz_until,
    judge,
    print_histories,
    settled,
)
from tradebridge.domain.lifecycle import SignalStatus

ALERTS = 600 if SLOW else 40
FAULTS: dict[str, dict[str, Any]] = {
    "5xx-not-executed": {"error_5xx_rate": 0.5, "error_5xx_writes_only": True},
    "drop-reset": {"drop_after_accept_rate": 0.35, "drop_mode": "reset"},
    "drop-hang": {"drop_after_accept_rate": 0.35, "drop_mode": "hang", "hang_seconds": 4.0},
    "drop-http_500": {"drop_after_accept_rate": 0.35, "drop_mode": "http_500"},
}


@pytest.mark.timeout(1800 if SLOW else 300)
@pytest.mark.parametrize("fault", list(FAULTS))
async def test_broker_fault_during_alerts_every_row_ends_with_its_own_one_order(
    rig: Rig, fault: str
) -> None:
    async with rig.serve(per_s=10.0) as bridge:
        await asyncio.to_thread(rig.admin, "PATCH", "/faults", json=FAULTS[fault])
        stop = asyncio.Event()
        traffic = asyncio.create_task(bridge.alerts.run(stop))
        try:
            await bridge.alerts.until_accepted(ALERTS, 60 + ALERTS, "the alerts")
        finally:
            stop.set()
            await traffic
        ids = list(bridge.alerts.accepted)
        # Faults stay on until most rows went out once, so that they met it.
        await _until_sent(bridge.ledger, ids)
        await asyncio.to_thread(rig.admin, "POST", "/faults/reset")
        rows = await settled(bridge.ledger, ids, quiet_s=UNKNOWN_BOUND_S + 60)
        verdict = judge(rows, DIALECTS, rig.sim_url)
        review = sorted(r.signal_id for r in rows if r.status is SignalStatus.NEEDS_REVIEW)
        health = await healthz_until(
            bridge.endpoints.healthz_url, "degraded" if review else "ok", 30, "after the fault"
        )
        calls = Counter(
            r["status"]
            for r in await bridge.ledger.pool.fetch(
                "select status from broker_calls where method <> 'GET'"
            )
        )
        events = Counter(
            r["event"]
            for r in await bridge.ledger.pool.fetch(
                "select event from order_history where event in "
                "('unknown', 'adopted', 'adopted_probable', 'resubmitted', 'escalated')"
            )
        )
        statuses = Counter(r.status.value for r in rows)
        # Rows that went unknown and were never settled by a lookup or their order's events.
        unsettled = [
            r["signal_id"]
            for r in await bridge.ledger.pool.fetch(
                "select u.signal_id from order_history u where u.event = 'unknown' and not"
                " exists (select 1 from order_history h where h.signal_id = u.signal_id and"
                " (h.event in ('adopted', 'adopted_probable') or h.detail->>'from' = 'unknown'))"
            )
        ]
        print(  # noqa: T201 - the run's figures, shown with -s
            f"chaos [{fault}]: {len(rows)} rows, statuses {dict(statuses)}, "
            f"{verdict.summary()}, broker writes by status {dict(calls)}, events {dict(events)}"
        )
        failed = [r for r in rows if r.status is SignalStatus.FAILED]
        for row in failed:
            print(f"  failed: {row.signal_id}: {row.error_message}")  # noqa: T201
        if verdict.problems():
            await print_histories(bridge.ledger, verdict.problems(), r"[0-9a-f-]{36}")

    assert not verdict.problems(), "\n".join(verdict.problems()[:40])
    assert not bridge.alerts.failures, bridge.alerts.failures[:5]
    assert not bridge.alerts.unanswered
    assert len(rows) == len(ids)
    assert set(statuses) <= {"filled", "working", "failed", "needs_review"}, statuses
    # A row fails only when lookups proved its order absent and resending stopped, by rule.
    for row in failed:
        assert "max_resends" in (row.error_message or "") or "not sent late" in (
            row.error_message or ""
        ), row.error_message
    if review:  # escalated rows are visible, by id
        listed = sorted(r["signal_id"] for r in health["checks"]["unresolved_rows"]["rows"])
        assert listed == review[:20]
    if fault.startswith("5xx"):
        assert sum(n for status, n in calls.items() if status and status >= 500) > 0, calls
        # A 5xx before execution is resolved by a lookup that finds nothing, then a resend.
        assert events["resubmitted"] > 0, events
    else:
        # The answers were lost. A row whose answer hung may be settled by its order's own
        # events before it ever reads unknown (the user-sync stream delivers them while the
        # answer still hangs; the tracker waits for this process's send only event_retry_s).
        # A row that went unknown was settled by a lookup (adopted) or by its order's events
        # (a move out of unknown): which one wins depends on the machine's load.
        if fault == "drop-hang":
            assert calls[None] > 0, calls
        else:
            assert events["unknown"] > 0, events
        assert unsettled == [], events


async def _until_sent(ledger: Any, ids: list[str]) -> None:
    """Wait until most rows were sent at least once (their first answer met the fault)."""
    deadline = asyncio.get_running_loop().time() + 120
    while True:
        sent = await ledger.pool.fetchval(
            "select count(*) from trading_signals where signal_id = any($1::text[]) "
            "and placement_attempts > 0",
            ids,
        )
        if sent >= len(ids) * 0.8 or asyncio.get_running_loop().time() > deadline:
            return
        await asyncio.sleep(0.1)

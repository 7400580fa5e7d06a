"""Every metric ``/metrics`` exposes moves (issue 14): a scripted run against an in-process
``serve`` on the simulator (accepted and filled, denied at intake and at dispatch, rejected by
the broker, unknown after a 429 lockout, a token refused, a WebSocket dropped, the kill switch
thrown), then each tradebridge metric of the registry is checked against what the run did.

The metrics are enumerated from the registry: a metric added later fails this test until the
run moves it and ``EXPECTED`` says by how much (or, for the few that only an outage moves,
``MOVED_ELSEWHERE`` names the test that does).
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client import Gauge

from _support.receivers import HttpReceiver, http_receiver
from _support.runtime import serve_settings, serving, until_final
from tradebridge.obs import metrics
from tradebridge.sim.server import SimServer
from tradebridge.store.embedded import EmbeddedRedis
from tradebridge.store.ledger import Ledger

SECRET = "metrics-movement-test-webhook-secret"
DEMO, DEMO_2, APEX = "DEMO0000001", "DEMO0000002", "PAAPEX1361890000010"

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def _samples() -> Samples:
    """Return every sample of the registry, keyed by name and labels."""
    out: Samples = {}
    for family in metrics.REGISTRY.collect():
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def _value(name: str, **labels: str) -> float | None:
    return metrics.REGISTRY.get_sample_value(name, labels)


def _families() -> dict[str, str]:
    """Return each tradebridge metric family of the registry with its type."""
    return {
        family.name: family.type
        for family in metrics.REGISTRY.collect()
        if family.name.startswith("tradebridge_")
    }


# Every gauge sample is set to this before the run: a gauge that still reads it afterwards
# was never set by the run (a gauge's 0 cannot tell "read: none" from "never read").
SENTINEL = -12345.0


def _gauges() -> dict[str, Gauge]:
    """Return the tradebridge gauges of the metrics module by name, those a scrape computes
    (``set_function``) excepted."""
    return {
        gauge._name: gauge
        for gauge in vars(metrics).values()
        if isinstance(gauge, Gauge)
        and gauge is not metrics.TOKEN_SECONDS_TO_EXPIRY
        and gauge._name.startswith("tradebridge_")
    }


@contextmanager
def _gauges_at_sentinel() -> Iterator[None]:
    """Set every gauge sample there is to ``SENTINEL``; afterwards put back the values of
    samples the run did not set (other tests' labels)."""
    kept: list[tuple[Gauge, dict[str, str], float]] = []
    samples = _samples()
    for name, gauge in _gauges().items():
        for (sample, labels), value in samples.items():
            if sample == name:
                child = gauge.labels(**dict(labels)) if labels else gauge
                kept.append((gauge, dict(labels), value))
                child.set(SENTINEL)
    try:
        yield
    finally:
        after = _samples()
        for gauge, labels, value in kept:
            key = (gauge._name, tuple(sorted(labels.items())))
            if after.get(key) == SENTINEL:
                (gauge.labels(**labels) if labels else gauge).set(value)


class Moved:
    """What the run did to the registry: sums of sample deltas by name and labels."""

    def __init__(self, before: Samples, after: Samples) -> None:
        self.before = before
        self.after = after

    def delta(self, name: str, **labels: str) -> float:
        """Return how much the samples of ``name`` whose labels include ``labels`` grew."""
        total = 0.0
        for (sample, found), value in self.after.items():
            if sample == name and labels.items() <= dict(found).items():
                total += value - self.before.get((sample, found), 0.0)
        return total

    def values(self, name: str, **labels: str) -> list[float]:
        """Return the values of ``name``'s samples whose labels include ``labels``, set by the
        run (the sentinel left out)."""
        return [
            value
            for (sample, found), value in self.after.items()
            if sample == name and labels.items() <= dict(found).items() and value != SENTINEL
        ]


Check = Callable[[Moved], Any]

# The least observations of each step: 6 alerts stored, 7 rows claimed (and the strategy's
# row), 3 submits (filled twice, rejected once; the unknown one is sent too), 2 fills.
STEPS = {"stored": 6, "claimed": 7, "submitted": 3, "answered": 3, "filled": 2, "end_to_end": 2}

# One entry per metric family: a check that returns True (or raises) for what the run did.
# Counters and histograms by the expected amount where the run fixes it, at least once where
# the broker's timing decides (retries, bracket legs, reconnects).
EXPECTED: dict[str, Check] = {
    "tradebridge_signals_claimed": lambda m: m.delta("tradebridge_signals_claimed_total") >= 6,
    "tradebridge_signals_outcome": lambda m: (
        m.delta("tradebridge_signals_outcome_total", outcome="placed") >= 2
        and m.delta("tradebridge_signals_outcome_total", outcome="filled") >= 2
        and m.delta("tradebridge_signals_outcome_total", outcome="denied") == 1
        and m.delta("tradebridge_signals_outcome_total", outcome="rejected") == 1
        and m.delta("tradebridge_signals_outcome_total", outcome="unknown") == 1
        and m.delta("tradebridge_signals_outcome_total", outcome="failed") == 2
    ),
    "tradebridge_placement_seconds": lambda m: m.delta("tradebridge_placement_seconds_count") >= 2,
    "tradebridge_broker_calls": lambda m: (
        (
            m.delta(
                "tradebridge_broker_calls_total", operation="POST /order/placeorder", outcome="ok"
            )
            >= 1
            or m.delta("tradebridge_broker_calls_total", outcome="ok") >= 3
        )
        and m.delta("tradebridge_broker_calls_total", outcome="rejected") >= 2
    ),
    "tradebridge_broker_call_seconds": lambda m: (
        m.delta("tradebridge_broker_call_seconds_count") >= 5
    ),
    "tradebridge_webhook_requests": lambda m: (
        m.delta("tradebridge_webhook_requests_total", outcome="accepted") == 6
        and m.delta("tradebridge_webhook_requests_total", outcome="invalid") == 1
        and m.delta("tradebridge_webhook_requests_total", outcome="unauthorized") == 1
        and m.delta("tradebridge_webhook_requests_total", outcome="kill") == 1
    ),
    "tradebridge_http_refused": lambda m: (
        m.delta("tradebridge_http_refused_total", reason="header_too_large") == 1
    ),
    "tradebridge_workers_running": lambda m: m.values("tradebridge_workers_running") == [1.0],
    "tradebridge_live": lambda m: m.values("tradebridge_live") == [0.0],  # demo, as set
    "tradebridge_kill_switch": lambda m: (
        m.values("tradebridge_kill_switch", scope="global") == [1.0]
    ),
    "tradebridge_risk_day_pnl": lambda m: len(m.values("tradebridge_risk_day_pnl")) >= 1,
    "tradebridge_risk_room": lambda m: (
        m.values("tradebridge_risk_room", account=DEMO, rule="max_orders_per_day")[0] < 50
    ),
    "tradebridge_risk_limit_reached": lambda m: (
        m.values("tradebridge_risk_limit_reached", account=DEMO, rule="daily_loss_limit") == [0.0]
    ),
    "tradebridge_rows_needing_review": lambda m: (
        m.values("tradebridge_rows_needing_review") == [1.0]
    ),
    "tradebridge_unknown_escalations": lambda m: (
        m.delta("tradebridge_unknown_escalations_total", reason="lookup_failing") == 1
    ),
    "tradebridge_step_seconds": lambda m: all(
        m.delta("tradebridge_step_seconds_count", step=step) >= least
        for step, least in STEPS.items()
    ),
    "tradebridge_queue_depth": lambda m: m.values("tradebridge_queue_depth") == [0.0],
    "tradebridge_queue_oldest_age_seconds": lambda m: (
        m.values("tradebridge_queue_oldest_age_seconds") == [0.0]
    ),
    "tradebridge_risk_denials": lambda m: (
        m.delta("tradebridge_risk_denials_total", rule="max_order_qty", stage="intake") == 1
        and m.delta("tradebridge_risk_denials_total", rule="max_order_qty", stage="dispatch") == 1
    ),
    "tradebridge_token_expires_at_seconds": lambda m: (
        len(m.values("tradebridge_token_expires_at_seconds", user="demo")) == 1
        and len(m.values("tradebridge_token_expires_at_seconds", user="apex")) == 1
    ),
    "tradebridge_token_seconds_to_expiry": lambda m: (
        0 < m.values("tradebridge_token_seconds_to_expiry", user="apex")[0] < 86400 * 2
    ),
    "tradebridge_auth_failures": lambda m: (
        m.delta("tradebridge_auth_failures_total", kind="token_refused") >= 1
    ),
    "tradebridge_broker_lockout_answers": lambda m: (
        m.delta("tradebridge_broker_lockout_answers_total", status="429") >= 1
    ),
    "tradebridge_lockouts": lambda m: m.delta("tradebridge_lockouts_total", user="apex") >= 1,
    "tradebridge_websocket_up": lambda m: len(m.values("tradebridge_websocket_up")) >= 1,
    "tradebridge_websocket_connects": lambda m: (
        m.delta("tradebridge_websocket_connects_total") >= 2
    ),
    "tradebridge_websocket_disconnects": lambda m: (
        m.delta("tradebridge_websocket_disconnects_total") >= 1
    ),
    "tradebridge_notifications": lambda m: (
        m.delta("tradebridge_notifications_total", kind="kill_switch", outcome="sent") >= 1
        and m.delta("tradebridge_notifications_total", kind="rejected", outcome="sent") >= 1
    ),
}

# Metrics that only an outage or a bug moves; the test that moves each, by name.
MOVED_ELSEWHERE: dict[str, str] = {
    "tradebridge_row_errors": "tests/tracking/test_outage_database.py (the database away mid-row)",
    "tradebridge_tokens_reseeded": "tests/brokers/test_tokens_redis_restart.py (Redis emptied)",
    "tradebridge_budget_fallback_admissions": "tests/brokers/test_redis_budget.py (Redis down)",
    "tradebridge_tracker_events_dropped": "tests/tracking/test_tracker_drops.py (events that "
    "find no row)",
    "tradebridge_position_unexplained": "tests/tracking/test_position_check.py (a trade by hand)",
}


_NUMBERS = itertools.count(1)


def alert(**fields: Any) -> dict[str, Any]:
    """Return a tradebridge-format alert with the secret (each a new one: not a duplicate)."""
    return {"secret": SECRET, "symbol": "MNQ1!", "action": "buy", "quantity": 1,
            "strategy": f"metrics-{next(_NUMBERS)}", **fields}  # fmt: skip


async def _post(client: httpx.AsyncClient, url: str, body: Mapping[str, Any]) -> httpx.Response:
    return await client.post(url, json=dict(body))


async def _until(predicate: Callable[[], Any], what: str, timeout: float = 30) -> None:
    """Wait until ``predicate()`` (sync or awaitable) is truthy; fail after ``timeout``."""
    deadline = asyncio.get_running_loop().time() + timeout
    while asyncio.get_running_loop().time() < deadline:
        value = predicate()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


async def _status(ledger: Ledger, signal_id: str, status: str) -> bool:
    row = await ledger.get(signal_id)
    return row is not None and row.status.value == status


async def _accepted_id(answer: httpx.Response) -> str:
    assert answer.status_code == 200, answer.text
    ids = answer.json()["signal_ids"]
    assert len(ids) == 1, ids
    return str(ids[0])


@pytest.mark.timeout(240)
async def test_serve_scripted_run_moves_every_metric_by_what_happened(
    monkeypatch: pytest.MonkeyPatch, sim_tokens: SimServer, fresh_db: str,
    redis_server: EmbeddedRedis, tmp_path: Path,
) -> None:  # fmt: skip
    with http_receiver() as receiver:
        monkeypatch.setenv("TRADEBRIDGE_NOTIFY_HOOK_URL", f"json://{receiver.host}/hook")
        await _scripted_run(sim_tokens, fresh_db, redis_server, tmp_path, receiver)


async def _scripted_run(
    sim: SimServer, fresh_db: str, redis_server: EmbeddedRedis, tmp_path: Path,
    receiver: HttpReceiver,
) -> None:  # fmt: skip
    risk = {"trading_hours": "always", "daily_loss_limit": 900, "max_orders_per_day": 50,
            "max_order_qty": 3}  # fmt: skip
    settings = serve_settings(
        sim, fresh_db, redis_server.url, tmp_path, secret=SECRET, risk=risk,
        dispatcher={"reconcile_interval_s": 0.5, "unknown_bound_s": 3, "lookup_attempts": 1,
                    "lookup_backoff_s": 0.05},
        tradovate={"lookup_absent_after_s": 0},
        serve={"risk_state_interval_s": 0.5, "max_header_bytes": 1024},
        notify={"channels": [{"name": "hook"}], "interval_s": 0.1, "rows_window_s": 0,
                "retry_wait_s": 0.05, "retry_max_s": 0.2},
    )  # fmt: skip
    with _gauges_at_sentinel():
        before, after, scraped = await _run(sim, fresh_db, settings, receiver)

    moved = Moved(before, after)
    families = _families()
    unchecked = set(families) - set(EXPECTED) - set(MOVED_ELSEWHERE)
    assert not unchecked, f"metrics without an expectation in this test: {sorted(unchecked)}"
    failed = [name for name, check in EXPECTED.items() if not check(moved)]
    assert not failed, {
        name: {k: v for k, v in after.items() if k[0].startswith(name)} for name in failed
    }
    # Every gauge was set by the run (none still reads the sentinel; those only another test
    # moves aside), and what the registry holds is what /metrics serves.
    unset = [
        name for name in _gauges()
        if name not in MOVED_ELSEWHERE
        and all(v == SENTINEL for (n, _), v in after.items() if n == name)
    ]  # fmt: skip
    assert unset == []
    for name, kind in families.items():
        if name in EXPECTED:
            suffix = "_total" if kind == "counter" else ("_count" if kind == "histogram" else "")
            assert f"\n{name}{suffix}" in scraped, name


async def _run(
    sim: SimServer, fresh_db: str, settings: Any, receiver: HttpReceiver
) -> tuple[Samples, Samples, str]:
    """Run the script; return the samples before and after, and the last scrape."""
    before = _samples()
    async with (
        serving(settings) as found,
        httpx.AsyncClient(timeout=20) as client,
        await Ledger.connect(fresh_db) as ledger,
    ):
        hook = found.webhook_url
        # accepted, then filled (twice: one per user, so both users' tokens are read)
        filled = [
            await _accepted_id(await _post(client, hook, alert(account=name)))
            for name in (DEMO, APEX)
        ]
        for signal_id in filled:
            assert (await until_final(ledger, signal_id)).status.value == "filled"
        # denied by a risk rule at intake (nothing stored) and at dispatch (a strategy's row)
        refused = await _post(client, hook, alert(account=DEMO, quantity=5))
        assert refused.status_code == 400, refused.text
        await ledger.insert_signal(signal_id="too-big", instrument="MNQ1!", side="buy",
                                   quantity=5, account_name=DEMO)  # fmt: skip
        assert (await until_final(ledger, "too-big")).status.value == "denied"
        # refused: a wrong secret
        wrong = await client.post(hook, json={**alert(), "secret": "not-the-secret"})
        assert wrong.status_code == 401
        # rejected by the broker
        faults = sim.ctx.faults
        faults.inject_failure_reason, faults.inject_failure_count = "AccountClosed", 1
        rejected = await _accepted_id(await _post(client, hook, alert(account=DEMO)))
        assert (await until_final(ledger, rejected)).status.value == "rejected"
        # a WebSocket dropped by the broker: reconnected
        connects = _value("tradebridge_websocket_connects_total", user="1")
        (await client.post(f"{sim.url}/_sim/ws/drop")).raise_for_status()
        await _until(
            lambda: _value("tradebridge_websocket_connects_total", user="1") > connects,
            "the user-sync socket to reconnect",
        )
        # unknown: the submit answered RiskCheckTimeout ("look it up first", reference §6.3)
        # and every lookup fails (the routes are gone), so the row stays unknown; past
        # dispatcher.unknown_bound_s it is escalated
        faults.missing_routes = ["order/deps", "order/list"]
        faults.inject_failure_reason, faults.inject_failure_count = "RiskCheckTimeout", 1
        unknown = await _accepted_id(await _post(client, hook, alert(account=DEMO)))
        await _until(lambda: _status(ledger, unknown, "needs_review"), "the unknown row escalated")
        # Orders go again; the lookups still fail, so the row stays for review (one that
        # worked would prove it absent and fail it: escalated only for want of a lookup).
        faults.missing_routes = ["order/deps", "order/list"]
        health = (await client.get(found.healthz_url)).json()
        assert health["checks"]["unresolved_rows"]["count"] == 1, health
        # a lockout: apex answered 429 (the row is never sent, and fails past the bound)
        faults.lockout_429_users = ["apex"]
        locked = await _accepted_id(await _post(client, hook, alert(account=APEX)))
        assert (await until_final(ledger, locked)).status.value == "failed"
        faults.lockout_429_users = []
        # a token the broker refuses (401): every session of the simulator expired
        expired = await client.post(f"{sim.url}/_sim/tokens/expire", params={"rewrite": "false"})
        expired.raise_for_status()
        refused_token = await _accepted_id(await _post(client, hook, alert(account=DEMO_2)))
        assert (await until_final(ledger, refused_token)).status.value == "failed"
        # the kill switch thrown
        killed = await _post(client, hook, {"secret": SECRET, "action": "kill"})
        assert killed.status_code == 200, killed.text
        # a request whose headers are too large: cut off by the guard
        huge = await client.get(found.healthz_url, headers={"x-big": "x" * 4096})
        assert huge.status_code == 400
        # /healthz reads the rows needing review and the tokens; wait for a reconcile round
        # after the queue emptied and for the kill switch to be read.
        await client.get(found.healthz_url)
        await _until(
            lambda: _value("tradebridge_kill_switch", scope="global") == 1.0,
            "the kill switch gauge",
        )
        # The notifications of the rejection and of the kill switch reached the channel.
        titles = ("rejected by the broker", "kill switch on")
        await _until(
            lambda: all(any(t in str(p.body.get("title")) for p in receiver.posts)
                        for t in titles),
            f"the notifications, have {[p.body.get('title') for p in receiver.posts]}",
            timeout=60,
        )  # fmt: skip
        await _until(
            lambda: (
                _value("tradebridge_queue_depth") == 0.0
                and _value("tradebridge_queue_oldest_age_seconds") == 0.0
            ),
            "a reconcile round to read the queue",
        )
        scraped = (await client.get(found.metrics_url)).text
        after = _samples()
    return before, after, scraped

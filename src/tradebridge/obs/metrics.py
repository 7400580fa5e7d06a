"""Prometheus metrics of one tradebridge process, served at ``/metrics``.

Every metric lives in ``REGISTRY`` (not prometheus-client's global one), so that tests and
several in-process servers never collide. The order path records into these objects
directly, e.g. ``SIGNALS_CLAIMED.inc()``, ``SIGNALS_OUTCOME.labels(outcome="denied").inc()``,
``PLACEMENT_SECONDS.observe(seconds)``, ``BROKER_CALLS.labels(dialect, "submit", "ok").inc()``.
Labels stay low-cardinality: never a signal id, an order id or a price.
"""

from __future__ import annotations

from typing import Final

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    generate_latest,
)

REGISTRY: Final = CollectorRegistry(auto_describe=True)
ProcessCollector(registry=REGISTRY)

# Latency buckets from sub-millisecond (loopback simulator) to the broker timeout.
_LATENCY_BUCKETS = (
    0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
)  # fmt: skip

SIGNALS_CLAIMED: Final = Counter(
    "tradebridge_signals_claimed",
    "Ledger rows claimed by a worker of this process.",
    registry=REGISTRY,
)
# outcome: placed (the broker accepted it) | filled | denied (our checks) | rejected (the
# broker said no, to the submit or later) | unknown (answer lost, sent to lookup) | failed |
# cancelled | expired | requeued. placed, denied, unknown and failed are the dispatcher's (the
# submit's outcome); filled, cancelled, expired and a later rejection the tracker's.
SIGNALS_OUTCOME: Final = Counter(
    "tradebridge_signals_outcome",
    "Ledger rows by the status this process moved them to.",
    ["outcome"],
    registry=REGISTRY,
)
SIGNALS_PLACED: Final = SIGNALS_OUTCOME.labels(outcome="placed")
SIGNALS_DENIED: Final = SIGNALS_OUTCOME.labels(outcome="denied")
SIGNALS_REJECTED: Final = SIGNALS_OUTCOME.labels(outcome="rejected")
SIGNALS_UNKNOWN: Final = SIGNALS_OUTCOME.labels(outcome="unknown")
SIGNALS_FAILED: Final = SIGNALS_OUTCOME.labels(outcome="failed")
SIGNALS_FILLED: Final = SIGNALS_OUTCOME.labels(outcome="filled")

# reason: ambiguous (orders that may be ours, none provably), lookup_failing (past the bound),
# order_owned (the match belongs to another row), bound (unresolved past the bound).
UNKNOWN_ESCALATIONS: Final = Counter(
    "tradebridge_unknown_escalations",
    "Unknown rows escalated to needs_review, by reason.",
    ["reason"],
    registry=REGISTRY,
)
ROWS_NEEDING_REVIEW: Final = Gauge(
    "tradebridge_rows_needing_review",
    "Ledger rows in needs_review, or unknown past dispatcher.unknown_bound_s (last check).",
    registry=REGISTRY,
)

PLACEMENT_SECONDS: Final = Histogram(
    "tradebridge_placement_seconds",
    "From the row's insert (created_at) to the broker's answer to the submit.",
    buckets=_LATENCY_BUCKETS,
    registry=REGISTRY,
)
# Labelled by dialect, operation (the method and path, ids as {id}: brokers/http.py
# operation_of) and outcome: ok (2xx), penalty (a p-ticket), rejected (4xx), error (5xx or
# no answer).
BROKER_CALLS: Final = Counter(
    "tradebridge_broker_calls",
    "Requests to the broker by dialect, operation and outcome.",
    ["dialect", "operation", "outcome"],
    registry=REGISTRY,
)
BROKER_CALL_SECONDS: Final = Histogram(
    "tradebridge_broker_call_seconds",
    "Duration of requests to the broker.",
    ["dialect", "operation"],
    buckets=_LATENCY_BUCKETS,
    registry=REGISTRY,
)
# Labelled by outcome: accepted, duplicate, refused (auth, ip, stale, malformed), error.
WEBHOOK_REQUESTS: Final = Counter(
    "tradebridge_webhook_requests",
    "Webhook requests by outcome.",
    ["outcome"],
    registry=REGISTRY,
)
# Connections the HTTP server cut off or turned away (runtime/http_guard.py), by reason:
# headers_timeout, body_timeout (a slow client: 408), header_too_large (400),
# per_address_cap (429 at connect).
HTTP_REFUSED: Final = Counter(
    "tradebridge_http_refused",
    "HTTP connections cut off or turned away by the slow-client guard.",
    ["reason"],
    registry=REGISTRY,
)
# Labelled by reason: no_row (nothing matched after the retry), other_order (our client id
# names a row that holds another broker order, e.g. a stale duplicate), row_not_open (the
# order's row is neither open nor final, e.g. needs_review), error (the retry failed),
# shutdown (the tracker stopped before the retry); and two that lose nothing:
# row_final (a late event of a finished row), bracket_leg (a leg's event; legs have no row).
TRACKER_EVENTS_DROPPED: Final = Counter(
    "tradebridge_tracker_events_dropped",
    "Broker order events the tracker dropped after its one retry; reconcile has the rest.",
    ["reason"],
    registry=REGISTRY,
)
# kind: internal (a bug: the row is retried after a growing wait, never ended for it) |
# database (the database went away mid-row: the row is recovered once it is back) |
# claim_lost (the row was taken over meanwhile: it is left to its new owner).
ROW_ERRORS: Final = Counter(
    "tradebridge_row_errors",
    "Rows whose placement an unexpected error interrupted; none is ended by it.",
    ["kind"],
    registry=REGISTRY,
)
# user: the Tradovate user whose token keys had vanished from Redis and were written again.
TOKENS_RESEEDED: Final = Counter(
    "tradebridge_tokens_reseeded",
    "Times a token was written to Redis again because its key had vanished (Redis emptied).",
    ["user"],
    registry=REGISTRY,
)
# Admissions the request budget made from its local share while Redis was unreachable
# (tradovate.budget_on_redis_error = local); they are charged to Redis once it answers.
BUDGET_FALLBACK_ADMISSIONS: Final = Counter(
    "tradebridge_budget_fallback_admissions",
    "Broker requests admitted by this process's share of the budget while Redis was down.",
    registry=REGISTRY,
)
WORKERS_RUNNING: Final = Gauge(
    "tradebridge_workers_running",
    "Dispatchers running in this process.",
    registry=REGISTRY,
)
# 1 makes LIVE plain to dashboards and alerts: this process sends orders that trade real money.
LIVE: Final = Gauge(
    "tradebridge_live",
    "1 when this process trades on Tradovate's live environment (real money), else 0 (demo).",
    registry=REGISTRY,
)
# scope: global (every account; 1 also while [risk] kill_switch forces it) or account:NAME
# (that account's own switch), for each configured account and each switch ever thrown.
KILL_SWITCH: Final = Gauge(
    "tradebridge_kill_switch",
    "1 while the kill switch of this scope is on (as this process last read the database).",
    ["scope"],
    registry=REGISTRY,
)

# Each configured account's standing against its risk rules (runtime/risk_watch.py), from the
# last balance a worker read and the ledger's counts; the P&L is absent until the trading
# day's first balance reading.
RISK_DAY_PNL: Final = Gauge(
    "tradebridge_risk_day_pnl",
    "The account's P&L in its trading day (dollars, realized and open) as last read.",
    ["account"],
    registry=REGISTRY,
)
RISK_ROOM: Final = Gauge(
    "tradebridge_risk_room",
    "Room left under a risk limit before it stops new entries (dollars, or orders).",
    ["account", "rule"],
    registry=REGISTRY,
)
RISK_REACHED: Final = Gauge(
    "tradebridge_risk_limit_reached",
    "1 while this risk limit stops the account's new entries, else 0.",
    ["account", "rule"],
    registry=REGISTRY,
)


def render() -> tuple[bytes, str]:
    """Return the current metrics in the Prometheus text format, with its content type."""
    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST


# Notifications (runtime/notify.py): each message's delivery to each channel, by kind
# (domain/notices.py NoticeKind) and outcome: sent, failed (every attempt failed), dropped (the
# channel's queue was full).
NOTIFICATIONS: Final = Counter(
    "tradebridge_notifications",
    "Notification deliveries to channels, by kind and outcome.",
    ["kind", "outcome"],
    registry=REGISTRY,
)

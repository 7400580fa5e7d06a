"""Prometheus metrics of one tradebridge process, served at ``/metrics``.

Every metric lives in ``REGISTRY`` (not prometheus-client's global one), so that tests and
several in-process servers never collide. The order path records into these objects
directly, e.g. ``SIGNALS_CLAIMED.inc()``, ``SIGNALS_OUTCOME.labels(outcome="denied").inc()``,
``PLACEMENT_SECONDS.observe(seconds)``, ``BROKER_CALLS.labels(dialect, "submit", "ok").inc()``.
Labels stay low-cardinality: never a signal id, an order id or a price.
"""

from __future__ import annotations

import time
from datetime import datetime
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
    "From a worker taking up a claimed row to its placement's outcome, written (placed rows).",
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


# --- the order path step by step (issue 14) ------------------------------------------------
# step: stored (the webhook received the alert → its rows committed; webhook alerts only) |
# claimed (the row's insert → a worker's claim) | submitted (claim → the row committed
# submitted, i.e. validate, risk and the broker reads before the send) | answered (submitted →
# the broker's answer to the submit, whatever it was) | filled (the answer → the fill that
# completed the row, as the tracker applied it) | end_to_end (the row's insert → its fill).
# Each is observed where the step happens, from timestamps the row already carries (the
# database's clock on both ends) or from the process's own clock: no query of its own.
STEP_SECONDS: Final = Histogram(
    "tradebridge_step_seconds",
    "Time a signal spent in each step of the order path.",
    ["step"],
    buckets=_LATENCY_BUCKETS,
    registry=REGISTRY,
)
# Rows waiting to be claimed (status pending) and the age of the oldest, read once per
# reconcile round (dispatcher.reconcile_interval_s) by the process that tracks orders.
QUEUE_DEPTH: Final = Gauge(
    "tradebridge_queue_depth",
    "Ledger rows waiting to be claimed (pending), as last read.",
    registry=REGISTRY,
)
QUEUE_OLDEST_AGE: Final = Gauge(
    "tradebridge_queue_oldest_age_seconds",
    "Age of the oldest pending ledger row (0 when none), as last read.",
    registry=REGISTRY,
)
# Per account and contract, the position at the broker that tradebridge's fills do not explain
# while a divergence holds (0 otherwise; docs/dispatcher.md "Positions"), read from the ledger
# once per reconcile round by every process that reconciles, whoever checked.
POSITION_UNEXPLAINED: Final = Gauge(
    "tradebridge_position_unexplained",
    "Contracts held at the broker that tradebridge's orders do not explain, while diverged.",
    ["account", "contract"],
    registry=REGISTRY,
)
# rule: the risk rule that said no (docs/risk.md: kill_switch, daily_loss, max_position, ...);
# stage: intake (the webhook refused the alert, nothing stored) | dispatch (the row denied).
RISK_DENIALS: Final = Counter(
    "tradebridge_risk_denials",
    "Orders a risk rule refused, by rule and stage.",
    ["rule", "stage"],
    registry=REGISTRY,
)
# user: the Tradovate user (the token's owner). The expiry of the token this process last
# read or obtained; seconds_to_expiry is computed from it at each scrape.
TOKEN_EXPIRES_AT: Final = Gauge(
    "tradebridge_token_expires_at_seconds",
    "Expiry (Unix time) of the Tradovate user's token this process last read or obtained.",
    ["user"],
    registry=REGISTRY,
)
TOKEN_SECONDS_TO_EXPIRY: Final = Gauge(
    "tradebridge_token_seconds_to_expiry",
    "Seconds until the Tradovate user's token expires (negative: expired), at scrape time.",
    ["user"],
    registry=REGISTRY,
)
# kind: token_refused (a broker call, or the user-sync socket's authorize, answered 401) |
# login_refused (a login the broker refused: wrong credentials, a captcha p-ticket).
AUTH_FAILURES: Final = Counter(
    "tradebridge_auth_failures",
    "Authentication failures against the broker, by dialect and kind.",
    ["dialect", "kind"],
    registry=REGISTRY,
)
# Answers 423 (locked) and 429 (too many requests): Tradovate's lockouts (reference §6.2).
BROKER_LOCKOUT_ANSWERS: Final = Counter(
    "tradebridge_broker_lockout_answers",
    "Broker answers that lock the user out (HTTP 423 or 429), by dialect and status.",
    ["dialect", "status"],
    registry=REGISTRY,
)
# Lockouts this process recorded for a user (an answer 423/429, a p-ticket, the login cap):
# no call to Tradovate for that user until it ends.
LOCKOUTS: Final = Counter(
    "tradebridge_lockouts",
    "Lockouts recorded for a Tradovate user by this process.",
    ["user"],
    registry=REGISTRY,
)
# user: the Tradovate user id of the native user-sync socket (reference §8).
WEBSOCKET_UP: Final = Gauge(
    "tradebridge_websocket_up",
    "1 while the user-sync WebSocket of this user is connected and synced, else 0.",
    ["user"],
    registry=REGISTRY,
)
WEBSOCKET_CONNECTS: Final = Counter(
    "tradebridge_websocket_connects",
    "User-sync WebSocket connections opened (the first, then each reconnect).",
    ["user"],
    registry=REGISTRY,
)
WEBSOCKET_DISCONNECTS: Final = Counter(
    "tradebridge_websocket_disconnects",
    "User-sync WebSocket sessions that ended (lost, refused, or closed by the server).",
    ["user"],
    registry=REGISTRY,
)

# Expiry per user for TOKEN_SECONDS_TO_EXPIRY, which is computed when scraped.
_TOKEN_EXPIRY: dict[str, float] = {}


def observe_step(step: str, seconds: float) -> None:
    """Record the time a signal spent in ``step`` (``STEP_SECONDS``); negative is 0."""
    STEP_SECONDS.labels(step=step).observe(max(seconds, 0.0))


def observe_token(user: str | None, expires_at: datetime) -> None:
    """Record the expiry of ``user``'s token (``TOKEN_EXPIRES_AT``, ``..._TO_EXPIRY``)."""
    if not user:
        return
    at = expires_at.timestamp()
    if _TOKEN_EXPIRY.get(user) == at:
        return
    known = user in _TOKEN_EXPIRY
    _TOKEN_EXPIRY[user] = at
    TOKEN_EXPIRES_AT.labels(user=user).set(at)
    if not known:
        TOKEN_SECONDS_TO_EXPIRY.labels(user=user).set_function(
            lambda: _TOKEN_EXPIRY[user] - time.time()
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

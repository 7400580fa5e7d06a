"""The Postgres ledger: ``trading_signals`` as queue and status row, with its audit tables.

Strategies insert rows; workers ``claim_next`` them with ``FOR UPDATE SKIP LOCKED``, at most
the oldest pending row per account and none of an account that already has a row in flight,
so one account's orders are placed in insertion order while accounts proceed in parallel.
Every ``transition`` writes the row, an ``order_history`` event and, optionally, the
``broker_calls`` audit in one transaction. Illegal moves are refused here (``IllegalTransition``)
before anything is written, and again by the table's trigger whoever writes.
``listen`` is a wake-up hint only: nothing may depend on a notification arriving.
The lifecycle is drawn in docs/ledger.md.

Every SQL statement of the bridge is in this package, one module per concern; ``Ledger`` is
assembled from them:

* ``rows``: the row types, and how a database record becomes one;
* ``errors``: the driver's errors translated into the bridge's;
* ``pool``: the pool, its connections, transactions and the per-account locks;
* ``intake``: a strategy's signal, a webhook alert and its rows;
* ``claims``: claiming rows for the dispatcher, handing them back, dead workers' rows;
* ``moves``: status moves with their event and broker call; a row and its events read back;
* ``calls``: the ``broker_calls`` audit;
* ``tracking``: what the tracker asks (the row of a broker event, its fills);
* ``lookups``: what resolving an unknown outcome asks (submits, plans, baselines);
* ``review``: what reconcile and an operator ask (unknown, needs_review and idle rows);
* ``sessions``: connections of their own (session locks, notifications);
* ``kill``: the kill switches, and the flatten rows a kill queues;
* ``risk``: what the pre-trade rules ask (an account's activity, its balance marks);
* ``views``: what an operator reads (signals by filter, the alert a signal came from);
* ``notifications``: what the notifier told, once between the workers (conditions, rows);
* ``positions``: reconcile's position check (what tradebridge's fills explain, what not).
"""

from __future__ import annotations

from tradebridge.config import DatabaseConfig
from tradebridge.domain.calls import BrokerCall
from tradebridge.store.ledger import claims, fast_moves, intake, risk, tracking
from tradebridge.store.ledger.calls import BrokerCalls
from tradebridge.store.ledger.claims import Claims
from tradebridge.store.ledger.dashboard import DashboardQueries
from tradebridge.store.ledger.errors import database_unavailable, store_errors
from tradebridge.store.ledger.intake import ALERT_LOCK_NAMESPACE, Intake
from tradebridge.store.ledger.kill import KILL_CHANNEL, KillSwitchQueries
from tradebridge.store.ledger.lookups import Lookups
from tradebridge.store.ledger.moves import Moves
from tradebridge.store.ledger.notifications import NotificationQueries
from tradebridge.store.ledger.pool import (
    ACCOUNT_LOCK_NAMESPACE,
    Conn,
    lock_account,
    open_pool,
    try_lock_account,
)
from tradebridge.store.ledger.positions import PositionCheck, PositionQueries, PositionTurn
from tradebridge.store.ledger.review import Review
from tradebridge.store.ledger.risk import RiskActivity, RiskOverview, RiskQueries
from tradebridge.store.ledger.rows import (
    HistoryEvent,
    InsertResult,
    LedgerRow,
    NewAlert,
    NewSignal,
    RecordedBrokerCall,
    RequeueResult,
)
from tradebridge.store.ledger.sessions import NOTIFY_CHANNEL, Sessions
from tradebridge.store.ledger.tracking import EventRow, TrackerQueries
from tradebridge.store.ledger.views import StoredAlert, Views

__all__ = [
    "ACCOUNT_LOCK_NAMESPACE",
    "ALERT_LOCK_NAMESPACE",
    "KILL_CHANNEL",
    "NOTIFY_CHANNEL",
    "STATEMENT_TIMEOUT_S",
    "BrokerCall",
    "Conn",
    "EventRow",
    "HistoryEvent",
    "InsertResult",
    "Ledger",
    "LedgerRow",
    "NewAlert",
    "NewSignal",
    "PositionCheck",
    "PositionTurn",
    "RecordedBrokerCall",
    "RequeueResult",
    "RiskActivity",
    "RiskOverview",
    "StoredAlert",
    "database_unavailable",
    "lock_account",
    "store_errors",
    "try_lock_account",
]


# The order path's statements: an alert's insert, the claim, an entry's risk counts, the
# moves, a broker event's row. Prepared by each new connection of a warm pool.
HOT_STATEMENTS: tuple[str, ...] = (
    *intake.HOT_STATEMENTS, *claims.HOT_STATEMENTS, *risk.HOT_STATEMENTS,
    *fast_moves.HOT_STATEMENTS, *tracking.HOT_STATEMENTS,
)  # fmt: skip


STATEMENT_TIMEOUT_S: float = DatabaseConfig.model_fields["statement_timeout_s"].default
"""The longest a ledger statement may take by default (``database.statement_timeout_s``'s
default, written once, in the settings)."""


class Ledger(
    Intake, Claims, Moves, BrokerCalls, TrackerQueries, Lookups, Review, Sessions,
    KillSwitchQueries, RiskQueries, Views, NotificationQueries, PositionQueries,
    DashboardQueries,
):  # fmt: skip
    """The ledger over an asyncpg pool; one per process."""

    @classmethod
    async def connect(
        cls,
        url: str,
        *,
        min_size: int = 1,
        max_size: int = 10,
        connect_timeout_s: float = 10.0,
        statement_timeout_s: float | None = STATEMENT_TIMEOUT_S,
        warm: bool = False,
    ) -> Ledger:
        """Open a pool on ``url``; ``DatabaseUnavailable`` if it cannot be reached.

        ``statement_timeout_s``: no statement waits longer (``open_pool``); None: no limit.

        ``warm``: each new connection prepares the statements of the order path first
        (``open_pool``), for a process that places orders or takes alerts.
        """
        pool = await open_pool(
            url, min_size=min_size, max_size=max_size, connect_timeout_s=connect_timeout_s,
            statement_timeout_s=statement_timeout_s, warm=HOT_STATEMENTS if warm else (),
        )  # fmt: skip
        return cls(pool, url)

"""The Postgres ledger: ``trading_signals`` as queue and status row, with its audit tables.

Strategies insert rows; workers ``claim_next`` them with ``FOR UPDATE SKIP LOCKED``, at most
the oldest pending row per account and none of an account that already has a row in flight,
so one account's orders are placed in insertion order while accounts proceed in parallel.
Every ``transition`` writes the row, an ``order_history`` event and, optionally, the
``broker_calls`` audit in one transaction. Illegal moves are refused here (``IllegalTransition``)
before anything is written, and again by the table's trigger whoever writes.
``listen`` is a wake-up hint only: nothing may depend on a notification arriving.
The lifecycle is drawn in docs/ledger.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from enum import Enum
from typing import Any, Self, TypeAlias

import asyncpg
from asyncpg.pool import PoolConnectionProxy

from tradebridge._aio import reraise_if_cancelling
from tradebridge.domain.lifecycle import (
    FINAL_STATUSES,
    SignalStatus,
    check_move,
)
from tradebridge.errors import (
    ContentRefused,
    DatabaseUnavailable,
    IllegalTransition,
    InvalidInput,
    OrderOwned,
    StoreError,
)
from tradebridge.obs.logging import get_logger
from tradebridge.store.migrate import connect, unavailable

_log = get_logger("tradebridge.store.ledger")

NOTIFY_CHANNEL = "tradebridge_signals"
# Namespace of the per-account advisory locks (two-int form, so it never meets the
# single-bigint migration lock).
ACCOUNT_LOCK_NAMESPACE = 0x7462  # 'tb'
_ILLEGAL_MOVE_SQLSTATE = "TB409"
# One ledger row per broker order (0004_exactly_once.sql).
_ORDER_OWNER_INDEX = "trading_signals_account_order_key"
# An account's other rows sent and unresolved, with the plan and baseline of their submits.
_SENT_ROWS_SQL = """
select s.signal_id, s.last_attempt_at,
       (select h.detail from order_history h
         where h.signal_id = s.signal_id and h.event = 'submitted'
         order by h.id desc limit 1) as plan,
       (select h.detail -> 'baseline' from order_history h
         where h.signal_id = s.signal_id and h.event in ('submitted', 'resubmitted')
           and h.detail ? 'baseline'
         order by h.id desc limit 1) as baseline
  from trading_signals s
 where s.account_name = $1 and s.signal_id <> $2
   and s.status in ('submitted', 'unknown', 'needs_review')
"""

# What a lost, stopping or restarting database raises: the operation may be tried again once
# it is back (asyncpg's connection errors are InterfaceError or 08xxx; a server shutting
# down or starting up answers 57P01..57P03; a refused connection is an OSError; a pooled
# connection the server terminated while it was idle fails its next statement with
# InternalClientError "cannot switch to state …").
_UNAVAILABLE: tuple[type[BaseException], ...] = (
    OSError,
    TimeoutError,
    DatabaseUnavailable,
    asyncpg.InterfaceError,
    asyncpg.InternalClientError,
    asyncpg.PostgresConnectionError,
    asyncpg.OperatorInterventionError,
    asyncpg.TooManyConnectionsError,
)


def database_unavailable(error: BaseException) -> bool:
    """Return whether ``error`` says the database could not be reached (not a bad statement).

    ``QueryCanceledError`` (a statement timeout) is an operator intervention by code but a
    property of the statement, so it is not counted.
    """
    return isinstance(error, _UNAVAILABLE) and not isinstance(error, asyncpg.QueryCanceledError)


@contextlib.contextmanager
def store_errors() -> Iterator[None]:
    """Translate the driver's errors into the bridge's, once, here.

    Class 22 data exceptions and class 54 limits are ``ContentRefused`` (the input's fault);
    a lost or unreachable database is ``DatabaseUnavailable``; any other database error is a
    ``StoreError``. Messages carry the kind of error only: PostgreSQL's may quote a value.
    """
    try:
        yield
    except StoreError:
        raise
    except (asyncpg.DataError, asyncpg.exceptions.ProgramLimitExceededError) as e:
        raise ContentRefused(f"the database refused the contents ({type(e).__name__})") from e
    except _UNAVAILABLE as e:
        raise DatabaseUnavailable(f"the database is unavailable ({type(e).__name__})") from e
    except (asyncpg.PostgresError, asyncpg.InterfaceError) as e:
        raise StoreError(f"the database failed ({type(e).__name__})") from e


# A connection of its own or one borrowed from the pool (a string: the runtime classes are
# not subscriptable, only their stubs are).
Conn: TypeAlias = "asyncpg.Connection[asyncpg.Record] | PoolConnectionProxy[asyncpg.Record]"


@dataclass(frozen=True, slots=True)
class LedgerRow:
    """One ``trading_signals`` row as tradebridge reads it (strategy fields stay raw)."""

    signal_id: str
    seq: int
    status: SignalStatus
    strategy_name: str | None
    instrument: str | None
    side: str | None
    order_type: str | None
    quantity: Decimal | None
    price: Decimal | None
    stop_price: Decimal | None
    stop_loss: Decimal | None
    take_profit: Decimal | None
    time_in_force: str | None
    account_name: str | None
    account_id: str | None
    metadata: Any
    source: str | None
    group_id: str | None
    client_order_id: str | None
    tradovate_order_id: str | None
    error_message: str | None
    placement_attempts: int
    last_attempt_at: datetime | None
    filled_qty: Decimal
    avg_fill_price: Decimal | None
    claimed_by: str | None
    claimed_at: datetime | None
    ts_claimed: datetime | None
    ts_submitted: datetime | None
    ts_accepted: datetime | None
    ts_final: datetime | None
    created_at: datetime | None
    updated_at: datetime | None
    # The intent columns (0002_intents); defaults where a ledger predates them.
    intent: str | None = None
    target_position: Decimal | None = None
    stop_loss_ticks: int | None = None
    take_profit_ticks: int | None = None
    reference_price: Decimal | None = None
    # The scale-out columns (0005_scale_out).
    take_profits: Any = None
    trailing_stop_ticks: int | None = None
    breakeven: bool | None = None

    @property
    def is_final(self) -> bool:
        """Return whether nothing more can happen to the row."""
        return self.status in FINAL_STATUSES

    @classmethod
    def from_record(cls, record: asyncpg.Record) -> Self:
        """Build a row from a database record; legacy column types are normalised."""
        raw_status = record["status"]
        try:
            status = SignalStatus(raw_status)
        except ValueError:
            raise InvalidInput(
                f"signal {record['signal_id']}: status {raw_status!r} is not one of tradebridge's",
                field="status",
            ) from None
        return cls(
            signal_id=str(record["signal_id"]),
            seq=int(record["seq"]),
            status=status,
            strategy_name=_text(record["strategy_name"]),
            instrument=_text(record["instrument"]),
            side=_text(record["side"]),
            order_type=_text(record["order_type"]),
            quantity=_decimal(record["quantity"]),
            price=_decimal(record["price"]),
            stop_price=_decimal(record["stop_price"]),
            stop_loss=_decimal(record["stop_loss"]),
            take_profit=_decimal(record["take_profit"]),
            time_in_force=_text(record["time_in_force"]),
            account_name=_text(record["account_name"]),
            account_id=_text(record["account_id"]),
            metadata=record["metadata"] if record["metadata"] is not None else {},
            source=_text(record["source"]),
            group_id=_text(record["group_id"]),
            client_order_id=_text(record["client_order_id"]),
            tradovate_order_id=_text(record["tradovate_order_id"]),
            error_message=_text(record["error_message"]),
            placement_attempts=int(record["placement_attempts"] or 0),
            last_attempt_at=_aware(record["last_attempt_at"]),
            filled_qty=_decimal(record["filled_qty"]) or Decimal(0),
            avg_fill_price=_decimal(record["avg_fill_price"]),
            claimed_by=_text(record["claimed_by"]),
            claimed_at=_aware(record["claimed_at"]),
            ts_claimed=_aware(record["ts_claimed"]),
            ts_submitted=_aware(record["ts_submitted"]),
            ts_accepted=_aware(record["ts_accepted"]),
            ts_final=_aware(record["ts_final"]),
            created_at=_aware(record["created_at"]),
            updated_at=_aware(record["updated_at"]),
            intent=_text(record.get("intent")),
            target_position=_decimal(record.get("target_position")),
            stop_loss_ticks=_int(record.get("stop_loss_ticks")),
            take_profit_ticks=_int(record.get("take_profit_ticks")),
            reference_price=_decimal(record.get("reference_price")),
            take_profits=record.get("take_profits"),
            trailing_stop_ticks=_int(record.get("trailing_stop_ticks")),
            breakeven=record.get("breakeven"),
        )


@dataclass(frozen=True, slots=True)
class HistoryEvent:
    """One ``order_history`` event."""

    id: int
    signal_id: str
    event: str
    detail: Any
    created_at: datetime


@dataclass(frozen=True, slots=True)
class BrokerCall:
    """One broker request and its answer, already redacted by whoever records it."""

    dialect: str
    method: str
    path: str
    status: int | None = None
    latency_ms: float | None = None
    request: Any = None
    response: Any = None
    error: str | None = None


@dataclass(frozen=True, slots=True)
class RecordedBrokerCall:
    """A ``broker_calls`` row."""

    id: int
    signal_id: str | None
    call: BrokerCall
    created_at: datetime


@dataclass(frozen=True, slots=True)
class RequeueResult:
    """What ``requeue_stale`` did: rows handed back, rows left in flight for a lookup."""

    requeued: tuple[str, ...]
    marked_unknown: tuple[str, ...]
    awaiting_lookup: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class NewSignal:
    """One ``trading_signals`` row to insert with an alert (``Ledger.insert_alert``)."""

    signal_id: str
    account_name: str
    instrument: str | None
    intent: str = "order"
    side: str | None = None
    quantity: Decimal | None = None
    order_type: str | None = None
    price: Decimal | None = None
    stop_price: Decimal | None = None
    stop_loss: Decimal | None = None
    take_profit: Decimal | None = None
    stop_loss_ticks: int | None = None
    take_profit_ticks: int | None = None
    time_in_force: str | None = None
    target_position: Decimal | None = None
    reference_price: Decimal | None = None
    take_profits: list[dict[str, int]] | None = None
    trailing_stop_ticks: int | None = None
    breakeven: bool | None = None
    strategy_name: str | None = None
    metadata: Mapping[str, Any] | None = None
    source: str = "webhook"
    group_id: str | None = None
    # 'pending' to trade; 'denied' (with error_message) to record without trading.
    status: SignalStatus = SignalStatus.PENDING
    error_message: str | None = None


@dataclass(frozen=True, slots=True)
class NewAlert:
    """One ``webhook_alerts`` row: the redacted alert and how to recognise a repeat of it.

    ``idempotency_key`` dedupes forever (unique in the table); without one, ``body_sha256``
    dedupes within ``dedupe_window`` of ``received_at``.
    """

    received_at: datetime
    format: str
    outcome: str  # 'accepted' | 'stale' | 'invalid'
    payload: Any = None
    idempotency_key: str | None = None
    body_sha256: str | None = None
    dedupe_window: timedelta | None = None
    source_ip: str | None = None
    fired_at: datetime | None = None
    group_id: str | None = None
    error: str | None = None


@dataclass(frozen=True, slots=True)
class InsertResult:
    """What ``insert_alert`` did: stored the alert, or found the first delivery of it."""

    duplicate: bool
    alert_id: int
    signal_ids: tuple[str, ...]
    group_id: str | None
    outcome: str
    received_at: datetime


# The oldest pending row of each account (heads of the per-account queues) whose account has
# nothing being sent (processing, submitted) and, unless the head is a plain order, no unknown
# row within the bound (docs/dispatcher.md "Unknown outcomes"). A head locked by another
# claimer is skipped, and the row behind it is not a head yet, so an account never has two
# claimers at once. Behind each head we locked, the
# next $3 - 1 pending rows of its account (followers) are claimed too, in the same statement:
# whoever claims an account's rows holds its head's lock, so a follower can only be claimed by
# the holder of its head (a claimer that committed first made the account busy, one that has
# not committed holds the head, and a head claimed meanwhile fails the recheck of its status).
# Claim, 'processing' and the 'claimed' events are one statement: one round trip.
_CLAIM_SQL = """
with heads as (
    select s.seq, s.account_name, s.created_at
      from trading_signals s
     where s.status = 'pending'
       and s.signal_id is not null
       -- NOT IN over a small set becomes one hashed subplan, where NOT EXISTS under the
       -- LIMIT would compare every pending row with every busy account.
       and (s.account_name is null or s.account_name not in (
           select f.account_name from trading_signals f
            where f.status in ('processing', 'submitted')
              and f.account_name is not null))
       -- An unknown row younger than the bound ($4) holds back the intents that depend on
       -- the position or working orders (everything but a plain order), or every row ($5).
       and (s.account_name is null
            or (coalesce(s.intent, 'order') = 'order' and not $5::boolean)
            or s.account_name not in (
                select u.account_name from trading_signals u
                 where u.status = 'unknown' and u.account_name is not null
                   and coalesce(u.last_attempt_at, u.updated_at) > now() - $4::interval))
       and not exists (
           select 1 from trading_signals o
            where o.account_name = s.account_name and o.status = 'pending'
              and (o.created_at, o.seq) < (s.created_at, s.seq))
     order by s.created_at, s.seq
     limit $2
       for update of s skip locked
), picked as (
    select seq from heads
    union all
    select f.seq
      from heads h
      cross join lateral (
          select n.seq from trading_signals n
           where n.account_name = h.account_name and n.status = 'pending'
             and n.signal_id is not null
             and (n.created_at, n.seq) > (h.created_at, h.seq)
           order by n.created_at, n.seq
           limit greatest($3::int - 1, 0)) f
), claimed as (
    update trading_signals t
       set status = 'processing', claimed_by = $1, claimed_at = now()
      from picked
     where t.seq = picked.seq and t.status = 'pending'
    returning t.*
), events as (
    insert into order_history (signal_id, event, detail)
    select signal_id, 'claimed', jsonb_build_object('worker', $1::text) from claimed
)
select * from claimed order by created_at, seq
"""

# Only rows still 'processing' under this worker's claim: nothing of theirs was sent.
_HAND_BACK_SQL = """
with back as (
    update trading_signals set status = 'pending'
     where signal_id = any($1::text[]) and status = 'processing' and claimed_by = $2
    returning signal_id
), events as (
    insert into order_history (signal_id, event, detail)
    select signal_id, 'requeued',
           jsonb_build_object('from', 'processing', 'to', 'pending', 'reason', $3::text)
      from back
)
select signal_id from back
"""

_INSERT_SQL = """
insert into trading_signals (
    signal_id, strategy_name, instrument, side, order_type, quantity, price, stop_loss,
    take_profit, account_name, metadata, stop_price, time_in_force, source, group_id,
    intent, target_position, stop_loss_ticks, take_profit_ticks, reference_price
) values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, coalesce($14, 'db'), $15,
          coalesce($16, 'order'), $17, $18, $19, $20)
returning *
"""

# The SET list of a move, shared by the slow and the fast path so both write the same
# columns from the same parameters ($2 the status, $3..$8 _Move.fields); fields passed as
# NULL keep their value. The statements below are composed of module constants only (no
# input reaches their text), hence the S608 exemptions.
_MOVE_SET = """status = $2,
       account_id = coalesce($3, account_id),
       client_order_id = coalesce($4, client_order_id),
       tradovate_order_id = coalesce($5, tradovate_order_id),
       error_message = coalesce($6, error_message),
       filled_qty = coalesce($7, filled_qty),
       avg_fill_price = coalesce($8, avg_fill_price)"""

_TRANSITION_SQL = f"""
update trading_signals
   set {_MOVE_SET}
 where signal_id = $1
returning *
"""  # noqa: S608

# A move from a known status in ONE statement (one round trip, atomic by itself): the row
# moves only if it still has the expected status (and claim, when an owner is given); its
# event and broker call are written from the row it returns. No row back: the slow path
# (_apply_move) finds out why, under a row lock, and raises the precise error.
_FAST_MOVE_SQL = f"""
with moved as (
    update trading_signals
       set {_MOVE_SET}
     where signal_id = $1 and status = $9 and ($10::text is null or claimed_by = $10)
    returning *
), event as (
    insert into order_history (signal_id, event, detail)
    select signal_id, $11::text, $12::jsonb from moved
), call as (
    insert into broker_calls (signal_id, dialect, method, path, status, latency_ms, request,
                              response, error)
    select signal_id, $13::text, $14::text, $15::text, $16::int, $17::float8, $18::jsonb,
           $19::jsonb, $20::text
      from moved
     where $13::text is not null
)
select * from moved
"""  # noqa: S608

_REQUEUE_SQL = """
update trading_signals set status = 'pending'
 where status = 'processing'
   and (claimed_at < now() - $1::interval or claimed_by = $2)
returning signal_id
"""
_MARK_UNKNOWN_SQL = """
update trading_signals
   set status = 'unknown', error_message = 'worker lost during submit; awaiting lookup'
 where status = 'submitted'
   and (claimed_at < now() - $1::interval or claimed_by = $2)
returning signal_id
"""
_AWAITING_LOOKUP_SQL = """
select signal_id from trading_signals
 where status = 'unknown'
   and (claimed_at < now() - $1::interval or claimed_by = $2)
 order by created_at, seq
"""


# Namespace of the webhook's per-alert advisory locks (two-int form, like the account locks).
ALERT_LOCK_NAMESPACE = 0x7477  # 'tw'

_FIND_ALERT_BY_KEY_SQL = """
select id, idempotency_key, received_at, signal_ids, group_id, outcome
  from webhook_alerts where idempotency_key = $1
"""
_FIND_ALERT_BY_BODY_SQL = """
select id, idempotency_key, received_at, signal_ids, group_id, outcome
  from webhook_alerts
 where body_sha256 = $1 and received_at > $2 and outcome <> 'invalid'
 order by id desc limit 1
"""

# The alert, its rows and their first history events in ONE statement (one round trip,
# atomic by itself). A repeated idempotency_key inserts nothing: ON CONFLICT waits for a
# concurrent first delivery to commit, then finds it.
_INSERT_ALERT_SQL = """
with alert as (
    insert into webhook_alerts (idempotency_key, received_at, source_ip, format, payload,
                                signal_ids, group_id, outcome, fired_at, error, body_sha256)
    values ($1, $2, $3, $4, $5, $6::text[], $7, $8, $9, $10, $11)
    on conflict (idempotency_key) do nothing
    returning id
), rows as (
    insert into trading_signals (
        signal_id, account_name, instrument, intent, side, quantity, order_type, price,
        stop_price, stop_loss, take_profit, stop_loss_ticks, take_profit_ticks, time_in_force,
        target_position, reference_price, strategy_name, metadata, source, group_id, status,
        error_message, ts_final, take_profits, trailing_stop_ticks, breakeven)
    select r.signal_id, r.account_name, r.instrument, r.intent, r.side, r.quantity,
           r.order_type, r.price, r.stop_price, r.stop_loss, r.take_profit, r.stop_loss_ticks,
           r.take_profit_ticks, r.time_in_force, r.target_position, r.reference_price,
           r.strategy_name, r.metadata::jsonb, r.source, r.group_id, r.status, r.error_message,
           case when r.status = 'denied' then clock_timestamp() end,
           r.take_profits::jsonb, r.trailing_stop_ticks, r.breakeven
      from unnest($12::text[], $13::text[], $14::text[], $15::text[], $16::text[],
                  $17::numeric[], $18::text[], $19::numeric[], $20::numeric[], $21::numeric[],
                  $22::numeric[], $23::int[], $24::int[], $25::text[], $26::numeric[],
                  $27::numeric[], $28::text[], $29::text[], $30::text[], $31::text[],
                  $32::text[], $33::text[], $34::text[], $35::int[], $36::bool[])
           as r(signal_id, account_name, instrument, intent, side, quantity, order_type, price,
                stop_price, stop_loss, take_profit, stop_loss_ticks, take_profit_ticks,
                time_in_force, target_position, reference_price, strategy_name, metadata,
                source, group_id, status, error_message, take_profits, trailing_stop_ticks,
                breakeven)
     where exists (select 1 from alert)
    returning signal_id, status, error_message
), events as (
    insert into order_history (signal_id, event, detail)
    select rows.signal_id, 'received',
           jsonb_build_object('webhook_alert_id', alert.id, 'status', rows.status)
           || case when rows.error_message is null then '{}'::jsonb
                   else jsonb_build_object('error', rows.error_message) end
      from rows cross join alert
)
select id from alert
"""


class Ledger:
    """The ledger over an asyncpg pool; one per process."""

    def __init__(self, pool: asyncpg.Pool, url: str) -> None:
        self._pool = pool
        self._url = url

    @classmethod
    async def connect(
        cls, url: str, *, min_size: int = 1, max_size: int = 10, connect_timeout_s: float = 10.0
    ) -> Ledger:
        """Open a pool on ``url``; ``DatabaseUnavailable`` if it cannot be reached."""
        try:
            pool = await asyncpg.create_pool(
                url,
                min_size=min_size,
                max_size=max_size,
                timeout=connect_timeout_s,
                init=_init_connection,
                connection_class=_LedgerConnection,
                reset=_reset_connection,
            )
        except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as e:
            raise unavailable(url, e) from None
        return cls(pool, url)

    async def close(self) -> None:
        """Close the pool."""
        await self._pool.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @property
    def pool(self) -> asyncpg.Pool:
        """Return the pool (for the dispatcher's own transactions)."""
        return self._pool

    # --- intake --------------------------------------------------------------------------

    async def insert_signal(
        self,
        *,
        signal_id: str,
        instrument: str,
        side: str,
        quantity: Decimal | int,
        account_name: str,
        order_type: str = "market",
        price: Decimal | None = None,
        stop_loss: Decimal | None = None,
        take_profit: Decimal | None = None,
        strategy_name: str | None = None,
        metadata: Mapping[str, Any] | None = None,
        stop_price: Decimal | None = None,
        time_in_force: str | None = None,
        source: str | None = None,
        group_id: str | None = None,
        intent: str | None = None,
        target_position: Decimal | int | None = None,
        stop_loss_ticks: int | None = None,
        take_profit_ticks: int | None = None,
        reference_price: Decimal | None = None,
    ) -> LedgerRow:
        """Insert a pending signal as a strategy would; ``InvalidInput`` if the id exists."""
        try:
            record = await self._pool.fetchrow(
                _INSERT_SQL,
                signal_id,
                strategy_name,
                instrument,
                side,
                order_type,
                quantity,
                price,
                stop_loss,
                take_profit,
                account_name,
                dict(metadata or {}),
                stop_price,
                time_in_force,
                source,
                group_id,
                intent,
                target_position,
                stop_loss_ticks,
                take_profit_ticks,
                reference_price,
            )
        except asyncpg.UniqueViolationError:
            raise InvalidInput(f"signal {signal_id} already exists", field="signal_id") from None
        except asyncpg.CheckViolationError as e:
            raise InvalidInput(f"signal {signal_id}: {e.constraint_name} refused it") from None
        assert record is not None
        return LedgerRow.from_record(record)

    async def insert_alert(self, alert: NewAlert, rows: Sequence[NewSignal]) -> InsertResult:
        """Store an alert and its rows in one transaction, or find its first delivery.

        A repeat (same ``idempotency_key``, or same ``body_sha256`` within the window) stores
        nothing and returns the first delivery's ids with ``duplicate=True``. Errors come as
        ``ContentRefused`` (the contents) or another ``StoreError`` (the database).
        """
        with store_errors():
            return await self._insert_alert(alert, rows)

    async def _insert_alert(self, alert: NewAlert, rows: Sequence[NewSignal]) -> InsertResult:
        signal_ids = [r.signal_id for r in rows]
        columns = _signal_columns(rows)
        args = (
            alert.idempotency_key,
            alert.received_at,
            alert.source_ip,
            alert.format,
            alert.payload,
            signal_ids,
            alert.group_id,
            alert.outcome,
            alert.fired_at,
            alert.error,
            alert.body_sha256,
            *columns,
        )
        async with self._pool.acquire() as conn:
            if alert.idempotency_key is None and alert.body_sha256 is not None:
                window = alert.dedupe_window or timedelta(0)
                async with conn.transaction():
                    # Serialise deliveries of the same body: the window has no unique index.
                    await conn.execute(
                        "select pg_advisory_xact_lock($1, hashtext($2))",
                        ALERT_LOCK_NAMESPACE,
                        alert.body_sha256,
                    )
                    found = await conn.fetchrow(
                        _FIND_ALERT_BY_BODY_SQL, alert.body_sha256, alert.received_at - window
                    )
                    if found is not None:
                        return _alert_result(found, duplicate=True)
                    alert_id = await conn.fetchval(_INSERT_ALERT_SQL, *args)
            else:
                alert_id = await conn.fetchval(_INSERT_ALERT_SQL, *args)
            if alert_id is None:
                found = await conn.fetchrow(_FIND_ALERT_BY_KEY_SQL, alert.idempotency_key)
                assert found is not None  # the conflict proved it committed
                return _alert_result(found, duplicate=True)
        return InsertResult(
            duplicate=False,
            alert_id=int(alert_id),
            signal_ids=tuple(signal_ids),
            group_id=alert.group_id,
            outcome=alert.outcome,
            received_at=alert.received_at,
        )

    async def find_alert(
        self,
        *,
        idempotency_key: str | None = None,
        body_sha256: str | None = None,
        since: datetime | None = None,
    ) -> InsertResult | None:
        """Return the stored alert with this key (or this body since ``since``), or ``None``."""
        with store_errors():
            if idempotency_key is not None:
                found = await self._pool.fetchrow(_FIND_ALERT_BY_KEY_SQL, idempotency_key)
            elif body_sha256 is not None and since is not None:
                found = await self._pool.fetchrow(_FIND_ALERT_BY_BODY_SQL, body_sha256, since)
            else:
                return None
        return _alert_result(found, duplicate=True) if found is not None else None

    # --- reads ---------------------------------------------------------------------------

    async def get(self, signal_id: str) -> LedgerRow | None:
        """Return the row of ``signal_id``, or ``None``."""
        record = await self._pool.fetchrow(
            "select * from trading_signals where signal_id = $1", signal_id
        )
        return LedgerRow.from_record(record) if record else None

    async def history(self, signal_id: str) -> list[HistoryEvent]:
        """Return the events of ``signal_id``, oldest first."""
        rows = await self._pool.fetch(
            "select id, signal_id, event, detail, created_at from order_history "
            "where signal_id = $1 order by id",
            signal_id,
        )
        return [
            HistoryEvent(
                id=r["id"],
                signal_id=r["signal_id"],
                event=r["event"],
                detail=r["detail"],
                created_at=r["created_at"],
            )
            for r in rows
        ]

    async def broker_calls(self, signal_id: str) -> list[RecordedBrokerCall]:
        """Return the broker calls recorded for ``signal_id``, oldest first."""
        rows = await self._pool.fetch(
            "select * from broker_calls where signal_id = $1 order by id", signal_id
        )
        return [
            RecordedBrokerCall(
                id=r["id"],
                signal_id=r["signal_id"],
                call=BrokerCall(
                    dialect=r["dialect"],
                    method=r["method"],
                    path=r["path"],
                    status=r["status"],
                    latency_ms=r["latency_ms"],
                    request=r["request"],
                    response=r["response"],
                    error=r["error"],
                ),
                created_at=r["created_at"],
            )
            for r in rows
        ]

    # --- claims --------------------------------------------------------------------------

    async def claim_next(
        self,
        worker_id: str,
        limit: int = 1,
        *,
        per_account: int = 1,
        unknown_bound: timedelta = timedelta(seconds=60),
        unknown_blocks_all: bool = False,
    ) -> list[LedgerRow]:
        """Claim the oldest pending rows of up to ``limit`` idle accounts for ``worker_id``.

        Up to ``per_account`` rows of each account, all in insertion order (the caller places
        them in that order, one after the other, and checks ``held_back`` before a row that
        depends on the position); one statement, one round trip.
        """
        if limit < 1 or per_account < 1:
            raise ValueError("limit and per_account must be at least 1")
        records = await _fetch_stateless(
            self._pool, _CLAIM_SQL, worker_id, limit, per_account, unknown_bound,
            unknown_blocks_all,
        )  # fmt: skip
        return [LedgerRow.from_record(r) for r in records]

    async def held_back(
        self, account_name: str, *, unknown_bound: timedelta, besides: str | None = None
    ) -> list[str]:
        """Return the account's unknown rows within the bound (what holds its intents back)."""
        rows = await self._pool.fetch(
            "select signal_id from trading_signals where account_name = $1 "
            "and status = 'unknown' and signal_id is distinct from $3 "
            "and coalesce(last_attempt_at, updated_at) > now() - $2::interval "
            "order by created_at, seq",
            account_name,
            unknown_bound,
            besides,
        )
        return [str(r["signal_id"]) for r in rows]

    async def unresolved(self, *, unknown_bound: timedelta, limit: int = 20) -> list[LedgerRow]:
        """Return rows in ``needs_review`` and ``unknown`` rows past the bound, oldest first."""
        rows = await self._pool.fetch(
            "select * from trading_signals where status = 'needs_review' "
            "or (status = 'unknown' "
            "    and coalesce(last_attempt_at, updated_at) < now() - $1::interval) "
            "order by created_at, seq limit $2",
            unknown_bound,
            limit,
        )
        return [LedgerRow.from_record(r) for r in rows]

    async def count_unresolved(self, *, unknown_bound: timedelta) -> int:
        """Return how many rows ``unresolved`` would list without a limit."""
        value = await self._pool.fetchval(
            "select count(*) from trading_signals where status = 'needs_review' "
            "or (status = 'unknown' "
            "    and coalesce(last_attempt_at, updated_at) < now() - $1::interval)",
            unknown_bound,
        )
        return int(value or 0)

    async def hand_back(self, worker_id: str, signal_ids: Sequence[str], reason: str) -> list[str]:
        """Return claimed rows that were not sent (``processing``) to ``pending``; one statement."""
        if not signal_ids:
            return []
        records = await _fetch_stateless(
            self._pool, _HAND_BACK_SQL, list(signal_ids), worker_id, reason
        )
        return [str(r["signal_id"]) for r in records]

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[Conn]:
        """Open a transaction on a pooled connection (pass it as ``conn=`` to the methods)."""
        async with self._pool.acquire() as conn, conn.transaction():
            yield conn

    @contextlib.asynccontextmanager
    async def account_transaction(self, account_name: str) -> AsyncIterator[Conn]:
        """Open a transaction holding the account's advisory lock until it ends."""
        async with self._pool.acquire() as conn, conn.transaction():
            await lock_account(conn, account_name)
            yield conn

    # --- transitions ---------------------------------------------------------------------

    async def transition(
        self,
        signal_id: str,
        new_status: SignalStatus,
        *,
        expected: SignalStatus | None = None,
        owner: str | None = None,
        event: str | None = None,
        detail: Mapping[str, Any] | None = None,
        broker_call: BrokerCall | None = None,
        account_id: str | None = None,
        client_order_id: str | None = None,
        tradovate_order_id: str | None = None,
        error_message: str | None = None,
        filled_qty: Decimal | int | None = None,
        avg_fill_price: Decimal | None = None,
        conn: Conn | None = None,
    ) -> LedgerRow:
        """Move a row to ``new_status`` with its event and broker call, all or nothing.

        ``expected`` lets the move be refused before any round trip; either way the row is
        read under a row lock and the move checked against its actual status. ``owner``
        refuses the move unless that worker holds the claim (a row requeued and claimed by
        another worker meanwhile must not be sent twice). Fields left ``None`` keep their
        value. ``conn`` joins a transaction the caller holds.
        """
        if expected is not None:
            check_move(signal_id, expected, new_status)
        move = _Move(
            signal_id=signal_id,
            new_status=new_status,
            expected=expected,
            owner=owner,
            event=event or new_status.value,
            detail=dict(detail or {}),
            broker_call=broker_call,
            fields=(
                account_id,
                client_order_id,
                tradovate_order_id,
                error_message,
                filled_qty,
                avg_fill_price,
            ),
        )
        try:
            if conn is not None:
                async with conn.transaction():
                    return await _apply_move(conn, move)
            if expected is not None:
                fast = await _fast_move(self._pool, move, expected)
                if fast is not None:
                    return fast
            async with self._pool.acquire() as own, own.transaction():
                return await _apply_move(own, move)
        except asyncpg.UniqueViolationError as e:
            if e.constraint_name != _ORDER_OWNER_INDEX:
                raise
            owner_row = await self.owner_of(tradovate_order_id)
            raise OrderOwned(
                f"signal {signal_id}: broker order {tradovate_order_id} already belongs to "
                f"signal {owner_row}",
                owner=owner_row,
            ) from e

    async def owner_of(self, tradovate_order_id: str | None) -> str | None:
        """Return the signal id of the row that owns a broker order (placed by tradebridge)."""
        if tradovate_order_id is None:
            return None
        value = await self._pool.fetchval(
            "select signal_id from trading_signals where tradovate_order_id = $1 "
            "and client_order_id is not null order by seq limit 1",
            tradovate_order_id,
        )
        return None if value is None else str(value)

    async def owned_orders(self, account_name: str, *, besides: str) -> frozenset[str]:
        """Return the broker order ids the account's other rows own (what a lookup must skip).

        Rows of the last week only: an older order rests at the broker from before any
        submit a lookup is about, so the lookup's baseline or creation time rules it out.
        """
        rows = await self._pool.fetch(
            "select tradovate_order_id from trading_signals where account_name = $1 "
            "and tradovate_order_id is not null and signal_id <> $2 "
            "and created_at > now() - interval '7 days'",
            account_name,
            besides,
        )
        return frozenset(str(r["tradovate_order_id"]) for r in rows)

    # --- what the tracker asks (broker events -> rows) -------------------------------------

    async def lock_row_for_event(
        self, conn: Conn, client_order_id: str | None, broker_order_id: str
    ) -> asyncpg.Record | None:
        """Lock and return the row a broker event is about, or None.

        By our client id first (unless the row already points at another order: a leg, or a
        stale duplicate); else by the broker's id among rows whose order is open.
        """
        columns = "signal_id, status, filled_qty, avg_fill_price, tradovate_order_id"
        if client_order_id:
            row = await conn.fetchrow(
                f"select {columns} from trading_signals where client_order_id = $1 for update",  # noqa: S608 - fixed column list
                client_order_id,
            )
            if row is not None:
                known = row["tradovate_order_id"]
                return None if known is not None and known != broker_order_id else row
        return await conn.fetchrow(
            f"select {columns} from trading_signals where tradovate_order_id = $1 "  # noqa: S608 - fixed column list
            "and status in ('submitted', 'unknown', 'working', 'partially_filled') for update",
            broker_order_id,
        )

    async def row_named_by(
        self, broker_order_id: str, client_order_id: str | None
    ) -> asyncpg.Record | None:
        """Return (signal_id, status, tradovate_order_id) of the row an event names, if any:
        the one with the broker's id first, else the one with our client id."""
        return await self._pool.fetchrow(
            "select signal_id, status, tradovate_order_id from trading_signals "
            "where tradovate_order_id = $1 or client_order_id = $2 "
            "order by tradovate_order_id = $1 desc nulls last limit 1",
            broker_order_id,
            client_order_id,
        )

    async def fill_seen(self, conn: Conn, signal_id: str, fill_id: str) -> bool:
        """Return whether the row already recorded the fill ``fill_id``."""
        found = await conn.fetchval(
            "select 1 from order_history where signal_id = $1 and event = 'fill' "
            "and detail->>'fill_id' = $2 limit 1",
            signal_id,
            fill_id,
        )
        return found is not None

    async def ordered_qty(self, conn: Conn, signal_id: str) -> Decimal | None:
        """Return the quantity the row's latest submitted plan ordered, if recorded."""
        value = await conn.fetchval(
            "select detail->>'quantity' from order_history where signal_id = $1 "
            "and event = 'submitted' and detail ? 'plan' order by id desc limit 1",
            signal_id,
        )
        return None if value is None else Decimal(value)

    # --- what placement asks (unknown outcomes) --------------------------------------------

    async def submit_details(self, signal_id: str) -> list[tuple[str, Any]]:
        """Return (event, detail) of the row's submits and resubmits, newest first."""
        rows = await self._pool.fetch(
            "select event, detail from order_history where signal_id = $1 "
            "and event in ('submitted', 'resubmitted') order by id desc",
            signal_id,
        )
        return [(str(r["event"]), r["detail"]) for r in rows]

    async def sent_rows_besides(self, account_name: str, signal_id: str) -> list[asyncpg.Record]:
        """Return the account's other rows sent and unresolved, with their plan and baseline.

        Each record: ``signal_id``, ``last_attempt_at``, ``plan`` (the detail of the latest
        submit) and ``baseline`` (the latest recorded lookup baseline).
        """
        return list(await self._pool.fetch(_SENT_ROWS_SQL, account_name, signal_id))

    async def latest_baseline_after(self, signal_id: str) -> str | None:
        """Return ``baseline_after`` of the row's latest submit that recorded a baseline."""
        value = await self._pool.fetchval(
            "select detail->>'baseline_after' from order_history where signal_id = $1 "
            "and event in ('submitted', 'resubmitted') and detail ? 'baseline' "
            "order by id desc limit 1",
            signal_id,
        )
        return None if value is None else str(value)

    async def claim_resend(self, signal_id: str, version: int, detail: Mapping[str, Any]) -> bool:
        """Move ``unknown -> submitted`` (event ``resubmitted``) if nobody sent since ``version``.

        Return whether it was done: another worker may have resent (or resolved) the row
        since ``version`` was read, and then this one must not send.
        """
        async with self._pool.acquire() as conn, conn.transaction():
            current = await conn.fetchrow(
                "select status, placement_attempts from trading_signals "
                "where signal_id = $1 for update",
                signal_id,
            )
            if (
                current is None
                or current["status"] != SignalStatus.UNKNOWN.value
                or int(current["placement_attempts"] or 0) != version
            ):
                return False
            await self.transition(
                signal_id, SignalStatus.SUBMITTED, expected=SignalStatus.UNKNOWN,
                event="resubmitted", detail=dict(detail), conn=conn,
            )  # fmt: skip
        return True

    # --- what reconcile asks ----------------------------------------------------------------

    async def workers_without_lock(self, namespace: int, *, besides: set[str]) -> list[str]:
        """Return the workers holding rows in flight whose liveness lock nobody holds.

        Each worker holds the advisory lock ``(namespace, hashtext(worker id))`` while it
        lives; a lock this session can take (and gives back at once) belongs to nobody.
        Workers in ``besides`` (this process's own) are never returned.
        """
        async with self._pool.acquire() as conn:
            workers = [
                str(r["claimed_by"])
                for r in await conn.fetch(
                    "select distinct claimed_by from trading_signals "
                    "where status in ('processing', 'submitted', 'unknown') "
                    "and claimed_by is not null"
                )
            ]
            dead = []
            for worker in workers:
                if worker in besides:
                    continue
                if await conn.fetchval(
                    "select pg_try_advisory_lock($1, hashtext($2))", namespace, worker
                ):
                    await conn.execute(
                        "select pg_advisory_unlock($1, hashtext($2))", namespace, worker
                    )
                    dead.append(worker)
        return dead

    async def unknown_to_resolve(
        self, *, dead_workers: Sequence[str], idle: timedelta
    ) -> list[tuple[str, str]]:
        """Return (signal_id, account_name) of the ``unknown`` rows reconcile should resolve.

        Rows nobody holds, rows of dead workers, and rows idle for ``idle`` (their worker did
        not settle them); oldest first.
        """
        rows = await self._pool.fetch(
            "select signal_id, account_name from trading_signals "
            "where status = 'unknown' and (claimed_by is null or claimed_by = any($1::text[]) "
            "or updated_at < now() - $2::interval) order by created_at, seq",
            list(dead_workers),
            idle,
        )
        return [(str(r["signal_id"]), str(r["account_name"] or "")) for r in rows]

    async def needing_review(self, limit: int = 50) -> list[tuple[str, str]]:
        """Return (signal_id, account_name) of recent ``needs_review`` rows, least recent first."""
        rows = await self._pool.fetch(
            "select signal_id, account_name from trading_signals where status = 'needs_review' "
            "and account_name is not null and created_at > now() - interval '1 day' "
            "order by updated_at limit $1",
            limit,
        )
        return [(str(r["signal_id"]), str(r["account_name"])) for r in rows]

    async def open_orders_idle(
        self, idle: timedelta
    ) -> list[tuple[str, str, SignalStatus, str, Decimal]]:
        """Return rows whose order rests and that heard nothing for ``idle``.

        Each: (signal_id, account_name, status, tradovate_order_id, filled_qty).
        """
        rows = await self._pool.fetch(
            "select signal_id, account_name, status, tradovate_order_id, filled_qty "
            "from trading_signals where status in ('working', 'partially_filled') "
            "and tradovate_order_id is not null and updated_at < now() - $1::interval",
            idle,
        )
        return [
            (str(r["signal_id"]), str(r["account_name"]), SignalStatus(r["status"]),
             str(r["tradovate_order_id"]), Decimal(r["filled_qty"] or 0))
            for r in rows
        ]  # fmt: skip

    async def add_event(
        self, signal_id: str, event: str, detail: Mapping[str, Any] | None = None
    ) -> None:
        """Append an event without a status change (a lookup, a note from reconcile)."""
        await self._pool.execute(
            "insert into order_history (signal_id, event, detail) values ($1, $2, $3)",
            signal_id,
            event,
            dict(detail or {}),
        )

    async def record_broker_call(self, call: BrokerCall, signal_id: str | None = None) -> None:
        """Record a broker call outside a transition (reads, logins, lookups)."""
        async with self._pool.acquire() as conn:
            await _insert_broker_call(conn, signal_id, call)

    # --- recovery ------------------------------------------------------------------------

    async def requeue_stale(
        self, *, older_than: timedelta, claimed_by: str | None = None
    ) -> RequeueResult:
        """Hand back rows of dead workers: unsent ones to pending, sent ones to a lookup.

        A row claimed before ``older_than`` ago (or by ``claimed_by``, whatever its age) that
        is still ``processing`` sent nothing, since a worker writes ``submitted`` before the
        request leaves; it goes back to ``pending``. A stale ``submitted`` row may have
        reached the broker: it becomes ``unknown``. ``unknown`` rows stay as they are. Both
        are returned for the broker lookup; none is ever put back to ``pending``.
        """
        async with self._pool.acquire() as conn, conn.transaction():
            requeued = await conn.fetch(_REQUEUE_SQL, older_than, claimed_by)
            unknown = await conn.fetch(_MARK_UNKNOWN_SQL, older_than, claimed_by)
            waiting = await conn.fetch(_AWAITING_LOOKUP_SQL, older_than, claimed_by)
            await conn.executemany(
                "insert into order_history (signal_id, event, detail) values ($1, $2, $3)",
                [(r["signal_id"], "requeued", {"reason": "worker lost"}) for r in requeued]
                + [(r["signal_id"], "unknown", {"reason": "worker lost"}) for r in unknown],
            )
        return RequeueResult(
            requeued=tuple(r["signal_id"] for r in requeued),
            marked_unknown=tuple(r["signal_id"] for r in unknown),
            awaiting_lookup=tuple(r["signal_id"] for r in waiting),
        )

    # --- session locks -------------------------------------------------------------------

    async def hold_lock(
        self,
        namespace: int,
        key: str,
        held: asyncio.Event,
        *,
        check_every_s: float = 2.0,
        reconnect_max_s: float = 1.0,
    ) -> None:
        """Hold ``pg_advisory_lock(namespace, hashtext(key))`` until cancelled, forever.

        The lock lives on a connection of its own (never a pooled one). When that connection
        is lost (a database restart ends every session, and with it every session lock), it
        reconnects and takes the lock again, retrying at most ``reconnect_max_s`` apart.
        ``held`` is set exactly while the lock is held. A lock held by another session (a
        second process with the same key) is waited for, with a warning.
        """
        delay = 0.1
        down_since: float | None = None
        while True:
            try:
                conn = await connect(
                    self._url, server_settings=_LOCK_SETTINGS, connect_timeout_s=check_every_s * 2
                )
            except Exception as e:  # noqa: BLE001 - any failure to connect is retried
                # (a server shutting down can fail a connect in ways connect() does not name)
                reraise_if_cancelling()
                if down_since is None:  # once per outage
                    down_since = time.monotonic()
                    why = str(e)[:200] if isinstance(e, DatabaseUnavailable) else type(e).__name__
                    _log.warning("session_lock_cannot_connect", key=key, error=why)
                await asyncio.sleep(delay)
                delay = min(delay * 2, reconnect_max_s)
                continue
            delay = 0.1
            try:
                why = await self._hold_on(conn, namespace, key, held, check_every_s, down_since)
            finally:
                held.clear()
                with contextlib.suppress(Exception):
                    await asyncio.shield(conn.close(timeout=2))
            down_since = time.monotonic()
            _log.warning("session_lock_lost", key=key, error=why)

    async def _hold_on(
        self,
        conn: Conn,
        namespace: int,
        key: str,
        held: asyncio.Event,
        check_every_s: float,
        down_since: float | None,
    ) -> str:
        """Take the lock on ``conn`` and hold it until the connection is lost; return why."""
        lost = asyncio.Event()
        conn.add_termination_listener(lambda _c: lost.set())
        try:
            while not await conn.fetchval(
                "select pg_try_advisory_lock($1, hashtext($2))", namespace, key,
                timeout=check_every_s,
            ):  # fmt: skip
                _log.warning("session_lock_in_use", key=key)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(lost.wait(), 1.0)
                if lost.is_set():
                    return "connection lost"
            held.set()
            if down_since is not None:
                _log.info("session_lock_retaken", key=key,
                          after_s=round(time.monotonic() - down_since, 3))  # fmt: skip
            while not lost.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(lost.wait(), check_every_s)
                    break
                # A half-open socket raises nothing: probe it.
                await conn.fetchval("select 1", timeout=check_every_s)
        except Exception as e:  # noqa: BLE001 - whatever broke the session, take the lock anew
            reraise_if_cancelling()
            return type(e).__name__
        return "connection lost"

    async def server_uptime(self) -> tuple[datetime, timedelta]:
        """Return when the database server started, and how long ago (its own clock)."""
        row = await self._pool.fetchrow(
            "select pg_postmaster_start_time() as started, now() - pg_postmaster_start_time() as up"
        )
        assert row is not None
        return row["started"], row["up"]

    # --- notifications -------------------------------------------------------------------

    async def listen(
        self,
        callback: Callable[[str], object],
        *,
        on_connect: Callable[[], Awaitable[None]] | None = None,
        check_every_s: float = 5.0,
        reconnect_max_s: float = 10.0,
    ) -> None:
        """Call ``callback(signal_id)`` per notification until cancelled; reconnect forever.

        Uses its own connection (never a pooled one) and LISTENs again after every
        reconnect, then awaits ``on_connect`` so the caller drains what it missed.
        """
        delay = 0.1
        while True:
            try:
                conn = await connect(self._url, server_settings=_LISTENER_SETTINGS)
            except Exception as e:  # noqa: BLE001 - any failure to connect is retried
                _log.warning("ledger listener cannot connect", error=str(e), retry_s=delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, reconnect_max_s)
                continue
            delay = 0.1
            try:
                await self._listen_on(conn, callback, on_connect, check_every_s)
            finally:
                with contextlib.suppress(Exception):
                    await asyncio.shield(conn.close(timeout=2))
            _log.warning("ledger listener lost its connection; reconnecting")

    async def _listen_on(
        self,
        conn: Conn,
        callback: Callable[[str], object],
        on_connect: Callable[[], Awaitable[None]] | None,
        check_every_s: float,
    ) -> None:
        lost = asyncio.Event()

        def on_notify(_c: object, _pid: int, _channel: str, payload: object) -> None:
            callback(str(payload))

        def on_terminate(_c: object) -> None:
            lost.set()

        conn.add_termination_listener(on_terminate)
        try:
            await conn.add_listener(NOTIFY_CHANNEL, on_notify)
            if on_connect is not None:
                await on_connect()
            while not lost.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(lost.wait(), check_every_s)
                    break
                # A half-open socket raises nothing: probe it.
                await conn.fetchval("select 1", timeout=check_every_s)
        except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as e:
            _log.warning("ledger listener connection failed", error=type(e).__name__)


_LISTENER_SETTINGS = {"application_name": "tradebridge-listener"}
_LOCK_SETTINGS = {"application_name": "tradebridge-liveness"}


@dataclass(frozen=True, slots=True)
class _Move:
    signal_id: str
    new_status: SignalStatus
    expected: SignalStatus | None
    owner: str | None
    event: str
    detail: dict[str, Any]
    broker_call: BrokerCall | None
    fields: tuple[Any, ...]  # in the order of _TRANSITION_SQL's $3..$8


async def _fast_move(pool: asyncpg.Pool, move: _Move, expected: SignalStatus) -> LedgerRow | None:
    call = move.broker_call
    call_args = (None,) * 8 if call is None else _broker_call_args(call)
    detail = {"from": expected.value, "to": move.new_status.value, **move.detail}
    try:
        records = await _fetch_stateless(
            pool,
            _FAST_MOVE_SQL,
            move.signal_id,
            move.new_status.value,
            *move.fields,
            expected.value,
            move.owner,
            move.event,
            detail,
            *call_args,
        )
    except asyncpg.PostgresError as e:
        if e.sqlstate == _ILLEGAL_MOVE_SQLSTATE:
            raise IllegalTransition(str(e)) from e
        raise
    return LedgerRow.from_record(records[0]) if records else None


class _LedgerConnection(asyncpg.Connection):
    """A pooled connection that knows when its last use left no session state behind."""

    __slots__ = ("_stateless",)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._stateless = False

    def mark_stateless(self) -> None:
        """Note that this use ran only self-contained statements (no reset on release)."""
        self._stateless = True

    def take_stateless(self) -> bool:
        """Return whether the use now ending was stateless, and forget it."""
        stateless, self._stateless = self._stateless, False
        return stateless


async def _reset_connection(conn: asyncpg.Connection) -> None:
    # asyncpg's default reset (advisory unlock all, close cursors, unlisten, reset GUCs) is a
    # round trip on every release; the hot paths (claim, moves, hand back) run one
    # self-contained statement outside any transaction, which leaves nothing to reset.
    # asyncpg still rolls back an open transaction before calling this.
    if isinstance(conn, _LedgerConnection) and conn.take_stateless():
        return
    query = conn.get_reset_query()
    if query:
        await conn.execute(query)


async def _fetch_stateless(pool: asyncpg.Pool, query: str, *args: Any) -> list[asyncpg.Record]:
    """Run one self-contained statement (no SET, LISTEN, cursor or session lock) on the pool."""
    async with pool.acquire() as conn:
        records = await conn.fetch(query, *args)
        mark = getattr(conn, "mark_stateless", None)
        if mark is not None and not conn.is_in_transaction():
            mark()
    return records


async def _apply_move(conn: Conn, move: _Move) -> LedgerRow:
    signal_id = move.signal_id
    locked = await conn.fetchrow(
        "select status, claimed_by from trading_signals where signal_id = $1 for update",
        signal_id,
    )
    if locked is None:
        raise InvalidInput(f"signal {signal_id} does not exist", field="signal_id")
    if move.owner is not None and locked["claimed_by"] != move.owner:
        raise IllegalTransition(
            f"signal {signal_id}: claimed by {locked['claimed_by']!r}, not by {move.owner!r}"
        )
    try:
        old = SignalStatus(locked["status"])
    except ValueError:
        raise IllegalTransition(
            f"signal {signal_id}: status {locked['status']!r} is not one of tradebridge's"
        ) from None
    if move.expected is not None and old is not move.expected:
        raise IllegalTransition(
            f"signal {signal_id}: status is {old.value}, expected {move.expected.value}"
        )
    check_move(signal_id, old, move.new_status)
    try:
        record = await conn.fetchrow(
            _TRANSITION_SQL, signal_id, move.new_status.value, *move.fields
        )
    except asyncpg.PostgresError as e:
        # The trigger's own SQLSTATE (asyncpg maps unknown codes to UnknownPostgresError).
        if e.sqlstate == _ILLEGAL_MOVE_SQLSTATE:
            raise IllegalTransition(str(e)) from e
        raise
    assert record is not None
    await conn.execute(
        "insert into order_history (signal_id, event, detail) values ($1, $2, $3)",
        signal_id,
        move.event,
        {"from": old.value, "to": move.new_status.value, **move.detail},
    )
    if move.broker_call is not None:
        await _insert_broker_call(conn, signal_id, move.broker_call)
    return LedgerRow.from_record(record)


def _signal_columns(rows: Sequence[NewSignal]) -> list[list[Any]]:
    # Column arrays in the order of _INSERT_ALERT_SQL's unnest ($12..$36).
    return [
        [r.signal_id for r in rows],
        [r.account_name for r in rows],
        [r.instrument for r in rows],
        [r.intent for r in rows],
        [r.side for r in rows],
        [r.quantity for r in rows],
        [r.order_type for r in rows],
        [r.price for r in rows],
        [r.stop_price for r in rows],
        [r.stop_loss for r in rows],
        [r.take_profit for r in rows],
        [r.stop_loss_ticks for r in rows],
        [r.take_profit_ticks for r in rows],
        [r.time_in_force for r in rows],
        [r.target_position for r in rows],
        [r.reference_price for r in rows],
        [r.strategy_name for r in rows],
        [_dump_json(dict(r.metadata or {})) for r in rows],
        [r.source for r in rows],
        [r.group_id for r in rows],
        [r.status.value for r in rows],
        [r.error_message for r in rows],
        [None if r.take_profits is None else _dump_json(r.take_profits) for r in rows],
        [r.trailing_stop_ticks for r in rows],
        [r.breakeven for r in rows],
    ]


def _alert_result(record: asyncpg.Record, *, duplicate: bool) -> InsertResult:
    return InsertResult(
        duplicate=duplicate,
        alert_id=int(record["id"]),
        signal_ids=tuple(record["signal_ids"] or ()),
        group_id=_text(record["group_id"]),
        outcome=str(record["outcome"]),
        received_at=_aware(record["received_at"]) or record["received_at"],
    )


async def lock_account(conn: Conn, account_name: str) -> None:
    """Take the account's advisory lock until the current transaction ends."""
    await conn.execute(
        "select pg_advisory_xact_lock($1, hashtext($2))", ACCOUNT_LOCK_NAMESPACE, account_name
    )


async def try_lock_account(conn: Conn, account_name: str) -> bool:
    """Take the account's transaction advisory lock if free; return whether it was taken."""
    taken = await conn.fetchval(
        "select pg_try_advisory_xact_lock($1, hashtext($2))", ACCOUNT_LOCK_NAMESPACE, account_name
    )
    return bool(taken)


async def _insert_broker_call(conn: Conn, signal_id: str | None, call: BrokerCall) -> None:
    await conn.execute(
        "insert into broker_calls (signal_id, dialect, method, path, status, latency_ms, "
        "request, response, error) values ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        signal_id,
        *_broker_call_args(call),
    )


def _broker_call_args(call: BrokerCall) -> tuple[Any, ...]:
    # The column order of broker_calls (dialect .. error) that both insert statements use.
    return (
        call.dialect,
        call.method,
        call.path,
        call.status,
        call.latency_ms,
        call.request,
        call.response,
        call.error,
    )


async def _init_connection(conn: Conn) -> None:
    for kind in ("json", "jsonb"):
        await conn.set_type_codec(
            kind, encoder=_dump_json, decoder=json.loads, schema="pg_catalog", format="text"
        )


def _dump_json(value: Any) -> str:
    return json.dumps(value, default=_json_default, separators=(",", ":"))


def _json_default(value: Any) -> Any:
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, Enum):
        return value.value
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def _text(value: Any) -> str | None:
    return None if value is None else str(value)


def _int(value: Any) -> int | None:
    return None if value is None else int(value)


def _decimal(value: Any) -> Decimal | None:
    if value is None:
        return None
    if isinstance(value, Decimal):
        return value
    # Legacy float columns: go through str so 0.1 stays 0.1, not its binary expansion.
    return Decimal(str(value))


def _aware(value: datetime | None) -> datetime | None:
    if value is None or value.tzinfo is not None:
        return value
    # A legacy ``timestamp without time zone`` column: its values are taken as UTC.
    return value.replace(tzinfo=UTC)

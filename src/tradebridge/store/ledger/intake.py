"""Rows coming in: a strategy's signal, and a webhook alert with its rows in one statement.

An alert is stored before it is answered; a repeat of it (the same idempotency key, or the
same body within the dedupe window) stores nothing and finds the first delivery.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

import asyncpg

from tradebridge.domain.lifecycle import SignalStatus
from tradebridge.errors import InvalidInput
from tradebridge.store.ledger.errors import store_errors
from tradebridge.store.ledger.pool import LedgerPool, dump_json
from tradebridge.store.ledger.rows import InsertResult, LedgerRow, NewAlert, NewSignal

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
# concurrent first delivery to commit, then finds it. (An f-string: '{{}}' is '{}'.)
_INSERT_ALERT_SQL = f"""
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
           case when r.status = '{SignalStatus.DENIED}' then clock_timestamp() end,
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
           || case when rows.error_message is null then '{{}}'::jsonb
                   else jsonb_build_object('error', rows.error_message) end
      from rows cross join alert
)
select id from alert
"""  # noqa: S608 - statuses from SignalStatus, no input
# The statements of an alert's insert, prepared on each new connection (pool.open_pool).
HOT_STATEMENTS = (_INSERT_ALERT_SQL,)

_INSERT_SQL = """
insert into trading_signals (
    signal_id, strategy_name, instrument, side, order_type, quantity, price, stop_loss,
    take_profit, account_name, metadata, stop_price, time_in_force, source, group_id,
    intent, target_position, stop_loss_ticks, take_profit_ticks, reference_price
) values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, coalesce($14, 'db'), $15,
          coalesce($16, 'order'), $17, $18, $19, $20)
returning *
"""


class Intake(LedgerPool):
    """Inserting signals and alerts, and finding an alert stored before."""

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
            record = await self._db.fetchrow(
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
        async with self._db.acquire() as conn:
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
                        return InsertResult.from_record(found, duplicate=True)
                    alert_id = await conn.fetchval(_INSERT_ALERT_SQL, *args)
            else:
                alert_id = await conn.fetchval(_INSERT_ALERT_SQL, *args)
            if alert_id is None:
                found = await conn.fetchrow(_FIND_ALERT_BY_KEY_SQL, alert.idempotency_key)
                assert found is not None  # the conflict proved it committed
                return InsertResult.from_record(found, duplicate=True)
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
                found = await self._db.fetchrow(_FIND_ALERT_BY_KEY_SQL, idempotency_key)
            elif body_sha256 is not None and since is not None:
                found = await self._db.fetchrow(_FIND_ALERT_BY_BODY_SQL, body_sha256, since)
            else:
                return None
        return InsertResult.from_record(found, duplicate=True) if found is not None else None


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
        [dump_json(dict(r.metadata or {})) for r in rows],
        [r.source for r in rows],
        [r.group_id for r in rows],
        [r.status.value for r in rows],
        [r.error_message for r in rows],
        [None if r.take_profits is None else dump_json(r.take_profits) for r in rows],
        [r.trailing_stop_ticks for r in rows],
        [r.breakeven for r in rows],
    ]

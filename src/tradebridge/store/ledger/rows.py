"""The ledger's row types: what is read from its tables and what is written to them.

Reading is lenient about legacy column types (a strategy's own ``trading_signals`` may hold
floats and timestamps without a time zone): they are normalised here, once.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any, Self

import asyncpg

from tradebridge.domain.calls import BrokerCall
from tradebridge.domain.lifecycle import FINAL_STATUSES, SignalStatus
from tradebridge.errors import InvalidInput


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
class RecordedBrokerCall:
    """A ``broker_calls`` row: the call as stored, and when it was written."""

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

    @classmethod
    def from_record(cls, record: asyncpg.Record, *, duplicate: bool) -> Self:
        """Build the result from a ``webhook_alerts`` record."""
        return cls(
            duplicate=duplicate,
            alert_id=int(record["id"]),
            signal_ids=tuple(record["signal_ids"] or ()),
            group_id=_text(record["group_id"]),
            outcome=str(record["outcome"]),
            received_at=_aware(record["received_at"]) or record["received_at"],
        )


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

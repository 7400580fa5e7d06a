"""One signal as an operator reads it: its listing record and its whole trace (the "flight
recorder": the row, the alert it came from, every event and broker call, the timings).

Shared by ``tradebridge signals`` / ``tradebridge trace`` and the dashboard (docs/dashboard.md),
so that the terminal and the browser tell the same story.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from tradebridge.store.ledger.rows import HistoryEvent, LedgerRow, RecordedBrokerCall
from tradebridge.store.ledger.views import StoredAlert

if TYPE_CHECKING:
    from tradebridge.store.ledger import Ledger

RECORD_COLUMNS = ("created_at", "signal_id", "source", "account", "strategy", "intent", "side",
                  "quantity", "instrument", "status", "broker_order_id", "filled_qty",
                  "avg_fill_price", "latency_ms", "error")  # fmt: skip
"""The fields of ``signal_record``, in the order of ``tradebridge signals --csv``."""


def latency_ms(row: LedgerRow) -> float | None:
    """Return the milliseconds from the insert to the broker's answer (None: not answered)."""
    if row.created_at is None or row.ts_accepted is None:
        return None
    return round((row.ts_accepted - row.created_at).total_seconds() * 1000, 1)


def _number(value: Any) -> str:
    return "" if value is None else str(value)


def signal_record(row: LedgerRow) -> dict[str, Any]:
    """Return one listing record of ``row`` (``RECORD_COLUMNS``), JSON-ready."""
    return {
        "created_at": row.created_at.isoformat() if row.created_at else None,
        "signal_id": row.signal_id,
        "source": row.source,
        "account": row.account_name,
        "strategy": row.strategy_name,
        "intent": row.intent or "order",
        "side": row.side,
        "quantity": _number(row.quantity) or None,
        "instrument": row.instrument,
        "status": row.status.value,
        "broker_order_id": row.tradovate_order_id,
        "filled_qty": _number(row.filled_qty),
        "avg_fill_price": _number(row.avg_fill_price) or None,
        "latency_ms": latency_ms(row),
        "error": row.error_message,
    }


@dataclass(frozen=True, slots=True)
class Trace:
    """Everything the ledger knows of one signal."""

    row: LedgerRow
    alert: StoredAlert | None
    history: list[HistoryEvent]
    calls: list[RecordedBrokerCall]

    def timeline(self) -> dict[str, float | None]:
        """Return the milliseconds from the insert to each step (None: not reached)."""
        start = self.row.created_at
        steps = {"claimed": self.row.ts_claimed, "submitted": self.row.ts_submitted,
                 "answered": self.row.ts_accepted, "final": self.row.ts_final}  # fmt: skip
        return {
            name: None if at is None or start is None else round(
                (at - start).total_seconds() * 1000, 1)
            for name, at in steps.items()
        }  # fmt: skip

    def as_json(self) -> dict[str, Any]:
        """Return the trace as JSON data."""
        alert = self.alert
        return {
            "signal": signal_record(self.row),
            "client_order_id": self.row.client_order_id,
            "timeline_ms": self.timeline(),
            "alert": None if alert is None else {
                "received_at": alert.received_at.isoformat(), "format": alert.format,
                "source_ip": alert.source_ip, "outcome": alert.outcome,
                "fired_at": alert.fired_at.isoformat() if alert.fired_at else None,
                "payload": alert.payload, "error": alert.error,
            },
            "history": [
                {"at": e.created_at.isoformat(), "event": e.event, "detail": e.detail}
                for e in self.history
            ],
            "broker_calls": [
                {"at": c.created_at.isoformat(),
                 "method": c.call.method, "path": c.call.path, "status": c.call.status,
                 "latency_ms": c.call.latency_ms, "error": c.call.error,
                 "request": c.call.request_body, "answer": c.call.response_body}
                for c in self.calls
            ],
        }  # fmt: skip


async def load_trace(ledger: Ledger, signal_id: str) -> Trace | None:
    """Read the trace of ``signal_id`` (None: no such signal)."""
    row = await ledger.get(signal_id)
    if row is None:
        return None
    alert = await ledger.alert_of(signal_id, row.group_id)
    history = await ledger.history(signal_id)
    return Trace(row, alert, history, await ledger.broker_calls(signal_id))

"""The ``broker_calls`` audit: every broker request and answer, linked to its signal."""

from __future__ import annotations

from typing import Any

from tradebridge.domain.calls import BrokerCall
from tradebridge.store.ledger.pool import Conn, LedgerPool
from tradebridge.store.ledger.rows import RecordedBrokerCall


class BrokerCalls(LedgerPool):
    """Recording broker calls and reading them back."""

    async def broker_calls(self, signal_id: str) -> list[RecordedBrokerCall]:
        """Return the broker calls recorded for ``signal_id``, oldest first."""
        rows = await self._db.fetch(
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
                    request_body=r["request"],
                    response_body=r["response"],
                    error=r["error"],
                ),
                created_at=r["created_at"],
            )
            for r in rows
        ]

    async def record_broker_call(self, call: BrokerCall, signal_id: str | None = None) -> None:
        """Record a broker call outside a transition (reads, logins, lookups)."""
        async with self._db.acquire() as conn:
            await insert_broker_call(conn, signal_id, call)


async def insert_broker_call(conn: Conn, signal_id: str | None, call: BrokerCall) -> None:
    """Insert one ``broker_calls`` row on ``conn`` (inside the caller's transaction, if any)."""
    await conn.execute(
        "insert into broker_calls (signal_id, dialect, method, path, status, latency_ms, "
        "request, response, error) values ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        signal_id,
        *broker_call_columns(call),
    )


def broker_call_columns(call: BrokerCall) -> tuple[Any, ...]:
    """Return the columns ``dialect`` .. ``error`` of ``broker_calls``, in the table's order."""
    # Both insert statements (here and the fast move's) take them in this order.
    return (
        call.dialect,
        call.method,
        call.path,
        call.status,
        call.latency_ms,
        call.request_body,
        call.response_body,
        call.error,
    )

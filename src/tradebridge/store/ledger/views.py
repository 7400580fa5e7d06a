"""What an operator reads: signals by time, status, account and strategy, and the alert a
signal came from (``tradebridge signals``, ``tradebridge trace``; docs/running.md).

Read-only; rows newest first. A listing reads ``trading_signals`` by ``created_at`` (no index
of its own: an operator's query, not the order path, and every index slows each insert).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from tradebridge.store.ledger.pool import LedgerPool
from tradebridge.store.ledger.rows import LedgerRow

_LIST_SQL = """
select * from trading_signals
 where ($1::timestamptz is null or created_at >= $1)
   and ($2::text[] is null or status = any($2))
   and ($3::text is null or account_name = $3)
   and ($4::text is null or strategy_name = $4)
 order by created_at desc, seq desc
 limit $5
"""
# The alert whose rows include the signal (by its id in signal_ids, else its group).
_ALERT_SQL = """
select id, received_at, fired_at, source_ip, format, payload, outcome, error, group_id
  from webhook_alerts
 where $1 = any(signal_ids) or (group_id is not null and group_id = $2)
 order by id
 limit 1
"""


@dataclass(frozen=True, slots=True)
class StoredAlert:
    """A webhook alert as stored (its payload with secrets masked)."""

    id: int
    received_at: datetime
    fired_at: datetime | None
    source_ip: str | None
    format: str | None
    payload: Any
    outcome: str
    error: str | None


class Views(LedgerPool):
    """Operator listings of signals and their alerts."""

    async def list_signals(
        self,
        *,
        since: datetime | None = None,
        statuses: Sequence[str] | None = None,
        account: str | None = None,
        strategy: str | None = None,
        limit: int = 100,
    ) -> list[LedgerRow]:
        """Return the newest ``limit`` rows matching every filter given."""
        records = await self._db.fetch(
            _LIST_SQL, since, list(statuses) if statuses else None, account, strategy, limit
        )
        return [LedgerRow.from_record(r) for r in records]

    async def alert_of(self, signal_id: str, group_id: str | None) -> StoredAlert | None:
        """Return the webhook alert ``signal_id`` came from (None: inserted directly)."""
        r = await self._db.fetchrow(_ALERT_SQL, signal_id, group_id)
        if r is None:
            return None
        return StoredAlert(
            r["id"], r["received_at"], r["fired_at"], r["source_ip"], r["format"], r["payload"],
            r["outcome"], r["error"],
        )  # fmt: skip

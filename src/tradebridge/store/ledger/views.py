"""What an operator reads: signals by time, status, account and strategy, the alert a signal
came from (``tradebridge signals``, ``tradebridge trace``; docs/running.md), and the latency of
each step of the last hour's rows (the dashboard's latency page, docs/dashboard.md).

Read-only; rows newest first. A listing reads ``trading_signals`` by ``created_at`` (no index
of its own: an operator's query, not the order path, and every index slows each insert).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from tradebridge.domain.lifecycle import SignalStatus
from tradebridge.store.ledger._sql import status_list
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
# The instruments each account traded lately, for the start-up warm-up (a scan by time,
# once per start).
_RECENT_INSTRUMENTS_SQL = """
select distinct account_name, instrument from trading_signals
 where account_name = any($1) and instrument is not null and created_at >= $2
 limit 200
"""

_PERCENTILES = (0.5, 0.9, 0.99)
_FILLED = status_list(SignalStatus.FILLED)
_REFUSED = status_list(SignalStatus.REJECTED, SignalStatus.FAILED)
_DENIED = status_list(SignalStatus.DENIED)
# Milliseconds of each step of a row, from the timestamps the status trigger writes.
_STEPS = {
    "received → claimed": "ts_claimed - created_at",
    "claimed → submitted": "ts_submitted - ts_claimed",
    "submitted → accepted": "ts_accepted - ts_submitted",
    "accepted → filled": f"case when status in {_FILLED} then ts_final - ts_accepted end",
    "received → accepted": "ts_accepted - created_at",
}


def _latency_sql() -> str:
    steps = ", ".join(
        f"count({expr}) as n{i}, percentile_cont($2::float8[]) within group "
        f"(order by extract(epoch from {expr}) * 1000) as p{i}"
        for i, expr in enumerate(_STEPS.values())
    )
    return f"""
select count(*) as total,
       count(*) filter (where ts_submitted is not null) as submitted,
       count(*) filter (where ts_accepted is not null) as accepted,
       count(*) filter (where status in {_FILLED}) as filled,
       count(*) filter (where status in {_REFUSED}) as refused,
       count(*) filter (where status in {_DENIED}) as denied,
       {steps}
  from trading_signals
 where created_at >= $1
"""  # noqa: S608 - statuses from SignalStatus, fixed step expressions, no input


_LATENCY_SQL = _latency_sql()
_CALLS_SQL = """
select count(*) as n, count(*) filter (where status between 200 and 299) as ok,
       percentile_cont($2::float8[]) within group (order by latency_ms) as p
  from broker_calls
 where created_at >= $1 and latency_ms is not null
"""


@dataclass(frozen=True, slots=True)
class StepLatency:
    """The percentiles (p50, p90, p99, in ms) of one step over ``count`` rows."""

    step: str
    count: int
    percentiles: tuple[float, ...]  # empty when count is 0


@dataclass(frozen=True, slots=True)
class LatencySummary:
    """Each step's latency and the outcomes of the rows created since ``since``."""

    since: datetime
    total: int
    submitted: int
    accepted: int
    filled: int
    refused: int  # rejected by the broker, or failed
    denied: int
    steps: tuple[StepLatency, ...]
    calls: StepLatency  # broker calls (their own latency_ms)
    calls_ok: int

    @property
    def placement_success(self) -> float | None:
        """Return the share of broker verdicts that accepted the order (None: no verdict)."""
        verdicts = self.accepted + self.refused
        return self.accepted / verdicts if verdicts else None

    @property
    def call_success(self) -> float | None:
        """Return the share of broker calls answered 2xx (None: no call)."""
        return self.calls_ok / self.calls.count if self.calls.count else None


def _step(step: str, count: int, found: Any) -> StepLatency:
    return StepLatency(step, count, tuple(round(float(v), 1) for v in found) if count else ())


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

    async def recent_instruments(
        self, accounts: Sequence[str], since: datetime
    ) -> dict[str, list[str]]:
        """Return the instruments each of ``accounts`` had rows for since ``since``."""
        records = await self._db.fetch(_RECENT_INSTRUMENTS_SQL, list(accounts), since)
        found: dict[str, list[str]] = {}
        for r in records:
            found.setdefault(r["account_name"], []).append(r["instrument"])
        return found

    async def alert_of(self, signal_id: str, group_id: str | None) -> StoredAlert | None:
        """Return the webhook alert ``signal_id`` came from (None: inserted directly)."""
        r = await self._db.fetchrow(_ALERT_SQL, signal_id, group_id)
        if r is None:
            return None
        return StoredAlert(
            r["id"], r["received_at"], r["fired_at"], r["source_ip"], r["format"], r["payload"],
            r["outcome"], r["error"],
        )  # fmt: skip

    async def latency_since(self, since: datetime) -> LatencySummary:
        """Return the latency of each step and the outcomes of the rows created since ``since``."""
        wanted = list(_PERCENTILES)
        r = await self._db.fetchrow(_LATENCY_SQL, since, wanted)
        c = await self._db.fetchrow(_CALLS_SQL, since, wanted)
        assert r is not None
        assert c is not None
        steps = tuple(_step(name, r[f"n{i}"], r[f"p{i}"]) for i, name in enumerate(_STEPS))
        return LatencySummary(
            since, r["total"], r["submitted"], r["accepted"], r["filled"], r["refused"],
            r["denied"], steps, _step("broker call", c["n"], c["p"]), c["ok"],
        )  # fmt: skip

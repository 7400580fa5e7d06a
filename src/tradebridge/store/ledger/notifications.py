"""What the notifier tells, once between all the workers (migration 0009, docs/notifications.md).

Every statement here is one atomic move whose caller learns whether it made it:
``observe_condition`` says which message (if any) this caller must send for a condition it
sees on; ``resolve_unseen`` ends the conditions nobody has seen on for a while and returns
them to the one caller that ended them; ``claim_verdicts`` / ``claim_reconciled`` hand each
denied, rejected or reconciled row to one caller; ``take_turn`` spaces messages of one kind.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

import asyncpg

from tradebridge.errors import StoreError
from tradebridge.store.ledger.errors import store_errors
from tradebridge.store.ledger.pool import LedgerPool

_NO_TABLE = (
    "the ledger has no notification tables (migration 0009_notifications): run "
    "`tradebridge db migrate`"
)

# When the condition's row must send, which message: $6 window (s), $7 repeat (s; 0: never).
# Both cast: PostgreSQL would infer $7 an integer from "$7 > 0", and a repeat of 0.5 s would
# arrive as 0 (never).
_DUE = (
    "(s.last_sent_at is null"
    " or s.last_sent_at < clock_timestamp() - $6::float8 * interval '1 second')"
)
_PHASE = f"""(case
    when not s.active or not s.announced then case when {_DUE} then 'raised' end
    when s.fingerprint <> excluded.fingerprint and {_DUE} then 'changed'
    when $7::float8 > 0
         and s.last_sent_at < clock_timestamp() - $7::float8 * interval '1 second' then 'reminder'
end)"""
# $1 key, $2 kind, $3 fingerprint, $4 summary, $5 this call's token, $6 window, $7 repeat.
# A conflicting caller waits for the row and judges the version the first one left: of two
# notifiers seeing the same condition, one sends.
_OBSERVE_SQL = f"""
insert into notification_state as s
    (key, kind, active, announced, fingerprint, summary, last_sent_at, sender, last_phase)
values ($1, $2, true, true, $3, $4, clock_timestamp(), $5, 'raised')
on conflict (key) do update set
    active = true,
    last_seen_at = clock_timestamp(),
    opened_at = case when s.active then s.opened_at else clock_timestamp() end,
    resolved_at = case when s.active then s.resolved_at end,
    summary = excluded.summary,
    announced = case when {_PHASE} is not null then true
                     when s.active then s.announced else false end,
    fingerprint = case when {_PHASE} is not null then excluded.fingerprint else s.fingerprint end,
    last_sent_at = case when {_PHASE} is not null then clock_timestamp() else s.last_sent_at end,
    last_phase = coalesce({_PHASE}, s.last_phase),
    sender = case when {_PHASE} is not null then excluded.sender else s.sender end
returning sender = $5 as mine, last_phase, opened_at
"""  # noqa: S608 - constant text
# $1 keys this caller sees on, $2 grace (s): a condition nobody has seen on for the grace is
# over. Rows of kinds spaced by take_turn are never active.
_RESOLVE_SQL = """
update notification_state
   set active = false, resolved_at = clock_timestamp()
 where active and not (key = any($1))
   and last_seen_at < clock_timestamp() - $2 * interval '1 second'
returning key, kind, summary, announced, opened_at, resolved_at
"""
# Conditions a source cannot judge yet (one that was on before a restart, its source still
# counting): seen on now, whoever else resolves unseen ones.
_HOLD_SQL = """
update notification_state
   set last_seen_at = clock_timestamp()
 where active
   and (key = any($1::text[])
        or exists (select 1 from unnest($2::text[]) as p(prefix) where starts_with(key, p.prefix)))
"""
_TURN_SQL = """
insert into notification_state as s (key, kind, active, announced, last_sent_at, sender)
values ($1, $2, false, true, clock_timestamp(), $3)
on conflict (key) do update set last_sent_at = clock_timestamp(), sender = excluded.sender
 where s.last_sent_at is null or s.last_sent_at < clock_timestamp() - $4 * interval '1 second'
returning sender = $3 as mine
"""
# Denied and rejected rows final since $1 of the statuses $2 that nobody claimed yet.
_VERDICTS = """
from trading_signals t
where t.status in ('denied', 'rejected') and t.status = any($2) and t.ts_final >= $1
  and not exists (select 1 from notified_signals n
                   where n.signal_id = t.signal_id and n.status = t.status)
"""
_VERDICTS_WAITING_SQL = f"select exists (select 1 {_VERDICTS})"
_CLAIM_VERDICTS_SQL = f"""
with found as (
    select t.signal_id, t.status, t.account_name, t.strategy_name, t.instrument, t.side,
           t.quantity, t.error_message, t.ts_final
    {_VERDICTS}
    order by t.ts_final
    limit $3
), claimed as (
    insert into notified_signals (signal_id, status)
    select signal_id, status from found
    on conflict do nothing
    returning signal_id, status
)
select f.* from found f join claimed c using (signal_id, status) order by f.ts_final
"""  # noqa: S608 - constant text
# Rows reconcile moved to the broker's status since $1 (each correction claimed once).
_CLAIM_RECONCILED_SQL = """
with found as (
    select h.id, h.signal_id, h.detail, h.created_at, t.status, t.account_name,
           t.instrument, t.error_message
      from order_history h join trading_signals t using (signal_id)
     where h.event = 'reconciled' and h.created_at >= $1
       and not exists (select 1 from notified_signals n
                        where n.signal_id = h.signal_id and n.status = 'reconciled:' || h.id)
     order by h.id
     limit $2
), claimed as (
    insert into notified_signals (signal_id, status)
    select signal_id, 'reconciled:' || id from found
    on conflict do nothing
    returning signal_id, status
)
select f.* from found f join claimed c
    on c.signal_id = f.signal_id and c.status = 'reconciled:' || f.id
 order by f.id
"""
_BACKLOG_SQL = """
select count(*) as pending,
       extract(epoch from clock_timestamp() - min(created_at))::float8 as oldest_s
  from trading_signals where status = 'pending'
"""
_RECORD_SQL = """
insert into notifications (message_id, key, kind, phase, title, body, channel, outcome,
                           attempts, error, ts_queued)
values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)
"""
_RECENT_SQL = """
select id, message_id, key, kind, phase, title, channel, outcome, attempts, error, ts_queued,
       ts_done
  from notifications order by id desc limit $1
"""


@dataclass(frozen=True, slots=True)
class Verdict:
    """A denied or rejected row, as a notification tells it."""

    signal_id: str
    status: str
    account_name: str | None
    strategy_name: str | None
    instrument: str | None
    side: str | None
    quantity: Decimal | None
    error_message: str | None
    ts_final: datetime | None


@dataclass(frozen=True, slots=True)
class Correction:
    """A row reconcile moved to the broker's status (the ledger had it otherwise)."""

    signal_id: str
    status: str
    account_name: str | None
    instrument: str | None
    broker_status: str | None
    error_message: str | None
    at: datetime
    ledger_status: str | None = None  # what the ledger had before (None: not recorded)


@dataclass(frozen=True, slots=True)
class Resolution:
    """A condition that ended: the caller that ended it tells it, if it was announced."""

    key: str
    kind: str
    summary: str
    announced: bool
    opened_at: datetime
    resolved_at: datetime


@dataclass(frozen=True, slots=True)
class SendRecord:
    """One message's delivery to one channel, as the ledger keeps it."""

    message_id: str
    key: str
    kind: str
    phase: str
    title: str
    body: str
    channel: str  # the channel's name and scheme, never its URL
    outcome: str  # sent | failed | dropped
    attempts: int
    error: str | None
    ts_queued: datetime


@dataclass(frozen=True, slots=True)
class StoredSend:
    """A row of ``notifications`` read back (for ``tradebridge notify log``)."""

    id: int
    message_id: str
    key: str
    kind: str
    phase: str
    title: str
    channel: str
    outcome: str
    attempts: int
    error: str | None
    ts_queued: datetime
    ts_done: datetime


class NotificationQueries(LedgerPool):
    """The notifier's statements."""

    async def observe_condition(
        self, key: str, kind: str, *, fingerprint: str, summary: str, token: str,
        window_s: float, repeat_s: float,
    ) -> tuple[str | None, datetime]:  # fmt: skip
        """Note that ``key`` is on now; return the phase this caller must send (None: no
        message, someone else sent it or the window is not over) and when it began."""
        with store_errors():
            try:
                r = await self._db.fetchrow(
                    _OBSERVE_SQL, key, kind, fingerprint, summary, token, window_s, repeat_s
                )
            except asyncpg.UndefinedTableError:
                raise StoreError(_NO_TABLE) from None
        assert r is not None
        return (r["last_phase"] if r["mine"] else None), r["opened_at"]

    async def resolve_unseen(self, seen: Sequence[str], grace_s: float) -> list[Resolution]:
        """End the conditions on that nobody has seen on for ``grace_s``, except ``seen``;
        return those this call ended."""
        with store_errors():
            records = await self._db.fetch(_RESOLVE_SQL, list(seen), grace_s)
        return [
            Resolution(r["key"], r["kind"], r["summary"], r["announced"], r["opened_at"],
                       r["resolved_at"])
            for r in records
        ]  # fmt: skip

    async def hold_conditions(self, keys: Sequence[str], prefixes: Sequence[str] = ()) -> None:
        """Count the conditions on named by ``keys``, or whose key begins with one of
        ``prefixes``, as seen on now (``resolve_unseen`` leaves them on for another grace)."""
        if not keys and not prefixes:
            return
        with store_errors():
            await self._db.execute(_HOLD_SQL, list(keys), list(prefixes))

    async def take_turn(self, key: str, kind: str, *, token: str, window_s: float) -> bool:
        """Return whether this caller may send a message of ``key`` now (none in the window)."""
        with store_errors():
            r = await self._db.fetchrow(_TURN_SQL, key, kind, token, window_s)
        return r is not None and bool(r["mine"])

    async def verdicts_waiting(self, since: datetime, statuses: Sequence[str]) -> bool:
        """Return whether denied/rejected rows since ``since`` wait to be announced."""
        with store_errors():
            return bool(await self._db.fetchval(_VERDICTS_WAITING_SQL, since, list(statuses)))

    async def claim_verdicts(
        self, since: datetime, statuses: Sequence[str], limit: int = 200
    ) -> list[Verdict]:
        """Claim the denied/rejected rows since ``since`` nobody announced; return them."""
        with store_errors():
            records = await self._db.fetch(_CLAIM_VERDICTS_SQL, since, list(statuses), limit)
        return [
            Verdict(r["signal_id"], r["status"], r["account_name"], r["strategy_name"],
                    r["instrument"], r["side"], r["quantity"], r["error_message"], r["ts_final"])
            for r in records
        ]  # fmt: skip

    async def claim_reconciled(self, since: datetime, limit: int = 200) -> list[Correction]:
        """Claim the corrections reconcile made since ``since`` nobody announced."""
        with store_errors():
            records = await self._db.fetch(_CLAIM_RECONCILED_SQL, since, limit)
        out = []
        for r in records:
            detail = r["detail"] if isinstance(r["detail"], dict) else {}
            out.append(
                Correction(r["signal_id"], r["status"], r["account_name"], r["instrument"],
                           detail.get("broker_status"), r["error_message"], r["created_at"],
                           detail.get("ledger_status"))
            )  # fmt: skip
        return out

    async def queue_backlog(self) -> tuple[int, float]:
        """Return the pending rows and the age of the oldest (seconds; 0 when none)."""
        with store_errors():
            r = await self._db.fetchrow(_BACKLOG_SQL)
        assert r is not None
        return int(r["pending"]), float(r["oldest_s"] or 0.0)

    async def record_sends(self, sends: Sequence[SendRecord]) -> None:
        """Record deliveries (one row per message and channel)."""
        if not sends:
            return
        with store_errors():
            async with self._db.acquire() as conn:
                await conn.executemany(
                    _RECORD_SQL,
                    [
                        (s.message_id, s.key, s.kind, s.phase, s.title, s.body, s.channel,
                         s.outcome, s.attempts, s.error, s.ts_queued)
                        for s in sends
                    ],
                )  # fmt: skip

    async def recent_sends(self, limit: int = 50) -> list[StoredSend]:
        """Return the newest deliveries, newest first."""
        with store_errors():
            records = await self._db.fetch(_RECENT_SQL, limit)
        return [StoredSend(**dict(r)) for r in records]

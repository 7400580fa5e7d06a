"""Claiming rows for the dispatcher, handing them back, and recovering dead workers' rows.

Workers ``claim_next`` with ``FOR UPDATE SKIP LOCKED``, at most the oldest pending row per
account and none of an account that already has a row in flight, so one account's orders are
placed in insertion order while accounts proceed in parallel. A row goes back to ``pending``
only while nothing of it was sent (``processing``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta

from tradebridge.domain.kill import KillSwitches
from tradebridge.domain.lifecycle import SignalStatus
from tradebridge.store.ledger._sql import status_list
from tradebridge.store.ledger.kill import switch_from_json
from tradebridge.store.ledger.pool import LAZY_COMMIT, Conn, LedgerPool
from tradebridge.store.ledger.rows import LedgerRow, RequeueResult

# The oldest pending row of each account (heads of the per-account queues) whose account has
# nothing being sent (processing, submitted) and, unless the head is a plain order, no unknown
# row within the bound (docs/dispatcher.md "Unknown outcomes"). A head locked by another
# claimer is skipped, and the row behind it is not a head yet, so an account never has two
# claimers at once. Behind each head we locked, the
# next $3 - 1 pending rows of its account (followers) are claimed too, in the same statement:
# whoever claims an account's rows holds its head's lock, so a follower can only be claimed by
# the holder of its head (a claimer that committed first made the account busy, one that has
# not committed holds the head, and a head claimed meanwhile fails the recheck of its status).
# Claim, 'processing' and the 'claimed' events are one statement: one round trip. It also
# returns the kill switches as its own snapshot has them (repeated on each row): a kill
# committed before the claim began is seen by every row it claims, at no extra query.
_CLAIM_SQL = f"""
with heads as (
    select s.seq, s.account_name, s.created_at
      from trading_signals s
     where s.status = '{SignalStatus.PENDING}'
       and s.signal_id is not null
       -- NOT IN over a small set becomes one hashed subplan, where NOT EXISTS under the
       -- LIMIT would compare every pending row with every busy account.
       and (s.account_name is null or s.account_name not in (
           select f.account_name from trading_signals f
            where f.status in {status_list(SignalStatus.PROCESSING, SignalStatus.SUBMITTED)}
              and f.account_name is not null))
       -- An unknown row younger than the bound ($4) holds back the intents that depend on
       -- the position or working orders (everything but a plain order), or every row ($5).
       and (s.account_name is null
            or (coalesce(s.intent, 'order') = 'order' and not $5::boolean)
            or s.account_name not in (
                select u.account_name from trading_signals u
                 where u.status = '{SignalStatus.UNKNOWN}' and u.account_name is not null
                   and coalesce(u.last_attempt_at, u.updated_at) > now() - $4::interval))
       -- An unknown flatten holds back every row: run again, it would close what they open.
       and (s.account_name is null
            or s.account_name not in (
                select v.account_name from trading_signals v
                 where v.status = '{SignalStatus.UNKNOWN}' and v.account_name is not null
                   and v.intent = 'flatten'
                   and coalesce(v.last_attempt_at, v.updated_at) > now() - $4::interval))
       -- Only rows that could be heads hold one back: a row without a signal_id (legacy)
       -- is never claimed, and would block its account forever.
       and not exists (
           select 1 from trading_signals o
            where o.account_name = s.account_name and o.status = '{SignalStatus.PENDING}'
              and o.signal_id is not null
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
           where n.account_name = h.account_name and n.status = '{SignalStatus.PENDING}'
             and n.signal_id is not null
             and (n.created_at, n.seq) > (h.created_at, h.seq)
           order by n.created_at, n.seq
           limit greatest($3::int - 1, 0)) f
), claimed as (
    update trading_signals t
       set status = '{SignalStatus.PROCESSING}', claimed_by = $1, claimed_at = now()
      from picked
     where t.seq = picked.seq and t.status = '{SignalStatus.PENDING}'
    returning t.*
), events as (
    insert into order_history (signal_id, event, detail)
    select signal_id, 'claimed', jsonb_build_object('worker', $1::text) from claimed
)
select c.*, k.switches as kill_switches_at_claim
  from claimed c
 cross join (select coalesce(jsonb_agg(to_jsonb(s)), '[]'::jsonb) as switches
               from kill_switches s) k
 order by c.created_at, c.seq
"""  # noqa: S608 - statuses from SignalStatus, no input
# The same, committed lazily (LAZY_COMMIT: a claim lost in a database crash leaves its rows
# pending). Evaluated with the switches, so for every claim that returns a row; a claim of
# nothing writes nothing and waits for no flush anyway.
_CLAIM_LAZY_SQL = _CLAIM_SQL.replace(
    "as switches\n", f"as switches,\n                    {LAZY_COMMIT} as lazy\n", 1
)
# The claim, prepared on each new connection (pool.open_pool): both commit modes.
HOT_STATEMENTS = (_CLAIM_SQL, _CLAIM_LAZY_SQL)

# Only rows still 'processing' under this worker's claim: nothing of theirs was sent.
_HAND_BACK_SQL = f"""
with back as (
    update trading_signals set status = '{SignalStatus.PENDING}'
     where signal_id = any($1::text[]) and status = '{SignalStatus.PROCESSING}' and claimed_by = $2
    returning signal_id
), events as (
    insert into order_history (signal_id, event, detail)
    select signal_id, 'requeued',
           jsonb_build_object('from', '{SignalStatus.PROCESSING}', 'to', '{SignalStatus.PENDING}',
                              'reason', $3::text)
      from back
)
select signal_id from back
"""  # noqa: S608 - statuses from SignalStatus, no input

_REQUEUE_SQL = f"""
update trading_signals set status = '{SignalStatus.PENDING}'
 where status = '{SignalStatus.PROCESSING}'
   and ((claimed_at < now() - $1::interval
         and not coalesce(claimed_by = any($3::text[]), false))
        or claimed_by = $2)
returning signal_id
"""  # noqa: S608 - statuses from SignalStatus, no input
_MARK_UNKNOWN_SQL = f"""
update trading_signals
   set status = '{SignalStatus.UNKNOWN}',
       error_message = 'worker lost during submit; awaiting lookup'
 where status = '{SignalStatus.SUBMITTED}'
   and ((claimed_at < now() - $1::interval
         and not coalesce(claimed_by = any($3::text[]), false))
        or claimed_by = $2)
returning signal_id
"""  # noqa: S608 - statuses from SignalStatus, no input
_AWAITING_LOOKUP_SQL = f"""
select signal_id from trading_signals
 where status = '{SignalStatus.UNKNOWN}'
   and ((claimed_at < now() - $1::interval
         and not coalesce(claimed_by = any($3::text[]), false))
        or claimed_by = $2)
 order by created_at, seq
"""  # noqa: S608 - statuses from SignalStatus, no input


@dataclass(frozen=True, slots=True)
class Claim:
    """Rows claimed by one statement, and the kill switches as that statement saw them."""

    rows: list[LedgerRow]
    kill: KillSwitches


class Claims(LedgerPool):
    """Claims of pending rows, and their way back."""

    async def claim(
        self,
        worker_id: str,
        limit: int = 1,
        *,
        per_account: int = 1,
        unknown_bound: timedelta = timedelta(seconds=60),
        unknown_blocks_all: bool = False,
    ) -> Claim:
        """Claim as ``claim_next`` does; also return the kill switches as of the claim (none
        when nothing was claimed)."""
        if limit < 1 or per_account < 1:
            raise ValueError("limit and per_account must be at least 1")
        records = await self._db.fetch(
            _CLAIM_LAZY_SQL if self.lazy_commits else _CLAIM_SQL,
            worker_id, limit, per_account, unknown_bound, unknown_blocks_all,
        )  # fmt: skip
        kill = KillSwitches()
        if records:
            kill = KillSwitches.of(
                switch_from_json(j) for j in records[0]["kill_switches_at_claim"]
            )
        return Claim([LedgerRow.from_record(r) for r in records], kill)

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
        claim = await self.claim(
            worker_id, limit, per_account=per_account, unknown_bound=unknown_bound,
            unknown_blocks_all=unknown_blocks_all,
        )  # fmt: skip
        return claim.rows

    async def held_back(
        self,
        account_name: str,
        *,
        unknown_bound: timedelta,
        besides: str | None = None,
        flattens_only: bool = False,
    ) -> list[str]:
        """Return the account's unknown rows within the bound, and its rows whose order is on
        its way (``submitted``: a resend after a lookup proved the order absent, or another
        task's send): what holds back its intents that depend on the position. With
        ``flattens_only``: its unknown flattens, what holds back a plain order too."""
        rows = await self._db.fetch(
            "select signal_id from trading_signals where account_name = $1 "  # noqa: S608 - statuses from SignalStatus, no input
            "and signal_id is distinct from $3 "
            f"and ((status = '{SignalStatus.UNKNOWN}' "
            "      and coalesce(last_attempt_at, updated_at) > now() - $2::interval "
            "      and (not $4::boolean or intent = 'flatten')) "
            f"     or (not $4::boolean and status = '{SignalStatus.SUBMITTED}')) "
            "order by created_at, seq",
            account_name,
            unknown_bound,
            besides,
            flattens_only,
        )
        return [str(r["signal_id"]) for r in rows]

    async def hand_back(self, worker_id: str, signal_ids: Sequence[str], reason: str) -> list[str]:
        """Return claimed rows that were not sent (``processing``) to ``pending``; one statement."""
        if not signal_ids:
            return []
        records = await self._db.fetch(_HAND_BACK_SQL, list(signal_ids), worker_id, reason)
        return [str(r["signal_id"]) for r in records]

    async def requeue_stale(
        self,
        *,
        older_than: timedelta,
        claimed_by: str | None = None,
        spare: Sequence[str] = (),
    ) -> RequeueResult:
        """Hand back rows of dead workers: unsent ones to pending, sent ones to a lookup.

        A row claimed before ``older_than`` ago (or by ``claimed_by``, whatever its age) that
        is still ``processing`` sent nothing, since a worker writes ``submitted`` before the
        request leaves; it goes back to ``pending``. A stale ``submitted`` row may have
        reached the broker: it becomes ``unknown``. ``unknown`` rows stay as they are. Both
        are returned for the broker lookup; none is ever put back to ``pending``.

        Rows claimed by a worker in ``spare`` (alive) are left to it, however old: its
        request may still be waiting to leave, and a lookup before it does finds nothing.
        """
        async with self._db.acquire() as conn, conn.transaction():
            return await _requeue(conn, older_than, claimed_by, spare)

    async def recover_workers(
        self, namespace: int, workers: Sequence[str], *, hold_s: float
    ) -> dict[str, RequeueResult]:
        """Recover dead workers' rows as ``requeue_stale(claimed_by=worker)`` does, each
        worker whose liveness lock ``(namespace, hashtext(worker))`` is free; return what
        moved, by worker (one whose lock is held lives: it is not in the result).

        The free locks are taken for this transaction and held ``hold_s`` before the rows
        move: meanwhile their workers cannot take them again, and a send fenced before its
        worker lost the lock has left and shows at the broker (dispatch/liveness.py). Were a
        lock only tried and given back, its worker could take it again between the try and
        the move, and send a row just marked ``unknown``.
        """
        if not workers:
            return {}
        async with self._db.acquire() as conn, conn.transaction():
            dead = [
                worker
                for worker in workers
                if await conn.fetchval(
                    "select pg_try_advisory_xact_lock($1, hashtext($2))", namespace, worker
                )
            ]
            if dead and hold_s > 0:
                await asyncio.sleep(hold_s)
            return {worker: await _requeue(conn, _NEVER, worker, ()) for worker in dead}


# A claim no age makes stale: only the named worker's rows move.
_NEVER = timedelta(days=36500)


async def _requeue(
    conn: Conn, older_than: timedelta, claimed_by: str | None, spare: Sequence[str]
) -> RequeueResult:
    """The moves of ``requeue_stale``, in the caller's transaction."""
    args = (older_than, claimed_by, list(spare))
    requeued = await conn.fetch(_REQUEUE_SQL, *args)
    unknown = await conn.fetch(_MARK_UNKNOWN_SQL, *args)
    waiting = await conn.fetch(_AWAITING_LOOKUP_SQL, *args)
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

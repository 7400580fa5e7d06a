"""What placement asks to resolve an unknown outcome: the submits, their plans, baselines.

A lookup tells our order from others by the plan and baseline recorded with each submit and
by the broker orders the account's other rows already own (docs/dispatcher.md).
"""

from __future__ import annotations

from typing import Any

import asyncpg

from tradebridge.domain.lifecycle import SignalStatus
from tradebridge.store.ledger._sql import status_list
from tradebridge.store.ledger.pool import LedgerPool


def _this_life(alias: str, signal_id: str) -> str:
    """Return the SQL condition keeping ``alias``'s history events of the row that holds the
    signal id now: after the last ``deleted`` event (0015), where a deleted row's end."""
    # Aliases and placeholders from this module's own statements, no input.
    return (
        f"{alias}.id > coalesce((select max(d.id) from order_history d "  # noqa: S608
        f"where d.signal_id = {signal_id} and d.event = 'deleted'), 0)"
    )


# An account's other rows sent and unresolved, with the plan and baseline of their submits.
_SENT_UNRESOLVED = status_list(
    SignalStatus.SUBMITTED, SignalStatus.UNKNOWN, SignalStatus.NEEDS_REVIEW
)
_SENT_ROWS_SQL = f"""
select s.signal_id, s.status, s.last_attempt_at,
       (select h.detail ->> 'given_up_at' from order_history h
         where h.signal_id = s.signal_id and h.event in ('submitted', 'resubmitted', 'unknown')
           and {_this_life("h", "s.signal_id")}
         order by h.id desc limit 1) as given_up_at,
       (select h.detail from order_history h
         where h.signal_id = s.signal_id and h.event = 'submitted'
           and {_this_life("h", "s.signal_id")}
         order by h.id desc limit 1) as plan,
       (select h.detail -> 'baseline' from order_history h
         where h.signal_id = s.signal_id and h.event in ('submitted', 'resubmitted')
           and h.detail ? 'baseline' and {_this_life("h", "s.signal_id")}
         order by h.id desc limit 1) as baseline
  from trading_signals s
 where s.account_name = $1 and s.signal_id <> $2
   and s.status in {_SENT_UNRESOLVED}
"""  # noqa: S608 - statuses from SignalStatus, no input


class Lookups(LedgerPool):
    """The recorded submits of a row and of its account's other rows."""

    async def submit_details(self, signal_id: str) -> list[tuple[str, Any]]:
        """Return (event, detail) of the row's submits and resubmits, newest first (not those
        of a deleted row that held the signal id before)."""
        rows = await self._db.fetch(
            "select event, detail from order_history h where signal_id = $1 "  # noqa: S608 - no input
            f"and event in ('submitted', 'resubmitted') and {_this_life('h', '$1')} "
            "order by id desc",
            signal_id,
        )
        return [(str(r["event"]), r["detail"]) for r in rows]

    async def sent_rows_besides(self, account_name: str, signal_id: str) -> list[asyncpg.Record]:
        """Return the account's other rows sent and unresolved, with their plan and baseline.

        Each record: ``signal_id``, ``status``, ``last_attempt_at``, ``given_up_at`` (when
        the sender of its latest submit stopped waiting for the answer, as the ``unknown``
        outcome recorded it; else None), ``plan`` (the detail of the latest submit) and
        ``baseline`` (the latest recorded lookup baseline).
        """
        return list(await self._db.fetch(_SENT_ROWS_SQL, account_name, signal_id))

    async def latest_baseline_after(self, signal_id: str) -> str | None:
        """Return ``baseline_after`` of the row's latest submit that recorded a baseline."""
        value = await self._db.fetchval(
            "select detail->>'baseline_after' from order_history h where signal_id = $1 "  # noqa: S608 - no input
            "and event in ('submitted', 'resubmitted') and detail ? 'baseline' "
            f"and {_this_life('h', '$1')} "
            "order by id desc limit 1",
            signal_id,
        )
        return None if value is None else str(value)

    async def resting_exit_orders(self, account_name: str, *, besides: str) -> frozenset[str]:
        """Return the broker order ids of the account's other exits, target moves and
        reverses still working: sized from a position a closing order is about to end."""
        rows = await self._db.fetch(
            "select tradovate_order_id from trading_signals where account_name = $1 "  # noqa: S608 - statuses from SignalStatus, no input
            "and tradovate_order_id is not null and signal_id <> $2 "
            "and intent in ('exit', 'target', 'reverse') "
            f"and status in ('{SignalStatus.WORKING}', '{SignalStatus.PARTIALLY_FILLED}')",
            account_name,
            besides,
        )
        return frozenset(str(r["tradovate_order_id"]) for r in rows)

    async def owned_orders(self, account_name: str, *, besides: str) -> frozenset[str]:
        """Return the broker order ids the account's other rows own (what a lookup must skip).

        Rows of the last week only: an older order rests at the broker from before any
        submit a lookup is about, so the lookup's baseline or creation time rules it out.
        Also the orders ``besides``'s own earlier rows held, up to the last ``deleted`` event
        of its history (0015: a row deleted and its signal id reused): they carry the same
        client id, and the history outlives the row.
        """
        rows = await self._db.fetch(
            "select tradovate_order_id from trading_signals where account_name = $1 "
            "and tradovate_order_id is not null and signal_id <> $2 "
            "and created_at > now() - interval '7 days' "
            "union select detail->>'broker_order_id' from order_history "
            "where signal_id = $2 and detail ? 'broker_order_id' and id <= ("
            "select max(id) from order_history where signal_id = $2 and event = 'deleted')",
            account_name,
            besides,
        )
        return frozenset(str(r[0]) for r in rows if r[0] is not None)

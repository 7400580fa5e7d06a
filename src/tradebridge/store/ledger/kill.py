"""The kill switches (``kill_switches``, ``kill_switch_events``; migration 0007).

Reading them is one small statement (every process reads them on each notification on
``KILL_CHANNEL`` and on a timer: ``store/kill.py``). Throwing or releasing one is one
statement too: the switch, its event and, for a kill that flattens, one ``flatten`` row per
account (with their ``received`` events), all or nothing.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

import asyncpg

from tradebridge.domain.kill import KillSwitch, KillSwitchChange, KillSwitches, account_of, scope_of
from tradebridge.errors import StoreError
from tradebridge.store.ledger.errors import store_errors
from tradebridge.store.ledger.pool import Conn, LedgerPool

KILL_CHANNEL = "tradebridge_kill_switch"
"""The channel the ``kill_switches`` trigger notifies on every change."""

_COLUMNS = "scope, engaged, reason, changed_by, via, changed_at"

_READ_SQL = f"select {_COLUMNS} from kill_switches"  # noqa: S608 - constant text

# Changes of one switch take turns (an advisory lock on its scope, in the transaction), so
# each reads the state it changes (_BEFORE_SQL) and reports it.
_LOCK_SQL = "select pg_advisory_xact_lock($1, hashtext($2))"
_BEFORE_SQL = f"select {_COLUMNS} from kill_switches where scope = $1"  # noqa: S608 - constant text
KILL_LOCK_NAMESPACE = 0x746B  # 'tk' (two-int form, like the account locks)

# $1 scope, $2 reason, $3 by, $4 via, $5 flatten accounts, $6 their signal ids, $7 group id,
# $8 the rows' metadata, $9 flatten asked.
_KILL_SQL = f"""
with state as (
    insert into kill_switches (scope, engaged, reason, changed_by, via, changed_at)
    values ($1, true, $2, $3, $4, clock_timestamp())
    on conflict (scope) do update
       set engaged = true, reason = excluded.reason, changed_by = excluded.changed_by,
           via = excluded.via, changed_at = excluded.changed_at
    returning {_COLUMNS}
), flattens as (
    insert into trading_signals (signal_id, account_name, intent, strategy_name, source,
                                 group_id, metadata)
    select f.signal_id, f.account_name, 'flatten', 'kill_switch', $4, $7, $8::jsonb
      from unnest($5::text[], $6::text[]) as f(account_name, signal_id)
    returning signal_id
), received as (
    insert into order_history (signal_id, event, detail)
    select signal_id, 'received', jsonb_build_object('kill_switch', $1::text, 'via', $4::text)
      from flattens
), event as (
    insert into kill_switch_events (scope, engaged, flatten, signal_ids, reason, changed_by,
                                    via, changed_at)
    select scope, true, $9, $6::text[], reason, changed_by, via, changed_at from state
)
select * from state
"""  # noqa: S608 - constant text

# A resume changes only a switch that is on; one that is off (or was never thrown) is left as
# it is and reported so. $1 scope, $2 reason, $3 by, $4 via.
_RESUME_SQL = f"""
with state as (
    update kill_switches
       set engaged = false, reason = $2, changed_by = $3, via = $4,
           changed_at = clock_timestamp()
     where scope = $1 and engaged
    returning {_COLUMNS}
), event as (
    insert into kill_switch_events (scope, engaged, reason, changed_by, via, changed_at)
    select scope, false, reason, changed_by, via, changed_at from state
)
select * from state
"""  # noqa: S608 - constant text


class KillSwitchQueries(LedgerPool):
    """Reading, throwing and releasing the kill switches."""

    async def kill_switches(self, *, forced: bool = False) -> KillSwitches:
        """Return every switch the database holds (``forced``: the settings' global one)."""
        with store_errors():
            try:
                records = await self._db.fetch(_READ_SQL)
            except asyncpg.UndefinedTableError:
                raise StoreError(
                    "the ledger has no kill_switches table (migration 0007_kill_switch): run "
                    "`tradebridge db migrate`"
                ) from None
        return KillSwitches.of((_switch(r) for r in records), forced=forced)

    async def engage_kill_switch(
        self,
        account: str | None,
        *,
        changed_by: str,
        via: str,
        reason: str | None = None,
        flatten: Sequence[tuple[str, str]] = (),
        group_id: str | None = None,
    ) -> KillSwitchChange:
        """Throw the switch of ``account`` (None: every account).

        ``flatten``: (signal id, account) of the ``flatten`` rows to queue with it, in
        ``group_id``: intent ``flatten`` without an instrument, so a worker closes each
        account's positions and cancels its working orders (kill switch or not).
        """
        scope = scope_of(account)
        ids = [signal_id for signal_id, _ in flatten]
        accounts = [name for _, name in flatten]
        metadata: Mapping[str, Any] = {
            "kill_switch": {"scope": scope, "by": changed_by, "via": via, "reason": reason}
        }
        with store_errors():
            async with self._db.acquire() as conn, conn.transaction():
                before = await _locked_before(conn, scope)
                record = await conn.fetchrow(
                    _KILL_SQL, scope, reason, changed_by, via, accounts, ids, group_id,
                    dict(metadata), bool(flatten),
                )  # fmt: skip
        assert record is not None
        return KillSwitchChange(before, _switch(record), tuple(ids))

    async def release_kill_switch(
        self, account: str | None, *, changed_by: str, via: str, reason: str | None = None
    ) -> KillSwitchChange | None:
        """Release the switch of ``account`` (None: the global one); None if it was not on."""
        scope = scope_of(account)
        with store_errors():
            async with self._db.acquire() as conn, conn.transaction():
                before = await _locked_before(conn, scope)
                record = await conn.fetchrow(_RESUME_SQL, scope, reason, changed_by, via)
        if record is None:
            return None
        return KillSwitchChange(before, _switch(record))


def _switch(record: asyncpg.Record | Mapping[str, Any]) -> KillSwitch:
    return KillSwitch(
        account=account_of(str(record["scope"])),
        engaged=bool(record["engaged"]),
        changed_by=str(record["changed_by"]),
        changed_at=record["changed_at"],
        reason=record["reason"],
        via=str(record["via"]),
    )


def switch_from_json(data: Mapping[str, Any]) -> KillSwitch:
    """Return a switch from its row as JSON (``to_jsonb``: the time as ISO text)."""
    changed_at = data.get("changed_at")
    return _switch({**data, "changed_at": None if changed_at is None else (
        datetime.fromisoformat(str(changed_at)))})  # fmt: skip


async def _locked_before(conn: Conn, scope: str) -> KillSwitch | None:
    """Take the scope's lock until the transaction ends; return the switch as it stands."""
    await conn.execute(_LOCK_SQL, KILL_LOCK_NAMESPACE, scope)
    found = await conn.fetchrow(_BEFORE_SQL, scope)
    return None if found is None else _switch(found)

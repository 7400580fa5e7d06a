"""Reconcile's position check in the ledger (migration 0010, docs/dispatcher.md "Positions").

``our_positions`` sums, per contract, the signed fills of tradebridge's own orders on an
account: each row's filled quantity in the direction of the order its last plan sent
(``submitted``/``resubmitted`` with a ``plan`` of ``order``), minus its bracket legs' fills
(``leg_fill`` events the tracker writes onto the entry's row; where a leg's fill event was
lost, the total its order report showed, written by reconcile with the fill id ``cum@N``).
``position_checks`` keeps, per account and contract, what the broker held besides that
(``accepted``) and whether the last checks found it moved (``diverged_since``).
``take_position_turns`` lets one worker of many check an account per interval.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

import asyncpg

from tradebridge.domain.lifecycle import SignalStatus
from tradebridge.errors import StoreError
from tradebridge.store.ledger._sql import status_list
from tradebridge.store.ledger.errors import store_errors
from tradebridge.store.ledger.pool import LedgerPool

_NO_TABLE = (
    "the ledger has no position check tables (migration 0010_position_checks): run "
    "`tradebridge db migrate`"
)
# Rows whose effect on the position is not known yet.
_IN_FLIGHT = status_list(
    SignalStatus.PENDING, SignalStatus.PROCESSING, SignalStatus.SUBMITTED, SignalStatus.UNKNOWN,
    SignalStatus.NEEDS_REVIEW,
)  # fmt: skip

# $1 accounts, $2 interval (s): an account's turn is this caller's when nobody took it
# within the interval; one statement for every account of a round.
_TURN_SQL = """
insert into position_check_turns as t (account_name) select unnest($1::text[])
on conflict (account_name) do update set checked_at = clock_timestamp()
 where t.checked_at < clock_timestamp() - $2::float8 * interval '1 second'
returning account_name, baselined_at
"""
_BASELINED_SQL = """
update position_check_turns set baselined_at = coalesce(baselined_at, clock_timestamp())
 where account_name = $1
"""
# Nothing in flight on the account, and nothing moved for $2 seconds: the tracker's events
# (and the fills they carry) have landed.
_QUIET_SQL = f"""
select not exists (
    select 1 from trading_signals
     where account_name = $1
       and (status in {_IN_FLIGHT}
            or updated_at > clock_timestamp() - $2::float8 * interval '1 second')
) as quiet
"""  # noqa: S608 - statuses from SignalStatus, no input
_OURS_SQL = """
with plans as (
    select distinct on (s.signal_id)
           s.signal_id, coalesce(s.filled_qty, 0) as filled, h.detail ->> 'contract' as contract,
           case h.detail ->> 'side' when 'buy' then 1 when 'sell' then -1 else 0 end as sign
      from trading_signals s
      join order_history h on h.signal_id = s.signal_id
                          and h.event in ('submitted', 'resubmitted')
                          and h.detail ->> 'plan' = 'order'
     where s.account_name = $1
     order by s.signal_id, h.id desc
), per_leg as (
    -- A leg's fills as events (increments), or as reconcile read its total from the
    -- broker's report (fill id "cum@N", qty N): whichever says more.
    select l.signal_id,
           greatest(
               coalesce(sum((l.detail ->> 'qty')::numeric)
                        filter (where l.detail ->> 'fill_id' not like 'cum@%'), 0),
               coalesce(max((l.detail ->> 'qty')::numeric)
                        filter (where l.detail ->> 'fill_id' like 'cum@%'), 0)
           ) as filled
      from order_history l
     where l.event = 'leg_fill' and l.signal_id in (select signal_id from plans)
     group by l.signal_id, l.detail ->> 'order'
), legs as (
    select signal_id, sum(filled) as filled from per_leg group by signal_id
)
select p.contract, sum(p.sign * (p.filled - coalesce(g.filled, 0))) as net
  from plans p left join legs g on g.signal_id = p.signal_id
 where p.contract is not null
 group by p.contract
"""
# A flatten of the account sent after $2: positions closed by an order no row's plan names.
_FLATTENED_SQL = """
select exists (
    select 1 from trading_signals
     where account_name = $1 and intent = 'flatten' and ts_submitted > $2
) as flattened
"""
_CHECKS_SQL = """
select account_name, contract, accepted, broker_net, ours, checked_at, accepted_at, accepted_by,
       diverged_since, divergence
  from position_checks
 where ($1::text is null or account_name = $1)
 order by account_name, contract
"""
# $10: the row's accepted_at as the check read it (null: it read none). A row accepted
# meanwhile (an operator, another worker's check) is left as it is: this check is stale.
_SAVE_SQL = """
insert into position_checks as c
    (account_name, contract, accepted, broker_net, ours, checked_at, accepted_at, accepted_by,
     diverged_since, divergence)
values ($1, $2, $3, $4, $5, clock_timestamp(), coalesce($6, clock_timestamp()), $7, $8, $9)
on conflict (account_name, contract) do update set
    accepted = excluded.accepted, broker_net = excluded.broker_net, ours = excluded.ours,
    checked_at = excluded.checked_at, accepted_at = excluded.accepted_at,
    accepted_by = excluded.accepted_by, diverged_since = excluded.diverged_since,
    divergence = excluded.divergence
 where c.accepted_at is not distinct from $10
"""
# An operator takes the broker's position as it is: what the last check read is accepted.
_ACCEPT_SQL = """
update position_checks
   set accepted = broker_net - ours, accepted_at = clock_timestamp(), accepted_by = $3,
       diverged_since = null, divergence = null
 where account_name = $1 and ($2::text is null or contract = $2)
returning contract
"""
# $1 the entry's client id, $2 the entry's broker order id (either may be null), $3 the
# fill (its leg's order id and fill id name it), $4 the leg's account (a broker order id is
# unique in one environment only). One row per leg fill, whoever writes it.
_LEG_FILL_SQL = """
with entry as (
    select signal_id from trading_signals
     where ($1::text is not null and client_order_id = $1)
        or ($2::text is not null and tradovate_order_id = $2 and account_name = $4)
     order by (client_order_id = $1) desc nulls last
     limit 1
), written as (
    insert into order_history (signal_id, event, detail)
    select signal_id, 'leg_fill', $3::jsonb from entry
    on conflict (signal_id, (detail ->> 'order'), (detail ->> 'fill_id'))
       where event = 'leg_fill' do nothing
    returning signal_id
)
select e.signal_id, exists (select 1 from written) as written from entry e
"""


@dataclass(frozen=True, slots=True)
class PositionTurn:
    """A turn to check an account, and whether a first check of it ever completed."""

    baselined: bool


@dataclass(frozen=True, slots=True)
class PositionCheck:
    """One account's position in one contract as the last check saw it."""

    account_name: str
    contract: str
    accepted: Decimal  # the broker's net minus ours, as accepted
    broker_net: Decimal
    ours: Decimal
    checked_at: datetime | None = None
    accepted_at: datetime | None = None
    accepted_by: str = "baseline"
    diverged_since: datetime | None = None
    divergence: dict[str, Any] | None = None

    @property
    def unexplained(self) -> Decimal:
        """Return how far the broker's position is from what tradebridge explains."""
        return self.broker_net - self.ours - self.accepted

    @classmethod
    def from_record(cls, r: asyncpg.Record) -> PositionCheck:
        """Build one from a ``position_checks`` row."""
        return cls(
            r["account_name"], r["contract"], r["accepted"], r["broker_net"], r["ours"],
            r["checked_at"], r["accepted_at"], r["accepted_by"], r["diverged_since"],
            r["divergence"],
        )  # fmt: skip


class PositionQueries(LedgerPool):
    """The position check's statements."""

    async def take_position_turns(
        self, accounts: Sequence[str], every_s: float
    ) -> dict[str, PositionTurn]:
        """Return this caller's turns among ``accounts``: those nobody checked within
        ``every_s`` (each now this caller's to check)."""
        with store_errors():
            try:
                records = await self._db.fetch(_TURN_SQL, list(accounts), every_s)
            except asyncpg.UndefinedTableError:
                raise StoreError(_NO_TABLE) from None
        return {
            str(r["account_name"]): PositionTurn(baselined=r["baselined_at"] is not None)
            for r in records
        }

    async def mark_baselined(self, account: str) -> None:
        """Note that a first check of ``account`` completed."""
        with store_errors():
            await self._db.execute(_BASELINED_SQL, account)

    async def account_quiet(self, account: str, settle_s: float) -> bool:
        """Return whether no row of ``account`` is in flight or moved within ``settle_s``."""
        with store_errors():
            return bool(await self._db.fetchval(_QUIET_SQL, account, settle_s))

    async def our_positions(self, account: str) -> dict[str, Decimal]:
        """Return the signed fills of tradebridge's orders on ``account``, per contract."""
        with store_errors():
            records = await self._db.fetch(_OURS_SQL, account)
        return {str(r["contract"]): Decimal(r["net"]) for r in records}

    async def flattened_since(self, account: str, since: datetime) -> bool:
        """Return whether a flatten of ``account`` was sent after ``since``."""
        with store_errors():
            return bool(await self._db.fetchval(_FLATTENED_SQL, account, since))

    async def position_checks(self, account: str | None = None) -> list[PositionCheck]:
        """Return the stored checks (of one account, or all), by account and contract."""
        with store_errors():
            try:
                records = await self._db.fetch(_CHECKS_SQL, account)
            except asyncpg.UndefinedTableError:
                raise StoreError(_NO_TABLE) from None
        return [PositionCheck.from_record(r) for r in records]

    async def save_position_checks(
        self, checks: Sequence[PositionCheck], read: Mapping[str, PositionCheck] | None = None
    ) -> None:
        """Write what one check found (one row per account and contract), over what it
        ``read`` (by contract): a row accepted since then is left as it is."""
        if not checks:
            return
        read = read or {}
        with store_errors():
            await self._pool.executemany(
                _SAVE_SQL,
                [
                    (c.account_name, c.contract, c.accepted, c.broker_net, c.ours,
                     c.accepted_at, c.accepted_by, c.diverged_since, c.divergence,
                     read[c.contract].accepted_at if c.contract in read else None)
                    for c in checks
                ],
            )  # fmt: skip

    async def accept_positions(self, account: str, contract: str | None, by: str) -> list[str]:
        """Accept the broker's positions of ``account`` as the last check read them (one
        contract, or all); return the contracts accepted."""
        with store_errors():
            try:
                records = await self._db.fetch(_ACCEPT_SQL, account, contract, by)
            except asyncpg.UndefinedTableError:
                raise StoreError(_NO_TABLE) from None
        return [str(r["contract"]) for r in records]

    async def record_leg_fill(
        self,
        *,
        account: str,
        entry_client_id: str | None,
        entry_order_id: str | None,
        leg_order_id: str,
        fill_id: str,
        qty: int,
        price: Decimal,
    ) -> tuple[str, bool] | None:
        """Write a bracket leg's fill onto its entry's row (of ``account``, where found by the
        entry's broker order id), once per leg and fill id; return the entry's signal id and
        whether this call wrote it, or None when no row is the entry."""
        detail = {"order": leg_order_id, "fill_id": fill_id, "qty": qty, "price": str(price)}
        with store_errors():
            r = await self._db.fetchrow(
                _LEG_FILL_SQL, entry_client_id, entry_order_id, detail, account
            )
        return None if r is None else (str(r["signal_id"]), bool(r["written"]))

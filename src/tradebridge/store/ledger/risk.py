"""What the pre-trade rules ask of the ledger: an account's activity and its balance marks.

Counts come from ``trading_signals``, so every worker of a shared database agrees (and one
account's rows are placed one after the other, so a count cannot change under a check).
``account_risk`` keeps, per account, the balance at the start of the trading day and the
highest balances seen, for the daily loss limit and the trailing drawdown (docs/risk.md).
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from typing import Any

import asyncpg

from tradebridge.domain.balance import BalanceMarks
from tradebridge.domain.lifecycle import SignalStatus
from tradebridge.errors import StoreError
from tradebridge.store.ledger._sql import status_list
from tradebridge.store.ledger.errors import store_errors
from tradebridge.store.ledger.pool import LedgerPool

# Rows whose order may be at the broker and not done.
_OPEN = status_list(
    SignalStatus.SUBMITTED, SignalStatus.WORKING, SignalStatus.PARTIALLY_FILLED,
    SignalStatus.UNKNOWN, SignalStatus.NEEDS_REVIEW,
)  # fmt: skip
# Cancels and flattens send no order of their own.
_ORDERS = "coalesce(intent, 'order') not in ('cancel', 'flatten')"
# The latest entry on a root: a sent order whose plan did not only reduce the position
# (``entry`` in its submit's detail; a submit recorded without it counts as an entry).
_LAST_ENTRY_SQL = f"""
select max(s.ts_submitted)
  from trading_signals s
  join order_history h on h.signal_id = s.signal_id and h.event = 'submitted'
 where s.account_name = $1 and s.signal_id <> $2 and s.ts_submitted >= $3 and {_ORDERS}
   and h.detail ->> 'plan' = 'order'
   and left(h.detail ->> 'contract', length(h.detail ->> 'contract') - 2) = $4
   and coalesce((h.detail ->> 'entry')::boolean, true)
"""  # noqa: S608 - no input in the text
# An account's counts, for several accounts at once (the rows checked in one turn of the
# loop: a fan-out's first rows): $1 accounts, $2 the rows checked (left out), $3
# minute_since, $4 day_since, one of each per account; and (``ahead``) what the account's
# open orders on the checked row's contract $5 and side $6 have still to fill (their
# latest submitted plan's quantity less their fills; NULL contract: not asked), with the
# broker's and our ids of every open row (``ours``: the broker's working orders the rules
# count besides are the others).
_ACTIVITY_SQL = f"""
select x.i,
       count(s.seq) filter (where status in {_OPEN}) as open_orders,
       count(s.seq) filter (where ts_submitted >= x.minute_since) as last_minute,
       count(s.seq) filter (where ts_submitted >= x.day_since) as today,
       coalesce(sum(greatest(p.quantity - coalesce(s.filled_qty, 0), 0))
                filter (where p.contract = x.contract and p.side = x.side), 0) as ahead,
       array_remove(array_agg(s.tradovate_order_id)
                    filter (where x.contract is not null and status in {_OPEN}), null)
         || array_remove(array_agg(s.client_order_id)
                         filter (where x.contract is not null and status in {_OPEN}), null)
         as ours
  from unnest($1::text[], $2::text[], $3::timestamptz[], $4::timestamptz[], $5::text[],
              $6::text[])
       with ordinality as x(account_name, besides, minute_since, day_since, contract, side, i)
  left join trading_signals s
    on s.account_name = x.account_name and s.signal_id <> x.besides and {_ORDERS}
   and (status in {_OPEN} or ts_submitted >= least(x.minute_since, x.day_since))
  left join lateral (
      select (h.detail ->> 'quantity')::numeric as quantity, h.detail ->> 'contract' as contract,
             h.detail ->> 'side' as side
        from order_history h
       where x.contract is not null and s.status in {_OPEN}
         and h.signal_id = s.signal_id and h.event in ('submitted', 'resubmitted')
         and h.detail ->> 'plan' = 'order'
       order by h.id desc
       limit 1
  ) p on true
 group by x.i
"""  # noqa: S608 - statuses from SignalStatus, no input
# An entry's counts, prepared on each new connection (pool.open_pool).
HOT_STATEMENTS = (_ACTIVITY_SQL, _LAST_ENTRY_SQL)
_MARK_SQL = """
insert into account_risk as a (account_name, trading_day, day_start_balance,
                               high_water_intraday, high_water_eod, balance)
values ($1, $2, $3, $3, $3, $3)
on conflict (account_name) do update set
    trading_day = greatest(a.trading_day, excluded.trading_day),
    day_start_balance = case when excluded.trading_day > a.trading_day
                             then excluded.balance else a.day_start_balance end,
    high_water_eod = case when excluded.trading_day > a.trading_day
                          then greatest(a.high_water_eod, excluded.balance)
                          else a.high_water_eod end,
    high_water_intraday = greatest(a.high_water_intraday, excluded.balance),
    balance = excluded.balance,
    updated_at = clock_timestamp()
returning trading_day, day_start_balance, high_water_intraday, high_water_eod, balance,
          updated_at
"""
# Per account (with when its trading day began): open orders, orders sent in the day, and
# its balance marks (NULLs where none were recorded).
_OVERVIEW_SQL = f"""
select x.account_name,
       (select count(*) from trading_signals s
         where s.account_name = x.account_name and s.status in {_OPEN} and {_ORDERS})
           as open_orders,
       (select count(*) from trading_signals s
         where s.account_name = x.account_name and s.ts_submitted >= x.day_since and {_ORDERS})
           as today,
       r.trading_day, r.day_start_balance, r.balance, r.high_water_intraday, r.high_water_eod,
       r.updated_at
  from unnest($1::text[], $2::timestamptz[]) as x(account_name, day_since)
  left join account_risk r on r.account_name = x.account_name
"""  # noqa: S608 - statuses from SignalStatus, no input
# The flattens the risk rules queue (flatten_at, flatten_on_loss): one per account and
# trading day and cause, so the id says it is done; a second worker's insert finds it there.
# $1 signal ids, $2 accounts, $3 causes, $4 metadata.
_FLATTEN_SQL = """
with flattens as (
    insert into trading_signals (signal_id, account_name, intent, strategy_name, source,
                                 group_id, metadata)
    select f.signal_id, f.account_name, 'flatten', 'risk', 'risk', f.signal_id,
           $4::jsonb || jsonb_build_object('risk', f.cause)
      from unnest($1::text[], $2::text[], $3::text[]) as f(signal_id, account_name, cause)
    on conflict (signal_id) do nothing
    returning signal_id, account_name, metadata ->> 'risk' as cause
), received as (
    insert into order_history (signal_id, event, detail)
    select signal_id, 'received', jsonb_build_object('risk', cause) from flattens
)
select signal_id, account_name, cause from flattens
"""
_RAISE_SQL = """
update account_risk
   set high_water_intraday = greatest(high_water_intraday, $2), balance = $2,
       updated_at = clock_timestamp()
 where account_name = $1
"""


@dataclass(frozen=True, slots=True)
class RiskActivity:
    """An account's orders as the ledger counts them (the row being checked left out)."""

    open_orders: int
    orders_last_minute: int
    orders_today: int
    last_entry: datetime | None = None
    # What the open orders on the row's contract and side have still to fill (0: not asked).
    ahead: int = 0
    # The broker's and our order ids of the open rows (asked with ``ahead``).
    ours: frozenset[str] = frozenset()


@dataclass(frozen=True, slots=True)
class RiskOverview:
    """An account's orders and balance marks, for its standing (``pipeline/standing.py``)."""

    account_name: str
    open_orders: int
    orders_today: int
    marks: BalanceMarks | None  # None: no balance recorded yet


_Counts = tuple[int, int, int, int, frozenset[str]]
_Batch = list[tuple[asyncio.Future[_Counts], tuple[Any, ...]]]


class RiskQueries(LedgerPool):
    """An account's activity and balance marks, for the pre-trade rules."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._activity_batch: _Batch = []  # counts asked in this turn of the loop

    async def risk_activity(
        self,
        account_name: str,
        *,
        besides: str,
        minute_since: datetime,
        day_since: datetime,
        root: str | None = None,
        entry_since: datetime | None = None,
        ahead_of: tuple[str, str] | None = None,
    ) -> RiskActivity:
        """Return the account's open orders, orders sent since ``minute_since`` and since
        ``day_since``, and (with ``root``) its latest entry on ``root`` since ``entry_since``;
        with ``ahead_of`` (a contract and a side), what the account's open orders there have
        still to fill, and the broker's and our ids of its open rows.

        The counts of calls made in the same turn of the event loop (the first rows of a
        fan-out's accounts, checked side by side) are read by one statement for all of them.
        """
        contract, side = ahead_of if ahead_of is not None else (None, None)
        counts = await self._activity_counts(
            account_name, besides, minute_since, day_since, contract, side
        )
        last_entry = None
        if root is not None and entry_since is not None:
            last_entry = await self._db.fetchval(
                _LAST_ENTRY_SQL, account_name, besides, entry_since, root
            )
        open_orders, last_minute, today, ahead, ours = counts
        return RiskActivity(open_orders, last_minute, today, last_entry, ahead, ours)

    def _activity_counts(
        self,
        account_name: str,
        besides: str,
        minute_since: datetime,
        day_since: datetime,
        contract: str | None,
        side: str | None,
    ) -> asyncio.Future[_Counts]:
        """Queue one account's counts for the batch of this turn of the loop."""
        loop = asyncio.get_running_loop()
        batch = self._activity_batch
        if not batch:
            loop.call_soon(self._read_activity_batch)
        answer: asyncio.Future[_Counts] = loop.create_future()
        batch.append((answer, (account_name, besides, minute_since, day_since, contract, side)))
        return answer

    def _read_activity_batch(self) -> None:
        batch, self._activity_batch = self._activity_batch, []
        task = asyncio.ensure_future(self._answer_activity_batch(batch))
        # Every caller hears the outcome through its own future; the task's is not needed.
        task.add_done_callback(lambda done: done.cancelled() or done.exception())

    async def _answer_activity_batch(self, batch: _Batch) -> None:
        try:
            columns = list(zip(*(args for _, args in batch), strict=True))
            found = await self._db.fetch(_ACTIVITY_SQL, *map(list, columns))
            by_index = {int(r["i"]): r for r in found}
            records = [by_index.get(i) for i in range(1, len(batch) + 1)]
        except asyncio.CancelledError:
            for answer, _ in batch:
                answer.cancel()
            raise
        except Exception as e:  # noqa: BLE001 - each caller gets the error as its own
            for answer, _ in batch:
                if not answer.done():
                    answer.set_exception(e)
            return
        for (answer, _), record in zip(batch, records, strict=True):
            if answer.done():
                continue  # its caller was cancelled
            if record is None:  # an aggregate always has its row
                answer.set_exception(StoreError("the activity read returned no row"))
            else:
                answer.set_result(
                    (int(record["open_orders"]), int(record["last_minute"]),
                     int(record["today"]), int(record["ahead"]),
                     frozenset(record["ours"] or ()))
                )  # fmt: skip

    async def mark_balance(
        self, account_name: str, trading_day: date, balance: Decimal
    ) -> BalanceMarks:
        """Record a balance read in ``trading_day``; return the account's marks after it.

        The first reading of a trading day becomes its start (and an end-of-day mark); every
        reading raises the intraday high water. A reading dated before the day recorded (a
        worker whose clock is behind) changes no day.
        """
        record = await self._db.fetchrow(_MARK_SQL, account_name, trading_day, balance)
        assert record is not None  # an upsert with RETURNING always has its row
        return _marks(record)

    async def raise_high_water(self, account_name: str, balance: Decimal) -> None:
        """Record a balance read between checks (after a fill): it may raise the intraday high
        water, never start a trading day (only a check before an entry does)."""
        await self._db.execute(_RAISE_SQL, account_name, balance)

    async def risk_overview(self, accounts: Sequence[tuple[str, datetime]]) -> list[RiskOverview]:
        """Return, for each (account, start of its trading day), its open orders, the orders
        it sent in the day and its balance marks: one statement for every account."""
        with store_errors():
            try:
                records = await self._db.fetch(
                    _OVERVIEW_SQL, [name for name, _ in accounts], [since for _, since in accounts]
                )
            except asyncpg.UndefinedTableError:
                raise StoreError(
                    "the ledger has no account_risk table (migration 0008_risk_rules): run "
                    "`tradebridge db migrate`"
                ) from None
        return [
            RiskOverview(
                r["account_name"], int(r["open_orders"]), int(r["today"]),
                _marks(r) if r["trading_day"] is not None else None,
            )
            for r in records
        ]  # fmt: skip

    async def queue_risk_flattens(
        self, flattens: Sequence[tuple[str, str, str]], metadata: Mapping[str, Any]
    ) -> list[tuple[str, str, str]]:
        """Queue a ``flatten`` row for each (signal id, account, cause) whose id is new;
        return those queued now (an id already there was queued before, by any worker)."""
        if not flattens:
            return []
        ids, accounts, causes = (list(column) for column in zip(*flattens, strict=True))
        records = await self._db.fetch(_FLATTEN_SQL, ids, accounts, causes, dict(metadata))
        return [(r["signal_id"], r["account_name"], r["cause"]) for r in records]


def _marks(record: asyncpg.Record) -> BalanceMarks:
    return BalanceMarks(
        record["trading_day"], Decimal(record["day_start_balance"]),
        Decimal(record["high_water_intraday"]), Decimal(record["high_water_eod"]),
        Decimal(record["balance"]), record["updated_at"],
    )  # fmt: skip

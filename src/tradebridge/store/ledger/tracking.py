"""What the tracker asks: the row a broker event is about, and the fills it already has."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Self

import asyncpg

from tradebridge.domain.lifecycle import SignalStatus
from tradebridge.store.ledger._sql import status_list
from tradebridge.store.ledger.pool import Conn, LedgerPool

# The statuses of a row whose order may rest at the broker (an event can be about it).
_ORDER_MAY_REST = status_list(
    SignalStatus.SUBMITTED,
    SignalStatus.UNKNOWN,
    SignalStatus.WORKING,
    SignalStatus.PARTIALLY_FILLED,
)

_EVENT_COLUMNS = "signal_id, status, filled_qty, avg_fill_price, tradovate_order_id"
# The events that say the quantity of a row's order, the latest first: a submitted plan, or
# an adoption by hand that read the order at the broker (``review adopt``: its quantity, which
# ``--allow-other-quantity`` lets differ from the plan's). A row with neither (a legacy row
# adopted without a broker check) ordered its ``quantity``: until 2026-12-08 it had no
# quantity ordered, and its first fill ended it ``filled``.
_ORDERED_EVENT = """(
    (h.event = 'submitted' and h.detail ? 'plan')
    or (h.event = 'adopted_by_hand' and h.detail ? 'quantity'))"""

# The row of a broker event as ``lock_row_for_event`` finds it (by our client id, unless it
# points at another order; else by the broker's id among the event's account's rows whose
# order may rest: an order id is unique in one environment only, and the ledger holds one
# row per broker order per account, migration 0004), with
# what a fill needs (whether this fill is recorded, the quantity last submitted), in ONE
# statement and without a lock: the move that follows is guarded (``Moves.move_if``).
_EVENT_ROW_SQL = f"""
with by_client as (
    select {_EVENT_COLUMNS} from trading_signals where client_order_id = $1
), by_order as (
    select {_EVENT_COLUMNS} from trading_signals
     where tradovate_order_id = $2 and account_name = $5 and status in {_ORDER_MAY_REST}
       and not exists (select 1 from by_client)
     limit 1
), found as (
    select * from by_client where tradovate_order_id is null or tradovate_order_id = $2
    union all
    select * from by_order
)
select found.*,
       ($3::text is not null and coalesce(fills.seen, false)) as fill_seen,
       greatest(coalesce(found.filled_qty, 0) - fills.recorded, 0) as by_total,
       case when $4::boolean then coalesce((
           select h.detail->>'quantity' from order_history h
            where h.signal_id = found.signal_id and {_ORDERED_EVENT}
            order by h.id desc limit 1),
           (select s.quantity::text from trading_signals s
             where s.signal_id = found.signal_id)) end as ordered_qty
  from found
  cross join lateral (
      select bool_or(h.detail->>'fill_id' = $3) as seen,
             coalesce(sum((h.detail->>'qty')::numeric), 0) as recorded
        from order_history h
       where h.signal_id = found.signal_id and h.event = 'fill'
         and ($3::text is not null or $4::boolean)
  ) fills
 limit 1
"""  # noqa: S608 - fixed columns and statuses
# The quantities the ``fill`` events of a row record (each its fill's whole quantity,
# whatever part of it a total had counted already: ``covered`` in its detail).
_RECORDED_SQL = """
select coalesce(sum((detail->>'qty')::numeric), 0) from order_history
 where signal_id = $1 and event = 'fill'
"""
_ORDERED_SQL = f"""
select coalesce(
    (select h.detail->>'quantity' from order_history h
      where h.signal_id = $1 and {_ORDERED_EVENT} order by h.id desc limit 1),
    (select quantity::text from trading_signals where signal_id = $1))
"""  # noqa: S608 - fixed events
# A broker event's row, prepared on each new connection (pool.open_pool).
HOT_STATEMENTS = (_EVENT_ROW_SQL,)


@dataclass(frozen=True, slots=True)
class EventRow:
    """The row a broker event is about, as the tracker needs it."""

    signal_id: str
    status: str
    filled_qty: Decimal | None  # as stored (a legacy row may hold NULL)
    avg_fill_price: Decimal | None
    tradovate_order_id: str | None
    fill_seen: bool = False  # the event's fill id is recorded already
    ordered_qty: Decimal | None = None  # the quantity of its order (``_ORDERED_EVENT``)
    # The filled quantity no recorded fill accounts for: written from a broker's running
    # total (reconcile's net, a lookup's adoption), its fills' events not seen yet. A fill
    # not recorded is counted in it first (docs/ledger.md, "Filled quantity").
    by_total: Decimal = Decimal(0)

    @classmethod
    def from_record(cls, record: asyncpg.Record, **extra: Any) -> Self:
        """Build it from a record of ``_EVENT_COLUMNS`` (and the extras, if read)."""
        average = record["avg_fill_price"]
        return cls(
            signal_id=str(record["signal_id"]),
            status=str(record["status"]),
            filled_qty=_decimal(record["filled_qty"]),
            avg_fill_price=_decimal(average),
            tradovate_order_id=(
                None if record["tradovate_order_id"] is None else str(record["tradovate_order_id"])
            ),
            **extra,
        )


def _decimal(value: Any) -> Decimal | None:
    return None if value is None else Decimal(str(value))


class TrackerQueries(LedgerPool):
    """Broker events -> rows: finding and locking the row, fills seen, the quantity ordered."""

    async def event_row(
        self,
        client_order_id: str | None,
        broker_order_id: str,
        *,
        account: str,
        fill_id: str | None = None,
        ordered_qty: bool = False,
    ) -> EventRow | None:
        """Return the row a broker event is about, unlocked, in one statement, or None.

        Found as ``lock_row_for_event`` finds it (``account``: the event's); with whether
        ``fill_id`` is recorded, and (``ordered_qty``, for a fill) the quantity of the row's
        order (``_ORDERED_EVENT``) and the filled quantity no recorded fill accounts for
        (``EventRow.by_total``).
        """
        record = await self._db.fetchrow(
            _EVENT_ROW_SQL,
            client_order_id or None,
            broker_order_id,
            fill_id or None,
            ordered_qty,
            account,
        )
        if record is None:
            return None
        ordered = record["ordered_qty"]
        return EventRow.from_record(
            record,
            fill_seen=bool(record["fill_seen"]),
            ordered_qty=None if ordered is None else Decimal(ordered),
            by_total=Decimal(record["by_total"]),
        )

    async def lock_row_for_event(
        self, conn: Conn, client_order_id: str | None, broker_order_id: str, *, account: str
    ) -> asyncpg.Record | None:
        """Lock and return the row a broker event is about, or None.

        By our client id first (unless the row already points at another order: a leg, or a
        stale duplicate); else by the broker's id among the rows of ``account`` (the event's)
        whose order is open: another environment's order may carry the same id.
        """
        columns = _EVENT_COLUMNS
        if client_order_id:
            row = await conn.fetchrow(
                f"select {columns} from trading_signals where client_order_id = $1 for update",  # noqa: S608 - fixed column list
                client_order_id,
            )
            if row is not None:
                known = row["tradovate_order_id"]
                return None if known is not None and known != broker_order_id else row
        return await conn.fetchrow(
            f"select {columns} from trading_signals where tradovate_order_id = $1 "  # noqa: S608 - fixed columns and statuses
            f"and account_name = $2 and status in {_ORDER_MAY_REST} for update",
            broker_order_id,
            account,
        )

    async def row_named_by(
        self, broker_order_id: str, client_order_id: str | None, *, account: str
    ) -> asyncpg.Record | None:
        """Return (signal_id, status, tradovate_order_id) of the row an event names, if any:
        the one of ``account`` with the broker's id first, else the one with our client id."""
        return await self._db.fetchrow(
            "select signal_id, status, tradovate_order_id from trading_signals "
            "where (tradovate_order_id = $1 and account_name = $3) or client_order_id = $2 "
            "order by (tradovate_order_id = $1 and account_name = $3) desc nulls last limit 1",
            broker_order_id,
            client_order_id,
            account,
        )

    async def fill_seen(self, conn: Conn, signal_id: str, fill_id: str) -> bool:
        """Return whether the row already recorded the fill ``fill_id``."""
        found = await conn.fetchval(
            "select 1 from order_history where signal_id = $1 and event = 'fill' "
            "and detail->>'fill_id' = $2 limit 1",
            signal_id,
            fill_id,
        )
        return found is not None

    async def by_total(self, conn: Conn, signal_id: str, filled_qty: Decimal | None) -> Decimal:
        """Return the part of ``filled_qty`` (the row's, as read under its lock) that no
        recorded fill accounts for (``EventRow.by_total``)."""
        recorded = await conn.fetchval(_RECORDED_SQL, signal_id)
        return max((filled_qty or Decimal(0)) - Decimal(recorded), Decimal(0))

    async def ordered_qty(self, conn: Conn, signal_id: str) -> Decimal | None:
        """Return the quantity of the row's order: its adoption's record of it, else its
        latest submitted plan's, else the row's ``quantity`` (``_ORDERED_EVENT``)."""
        value = await conn.fetchval(_ORDERED_SQL, signal_id)
        return None if value is None else Decimal(value)

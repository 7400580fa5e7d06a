"""What the tracker asks: the row a broker event is about, and the fills it already has."""

from __future__ import annotations

from decimal import Decimal

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


class TrackerQueries(LedgerPool):
    """Broker events -> rows: finding and locking the row, fills seen, the quantity ordered."""

    async def lock_row_for_event(
        self, conn: Conn, client_order_id: str | None, broker_order_id: str
    ) -> asyncpg.Record | None:
        """Lock and return the row a broker event is about, or None.

        By our client id first (unless the row already points at another order: a leg, or a
        stale duplicate); else by the broker's id among rows whose order is open.
        """
        columns = "signal_id, status, filled_qty, avg_fill_price, tradovate_order_id"
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
            f"and status in {_ORDER_MAY_REST} for update",
            broker_order_id,
        )

    async def row_named_by(
        self, broker_order_id: str, client_order_id: str | None
    ) -> asyncpg.Record | None:
        """Return (signal_id, status, tradovate_order_id) of the row an event names, if any:
        the one with the broker's id first, else the one with our client id."""
        return await self._pool.fetchrow(
            "select signal_id, status, tradovate_order_id from trading_signals "
            "where tradovate_order_id = $1 or client_order_id = $2 "
            "order by tradovate_order_id = $1 desc nulls last limit 1",
            broker_order_id,
            client_order_id,
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

    async def ordered_qty(self, conn: Conn, signal_id: str) -> Decimal | None:
        """Return the quantity the row's latest submitted plan ordered, if recorded."""
        value = await conn.fetchval(
            "select detail->>'quantity' from order_history where signal_id = $1 "
            "and event = 'submitted' and detail ? 'plan' order by id desc limit 1",
            signal_id,
        )
        return None if value is None else Decimal(value)

"""What this process last wrote on the rows it placed, to answer their next broker event
without a read (``KnownRows``).

The tracker reads a row before it applies a broker event to it (status, filled quantity,
whether the fill is recorded, the quantity ordered): one statement per event, on every
order's fill. For a row this process placed, it wrote all of that itself: the plan at the
write-ahead, the row placed (working, nothing filled: so no fill recorded) at the broker's
answer, and each fill it applied after. The write that follows is guarded by what is known
(``Moves.move_if``: status and filled quantity), so a row moved by anyone else meanwhile
(another worker, reconcile, the locked path) fails the guard and is read again under its
lock. A filled quantity only grows, so an unchanged one means no fill was recorded besides
the ones known here: a fill seen twice is never counted twice. Every filled quantity known
here came from fills known here (none from a broker's total: ``EventRow.by_total`` is 0).

What is known is kept only while every move of the row goes through this process's guarded
writes from what is known; any other move forgets it, and so does a guarded write refused
(someone else moved the row): the next event reads the row, rather than fail the guard
again and take the locked path at every event of that order.

A row is known by its account and its broker order id: an order id is unique in one
Tradovate environment only, and one process may follow accounts in two (its native and
bridge hosts apart): the other environment's order of the same id is not this row's.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from tradebridge.domain.lifecycle import SignalStatus
from tradebridge.store.ledger.fast_moves import Move
from tradebridge.store.ledger.rows import LedgerRow
from tradebridge.store.ledger.tracking import EventRow

# About a minute of a busy worker's orders; forgetting one only costs its next event a read.
_MEMORY = 16_384


@dataclass(slots=True)
class _Known:
    signal_id: str
    client_order_id: str
    status: SignalStatus
    filled_qty: Decimal | None
    avg_fill_price: Decimal | None
    ordered_qty: Decimal
    fills: set[str] = field(default_factory=set)


# (account name, broker order id): what names an order across environments.
_Key = tuple[str, str]


class KnownRows:
    """The rows this process placed, as it last wrote them, by account and broker order id."""

    def __init__(self) -> None:
        self._ordered: OrderedDict[str, Decimal] = OrderedDict()  # signal id -> plan quantity
        self._rows: OrderedDict[_Key, _Known] = OrderedDict()  # (account, order id) -> the row

    def event_row(
        self,
        account: str,
        broker_order_id: str,
        client_order_id: str | None,
        fill_id: str | None,
    ) -> EventRow | None:
        """Return the row of a broker event on ``account`` as ``TrackerQueries.event_row``
        would read it, if this process knows it; else ``None`` (read it)."""
        known = self._rows.get((account, broker_order_id))
        if known is None or client_order_id not in (None, known.client_order_id):
            return None
        return EventRow(
            signal_id=known.signal_id,
            status=known.status.value,
            filled_qty=known.filled_qty,
            avg_fill_price=known.avg_fill_price,
            tradovate_order_id=broker_order_id,
            fill_seen=bool(fill_id) and fill_id in known.fills,
            ordered_qty=known.ordered_qty,
        )

    def moved(self, row: LedgerRow, move: Move) -> None:
        """Note a move this process wrote (``row``: as it came back)."""
        expected = move.expected
        if expected is SignalStatus.PROCESSING and row.status is SignalStatus.SUBMITTED:
            quantity = move.detail.get("quantity")
            planned = move.event == "submitted" and move.detail.get("plan") == "order"
            if planned and quantity is not None:
                _put(self._ordered, row.signal_id, Decimal(str(quantity)))
            return
        if row.tradovate_order_id is None or row.account_name is None:
            return
        key = (row.account_name, row.tradovate_order_id)
        if expected is SignalStatus.SUBMITTED and row.status is SignalStatus.WORKING:
            # The broker's answer: the row placed, nothing filled, so no fill recorded.
            ordered = self._ordered.get(row.signal_id)
            if ordered is not None and not row.filled_qty and row.client_order_id:
                _put(self._rows, key, _Known(
                    row.signal_id, row.client_order_id, row.status, row.filled_qty,
                    row.avg_fill_price, ordered))  # fmt: skip
                return
        known = self._rows.get(key)
        if known is None or known.signal_id != row.signal_id:
            return
        guard = move.filled_was
        if guard is None or known.status is not expected or known.filled_qty != guard[0]:
            # Moved from a state not known here: what is known may miss a fill.
            del self._rows[key]
            return
        if move.event != "fill" and row.filled_qty != known.filled_qty:
            # A broker's total written (reconcile's net): its fills' ids are not known here,
            # and their events must be counted in it (``EventRow.by_total``), so read them.
            del self._rows[key]
            return
        known.status, known.filled_qty = row.status, row.filled_qty
        known.avg_fill_price = row.avg_fill_price
        fill_id = move.detail.get("fill_id")
        if move.event == "fill" and fill_id:
            known.fills.add(str(fill_id))

    def forget(self, signal_id: str, account: str, broker_order_id: str) -> None:
        """Forget the row: a guarded write from what is known here was refused (someone else
        moved it); its next events read it, rather than fail the guard again each time."""
        key = (account, broker_order_id)
        known = self._rows.get(key)
        if known is not None and known.signal_id == signal_id:
            del self._rows[key]


def _put(memory: OrderedDict[Any, Any], key: Any, value: Any) -> None:
    memory[key] = value
    memory.move_to_end(key)
    if len(memory) > _MEMORY:
        memory.popitem(last=False)

"""A row's status moves, each with its ``order_history`` event and broker call, all or nothing.

Illegal moves are refused here (``IllegalTransition``) before anything is written, and again
by the table's trigger whoever writes. The row and its events are read back here too.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import OrderedDict
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import asyncpg

from tradebridge.domain.calls import BrokerCall
from tradebridge.domain.ids import entry_client_id
from tradebridge.domain.lifecycle import ALLOWED_MOVES, SignalStatus, check_move
from tradebridge.errors import IllegalTransition, InvalidInput, OrderOwned
from tradebridge.store.ledger.calls import insert_broker_call
from tradebridge.store.ledger.fast_moves import (
    ILLEGAL_MOVE_SQLSTATE,
    MOVE_SET,
    FastMoves,
    Move,
)
from tradebridge.store.ledger.known import KnownRows
from tradebridge.store.ledger.pool import Conn, LedgerPool
from tradebridge.store.ledger.rows import HistoryEvent, LedgerRow
from tradebridge.store.ledger.tracking import EventRow

# One ledger row per broker order (0004_exactly_once.sql).
_ORDER_OWNER_INDEX = "trading_signals_account_order_key"

_TRANSITION_SQL = f"""
update trading_signals
   set {MOVE_SET}
 where signal_id = $1
returning *
"""  # noqa: S608

_WHY_SQL = "select status, claimed_by from trading_signals where signal_id = $1"

_S = SignalStatus
# Moves after the durable write-ahead whose loss in a database crash costs a lookup: the
# broker's answer and the order's later states (never the write-ahead, a rejection or a
# failure: what they decide is not read back from the broker as surely).
_LAZY_MOVES = frozenset(
    (before, after)
    for before in (_S.SUBMITTED, _S.WORKING, _S.PARTIALLY_FILLED)
    for after in (_S.WORKING, _S.PARTIALLY_FILLED, _S.FILLED, _S.CANCELLED, _S.EXPIRED)
)


def lazy_move(expected: SignalStatus, new_status: SignalStatus) -> bool:
    """Return whether a move from ``expected`` to ``new_status`` may commit lazily."""
    return (expected, new_status) in _LAZY_MOVES


def _from(status: SignalStatus) -> frozenset[SignalStatus]:
    """Return ``status`` and every status reachable from it."""
    reached, todo = {status}, [status]
    while todo:
        for after in ALLOWED_MOVES[todo.pop()] - reached:
            reached.add(after)
            todo.append(after)
    return frozenset(reached)


# A row in one of these has been accepted by the broker (or ended); it never goes back to
# submitted, unknown or needs_review.
_PLACED = _from(SignalStatus.WORKING)
# Rows remembered as placed by this process (``Moves.placed_order``): about a minute of a
# busy worker's rows; forgetting one only costs its next event a read.
_PLACED_MEMORY = 16_384


class Moves(LedgerPool):
    """Status moves, events, and the rows they are about."""

    def __init__(self, pool: asyncpg.Pool, url: str) -> None:
        super().__init__(pool, url)
        # broker order id -> client order id of rows this process moved into _PLACED.
        self._placed: OrderedDict[str, str] = OrderedDict()
        # client order id -> the send of its row in this process, until its outcome is written.
        self._sending: dict[str, _Send] = {}
        # Moves from a known status, sent together while the database is busy.
        self._fast = FastMoves()
        # The rows this process placed, as it wrote them: their next event needs no read.
        self._known = KnownRows()

    def placed_here(self, broker_order_id: str, client_order_id: str | None) -> bool:
        """Return whether this process wrote the row of ``broker_order_id`` placed (working
        or after: it never goes back), under ``client_order_id`` if one is given."""
        placed = self._placed.get(broker_order_id)
        return placed is not None and client_order_id in (None, placed)

    def ours(
        self,
        broker_order_id: str,
        client_order_id: str | None,
        parent_order_id: str | None,
        account: str,
    ) -> bool:
        """Return whether this process may have placed the order of a broker event (or the
        entry it is a leg of), as far as it remembers: being sent here, or placed and moved
        here. An event without our id while this process sends on the account may be about
        that send (its answer not in yet): it may be ours."""
        if client_order_id is None:
            if any(send.account == account for send in self._sending.values()):
                return True
        elif client_order_id in self._sending or entry_client_id(client_order_id) in self._sending:
            return True
        return any(
            order_id is not None and order_id in self._placed
            for order_id in (broker_order_id, parent_order_id)
        )

    @contextlib.contextmanager
    def sending(self, client_order_id: str, account: str) -> Iterator[None]:
        """Mark the send of a row of ``account`` in this process, until its outcome is
        written."""
        send = _Send(account)
        self._sending[client_order_id] = send
        try:
            yield
        finally:
            send.done.set()
            if self._sending.get(client_order_id) is send:
                del self._sending[client_order_id]

    async def wait_sent(self, client_order_id: str | None, account: str, timeout_s: float) -> None:
        """Wait (at most ``timeout_s``) until this process's send of the row of
        ``client_order_id`` (not known: of every row of ``account``) has its outcome written.

        A send already waited for in vain (a hanging answer) is not waited for again.
        """
        if client_order_id is not None:
            send = self._sending.get(client_order_id)
            waits = [] if send is None else [send]
        else:
            waits = [send for send in self._sending.values() if send.account == account]
        waits = [send for send in waits if not send.overdue]
        if not waits:
            return
        try:
            async with asyncio.timeout(timeout_s):
                for send in waits:
                    await send.done.wait()
        except TimeoutError:
            for send in waits:
                send.overdue = not send.done.is_set()

    def _remember(self, row: LedgerRow) -> LedgerRow:
        if row.status in _PLACED and row.client_order_id and row.tradovate_order_id:
            self._placed[row.tradovate_order_id] = row.client_order_id
            self._placed.move_to_end(row.tradovate_order_id)
            if len(self._placed) > _PLACED_MEMORY:
                self._placed.popitem(last=False)
        return row

    async def get(self, signal_id: str) -> LedgerRow | None:
        """Return the row of ``signal_id``, or ``None``."""
        record = await self._db.fetchrow(
            "select * from trading_signals where signal_id = $1", signal_id
        )
        return LedgerRow.from_record(record) if record else None

    async def history(self, signal_id: str) -> list[HistoryEvent]:
        """Return the events of ``signal_id``, oldest first."""
        rows = await self._db.fetch(
            "select id, signal_id, event, detail, created_at from order_history "
            "where signal_id = $1 order by id",
            signal_id,
        )
        return [
            HistoryEvent(
                id=r["id"],
                signal_id=r["signal_id"],
                event=r["event"],
                detail=r["detail"],
                created_at=r["created_at"],
            )
            for r in rows
        ]

    async def transition(
        self,
        signal_id: str,
        new_status: SignalStatus,
        *,
        expected: SignalStatus | None = None,
        owner: str | None = None,
        event: str | None = None,
        detail: Mapping[str, Any] | None = None,
        broker_call: BrokerCall | None = None,
        account_id: str | None = None,
        client_order_id: str | None = None,
        tradovate_order_id: str | None = None,
        error_message: str | None = None,
        filled_qty: Decimal | int | None = None,
        avg_fill_price: Decimal | None = None,
        conn: Conn | None = None,
    ) -> LedgerRow:
        """Move a row to ``new_status`` with its event and broker call, all or nothing.

        ``expected`` lets the move be refused before any round trip; either way the row is
        read under a row lock and the move checked against its actual status. ``owner``
        refuses the move unless that worker holds the claim (a row requeued and claimed by
        another worker meanwhile must not be sent twice). Fields left ``None`` keep their
        value. ``conn`` joins a transaction the caller holds.
        """
        if expected is not None:
            check_move(signal_id, expected, new_status)
        move = Move(
            signal_id=signal_id,
            new_status=new_status,
            expected=expected,
            owner=owner,
            event=event or new_status.value,
            detail=dict(detail or {}),
            broker_call=broker_call,
            fields=(
                account_id,
                client_order_id,
                tradovate_order_id,
                error_message,
                filled_qty,
                avg_fill_price,
            ),
        )
        try:
            if conn is not None:
                async with conn.transaction():
                    # Remembered only once the caller's transaction commits: not here.
                    return await _apply_move(conn, move)
            if expected is not None:
                lazy = self.lazy_commits and lazy_move(expected, new_status)
                fast = await self._fast.move(self._db, move, lazy=lazy)
                if fast is not None:
                    self._known.moved(fast, move)
                    return self._remember(fast)
                # Why not: one read says (the row moved on, another claim); only a row that
                # reads as expected again goes on to the locked path, which checks it anew.
                _checked(await self._db.fetchrow(_WHY_SQL, signal_id), move)
            async with self._db.acquire() as own, own.transaction():
                moved = await _apply_move(own, move)
            self._known.moved(moved, move)
            return self._remember(moved)
        except asyncpg.UniqueViolationError as e:
            if e.constraint_name != _ORDER_OWNER_INDEX:
                raise
            raise await self._order_owned(signal_id, tradovate_order_id) from e

    async def move_if(
        self,
        signal_id: str,
        new_status: SignalStatus,
        *,
        expected: SignalStatus,
        filled_was: Decimal | None,
        event: str,
        detail: Mapping[str, Any],
        account: str | None = None,
        tradovate_order_id: str | None = None,
        error_message: str | None = None,
        filled_qty: Decimal | None = None,
        avg_fill_price: Decimal | None = None,
    ) -> LedgerRow | None:
        """Move a row with its event in ONE statement if it is still as it was read.

        As read: status ``expected`` and filled quantity ``filled_was`` (``None``: NULL).
        Return ``None`` when it is not (it moved meanwhile: read it again, under its lock);
        the row known here by ``account`` and ``tradovate_order_id`` is then forgotten.
        Illegal moves raise ``IllegalTransition``, an order another row owns ``OrderOwned``.
        """
        check_move(signal_id, expected, new_status)
        move = Move(
            signal_id=signal_id,
            new_status=new_status,
            expected=expected,
            owner=None,
            event=event,
            detail=dict(detail),
            broker_call=None,
            fields=(None, None, tradovate_order_id, error_message, filled_qty, avg_fill_price),
            filled_was=(filled_was,),
        )
        try:
            lazy = self.lazy_commits and lazy_move(expected, new_status)
            moved = await self._fast.move(self._db, move, lazy=lazy)
        except asyncpg.UniqueViolationError as e:
            if e.constraint_name != _ORDER_OWNER_INDEX:
                raise
            raise await self._order_owned(signal_id, tradovate_order_id) from e
        if moved is None:
            if account is not None and tradovate_order_id is not None:  # the tracker's are
                self._known.forget(signal_id, account, tradovate_order_id)
            return None
        self._known.moved(moved, move)
        return self._remember(moved)

    def known_event_row(
        self,
        broker_order_id: str,
        client_order_id: str | None,
        fill_id: str | None,
        *,
        account: str,
    ) -> EventRow | None:
        """Return the row of a broker event on ``account`` as this process last wrote it, if
        it placed the order and wrote every move since (``known.KnownRows``); else ``None``:
        read it (``event_row``). A write from it must be guarded by it (``move_if``)."""
        return self._known.event_row(account, broker_order_id, client_order_id, fill_id)

    async def _order_owned(self, signal_id: str, tradovate_order_id: str | None) -> OrderOwned:
        """Return the error of a move that gave the row a broker order another row owns."""
        owner_row = await self.owner_of(tradovate_order_id)
        return OrderOwned(
            f"signal {signal_id}: broker order {tradovate_order_id} already belongs to "
            f"signal {owner_row}",
            owner=owner_row,
        )

    async def owner_of(self, tradovate_order_id: str | None) -> str | None:
        """Return the signal id of the row that owns a broker order (placed by tradebridge)."""
        if tradovate_order_id is None:
            return None
        value = await self._db.fetchval(
            "select signal_id from trading_signals where tradovate_order_id = $1 "
            "and client_order_id is not null order by seq limit 1",
            tradovate_order_id,
        )
        return None if value is None else str(value)

    async def claim_resend(
        self,
        signal_id: str,
        version: int,
        detail: Mapping[str, Any],
        *,
        worker: str | None = None,
    ) -> bool:
        """Move ``unknown -> submitted`` (event ``resubmitted``) if nobody sent since ``version``.

        Return whether it was done: another worker may have resent (or resolved) the row
        since ``version`` was read, and then this one must not send. ``worker``: the row
        becomes its claim (its liveness lock then covers the resend).
        """
        async with self._db.acquire() as conn, conn.transaction():
            current = await conn.fetchrow(
                "select status, placement_attempts from trading_signals "
                "where signal_id = $1 for update",
                signal_id,
            )
            if (
                current is None
                or current["status"] != SignalStatus.UNKNOWN.value
                or int(current["placement_attempts"] or 0) != version
            ):
                return False
            if worker is not None:
                await conn.execute(
                    "update trading_signals set claimed_by = $2, claimed_at = now() "
                    "where signal_id = $1",
                    signal_id, worker,
                )  # fmt: skip
            await self.transition(
                signal_id, SignalStatus.SUBMITTED, expected=SignalStatus.UNKNOWN,
                event="resubmitted", detail=dict(detail), conn=conn,
            )  # fmt: skip
        return True

    async def add_event(
        self, signal_id: str, event: str, detail: Mapping[str, Any] | None = None
    ) -> None:
        """Append an event without a status change (a lookup, a note from reconcile)."""
        await self._db.execute(
            "insert into order_history (signal_id, event, detail) values ($1, $2, $3)",
            signal_id,
            event,
            dict(detail or {}),
        )


@dataclass(slots=True)
class _Send:
    """A send in this process: its account, set once its outcome is written, waited out."""

    account: str
    done: asyncio.Event = field(default_factory=asyncio.Event)
    overdue: bool = False


def _checked(found: asyncpg.Record | None, move: Move) -> SignalStatus:
    """Return the row's status if ``move`` may start from it; else raise why not."""
    signal_id = move.signal_id
    if found is None:
        raise InvalidInput(f"signal {signal_id} does not exist", field="signal_id")
    if move.owner is not None and found["claimed_by"] != move.owner:
        raise IllegalTransition(
            f"signal {signal_id}: claimed by {found['claimed_by']!r}, not by {move.owner!r}"
        )
    try:
        old = SignalStatus(found["status"])
    except ValueError:
        raise IllegalTransition(
            f"signal {signal_id}: status {found['status']!r} is not one of tradebridge's"
        ) from None
    if move.expected is not None and old is not move.expected:
        raise IllegalTransition(
            f"signal {signal_id}: status is {old.value}, expected {move.expected.value}"
        )
    check_move(signal_id, old, move.new_status)
    return old


async def _apply_move(conn: Conn, move: Move) -> LedgerRow:
    signal_id = move.signal_id
    locked = await conn.fetchrow(
        "select status, claimed_by from trading_signals where signal_id = $1 for update",
        signal_id,
    )
    old = _checked(locked, move)
    try:
        record = await conn.fetchrow(
            _TRANSITION_SQL, signal_id, move.new_status.value, *move.fields
        )
    except asyncpg.PostgresError as e:
        # The trigger's own SQLSTATE (asyncpg maps unknown codes to UnknownPostgresError).
        if e.sqlstate == ILLEGAL_MOVE_SQLSTATE:
            raise IllegalTransition(str(e)) from e
        raise
    assert record is not None
    await conn.execute(
        "insert into order_history (signal_id, event, detail) values ($1, $2, $3)",
        signal_id,
        move.event,
        {"from": old.value, "to": move.new_status.value, **move.detail},
    )
    if move.broker_call is not None:
        await insert_broker_call(conn, signal_id, move.broker_call)
    return LedgerRow.from_record(record)

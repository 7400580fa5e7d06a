"""Moves from a known status in one statement, several rows' at once while the database is
busy (``FastMoves``).

A move in ONE statement is one round trip and atomic by itself: the row moves only if it
still has the expected status (and claim, when an owner is given; and filled quantity, when
guarded); its event and broker call are written from the row it returns. No row back: the
caller's slow path finds out why (``moves.Moves.transition``).

A fan-out's rows reach their write-ahead a fraction of a millisecond apart, and at a few
hundred alerts a second the broker's answers and fills do too. While ``_IN_FLIGHT`` moves of
one kind (durable or lazy) are in flight, the next ones wait and then go as ONE statement:
one round trip, one commit (one WAL flush for the durable ones) for all of them. A lone move
goes at once, as its own statement: batching adds no wait when the database is idle.

A batch is one statement, so all or nothing: when the server refuses it (an illegal move, an
order another row owns, a deadlock), nothing of it was written and each move is sent again on
its own, so that each caller gets its own answer or precise error. A batch lost on the way
(the connection dropped) gives its error to every caller, as a lone move would: it may have
committed, and the callers' recovery reads the rows back.
"""

from __future__ import annotations

import asyncio
from collections import deque
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import asyncpg

from tradebridge.domain.calls import BrokerCall
from tradebridge.domain.lifecycle import SignalStatus
from tradebridge.errors import IllegalTransition
from tradebridge.obs.logging import get_logger
from tradebridge.store.ledger.calls import broker_call_columns
from tradebridge.store.ledger.pool import LAZY_COMMIT, StatelessPool, dump_json
from tradebridge.store.ledger.rows import LedgerRow

_log = get_logger("tradebridge.store.ledger")

ILLEGAL_MOVE_SQLSTATE = "TB409"

# The SET list of a move, shared by the slow and the fast path so both write the same
# columns from the same parameters ($2 the status, $3..$8 _Move.fields); fields passed as
# NULL keep their value. The statements below are composed of module constants only (no
# input reaches their text), hence the S608 exemptions.
MOVE_SET = """status = $2,
       account_id = coalesce($3, account_id),
       client_order_id = coalesce($4, client_order_id),
       tradovate_order_id = coalesce($5, tradovate_order_id),
       error_message = coalesce($6, error_message),
       filled_qty = coalesce($7, filled_qty),
       avg_fill_price = coalesce($8, avg_fill_price)"""

_FAST_MOVE_SQL = f"""
with moved as (
    update trading_signals
       set {MOVE_SET}
     where signal_id = $1 and status = $9 and ($10::text is null or claimed_by = $10)
       and ($21::boolean is not true or filled_qty is not distinct from $22::numeric)
    returning *
), event as (
    insert into order_history (signal_id, event, detail)
    select signal_id, $11::text, $12::jsonb from moved
), call as (
    insert into broker_calls (signal_id, dialect, method, path, status, latency_ms, request,
                              response, error)
    select signal_id, $13::text, $14::text, $15::text, $16::int, $17::float8, $18::jsonb,
           $19::jsonb, $20::text
      from moved
     where $13::text is not null
)
select * from moved
"""  # noqa: S608
# The same, committed lazily (LAZY_COMMIT): for the moves of moves._LAZY_MOVES.
_FAST_MOVE_LAZY_SQL = _FAST_MOVE_SQL.replace(
    "and ($21::boolean", f"and {LAZY_COMMIT}\n       and ($21::boolean", 1
)

# Several moves of distinct rows in one statement: the same conditions and writes as
# _FAST_MOVE_SQL, each move a row of the arrays ($1..$12 the move, $13..$14 its event,
# $15..$22 its broker call; JSON as text). Rows come back with the index of their move.
_BATCH_MOVE_SQL = """
with asked as (
    select * from unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[],
                         $6::text[], $7::numeric[], $8::numeric[], $9::text[], $10::text[],
                         $11::boolean[], $12::numeric[])
        with ordinality as a(signal_id, status, account_id, client_order_id,
                             tradovate_order_id, error_message, filled_qty, avg_fill_price,
                             expected, owner, guarded, filled_was, i)
), moved as (
    update trading_signals s
       set status = a.status,
           account_id = coalesce(a.account_id, s.account_id),
           client_order_id = coalesce(a.client_order_id, s.client_order_id),
           tradovate_order_id = coalesce(a.tradovate_order_id, s.tradovate_order_id),
           error_message = coalesce(a.error_message, s.error_message),
           filled_qty = coalesce(a.filled_qty, s.filled_qty),
           avg_fill_price = coalesce(a.avg_fill_price, s.avg_fill_price)
      from asked a
     where s.signal_id = a.signal_id and s.status = a.expected
       and (a.owner is null or s.claimed_by = a.owner)
       and (a.guarded is not true or s.filled_qty is not distinct from a.filled_was)
    returning s.*, a.i as move_index
), event as (
    insert into order_history (signal_id, event, detail)
    select m.signal_id, e.event, e.detail::jsonb
      from moved m
      join unnest($13::text[], $14::text[]) with ordinality as e(event, detail, i)
        on e.i = m.move_index
), call as (
    insert into broker_calls (signal_id, dialect, method, path, status, latency_ms, request,
                              response, error)
    select m.signal_id, c.dialect, c.method, c.path, c.status, c.latency_ms,
           c.request::jsonb, c.response::jsonb, c.error
      from moved m
      join unnest($15::text[], $16::text[], $17::text[], $18::int[], $19::float8[],
                  $20::text[], $21::text[], $22::text[])
           with ordinality as c(dialect, method, path, status, latency_ms, request,
                                response, error, i)
        on c.i = m.move_index
     where c.dialect is not null
)
select * from moved
"""
_BATCH_MOVE_LAZY_SQL = _BATCH_MOVE_SQL.replace(
    "and (a.guarded", f"and {LAZY_COMMIT}\n       and (a.guarded", 1
)
# Prepared on each new connection (``store.ledger.HOT_STATEMENTS``).
HOT_STATEMENTS = (_FAST_MOVE_SQL, _FAST_MOVE_LAZY_SQL, _BATCH_MOVE_SQL, _BATCH_MOVE_LAZY_SQL)

# Moves of one kind in flight at once before the next ones wait to go together: two keeps
# a lone burst's first two rows as quick as without batching.
_IN_FLIGHT = 2
# The most moves one statement carries (the rest go in the next).
_BATCH_MAX = 200


@dataclass(frozen=True, slots=True)
class Move:
    """One row's move: what it becomes, the conditions, and what is written with it."""

    signal_id: str
    new_status: SignalStatus
    expected: SignalStatus | None
    owner: str | None
    event: str
    detail: dict[str, Any]
    broker_call: BrokerCall | None
    fields: tuple[Any, ...]  # in the order of MOVE_SET's $3..$8
    # (the filled quantity the row must still have,), or None for no such guard.
    filled_was: tuple[Decimal | None] | None = None

    def expected_status(self) -> SignalStatus:
        """Return the status the row must have; a one-statement move needs one."""
        if self.expected is None:
            raise ValueError(f"signal {self.signal_id}: a fast move needs the expected status")
        return self.expected


@dataclass(slots=True)
class _Waiting:
    move: Move
    answer: asyncio.Future[LedgerRow | None] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )


async def fast_move(db: StatelessPool, move: Move, *, lazy: bool = False) -> LedgerRow | None:
    """Make one move in one statement; return the row moved, or ``None`` if it was not as
    expected. ``lazy``: commit without waiting for the WAL flush."""
    expected, filled_was = move.expected_status(), move.filled_was
    call = move.broker_call
    call_args = (None,) * 8 if call is None else broker_call_columns(call)
    try:
        records = await db.fetch(
            _FAST_MOVE_LAZY_SQL if lazy else _FAST_MOVE_SQL,
            move.signal_id,
            move.new_status.value,
            *move.fields,
            expected.value,
            move.owner,
            move.event,
            _event_detail(move),
            *call_args,
            filled_was is not None,
            None if filled_was is None else filled_was[0],
        )
    except asyncpg.PostgresError as e:
        if e.sqlstate == ILLEGAL_MOVE_SQLSTATE:
            raise IllegalTransition(str(e)) from e
        raise
    return LedgerRow.from_record(records[0]) if records else None


class FastMoves:
    """One-statement moves, the ones that wait on a busy database sent together."""

    def __init__(self) -> None:
        self._waiting: dict[bool, deque[_Waiting]] = {False: deque(), True: deque()}
        self._in_flight: dict[bool, int] = {False: 0, True: 0}
        # The one task per kind sending what waits, batch after batch, in the order asked.
        self._flushing: dict[bool, asyncio.Task[None] | None] = {False: None, True: None}
        # Off for good once the database refuses the batch statement itself (a schema it
        # does not fit): every move then goes alone, as before batching.
        self.batching = True

    async def move(self, db: StatelessPool, move: Move, *, lazy: bool = False) -> LedgerRow | None:
        """Make ``move`` as ``fast_move`` does, with the moves waiting beside it if the
        database is busy with others of its kind."""
        if not self.batching or self._in_flight[lazy] < _IN_FLIGHT:
            self._in_flight[lazy] += 1
            try:
                return await fast_move(db, move, lazy=lazy)
            finally:
                self._done(db, lazy)
        waiting = _Waiting(move)
        self._waiting[lazy].append(waiting)
        return await waiting.answer

    def _done(self, db: StatelessPool, lazy: bool) -> None:
        # A statement of this kind ended: its slot goes to what waits, unless a flush is
        # already sending it (then one flush keeps the waiting moves in order).
        self._in_flight[lazy] -= 1
        if self._waiting[lazy] and self._flushing[lazy] is None:
            self._in_flight[lazy] += 1
            self._flushing[lazy] = asyncio.ensure_future(self._flush(db, lazy))

    async def _flush(self, db: StatelessPool, lazy: bool) -> None:
        queue = self._waiting[lazy]
        try:
            while queue:
                batch = _take_batch(queue)
                if batch:
                    await self._send(db, batch, lazy)
        except asyncio.CancelledError:
            for waiting in queue:
                waiting.answer.cancel()
            queue.clear()
            raise
        finally:
            self._in_flight[lazy] -= 1
            self._flushing[lazy] = None

    async def _send(self, db: StatelessPool, batch: list[_Waiting], lazy: bool) -> None:
        args = _batch_args(batch) if len(batch) > 1 and self.batching else None
        if args is not None:
            try:
                records = await db.fetch(_BATCH_MOVE_LAZY_SQL if lazy else _BATCH_MOVE_SQL, *args)
            except asyncpg.PostgresConnectionError as e:
                _answer_all(batch, e)  # lost on the way: it may have committed
                return
            except asyncpg.PostgresError as e:
                # Refused: nothing of it was written. Each move goes again on its own.
                if isinstance(e, asyncpg.SyntaxOrAccessError):
                    self.batching = False
                    _log.warning("move_batches_off", error=str(e)[:300])
            except Exception as e:  # noqa: BLE001 - each caller gets the error as its own
                _answer_all(batch, e)
                return
            else:
                rows = {int(r["move_index"]): LedgerRow.from_record(r) for r in records}
                for i, waiting in enumerate(batch, start=1):
                    if not waiting.answer.done():
                        waiting.answer.set_result(rows.get(i))
                return
        for waiting in batch:
            await _send_alone(db, waiting, lazy)


async def _send_alone(db: StatelessPool, waiting: _Waiting, lazy: bool) -> None:
    if waiting.answer.done():
        return  # its caller was cancelled before it was sent: not sent
    try:
        row = await fast_move(db, waiting.move, lazy=lazy)
    except asyncio.CancelledError:
        waiting.answer.cancel()
        raise
    except Exception as e:  # noqa: BLE001 - the caller's own error
        if not waiting.answer.done():
            waiting.answer.set_exception(e)
        return
    if not waiting.answer.done():
        waiting.answer.set_result(row)


def _answer_all(batch: list[_Waiting], error: Exception) -> None:
    for waiting in batch:
        if not waiting.answer.done():
            waiting.answer.set_exception(error)


def _take_batch(queue: deque[_Waiting]) -> list[_Waiting]:
    """Take the waiting moves of distinct rows, oldest first (a row's second move waits for
    the next statement: one statement moves a row once); drop those whose caller left."""
    batch: list[_Waiting] = []
    rows: set[str] = set()
    later: list[_Waiting] = []
    while queue and len(batch) < _BATCH_MAX:
        waiting = queue.popleft()
        if waiting.answer.done():
            continue
        if waiting.move.signal_id in rows:
            later.append(waiting)
        else:
            rows.add(waiting.move.signal_id)
            batch.append(waiting)
    queue.extendleft(reversed(later))
    return batch


def _event_detail(move: Move) -> dict[str, Any]:
    return {"from": move.expected_status().value, "to": move.new_status.value, **move.detail}


def _batch_args(batch: list[_Waiting]) -> list[list[Any]] | None:
    """The batch statement's 22 arrays, one element per move; None if a move's values
    cannot go in it (each move then goes on its own, and only that one's caller fails)."""
    try:
        return _batch_columns(batch)
    except Exception:  # noqa: BLE001 - e.g. a detail JSON cannot carry
        return None


def _batch_columns(batch: list[_Waiting]) -> list[list[Any]]:
    columns: list[list[Any]] = [[] for _ in range(22)]
    for move in (waiting.move for waiting in batch):
        call, guard = move.broker_call, move.filled_was
        call_args: tuple[Any, ...] = (None,) * 8
        if call is not None:
            dialect, method, path, status, latency, request, response, error = broker_call_columns(
                call
            )
            call_args = (dialect, method, path, status, latency, _json(request),
                         _json(response), error)  # fmt: skip
        values = (
            move.signal_id, move.new_status.value, *move.fields, move.expected_status().value,
            move.owner, guard is not None, None if guard is None else guard[0],
            move.event, dump_json(_event_detail(move)), *call_args,
        )  # fmt: skip
        for column, value in zip(columns, values, strict=True):
            column.append(value)
    return columns


def _json(value: Any) -> str | None:
    return None if value is None else dump_json(value)

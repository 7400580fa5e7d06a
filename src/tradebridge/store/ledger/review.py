"""What reconcile and an operator ask: rows that need another look, by a worker or a human.

Dead workers' rows, ``unknown`` rows to resolve, ``needs_review`` rows, and orders resting
at the broker that nothing was heard of for a while.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta
from decimal import Decimal

from tradebridge.domain.lifecycle import SignalStatus
from tradebridge.store.ledger._sql import status_list
from tradebridge.store.ledger.pool import LedgerPool
from tradebridge.store.ledger.rows import LedgerRow

# Rows whose worker may still be placing them, and rows whose order rests at the broker.
_IN_FLIGHT = status_list(SignalStatus.PROCESSING, SignalStatus.SUBMITTED, SignalStatus.UNKNOWN)
_RESTING = status_list(SignalStatus.WORKING, SignalStatus.PARTIALLY_FILLED)


class Review(LedgerPool):
    """Rows unresolved, idle or held by dead workers."""

    async def unresolved(self, *, unknown_bound: timedelta, limit: int = 20) -> list[LedgerRow]:
        """Return rows in ``needs_review`` and ``unknown`` rows past the bound, oldest first."""
        rows = await self._db.fetch(
            f"select * from trading_signals where status = '{SignalStatus.NEEDS_REVIEW}' "  # noqa: S608 - statuses from SignalStatus, no input
            f"or (status = '{SignalStatus.UNKNOWN}' "
            "    and coalesce(last_attempt_at, updated_at) < now() - $1::interval) "
            "order by created_at, seq limit $2",
            unknown_bound,
            limit,
        )
        return [LedgerRow.from_record(r) for r in rows]

    async def count_unresolved(self, *, unknown_bound: timedelta) -> int:
        """Return how many rows ``unresolved`` would list without a limit."""
        value = await self._db.fetchval(
            f"select count(*) from trading_signals where status = '{SignalStatus.NEEDS_REVIEW}' "  # noqa: S608 - statuses from SignalStatus, no input
            f"or (status = '{SignalStatus.UNKNOWN}' "
            "    and coalesce(last_attempt_at, updated_at) < now() - $1::interval)",
            unknown_bound,
        )
        return int(value or 0)

    async def worker_liveness(
        self, namespace: int, *, besides: set[str]
    ) -> tuple[list[str], list[str]]:
        """Return the workers holding rows in flight: (dead, live), by their liveness lock.

        Each worker holds the advisory lock ``(namespace, hashtext(worker id))`` while it
        lives; a lock this session can take (and gives back at once) belongs to nobody: its
        worker is dead. Workers in ``besides`` (this process's own) are in neither list.
        """
        # Session locks taken and given back: the connection is reset on release anyway.
        async with self._pool.acquire() as conn:
            workers = [
                str(r["claimed_by"])
                for r in await conn.fetch(
                    "select distinct claimed_by from trading_signals "  # noqa: S608 - statuses from SignalStatus, no input
                    f"where status in {_IN_FLIGHT} "
                    "and claimed_by is not null"
                )
            ]
            dead, live = [], []
            for worker in workers:
                if worker in besides:
                    continue
                if await conn.fetchval(
                    "select pg_try_advisory_lock($1, hashtext($2))", namespace, worker
                ):
                    await conn.execute(
                        "select pg_advisory_unlock($1, hashtext($2))", namespace, worker
                    )
                    dead.append(worker)
                else:
                    live.append(worker)
        return dead, live

    async def claimed_rows(self, worker_id: str) -> list[str]:
        """Return the rows ``worker_id`` holds ``processing`` (claimed, nothing sent)."""
        rows = await self._db.fetch(
            "select signal_id from trading_signals "  # noqa: S608 - statuses from SignalStatus, no input
            f"where status = '{SignalStatus.PROCESSING}' and claimed_by = $1 "
            "order by created_at, seq",
            worker_id,
        )
        return [str(r["signal_id"]) for r in rows]

    async def unknown_to_resolve(
        self, *, dead_workers: Sequence[str], idle: timedelta
    ) -> list[tuple[str, str]]:
        """Return (signal_id, account_name) of the ``unknown`` rows reconcile should resolve.

        Rows nobody holds, rows of dead workers, and rows idle for ``idle`` (their worker did
        not settle them); oldest first.
        """
        rows = await self._db.fetch(
            "select signal_id, account_name from trading_signals "  # noqa: S608 - statuses from SignalStatus, no input
            f"where status = '{SignalStatus.UNKNOWN}' "
            "and (claimed_by is null or claimed_by = any($1::text[]) "
            "or updated_at < now() - $2::interval) order by created_at, seq",
            list(dead_workers),
            idle,
        )
        return [(str(r["signal_id"]), str(r["account_name"] or "")) for r in rows]

    async def needing_review(self, limit: int = 50) -> list[tuple[str, str]]:
        """Return (signal_id, account_name) of recent ``needs_review`` rows, least recent first."""
        rows = await self._db.fetch(
            "select signal_id, account_name from trading_signals "  # noqa: S608 - statuses from SignalStatus, no input
            f"where status = '{SignalStatus.NEEDS_REVIEW}' "
            "and account_name is not null and created_at > now() - interval '1 day' "
            "order by updated_at limit $1",
            limit,
        )
        return [(str(r["signal_id"]), str(r["account_name"])) for r in rows]

    async def open_orders_idle(
        self, idle: timedelta
    ) -> list[tuple[str, str, SignalStatus, str, Decimal | None]]:
        """Return rows whose order rests and that heard nothing for ``idle``.

        Each: (signal_id, account_name, status, tradovate_order_id, filled_qty as stored:
        a guard for the move that follows, ``Moves.move_if``).
        """
        rows = await self._db.fetch(
            "select signal_id, account_name, status, tradovate_order_id, filled_qty "  # noqa: S608 - statuses from SignalStatus, no input
            f"from trading_signals where status in {_RESTING} "
            "and tradovate_order_id is not null and updated_at < now() - $1::interval",
            idle,
        )
        return [
            (str(r["signal_id"]), str(r["account_name"]), SignalStatus(r["status"]),
             str(r["tradovate_order_id"]), _decimal(r["filled_qty"]))
            for r in rows
        ]  # fmt: skip

    async def order_state(
        self, signal_id: str
    ) -> tuple[SignalStatus, str | None, Decimal | None] | None:
        """Return (status, tradovate_order_id, filled_qty as stored) of a row, or None: what
        a guarded move reads again after its guard refused (``Moves.move_if``)."""
        record = await self._db.fetchrow(
            "select status, tradovate_order_id, filled_qty from trading_signals "
            "where signal_id = $1",
            signal_id,
        )
        if record is None:
            return None
        order_id = record["tradovate_order_id"]
        return (
            SignalStatus(record["status"]),
            None if order_id is None else str(order_id),
            _decimal(record["filled_qty"]),
        )


def _decimal(value: object) -> Decimal | None:
    return None if value is None else Decimal(str(value))

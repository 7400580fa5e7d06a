"""``tradebridge review``: the rows a human must decide, with the evidence, and the decision.

A row is ``needs_review`` when its submit's answer was lost and the lookups could not tell,
within ``dispatcher.unknown_bound_s``, whether the broker holds its order (docs/dispatcher.md
"Unknown outcomes"). tradebridge never guesses and never resends it; a person looks at the
broker (``tradebridge orders``) and at the evidence here, then says which:

* ``review adopt SIGNAL ORDER``: the broker order ORDER is this row's; the row becomes
  ``working`` and reconcile takes it from there (fills, cancels). The ledger refuses an
  order another row already owns.
* ``review absent SIGNAL``: nothing of this row reached the broker; the row ends ``failed``.

Exit codes: 0 done; 1 refused (the row moved meanwhile, the order is another row's) or the
database is unreachable; 2 bad usage.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import TYPE_CHECKING, Annotated, TypeVar

import typer
from rich.markup import escape

from tradebridge.cli._shared import (
    LedgerOptions,
    fail,
    group,
    ledger_url,
    out,
    run_on_ledger,
    takes,
)
from tradebridge.domain.lifecycle import SignalStatus
from tradebridge.errors import OrderOwned

if TYPE_CHECKING:
    from tradebridge.store.ledger import HistoryEvent, Ledger, LedgerRow

T = TypeVar("T")

review_app = group(
    "review", "Rows whose order tradebridge could not confirm or rule out: list, show, decide."
)

_EVIDENCE_EVENTS = ("lookup", "lookup_ambiguous", "lookup_failed", "escalated", "unknown")

SignalIdArg = Annotated[str, typer.Argument(help="the row's signal_id")]
NoteOpt = Annotated[str, typer.Option(help="who decided and why, kept in the history")]


LedgerCommand = takes(LedgerOptions)


def _with_ledger(ctx: typer.Context, work: Callable[[Ledger], Awaitable[T]]) -> T:
    where = LedgerOptions.of(ctx)
    return run_on_ledger(ledger_url(where.database_url, where.data_dir, where.config), work)


@review_app.command("list", cls=LedgerCommand)
def list_rows(
    ctx: typer.Context,
    bound: Annotated[
        float, typer.Option(help="also list unknown rows older than this many seconds")
    ] = 60.0,
    as_json: Annotated[bool, typer.Option("--json", help="one JSON object per row")] = False,
) -> None:
    """List rows in needs_review, and unknown rows older than the bound."""

    async def work(ledger: Ledger) -> list[LedgerRow]:
        return await ledger.unresolved(unknown_bound=timedelta(seconds=bound), limit=500)

    rows = _with_ledger(ctx, work)
    for row in rows:
        if as_json:
            out.print_json(json.dumps({
                "signal_id": row.signal_id, "status": row.status.value,
                "account": row.account_name, "instrument": row.instrument, "side": row.side,
                "quantity": None if row.quantity is None else str(row.quantity),
                "client_order_id": row.client_order_id, "error": row.error_message,
            }))  # fmt: skip
            continue
        out.print(escape(
            f"{row.signal_id}  {row.status.value}  {row.account_name}  {row.side} "
            f"{row.quantity} {row.instrument}  client id {row.client_order_id}  "
            f"{row.error_message or ''}"
        ))  # fmt: skip
    if not rows and not as_json:
        out.print("nothing to review")


@review_app.command(cls=LedgerCommand)
def show(ctx: typer.Context, signal_id: SignalIdArg) -> None:
    """Show a row and the evidence of its lookups (what the broker showed, and why)."""

    async def work(ledger: Ledger) -> tuple[LedgerRow | None, list[HistoryEvent]]:
        return await ledger.get(signal_id), await ledger.history(signal_id)

    row, history = _with_ledger(ctx, work)
    if row is None:
        raise fail(f"no row with signal_id {signal_id!r}", 1)
    out.print(escape(
        f"{row.signal_id}: {row.status.value}, {row.side} {row.quantity} {row.instrument} "
        f"{row.order_type} on {row.account_name}, client id {row.client_order_id}, "
        f"{row.placement_attempts} submit(s), last at {row.last_attempt_at}"
    ))  # fmt: skip
    if row.error_message:
        out.print(escape(f"  {row.error_message}"))
    for event in history:
        if event.event in _EVIDENCE_EVENTS or event.event.startswith("adopted"):
            detail = json.dumps(event.detail, default=str)
            out.print(escape(f"  {event.created_at:%H:%M:%S} {event.event}: {detail}"))


@review_app.command(cls=LedgerCommand)
def adopt(
    ctx: typer.Context,
    signal_id: SignalIdArg,
    order_id: Annotated[str, typer.Argument(help="the broker order id that is this row's")],
    note: NoteOpt = "",
) -> None:
    """Say the broker order ORDER is this row's: the row becomes working, reconcile follows it."""

    async def work(ledger: Ledger) -> LedgerRow:
        # The ledger's unique index is per account: an order another account's row owns
        # would pass it (broker order ids are unique across accounts).
        owner = await ledger.owner_of(order_id)
        if owner is not None and owner != signal_id:
            raise OrderOwned(
                f"signal {signal_id}: broker order {order_id} already belongs to signal {owner}",
                owner=owner,
            )
        return await ledger.transition(
            signal_id, SignalStatus.WORKING, expected=SignalStatus.NEEDS_REVIEW,
            event="adopted_by_hand", detail={"broker_order_id": order_id, "note": note},
            tradovate_order_id=order_id,
            error_message=f"adopted broker order {order_id} by hand" + (
                f": {note}" if note else ""),
        )  # fmt: skip

    row = _with_ledger(ctx, work)
    out.print(escape(f"signal {row.signal_id}: {row.status.value}, order {row.tradovate_order_id}"))


@review_app.command(cls=LedgerCommand)
def absent(ctx: typer.Context, signal_id: SignalIdArg, note: NoteOpt = "") -> None:
    """Say nothing of this row reached the broker: it ends failed (never sent again)."""

    async def work(ledger: Ledger) -> LedgerRow:
        return await ledger.transition(
            signal_id, SignalStatus.FAILED, expected=SignalStatus.NEEDS_REVIEW,
            event="absent_by_hand", detail={"note": note},
            error_message="not placed: checked by hand" + (f": {note}" if note else ""),
        )  # fmt: skip

    row = _with_ledger(ctx, work)
    out.print(escape(f"signal {row.signal_id}: {row.status.value}"))

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

import asyncio
import json
from collections.abc import Awaitable, Callable
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.markup import escape

from tradebridge.cli.db import DatabaseUrlOpt
from tradebridge.cli.run import ConfigOpt, DataDirOpt, _fail, _send_database_url
from tradebridge.errors import ConfigError, IllegalTransition, StoreError

T = TypeVar("T")

review_app = typer.Typer(
    name="review",
    help="Rows whose order tradebridge could not confirm or rule out: list, show, decide.",
    no_args_is_help=True,
    add_completion=False,
    rich_markup_mode="rich",
)

_out = Console(highlight=False, soft_wrap=True)
_EVIDENCE_EVENTS = ("lookup", "lookup_ambiguous", "lookup_failed", "escalated", "unknown")


def _with_ledger(
    database_url: str | None,
    data_dir: Path | None,
    config: Path | None,
    work: Callable[[Any], Awaitable[T]],
) -> T:
    from tradebridge.store.ledger import Ledger

    url = _send_database_url(database_url, data_dir, config)

    async def run() -> T:
        ledger = await Ledger.connect(url, min_size=1, max_size=2)
        try:
            return await work(ledger)
        finally:
            await ledger.close()

    try:
        return asyncio.run(run())
    except (IllegalTransition, StoreError) as e:
        raise _fail(str(e), 1) from None
    except ConfigError as e:
        raise _fail(str(e), 2) from None


@review_app.command("list")
def list_rows(
    bound: Annotated[
        float, typer.Option(help="also list unknown rows older than this many seconds")
    ] = 60.0,
    as_json: Annotated[bool, typer.Option("--json", help="one JSON object per row")] = False,
    database_url: DatabaseUrlOpt = None,
    data_dir: DataDirOpt = None,
    config: ConfigOpt = None,
) -> None:
    """List rows in needs_review, and unknown rows older than the bound."""

    async def work(ledger: Any) -> list[Any]:
        rows: list[Any] = await ledger.unresolved(unknown_bound=timedelta(seconds=bound), limit=500)
        return rows

    rows = _with_ledger(database_url, data_dir, config, work)
    for row in rows:
        if as_json:
            _out.print_json(json.dumps({
                "signal_id": row.signal_id, "status": row.status.value,
                "account": row.account_name, "instrument": row.instrument, "side": row.side,
                "quantity": None if row.quantity is None else str(row.quantity),
                "client_order_id": row.client_order_id, "error": row.error_message,
            }))  # fmt: skip
            continue
        _out.print(escape(
            f"{row.signal_id}  {row.status.value}  {row.account_name}  {row.side} "
            f"{row.quantity} {row.instrument}  client id {row.client_order_id}  "
            f"{row.error_message or ''}"
        ))  # fmt: skip
    if not rows and not as_json:
        _out.print("nothing to review")


@review_app.command()
def show(
    signal_id: Annotated[str, typer.Argument(help="the row's signal_id")],
    database_url: DatabaseUrlOpt = None,
    data_dir: DataDirOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Show a row and the evidence of its lookups (what the broker showed, and why)."""

    async def work(ledger: Any) -> tuple[Any, list[Any]]:
        return await ledger.get(signal_id), await ledger.history(signal_id)

    row, history = _with_ledger(database_url, data_dir, config, work)
    if row is None:
        raise _fail(f"no row with signal_id {signal_id!r}", 1)
    _out.print(escape(
        f"{row.signal_id}: {row.status.value}, {row.side} {row.quantity} {row.instrument} "
        f"{row.order_type} on {row.account_name}, client id {row.client_order_id}, "
        f"{row.placement_attempts} submit(s), last at {row.last_attempt_at}"
    ))  # fmt: skip
    if row.error_message:
        _out.print(escape(f"  {row.error_message}"))
    for event in history:
        if event.event in _EVIDENCE_EVENTS or event.event.startswith("adopted"):
            detail = json.dumps(event.detail, default=str)
            _out.print(escape(f"  {event.created_at:%H:%M:%S} {event.event}: {detail}"))


@review_app.command()
def adopt(
    signal_id: Annotated[str, typer.Argument(help="the row's signal_id")],
    order_id: Annotated[str, typer.Argument(help="the broker order id that is this row's")],
    note: Annotated[str, typer.Option(help="who decided and why, kept in the history")] = "",
    database_url: DatabaseUrlOpt = None,
    data_dir: DataDirOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Say the broker order ORDER is this row's: the row becomes working, reconcile follows it."""
    from tradebridge.domain.lifecycle import SignalStatus

    async def work(ledger: Any) -> Any:
        return await ledger.transition(
            signal_id, SignalStatus.WORKING, expected=SignalStatus.NEEDS_REVIEW,
            event="adopted_by_hand", detail={"broker_order_id": order_id, "note": note},
            tradovate_order_id=order_id,
            error_message=f"adopted broker order {order_id} by hand" + (
                f": {note}" if note else ""),
        )  # fmt: skip

    row = _with_ledger(database_url, data_dir, config, work)
    _out.print(escape(f"signal {row.signal_id}: working, order {row.tradovate_order_id}"))


@review_app.command()
def absent(
    signal_id: Annotated[str, typer.Argument(help="the row's signal_id")],
    note: Annotated[str, typer.Option(help="who decided and why, kept in the history")] = "",
    database_url: DatabaseUrlOpt = None,
    data_dir: DataDirOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Say nothing of this row reached the broker: it ends failed (never sent again)."""
    from tradebridge.domain.lifecycle import SignalStatus

    async def work(ledger: Any) -> Any:
        return await ledger.transition(
            signal_id, SignalStatus.FAILED, expected=SignalStatus.NEEDS_REVIEW,
            event="absent_by_hand", detail={"note": note},
            error_message="not placed: checked by hand" + (f": {note}" if note else ""),
        )  # fmt: skip

    row = _with_ledger(database_url, data_dir, config, work)
    _out.print(escape(f"signal {row.signal_id}: {row.status.value}"))

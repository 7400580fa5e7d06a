"""``tradebridge signals`` and ``tradebridge trace``: the ledger's signals, listed and exported,
and one signal's whole story (the "flight recorder" a trader sends to support).

``signals [--since 1h] [--status S]... [--account A] [--strategy N] [--limit 100]
[--csv | --json]``: newest first, each with its source, intent, status, broker order, fill,
latency (insert → broker answer) and error.

``trace SIGNAL_ID [--json]``: the row, the alert it came from (its payload as stored: secrets
masked), every event of its history (each risk verdict with its numbers), every broker call
with its status and latency, and the times from insert to claim, send, answer and end.

Exit codes: 0 done; 1 no such signal, or the database refused; 2 bad usage.
"""

from __future__ import annotations

import csv
import io
import json
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.markup import escape

from tradebridge.cli._shared import LedgerOptions, fail, ledger_url, out, run_on_ledger, takes
from tradebridge.domain import clock
from tradebridge.domain.lifecycle import SignalStatus

if TYPE_CHECKING:
    from tradebridge.store.ledger import Ledger, LedgerRow
    from tradebridge.store.ledger.trace import Trace

LedgerCommand = takes(LedgerOptions)


def parse_since(text: str, now: datetime) -> datetime:
    """Return the moment ``text`` names (``domain.clock.parse_since``); ``BadParameter``."""
    try:
        return clock.parse_since(text, now)
    except ValueError as e:
        raise typer.BadParameter(str(e), param_hint="--since") from None


def _status(text: str) -> str:
    try:
        return SignalStatus(text.strip().lower()).value
    except ValueError:
        known = ", ".join(s.value for s in SignalStatus)
        raise typer.BadParameter(f"{text!r} is not a status ({known})",
                                 param_hint="--status") from None  # fmt: skip


def signals(
    ctx: typer.Context,
    since: Annotated[
        str | None, typer.Option(help="only signals since: an age (30m, 1h, 2d) or an ISO time")
    ] = None,
    status: Annotated[
        list[str] | None, typer.Option(help="only this status (repeat for several)")
    ] = None,
    account: Annotated[str | None, typer.Option(help="only this account")] = None,
    strategy: Annotated[str | None, typer.Option(help="only this strategy_name")] = None,
    limit: Annotated[int, typer.Option(min=1, max=100_000, help="at most this many")] = 100,
    as_csv: Annotated[bool, typer.Option("--csv", help="CSV with a header row")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="one JSON object per line")] = False,
) -> None:
    """List the ledger's signals, newest first (source, intent, status, fill, latency, error)."""
    from tradebridge.store.ledger.trace import RECORD_COLUMNS, signal_record

    if as_csv and as_json:
        raise fail("choose one of --csv and --json", 2)
    moment = parse_since(since, datetime.now(UTC)) if since else None
    wanted = [_status(s) for s in status] if status else None
    where = LedgerOptions.of(ctx)

    async def work(ledger: Ledger) -> list[LedgerRow]:
        return await ledger.list_signals(since=moment, statuses=wanted, account=account,
                                         strategy=strategy, limit=limit)  # fmt: skip

    rows = run_on_ledger(ledger_url(where.database_url, where.data_dir, where.config), work)
    records = [signal_record(row) for row in rows]
    if as_csv:
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=RECORD_COLUMNS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(records)
        typer.echo(buffer.getvalue(), nl=False)
        return
    if as_json:
        for record in records:
            typer.echo(json.dumps(record))
        return
    if not records:
        out.print("no signals match")
        return
    for r in records:
        fill = f" filled {r['filled_qty']} @ {r['avg_fill_price']}" if r["avg_fill_price"] else ""
        latency = f" {r['latency_ms']} ms" if r["latency_ms"] is not None else ""
        what = " ".join(str(x) for x in (r["intent"], r["side"], r["quantity"], r["instrument"])
                        if x)  # fmt: skip
        line = (f"{r['created_at']}  {r['signal_id']}  {r['status']}  {r['account']}  {what}"
                f"{fill}{latency}  [{r['source']}]")  # fmt: skip
        if r["error"]:
            line += f"  {r['error']}"
        out.print(escape(line))


def trace(
    ctx: typer.Context,
    signal_id: Annotated[str, typer.Argument(help="the signal's signal_id")],
    as_json: Annotated[
        bool, typer.Option("--json", help="the whole trace as one JSON object")
    ] = False,
) -> None:
    """Show one signal's whole story: alert, history, risk verdicts, broker calls, timings."""
    from tradebridge.store.ledger.trace import load_trace

    where = LedgerOptions.of(ctx)

    async def work(ledger: Ledger) -> Trace | None:
        return await load_trace(ledger, signal_id)

    found = run_on_ledger(ledger_url(where.database_url, where.data_dir, where.config), work)
    if found is None:
        raise fail(f"no signal with signal_id {signal_id!r}", 1)
    data = found.as_json()
    if as_json:
        typer.echo(json.dumps(data, default=str))
        return
    _print_trace(data)


def _print_trace(data: dict[str, Any]) -> None:
    s = data["signal"]
    what = " ".join(str(x) for x in (s["intent"], s["side"], s["quantity"], s["instrument"]) if x)
    out.print(escape(f"signal {s['signal_id']}: {s['status']} — {what} on {s['account']} "
                     f"(strategy {s['strategy']}, source {s['source']})"))  # fmt: skip
    out.print(escape(f"  client id {data['client_order_id']}, broker order "
                     f"{s['broker_order_id']}, filled {s['filled_qty']}"
                     + (f" @ {s['avg_fill_price']}" if s["avg_fill_price"] else "")))  # fmt: skip
    if s["error"]:
        out.print(escape(f"  {s['error']}"))
    steps = "  ".join(f"{name} +{ms} ms" for name, ms in data["timeline_ms"].items()
                      if ms is not None)  # fmt: skip
    out.print(escape(f"  created {s['created_at']}  {steps}"))
    alert = data["alert"]
    if alert is None:
        out.print("alert: none (inserted into the table directly)")
    else:
        out.print(escape(f"alert: {alert['format']} from {alert['source_ip']} at "
                         f"{alert['received_at']}, {alert['outcome']}"))  # fmt: skip
        out.print(escape(f"  {json.dumps(alert['payload'], default=str)}"))
    out.print("history:")
    for e in data["history"]:
        out.print(escape(f"  {e['at']}  {e['event']}  {json.dumps(e['detail'], default=str)}"))
    out.print("broker calls:" if data["broker_calls"] else "broker calls: none")
    for c in data["broker_calls"]:
        status = c["status"] if c["status"] is not None else c["error"]
        out.print(escape(f"  {c['at']}  {c['method']} {c['path']}  {status}  "
                         f"{c['latency_ms']} ms"))  # fmt: skip


def register(app: typer.Typer) -> None:
    """Add ``signals`` and ``trace`` to the ``tradebridge`` command."""
    for command in (signals, trace):
        app.command(cls=LedgerCommand)(command)

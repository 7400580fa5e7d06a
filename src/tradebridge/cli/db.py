"""``tradebridge db``: apply the ledger's migrations and show where they stand.

The database is found as ``send`` and ``review`` find it (``_shared.ledger_url``): the URL
given, a running ``up`` stack's (``--data-dir``), the configured one. ``db migrate`` first
inspects what exists and adapts tables another program created (docs/migrating.md);
``--dry-run`` prints that plan, step by step, and changes nothing.

Exit codes: 0 done (or, dry run: nothing in the way); 1 the database is unreachable, has a
conflict only the operator can fix (each printed with its fix), a migration failed (rolled
back) or the result would not be usable by the workers (rolled back); 2 bad usage (no
database to be found, bad settings). Errors are one line on stderr, without the password,
except the conflicts: one line each.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Coroutine
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer
from rich.markup import escape

from tradebridge.cli._shared import (
    ConfigOpt,
    DatabaseUrlOpt,
    DataDirOpt,
    SharedOptions,
    err,
    fail,
    group,
    ledger_url,
    out,
    takes,
    unreachable,
)
from tradebridge.errors import DatabaseUnavailable, StoreError

if TYPE_CHECKING:
    from tradebridge.store.adopt import Step

T = TypeVar("T")

db_app = group(
    "db", "The ledger database: apply migrations (migrate) and show where they stand (status)."
)


@dataclasses.dataclass(frozen=True, slots=True)
class DatabaseOptions(SharedOptions):
    """The options of every ``db`` command: the ledger's URL, a running ``up``, the settings."""

    database_url: DatabaseUrlOpt = None
    data_dir: DataDirOpt = None
    config: ConfigOpt = None

    def url(self) -> str:
        """Return the ledger's URL (``ledger_url``); exit 2 if there is none to be found."""
        return ledger_url(self.database_url, self.data_dir, self.config)


DatabaseCommand = takes(DatabaseOptions)


def _run(work: Coroutine[Any, Any, T]) -> T:
    try:
        return asyncio.run(work)
    except DatabaseUnavailable as e:
        raise unreachable(e) from None
    except StoreError as e:
        raise fail(str(e), 1) from None


DryRunOpt = Annotated[
    bool,
    typer.Option("--dry-run", help="print the plan (each step: adapt or conflict); change nothing"),
]


@db_app.command(cls=DatabaseCommand)
def migrate(ctx: typer.Context, dry_run: DryRunOpt = False) -> None:
    """Adapt what exists, apply the pending migrations, verify (safe to run again, and from
    several workers)."""
    from tradebridge.store import adopt
    from tradebridge.store import migrate as migrations

    url = DatabaseOptions.of(ctx).url()
    where = migrations.describe_url(url)
    if dry_run:
        plan, states = _run(migrations.plan(url))
        out.print(f"{where}: the plan (dry run, nothing is changed)")
        _print_steps(plan.steps, "before")
        for state in states:
            if not state.is_applied:
                out.print(f"  {'migrate':<9} {state.version:04d}_{state.name}")
        _print_steps(plan.steps, "after")
        for step in plan.steps:
            if step.kind in ("keep", "note", "conflict"):
                _print_step(step)
        if plan.conflicts:
            err.print(
                f"{len(plan.conflicts)} conflict(s): `tradebridge db migrate` would stop "
                "and change nothing until they are fixed"
            )
            raise typer.Exit(1)
        return
    try:
        report = asyncio.run(migrations.migrate_report(url))
    except adopt.AdoptionConflict as e:
        for step in e.plan.conflicts:
            err.print(f"[red]conflict:[/red] {escape(step.what)}")
            err.print(f"  fix: {escape(step.fix or '')}")
        raise fail(f"{len(e.plan.conflicts)} conflict(s); nothing was changed", 1) from None
    except DatabaseUnavailable as e:
        raise unreachable(e) from None
    except StoreError as e:
        raise fail(str(e), 1) from None
    for step in report.plan.steps:
        if step.kind == "adapt" and step.phase == "before":
            out.print(f"adapted: {step.what}")
    applied = [s for s in report.states if s.applied_now]
    for state in applied:
        out.print(f"applied {state.version:04d}_{state.name}")
    for step in report.plan.steps:
        if step.kind == "adapt" and step.phase == "after":
            out.print(f"adapted: {step.what}")
    for step in report.plan.steps:
        if step.kind == "note":
            out.print(f"note: {step.what}")
    for notice in report.notices:
        out.print(escape(f"notice: {notice}"))
    if not applied:
        out.print(f"{where}: up to date ({len(report.states)} migrations)")
    else:
        out.print(f"{where}: {len(applied)} applied, {len(report.states)} in all")


def _print_steps(steps: list[Step], phase: str) -> None:
    for step in steps:
        if step.kind == "adapt" and step.phase == phase:
            _print_step(step)


def _print_step(step: Step) -> None:
    out.print(f"  {step.kind:<9} {escape(step.what)}")
    if step.fix:
        out.print(f"  {'':<9} fix: {escape(step.fix)}")


@db_app.command(cls=DatabaseCommand)
def status(ctx: typer.Context) -> None:
    """Show each migration and whether the database has it; exit 1 if any is missing."""
    from tradebridge.store import migrate as migrations

    states = _run(migrations.status(DatabaseOptions.of(ctx).url()))
    missing = 0
    for state in states:
        label = f"{state.version:04d}_{state.name}"
        if state.applied_at is None:
            missing += 1
            out.print(f"{label}  pending")
        elif not state.checksum_matches:
            missing += 1
            out.print(f"{label}  applied {state.applied_at:%Y-%m-%d %H:%M:%S}Z, FILE CHANGED")
        else:
            out.print(f"{label}  applied {state.applied_at:%Y-%m-%d %H:%M:%S}Z")
    if missing:
        raise typer.Exit(1)

"""``tradebridge db``: apply the ledger's migrations and show where they stand.

The database is found as ``send`` and ``review`` find it (``_shared.ledger_url``): the URL
given, a running ``up`` stack's (``--data-dir``), the configured one. Exit codes: 0 done;
1 the database is unreachable or a migration failed (rolled back); 2 bad usage (no database
to be found, bad settings). Errors are one line on stderr, without the password.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Coroutine
from typing import Any, TypeVar

import typer

from tradebridge.cli._shared import (
    ConfigOpt,
    DatabaseUrlOpt,
    DataDirOpt,
    SharedOptions,
    fail,
    group,
    ledger_url,
    out,
    takes,
    unreachable,
)
from tradebridge.errors import DatabaseUnavailable, StoreError

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


@db_app.command(cls=DatabaseCommand)
def migrate(ctx: typer.Context) -> None:
    """Apply the ledger's pending migrations (safe to run again, and from several workers)."""
    from tradebridge.store import migrate as migrations

    url = DatabaseOptions.of(ctx).url()
    states = _run(migrations.migrate(url))
    where = migrations.describe_url(url)
    applied = [s for s in states if s.applied_now]
    for state in applied:
        out.print(f"applied {state.version:04d}_{state.name}")
    if not applied:
        out.print(f"{where}: up to date ({len(states)} migrations)")
    else:
        out.print(f"{where}: {len(applied)} applied, {len(states)} in all")


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

"""``tradebridge db``: apply the ledger's migrations and show where they stand.

Exit codes: 0 done; 1 the database is unreachable or a migration failed (rolled back);
2 bad usage (no database URL, bad settings). Errors are one line on stderr, without the
password.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.markup import escape

from tradebridge.errors import ConfigError, StoreError

T = TypeVar("T")

db_app = typer.Typer(
    name="db",
    help="The ledger database: apply migrations (migrate) and show where they stand (status).",
    no_args_is_help=True,
    add_completion=False,
    rich_markup_mode="rich",
)

_out = Console(highlight=False, soft_wrap=True)
_err = Console(stderr=True, highlight=False, soft_wrap=True)

DatabaseUrlOpt = Annotated[
    str | None,
    typer.Option(
        "--database-url",
        envvar="DATABASE_URL",
        show_envvar=True,
        help="postgresql:// URL of the ledger (direct or session-pooler port 5432)",
    ),
]
ConfigOpt = Annotated[
    Path | None,
    typer.Option("--config", "-c", envvar="TRADEBRIDGE_CONFIG", help="settings file (TOML)"),
]


def _fail(message: str, code: int) -> typer.Exit:
    _err.print(f"[red]error:[/red] {escape(message)}")
    return typer.Exit(code)


def _database_url(database_url: str | None, config: Path | None) -> str:
    if database_url:
        return database_url
    from tradebridge.config import load_settings

    settings = load_settings(config)
    if settings.database.url is None:
        raise ConfigError(
            "no database: pass --database-url or set DATABASE_URL "
            "(or [database] url in tradebridge.toml)"
        )
    return settings.database.url.get_secret_value()


def _run(work: Coroutine[Any, Any, T]) -> T:
    try:
        return asyncio.run(work)
    except StoreError as e:
        raise _fail(str(e), 1) from None


@db_app.command()
def migrate(database_url: DatabaseUrlOpt = None, config: ConfigOpt = None) -> None:
    """Apply the ledger's pending migrations (safe to run again, and from several workers)."""
    from tradebridge.store import migrate as migrations

    try:
        url = _database_url(database_url, config)
    except ConfigError as e:
        raise _fail(str(e), 2) from None
    states = _run(migrations.migrate(url))
    where = migrations.describe_url(url)
    applied = [s for s in states if s.applied_now]
    for state in applied:
        _out.print(f"applied {state.version:04d}_{state.name}")
    if not applied:
        _out.print(f"{where}: up to date ({len(states)} migrations)")
    else:
        _out.print(f"{where}: {len(applied)} applied, {len(states)} in all")


@db_app.command()
def status(database_url: DatabaseUrlOpt = None, config: ConfigOpt = None) -> None:
    """Show each migration and whether the database has it; exit 1 if any is missing."""
    from tradebridge.store import migrate as migrations

    try:
        url = _database_url(database_url, config)
    except ConfigError as e:
        raise _fail(str(e), 2) from None
    states = _run(migrations.status(url))
    missing = 0
    for state in states:
        label = f"{state.version:04d}_{state.name}"
        if state.applied_at is None:
            missing += 1
            _out.print(f"{label}  pending")
        elif not state.checksum_matches:
            missing += 1
            _out.print(f"{label}  applied {state.applied_at:%Y-%m-%d %H:%M:%S}Z, FILE CHANGED")
        else:
            _out.print(f"{label}  applied {state.applied_at:%Y-%m-%d %H:%M:%S}Z")
    if missing:
        raise typer.Exit(1)

"""What the command groups share: options declared once, the output, the one-line error.

Shared options stand after the command's name, where they always have (``tradebridge
accounts --config FILE``, ``tradebridge review list --database-url URL``); a typer callback
on the group would accept them only in front of it. So a set of options that several
commands take is a frozen dataclass of typer options (a ``SharedOptions``): ``takes(TheSet)``
is the command class that lists them after each command's own options and keeps them out
of its arguments, and ``TheSet.of(ctx)`` reads them back, parsed and typed.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Self, TypeVar

import typer
from rich.console import Console
from rich.markup import escape
from typer.core import TyperCommand, TyperGroup

from tradebridge.errors import (
    ConfigError,
    DatabaseUnavailable,
    IllegalTransition,
    InvalidInput,
    RedisUnavailable,
    StoreError,
)

if TYPE_CHECKING:
    from tradebridge.config import Settings
    from tradebridge.store.ledger import Ledger

out = Console(highlight=False, soft_wrap=True)
err = Console(stderr=True, highlight=False, soft_wrap=True)

ConfigOpt = Annotated[
    Path | None,
    typer.Option("--config", "-c", envvar="TRADEBRIDGE_CONFIG", help="settings file (TOML)"),
]
DataDirOpt = Annotated[
    Path | None,
    typer.Option(
        "--data-dir", help="where embedded servers, secrets and endpoints.json live",
        show_default=".tradebridge",
    ),
]  # fmt: skip
DatabaseUrlOpt = Annotated[
    str | None,
    typer.Option(
        "--database-url",
        help="postgresql:// URL of the ledger (direct or session-pooler port 5432); "
        "else the running `up` stack of an explicit --data-dir, else DATABASE_URL or "
        "\\[database] url, else the running `up` stack of the default data directory",
    ),
]


@dataclasses.dataclass(frozen=True, slots=True)
class SharedOptions:
    """A set of options several commands take: subclass it as a frozen dataclass of options."""

    @classmethod
    def of(cls, ctx: typer.Context) -> Self:
        """Return the set as this command's line (or the environment) gave it."""
        return cls(**{f.name: ctx.params[f.name] for f in dataclasses.fields(cls)})


@dataclasses.dataclass(frozen=True, slots=True)
class LedgerOptions(SharedOptions):
    """Where a command finds the ledger: a URL, a running ``up``, the settings (``review``,
    ``kill``, ``resume``)."""

    database_url: DatabaseUrlOpt = None
    data_dir: DataDirOpt = None
    config: ConfigOpt = None


def _parameters(options: type[SharedOptions]) -> tuple[list[Any], frozenset[str]]:
    # typer reads the dataclass's fields as it reads a command's parameters.
    template = typer.Typer(add_completion=False)
    template.command()(options)
    shared = typer.main.get_command(template).params
    return shared, frozenset(str(p.name) for p in shared)


def _graft(command: TyperCommand | TyperGroup, options: type[SharedOptions]) -> None:
    """Add ``options`` to ``command``'s own; its callback reads them from its context."""
    shared, names = _parameters(options)
    command.params = [*command.params, *shared]
    own = command.callback
    assert own is not None

    def callback(**values: Any) -> Any:
        # The command reads the shared ones from its context (``options.of(ctx)``).
        return own(**{k: v for k, v in values.items() if k not in names})

    command.callback = callback


@functools.cache
def takes(options: type[SharedOptions]) -> type[TyperCommand]:
    """Return the command class that gives a command the fields of ``options`` as options."""

    class TakesSharedOptions(TyperCommand):
        def __init__(self, *args: Any, **attrs: Any) -> None:
            super().__init__(*args, **attrs)
            _graft(self, options)

    return TakesSharedOptions


@functools.cache
def group_takes(options: type[SharedOptions]) -> type[TyperGroup]:
    """Return the group class that gives a group's own callback the fields of ``options``."""

    class GroupTakesSharedOptions(TyperGroup):
        def __init__(self, *args: Any, **attrs: Any) -> None:
            super().__init__(*args, **attrs)
            _graft(self, options)

    return GroupTakesSharedOptions


def group(name: str, help_text: str) -> typer.Typer:
    """Return a command group (``tradebridge NAME ...``); without a command it shows its help."""
    return typer.Typer(
        name=name,
        help=help_text,
        no_args_is_help=True,
        add_completion=False,
        rich_markup_mode="rich",
    )


def fail(message: str, code: int) -> typer.Exit:
    """Print ``message`` as the one error line on stderr; return the exit to raise."""
    err.print(f"[red]error:[/red] {escape(message)}")
    return typer.Exit(code)


def warn(message: str) -> None:
    """Print ``message`` as a warning line on stderr."""
    err.print(f"[yellow]warning:[/yellow] {escape(message)}")


DATABASE_FIX = (
    "start it, or check --database-url / DATABASE_URL / [database] url; "
    "`tradebridge up` runs a local stack"
)
REDIS_FIX = (
    "start it, or check --redis-url / REDIS_URL / [redis] url; `tradebridge up` runs a local stack"
)


def unreachable(
    error: DatabaseUnavailable | RedisUnavailable, fix: str | None = None
) -> typer.Exit:
    """Print the one line of a database or Redis that does not answer, with the fix; exit 1."""
    if isinstance(error, RedisUnavailable):
        what, default_fix = "Redis", REDIS_FIX
    else:
        what, default_fix = "the database", DATABASE_FIX
    if error.where and error.reason:
        message = f"cannot connect to {what} at {error.where}: {error.reason}"
    else:
        message = str(error)
    return fail(f"{message}; {fix or default_fix}", 1)


def load(config: Path | None) -> Settings:
    """Return the settings of ``config`` (and the environment); exit 2 if they are bad.

    What validation completed (a ``native_url`` without ``/v1``) is printed as a warning.
    """
    import tomllib

    from pydantic_settings import SettingsError

    from tradebridge.config import load_settings

    try:
        settings = load_settings(config)
    except ConfigError as e:
        raise fail(str(e), 2) from None
    except (tomllib.TOMLDecodeError, SettingsError) as e:
        # load_settings lets these through: a broken TOML file, a variable that is not JSON.
        what = (
            "the settings file is not valid TOML: "
            if isinstance(e, tomllib.TOMLDecodeError)
            else ""
        )
        raise fail(f"{what}{e} (`tradebridge config check` explains)", 2) from None
    for note in settings.notes:
        warn(note)
    return settings


def ledger_url(database_url: str | None, data_dir: Path | None, config: Path | None) -> str:
    """Return the ledger's URL: the one given, a running ``up``'s, or the configured one.

    In this order: ``--database-url``; the ``endpoints.json`` of an explicit ``--data-dir``;
    ``DATABASE_URL`` or ``[database] url``; the ``endpoints.json`` of the settings' data
    directory. Exit 2, saying what to do, when none gives one.
    """
    from tradebridge.runtime.endpoints import read_endpoints

    if database_url:
        return database_url
    if data_dir is None:
        settings = load(config)
        if settings.database.url is not None:
            return settings.database.url.get_secret_value()
        data_dir = settings.data_dir
    found = read_endpoints(data_dir)
    if found is None or not found.get("database_url"):
        raise fail(f"no database: {no_stack(data_dir)}, or pass --database-url / set "
                   "DATABASE_URL (or [database] url in tradebridge.toml)", 2)  # fmt: skip
    return str(found["database_url"])


T = TypeVar("T")


def run_on_ledger(url: str, work: Callable[[Ledger], Awaitable[T]]) -> T:
    """Run ``work`` on a small ledger connection and return its result; errors exit.

    The database unreachable: the one-line ``unreachable`` message. Bad input or settings:
    exit 2. A refused move or a database failure: exit 1.
    """
    from tradebridge.store.ledger import Ledger

    async def run() -> T:
        ledger = await Ledger.connect(url, min_size=1, max_size=2)
        try:
            return await work(ledger)
        finally:
            await ledger.close()

    try:
        return asyncio.run(run())
    except DatabaseUnavailable as e:
        raise unreachable(e) from None
    except (InvalidInput, ConfigError) as e:
        raise fail(str(e), 2) from None
    except (IllegalTransition, StoreError) as e:
        raise fail(str(e), 1) from None


def no_stack(data_dir: Path) -> str:
    """Say that no ``up`` runs in ``data_dir`` and how to start one (a clause, no stop)."""
    start = f"`tradebridge up --data-dir {data_dir}`"
    if (data_dir / "postgres").is_dir() or (data_dir / "postgres.location").is_file():
        return f"the `up` stack of {data_dir} is not running (start it with {start})"
    return f"no `up` stack runs in {data_dir} (no endpoints.json; start one with {start})"

"""``tradebridge serve``, ``up`` and ``send``: run the bridge, run the whole local stack, send.

Exit codes of ``serve`` and ``up``: 0 stopped by SIGTERM/SIGINT; 1 a component failed (a
database or Redis that cannot be reached, a crashed task); 2 bad settings or usage.
Exit codes of ``send``: 0 inserted (without ``--wait``), or the order reached the broker and
stands filled, working, partially filled, cancelled or expired; 1 rejected, denied, failed,
or still in flight when ``--timeout`` ran out; 2 bad input (no database, bad numbers).
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import time
import uuid
from collections.abc import Callable, Coroutine
from decimal import Decimal, InvalidOperation
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.markup import escape

from tradebridge._heap import freeze_startup_heap
from tradebridge.cli._shared import (
    ConfigOpt,
    DataDirOpt,
    SharedOptions,
    fail,
    ledger_url,
    load,
    out,
    takes,
    unreachable,
)
from tradebridge.domain.lifecycle import SignalStatus
from tradebridge.errors import (
    BridgeError,
    ConfigError,
    DatabaseUnavailable,
    InvalidInput,
    RedisUnavailable,
    StoreError,
)

if TYPE_CHECKING:
    from tradebridge.config import Settings
    from tradebridge.runtime.endpoints import Endpoints
    from tradebridge.store.ledger import LedgerRow

_S = SignalStatus
# Statuses after which `send --wait` stops; "working" ends the wait only for resting orders.
_OK_FINAL = frozenset({_S.FILLED, _S.CANCELLED, _S.EXPIRED})
# needs_review is not final, but nothing will happen to it without a human: stop waiting.
_BAD_FINAL = frozenset({_S.REJECTED, _S.DENIED, _S.FAILED, _S.NEEDS_REVIEW})
_RESTING = frozenset({_S.WORKING, _S.PARTIALLY_FILLED})

WorkersOpt = Annotated[
    int | None,
    typer.Option(
        min=0,
        help="dispatchers in this process (0: webhook and health only)",
        show_default="1",
    ),
]


@dataclasses.dataclass(frozen=True, slots=True)
class StackOptions(SharedOptions):
    """The options serve, up and send take after their own: the settings, the data directory."""

    config: ConfigOpt = None
    data_dir: DataDirOpt = None


StackCommand = takes(StackOptions)


def _settings(stack: StackOptions, workers: int | None = None, **serve: Any) -> Settings:
    settings = load(stack.config)
    update: dict[str, Any] = {}
    if stack.data_dir is not None:
        update["data_dir"] = stack.data_dir
    changes = {k: v for k, v in serve.items() if v is not None}
    if changes:
        update["serve"] = settings.serve.model_copy(update=changes)
    if workers is not None:
        update["dispatcher"] = settings.dispatcher.model_copy(update={"workers": workers})
    return settings.model_copy(update=update) if update else settings


def _configure_logs(settings: Settings, *, to_stderr: bool) -> None:
    import sys

    from tradebridge.obs.logging import configure_logging

    configure_logging(
        settings.logging.level,
        json_output=settings.logging.json_output,
        stream=sys.stderr if to_stderr else None,
    )


# serve and up take no URL options: the fix names the environment and the settings.
_STACK_FIX: dict[type[BridgeError], str] = {
    DatabaseUnavailable: "start it, or check DATABASE_URL / [database] url (without one, "
    "serve and up run a database of their own in the data directory)",
    RedisUnavailable: "start it, or check REDIS_URL / [redis] url (without one, serve and up "
    "run a Redis of their own in the data directory)",
}


def event_loop_runner(choice: str) -> Callable[[Coroutine[Any, Any, None]], None]:
    """Return how ``serve`` and ``up`` run their loop (``[serve] event_loop``).

    uvloop where installed (``auto``); ``uvloop`` refuses to start without it.
    """
    if choice != "asyncio":
        try:
            import uvloop
        except ImportError:
            if choice == "uvloop":
                raise ConfigError(
                    "serve.event_loop = uvloop, but uvloop is not installed: install it "
                    "(pip install uvloop) or set auto"
                ) from None
        else:
            return uvloop.run
    return asyncio.run


def _run_until_stopped(work: Coroutine[Any, Any, None], event_loop: str = "auto") -> None:
    try:
        runner = event_loop_runner(event_loop)
    except ConfigError as e:
        work.close()
        raise fail(str(e), 2) from None
    try:
        runner(work)
    except KeyboardInterrupt:
        return
    except (BridgeError, OSError, BaseExceptionGroup) as e:
        error = _innermost(e)
        if not isinstance(error, BridgeError | OSError):
            raise
        if isinstance(error, DatabaseUnavailable | RedisUnavailable):
            raise unreachable(error, _STACK_FIX[type(error)]) from None
        from tradebridge.obs.logging import redact_text

        message = redact_text(str(error) or type(error).__name__)
        raise fail(message, 2 if isinstance(error, ConfigError) else 1) from None


def _innermost(error: BaseException) -> BaseException:
    # TaskGroup wraps what failed inside it; the first failure is the one to report.
    while isinstance(error, BaseExceptionGroup):
        error = error.exceptions[0]
    return error


def serve(
    ctx: typer.Context,
    host: Annotated[
        str | None, typer.Option(help="HTTP interface", show_default="127.0.0.1")
    ] = None,
    port: Annotated[int | None, typer.Option(help="HTTP port", show_default="8080")] = None,
    workers: WorkersOpt = None,
    migrate: Annotated[
        bool | None,
        typer.Option(
            "--migrate/--no-migrate",
            help="apply pending migrations at start",
            show_default="on for the embedded database",
        ),
    ] = None,
) -> None:
    """Run the workers and the HTTP server against DATABASE_URL and REDIS_URL (or embedded)."""
    from tradebridge.runtime.serve import run_serve

    settings = _settings(
        StackOptions.of(ctx), host=host, port=port, workers=workers, migrate_on_start=migrate
    )
    _configure_logs(settings, to_stderr=False)
    freeze_startup_heap()  # what the imports built; once serving, what start-up built
    _run_until_stopped(
        run_serve(settings, ready=lambda _: freeze_startup_heap()), settings.serve.event_loop
    )


def _port_option(what: str, setting: str, default: str) -> Any:
    text = f"{what}; 0 picks a free one ({escape(setting)})"
    return typer.Option(min=0, max=65535, help=text, show_default=default)


def up(
    ctx: typer.Context,
    port: Annotated[
        int | None, _port_option("HTTP port: webhook, /healthz", "[serve] port", "8080")
    ] = None,
    sim_port: Annotated[int | None, _port_option("simulator port", "[up] sim_port", "8765")] = None,
    pg_port: Annotated[
        int | None,
        _port_option("embedded PostgreSQL port", "[database] embedded_port", "0"),
    ] = None,
    redis_port: Annotated[
        int | None, _port_option("embedded Redis port", "[redis] embedded_port", "0")
    ] = None,
    workers: WorkersOpt = None,
) -> None:
    """Bring up the whole local stack: PostgreSQL, Redis, the simulator, workers, webhook.

    One stack per data directory: while it runs it holds <data-dir>/up.lock, and another
    `up` (or a `serve` with embedded servers) on that directory is refused, naming it (exit
    2). A pinned port that is taken is refused too (exit 2).
    """
    from tradebridge.runtime.live import is_live
    from tradebridge.runtime.up import run_up

    settings = _settings(StackOptions.of(ctx), port=port, workers=workers)
    update: dict[str, Any] = {}
    if pg_port is not None:
        update["database"] = settings.database.model_copy(update={"embedded_port": pg_port})
    if redis_port is not None:
        update["redis"] = settings.redis.model_copy(update={"embedded_port": redis_port})
    if sim_port is not None:
        update["up"] = settings.up.model_copy(update={"sim_port": sim_port})
    settings = settings.model_copy(update=update) if update else settings
    # The banner is the command's output; logs go to stderr.
    _configure_logs(settings, to_stderr=True)
    banner = functools.partial(_print_banner, live=is_live(settings))

    def ready(endpoints: Endpoints) -> None:
        banner(endpoints)
        freeze_startup_heap()

    freeze_startup_heap()  # what the imports built; once serving, what start-up built
    _run_until_stopped(run_up(settings, ready=ready), settings.serve.event_loop)


def _dashboard_line(data: dict[str, Any]) -> str:
    if data["dashboard_url"] is None:
        return "off (set TRADEBRIDGE_DASHBOARD__PASSWORD: docs/dashboard.md)"
    if data["dashboard_password_file"]:
        return f"{data['dashboard_url']}  (password in {data['dashboard_password_file']})"
    return f"{data['dashboard_url']}  (password: dashboard.password)"


def _risk_rows(risk: tuple[tuple[str, str], ...], shown: int = 10) -> list[tuple[str, str]]:
    """Return the banner's risk lines: one per account (the first ``shown``)."""
    rows = [("risk", f"{name}: {line}") for name, line in risk[:shown]]
    if len(risk) > shown:
        rows.append(("risk", f"... and {len(risk) - shown} more accounts (/healthz)"))
    return rows


def _print_banner(found: Endpoints, *, live: bool = False) -> None:
    data = found.as_json()
    rows = [
        ("environment", "LIVE (real money)" if live else "demo"),
        ("HTTP", data["http_url"]),
        ("webhook", f"{data['webhook_url']}  (secret in {data['webhook_secret_file']})"),
        ("/healthz", data["healthz_url"]),
        ("/metrics", data["metrics_url"]),
        ("dashboard", _dashboard_line(data)),
        ("database", data["database_url"]),
        ("redis", data["redis_url"]),
        ("simulator", f"{data['simulator_url']}  (native {data['simulator_native_url']})"),
        ("accounts", ", ".join(data["accounts"])),
        ("kill switch", found.kill_switch + "  (tradebridge kill / resume; /healthz is live)"),
        *_risk_rows(found.risk),
        ("endpoints", f"{data['data_dir']}/endpoints.json"),
    ]
    out.print("[bold]tradebridge is up[/bold]")
    if live:
        out.print("[bold red]LIVE: tradovate.environment is live, orders trade real money[/]")
    if found.kill_switch != "off":
        out.print("[bold red]KILL SWITCH ON: new orders are denied until `tradebridge resume`[/]")
    for name, value in rows:
        out.print(f"  {name:<12} {escape(str(value))}")
    account = data["accounts"][0] if data["accounts"] else "ACCOUNT"
    where = data["data_dir"]
    out.print("Send a simulated order:")
    out.print(f"  tradebridge send buy MNQ1! 1 --account {account} --data-dir {where} --wait")
    out.print(f"Or through the webhook (alerts without an account go to {account}):")
    out.print(
        f"  curl -s {data['webhook_url']}/$(cat {data['webhook_secret_file']}) "
        """-d '{"action":"buy","ticker":"MNQ1!","quantity":1}'"""
    )
    out.print("Ctrl-C stops it (data kept in the data directory).")


def _decimal(value: str | None, name: str) -> Decimal | None:
    if value is None:
        return None
    try:
        number = Decimal(value)
    except InvalidOperation:
        raise fail(f"{name} {value!r} is not a number", 2) from None
    if not number.is_finite():
        raise fail(f"{name} {value!r} is not a number", 2)
    return number


def send(
    ctx: typer.Context,
    side: Annotated[str, typer.Argument(help="buy or sell")],
    symbol: Annotated[str, typer.Argument(help="MNQ1!, MNQZ6, MNQ ...")],
    quantity: Annotated[str, typer.Argument(metavar="QTY", help="contracts")],
    account: Annotated[str, typer.Option("--account", "-a", help="account name")],
    limit: Annotated[str | None, typer.Option(help="limit price")] = None,
    stop: Annotated[str | None, typer.Option(help="stop (trigger) price")] = None,
    sl: Annotated[str | None, typer.Option("--sl", help="stop-loss price")] = None,
    tp: Annotated[str | None, typer.Option("--tp", help="take-profit price")] = None,
    strategy: Annotated[str | None, typer.Option(help="strategy_name of the row")] = "cli",
    signal_id: Annotated[str | None, typer.Option(help="row id (default: generated)")] = None,
    force: Annotated[
        bool,
        typer.Option(
            "--force",
            help="insert a bracket without checking it against the market (a stop on the "
            "wrong side of it, a target already through it)",
        ),
    ] = False,
    wait: Annotated[bool, typer.Option("--wait", help="follow the row to its outcome")] = False,
    timeout: Annotated[float, typer.Option(help="seconds --wait waits at most")] = 30.0,
    database_url: Annotated[
        str | None, typer.Option("--database-url", help="ledger URL (default: DATABASE_URL)")
    ] = None,
) -> None:
    """Insert a signal row the way a strategy would; with --wait, follow it to its outcome.

    --sl/--tp are checked against the market first (a quote from the broker): a leg the
    market is already through is refused with exit 2, nothing inserted, unless --force.
    """
    stack = StackOptions.of(ctx)
    if side.lower() not in {"buy", "sell"}:
        raise fail(f"side must be buy or sell, not {side!r}", 2)
    qty = _decimal(quantity, "quantity")
    price = _decimal(limit, "--limit")
    stop_price = _decimal(stop, "--stop")
    row: dict[str, Any] = {
        "signal_id": signal_id or f"cli-{uuid.uuid4().hex[:16]}",
        "instrument": symbol,
        "side": side.lower(),
        "quantity": qty,
        "account_name": account,
        "order_type": (
            "stoplimit"
            if price is not None and stop_price is not None
            else "limit"
            if price is not None
            else "stop"
            if stop_price is not None
            else "market"
        ),
        "price": price,
        "stop_price": stop_price,
        "stop_loss": _decimal(sl, "--sl"),
        "take_profit": _decimal(tp, "--tp"),
        "strategy_name": strategy,
        "source": "cli",
    }
    url = ledger_url(database_url, stack.data_dir, stack.config)
    try:
        if (row["stop_loss"] is not None or row["take_profit"] is not None) and not force:
            asyncio.run(_check_market(row, database_url, stack))
        code = asyncio.run(_send(url, row, wait=wait, wait_s=timeout))
    except (DatabaseUnavailable, RedisUnavailable) as e:
        raise unreachable(e) from None
    except (InvalidInput, ConfigError) as e:
        raise fail(str(e), 2) from None
    except (StoreError, BridgeError, OSError) as e:
        raise fail(str(e), 1) from None
    raise typer.Exit(code)


async def _check_market(row: dict[str, Any], database_url: str | None, stack: StackOptions) -> None:
    """Check the row's bracket against a quote of the broker (``InvalidInput`` if through)."""
    from datetime import UTC, datetime

    from tradebridge.cli.broker import BrokerOptions, check_bracket
    from tradebridge.config import load_settings
    from tradebridge.dispatch.dispatcher import root_map
    from tradebridge.domain.contracts import resolve_symbol
    from tradebridge.domain.enums import OrderType, Side
    from tradebridge.runtime.endpoints import read_endpoints

    settings = load_settings(stack.config)
    # A local `up` stack (its ledger is the one used): its simulator and Redis serve quotes.
    where = None
    if database_url is None and (stack.data_dir is not None or settings.database.url is None):
        where = stack.data_dir or settings.data_dir
        if read_endpoints(where) is None:
            where = None
    common = BrokerOptions(config=stack.config, data_dir=where)
    contract = resolve_symbol(row["instrument"], datetime.now(UTC).date(), root_map(settings),
                              settings.contracts.calendar())  # fmt: skip
    await check_bracket(
        common, row["account_name"], contract.name, side=Side(row["side"]),
        order_type=OrderType(row["order_type"]), limit_price=row["price"],
        stop_price=row["stop_price"], stop_loss=row["stop_loss"], take_profit=row["take_profit"],
    )  # fmt: skip


async def _send(url: str, row: dict[str, Any], *, wait: bool, wait_s: float) -> int:
    from tradebridge.store.ledger import Ledger

    ledger = await Ledger.connect(url, min_size=1, max_size=1)
    try:
        inserted = await ledger.insert_signal(**row)
        out.print(f"signal {inserted.signal_id} inserted ({inserted.status.value})")
        if not wait:
            return 0
        resting_ends_wait = inserted.order_type != "market"
        deadline = time.monotonic() + wait_s
        current = inserted
        while time.monotonic() < deadline:
            found = await ledger.get(inserted.signal_id)
            if found is not None:
                current = found
                status = current.status
                if (
                    status in _OK_FINAL
                    or status in _BAD_FINAL
                    or (resting_ends_wait and status in _RESTING)
                ):
                    break
            await asyncio.sleep(0.05)
        return _report(current)
    finally:
        await ledger.close()


def _report(row: LedgerRow) -> int:
    status = row.status
    parts = [f"signal {row.signal_id}: {status.value}"]
    if row.tradovate_order_id:
        parts.append(f"order {row.tradovate_order_id}")
    if row.filled_qty:
        price = f" @ {row.avg_fill_price}" if row.avg_fill_price is not None else ""
        parts.append(f"filled {row.filled_qty}{price}")
    if row.error_message:
        parts.append(row.error_message)
    # A market order that still rests has not finished: the wait ran out before it filled.
    finished = (
        status in _OK_FINAL
        or status in _BAD_FINAL
        or (status in _RESTING and row.order_type != "market")
    )
    if not finished:
        parts.append("timed out waiting")
    out.print(escape(", ".join(parts)))
    return 1 if status in _BAD_FINAL or not finished else 0


def register(app: typer.Typer) -> None:
    """Add serve, up and send to the ``tradebridge`` command."""
    for command in (serve, up, send):
        app.command(cls=StackCommand)(command)

"""``tradebridge sim``: run the Tradovate simulator, or steer a running one over ``/_sim``."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import tomllib
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

_DEFAULT_URL = "http://127.0.0.1:8765"
_log = logging.getLogger(__name__)

sim_app = typer.Typer(
    name="sim",
    help=(
        "Run the Tradovate simulator in the foreground (native REST, WebSocket and the "
        "TradingView bridge on one port), or steer a running one with the subcommands."
    ),
    add_completion=False,
    rich_markup_mode="rich",
)

_out = Console(highlight=False)
_err = Console(stderr=True, highlight=False)

DropMode = Literal["reset", "hang", "http_500", "http_401", "http_4xx"]
LoginPenalty = Literal["off", "ticket", "captcha"]
CapitalisedEnums = Literal["error_200", "http_404"]
LowercaseEnums = Literal["reject", "accept"]


def _fail(message: str, code: int = 1) -> typer.Exit:
    _err.print(f"[red]error:[/red] {escape(message)}", soft_wrap=True)
    return typer.Exit(code)


def _read_config_file(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise _fail(f"cannot read {path}: {exc.strerror}", 2) from None
    try:
        data: Any = tomllib.loads(text) if path.suffix == ".toml" else json.loads(text)
    except (tomllib.TOMLDecodeError, json.JSONDecodeError) as exc:
        raise _fail(f"{path} is not valid {path.suffix.lstrip('.') or 'JSON'}: {exc}", 2) from None
    if not isinstance(data, dict):
        raise _fail(f"{path}: expected a table/object at the top level", 2)
    # A tradebridge.toml keeps the simulator's settings in its [sim] table.
    section = data.get("sim", data)
    return dict(section) if isinstance(section, dict) else data


def _set(target: dict[str, Any], key: str, value: Any) -> None:
    if value is not None:
        target[key] = value


@sim_app.callback(invoke_without_command=True)
def sim(
    ctx: typer.Context,
    host: str = typer.Option(None, help="Interface to listen on.", show_default="127.0.0.1"),
    port: int = typer.Option(None, help="Port of every surface.", show_default="8765"),
    seed: int = typer.Option(None, help="Seed of the price path and fault dice."),
    config: Path = typer.Option(
        None,
        "--config",
        exists=False,
        help="Settings file (.toml or .json; a \\[sim] table or the bare settings).",
    ),
    redis_url: str = typer.Option(
        None, "--redis-url", help="Write each account's token into this Redis and keep it fresh."
    ),
    token_key: str = typer.Option(
        "token:{account_name}",
        "--token-key",
        help="Redis key template: {account_name}, {account_id}, {bridge_id}, {user}, {user_id}.",
    ),
    token_lifetime: int = typer.Option(None, min=1, help="Token lifetime in seconds."),
    capitalised_enums: CapitalisedEnums = typer.Option(
        None, help="Bridge answer to side=Buy/type=Limit: 200 s:error, or HTTP 404."
    ),
    lowercase_enums: LowercaseEnums = typer.Option(
        None, help="Native answer to action=buy/orderType=limit."
    ),
    require_bid_ask: bool = typer.Option(
        None, "--require-bid-ask/--no-require-bid-ask", help="Bridge orders need currentBid/Ask."
    ),
    latency_ms: int = typer.Option(None, min=0, help="Fault: delay added to every answer."),
    error_rate: float = typer.Option(
        None, min=0, max=1, help="Fault: share of requests answered 5xx (not executed)."
    ),
    drop_after_accept: float = typer.Option(
        None, min=0, max=1, help="Fault: share of accepted orders whose answer is lost."
    ),
    drop_mode: DropMode = typer.Option(None, help="Fault: how a lost answer is lost."),
    login_penalty: LoginPenalty = typer.Option(
        None, help="Fault: answer native logins with a p-ticket penalty."
    ),
) -> None:
    """Run the simulator in the foreground until Ctrl-C."""
    if ctx.invoked_subcommand is not None:
        return
    from pydantic import ValidationError

    from tradebridge.sim.config import SimConfig
    from tradebridge.sim.seed import check_template

    data = _read_config_file(config) if config is not None else {}
    for key, value in (("host", host), ("port", port), ("seed", seed)):
        _set(data, key, value)
    _set(data, "token_lifetime_s", token_lifetime)
    _set(data, "capitalised_enums", capitalised_enums)
    _set(data, "lowercase_enums", lowercase_enums)
    _set(data, "require_bid_ask", require_bid_ask)
    faults = dict(data.get("faults") or {})
    _set(faults, "latency_ms", latency_ms)
    _set(faults, "error_5xx_rate", error_rate)
    _set(faults, "drop_after_accept_rate", drop_after_accept)
    _set(faults, "drop_mode", drop_mode)
    _set(faults, "login_penalty", login_penalty)
    data["faults"] = faults
    try:
        settings = SimConfig.model_validate(data)
        if redis_url:
            check_template(token_key)
    except ValidationError as exc:
        raise _fail(f"invalid simulator settings:\n{exc}", 2) from None
    except ValueError as exc:
        raise _fail(str(exc), 2) from None
    _print_banner(settings, redis_url, token_key)
    from tradebridge.cli.run import event_loop_runner

    with contextlib.suppress(KeyboardInterrupt):
        event_loop_runner("auto")(_run(settings, redis_url, token_key))


async def _run(settings: Any, redis_url: str | None, token_key: str) -> None:
    from redis.asyncio import Redis
    from redis.exceptions import RedisError

    from tradebridge._heap import freeze_startup_heap
    from tradebridge._net import bind_socket
    from tradebridge.obs.logging import mask_url
    from tradebridge.sim.clock import SystemClock
    from tradebridge.sim.context import SimContext
    from tradebridge.sim.seed import TokenSeeder
    from tradebridge.sim.server import serve
    from tradebridge.store.tokens import redis_failure

    try:
        sock = bind_socket(settings.host, settings.port)
    except OSError as exc:
        raise _fail(f"cannot listen on {settings.host}:{settings.port}: {exc.strerror}") from None
    ctx = SimContext.build(settings, SystemClock())
    refresher: asyncio.Task[None] | None = None
    redis: Redis | None = None
    try:
        if redis_url:
            redis = Redis.from_url(redis_url)
            seeder = TokenSeeder(ctx, redis, token_key)
            try:
                keys = await seeder.seed()
            except RedisError as exc:
                raise _fail(
                    f"cannot write tokens to Redis at {mask_url(redis_url)}: "
                    f"{redis_failure(exc)}; start it, or check --redis-url"
                ) from None
            _out.print(f"Tokens written to Redis ({len(keys)} keys): {', '.join(keys)}")
            refresher = asyncio.create_task(seeder.run(), name="sim-token-refresh")
        await serve(settings, ctx=ctx, sock=sock, ready=freeze_startup_heap)
    finally:
        if refresher is not None:
            refresher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await refresher
        if redis is not None:
            await redis.aclose()


def _safe_url(url: str) -> str:
    # Never echo a Redis password.
    scheme, sep, rest = url.partition("://")
    return f"{scheme}{sep}{rest.rpartition('@')[2]}" if sep else url


def _print_banner(settings: Any, redis_url: str | None, token_key: str) -> None:
    from tradebridge.domain.contracts import front_month

    base = f"http://{settings.host}:{settings.port}"
    urls = Table(title="tradebridge simulator", show_header=False, title_justify="left")
    urls.add_row("native REST", f"{base}/v1")
    urls.add_row("WebSocket", f"ws://{settings.host}:{settings.port}/v1/websocket")
    urls.add_row("TradingView bridge", base)
    urls.add_row("admin", f"{base}/_sim")
    if redis_url:
        urls.add_row("tokens", f"{_safe_url(redis_url)}  key {token_key}")
    _out.print(urls)
    users = Table("user", "password", "account name", "native id", "bridge id")
    for user in settings.users:
        for account in user.accounts:
            users.add_row(
                user.name, user.password, account.name, str(account.id), account.bridge_id
            )
    _out.print(users)
    user = settings.users[0]
    symbol = front_month("MNQ", datetime.now(UTC).date()).name
    _out.print("Place a simulated order on the bridge:")
    _out.print(
        f"  TOKEN=$(curl -s {base}/authorize -d login={user.name} -d password={user.password}"
        ' | python3 -c \'import json,sys; print(json.load(sys.stdin)["d"]["access_token"])\')\n'
        f'  curl -s -H "Authorization: Bearer $TOKEN" '
        f"{base}/accounts/{user.accounts[0].bridge_id}/orders "
        f"-d instrument={symbol} -d qty=1 -d side=buy -d type=market",
        soft_wrap=True,
    )
    _out.print("Ctrl-C stops it.")


# --- talking to a running simulator ------------------------------------------------------


def _admin(url: str, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
    import httpx

    target = f"{url.rstrip('/')}/_sim{path}"
    try:
        response = httpx.request(method, target, json=body, timeout=10.0)
    except httpx.TransportError as exc:
        raise _fail(
            f"no simulator answers at {url} ({type(exc).__name__}); "
            "start one with `tradebridge sim` or pass --url"
        ) from None
    try:
        payload = response.json()
    except ValueError:
        payload = None
    if response.status_code >= 400:
        detail = payload.get("detail") if isinstance(payload, dict) else response.text
        raise _fail(f"{method} {target} answered {response.status_code}: {detail}")
    if payload is None:
        raise _fail(f"{method} {target} did not answer JSON; is {url} a tradebridge simulator?")
    return payload


def _print_mapping(title: str, data: dict[str, Any]) -> None:
    table = Table(title=title, show_header=False, title_justify="left")
    for key, value in data.items():
        table.add_row(key, json.dumps(value) if not isinstance(value, str) else value)
    _out.print(table)


UrlOption = typer.Option(
    _DEFAULT_URL, "--url", envvar="TRADEBRIDGE_SIM_URL", help="Base URL of the running simulator."
)


@sim_app.command()
def fault(
    url: str = UrlOption,
    reset: bool = typer.Option(False, "--reset", help="Switch every fault off first."),
    latency_ms: int = typer.Option(None, min=0, help="Delay added to every answer."),
    error_rate: float = typer.Option(None, min=0, max=1, help="Share of requests answered 5xx."),
    drop_after_accept: float = typer.Option(
        None, min=0, max=1, help="Share of accepted orders whose answer is lost."
    ),
    drop_mode: DropMode = typer.Option(None, help="How a lost answer is lost."),
    hang_seconds: float = typer.Option(None, min=0, help="How long 'hang' withholds answers."),
    drop_status: int = typer.Option(
        None, min=400, max=499, help="The status 'http_4xx' answers an executed order."
    ),
    lockout_429: list[str] = typer.Option(
        None, "--lockout-429", help="User answered 429 (repeat; '*' = everyone)."
    ),
    login_penalty: LoginPenalty = typer.Option(None, help="Penalty on native logins."),
    penalty_seconds: int = typer.Option(None, min=0, help="p-time of a login penalty."),
    token_lifetime: int = typer.Option(None, min=1, help="Lifetime of new tokens, seconds."),
    ws_drop_after: float = typer.Option(None, min=0, help="Close sockets after this many s."),
    inject_failure_reason: str = typer.Option(None, help="failureReason for the next orders."),
    inject_failure_text: str = typer.Option(None, help="failureText that goes with it."),
    inject_failure_count: int = typer.Option(None, min=0, help="How many orders it hits."),
    missing_route: list[str] = typer.Option(
        None, "--missing-route", help="Native route answered 404, e.g. '*/ldeps' (repeat)."
    ),
) -> None:
    """Show or change the faults of a running simulator (no option: show them)."""
    changes: dict[str, Any] = {}
    for key, value in (
        ("latency_ms", latency_ms),
        ("error_5xx_rate", error_rate),
        ("drop_after_accept_rate", drop_after_accept),
        ("drop_mode", drop_mode),
        ("hang_seconds", hang_seconds),
        ("drop_status", drop_status),
        ("lockout_429_users", lockout_429 or None),
        ("login_penalty", login_penalty),
        ("penalty_seconds", penalty_seconds),
        ("token_lifetime_s", token_lifetime),
        ("ws_drop_after_s", ws_drop_after or None),
        ("inject_failure_reason", inject_failure_reason),
        ("inject_failure_text", inject_failure_text),
        ("inject_failure_count", inject_failure_count),
        ("missing_routes", missing_route or None),
    ):
        _set(changes, key, value)
    current = _admin(url, "POST", "/faults/reset") if reset else None
    if changes:
        current = _admin(url, "PATCH", "/faults", changes)
    if current is None:
        current = _admin(url, "GET", "/faults")
    _print_mapping("faults", current)


@sim_app.command()
def price(
    symbol: str = typer.Argument(..., help="Contract, e.g. MNQZ6."),
    value: str = typer.Argument(..., metavar="PRICE", help="New last price, e.g. 21000.25."),
    url: str = UrlOption,
) -> None:
    """Move a contract's price; resting orders it crosses fill."""
    # Sent as text, so that the price stays an exact decimal.
    _print_mapping("price", _admin(url, "POST", "/price", {"symbol": symbol, "price": value}))


@sim_app.command()
def state(url: str = UrlOption) -> None:
    """Show a running simulator's counters (logins, orders, fills, sessions, sockets)."""
    _print_mapping("state", _admin(url, "GET", "/state"))


@sim_app.command("drop-sockets")
def drop_sockets(url: str = UrlOption) -> None:
    """Close every open WebSocket of a running simulator now."""
    _print_mapping("sockets", _admin(url, "POST", "/ws/drop"))

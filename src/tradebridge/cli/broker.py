"""Broker commands: ``accounts``, ``order``, ``orders``, ``positions``, ``fills``, ``cancel``,
``flatten``, ``tokens`` and ``doctor``.

Each command takes the settings file, quick overrides (``--native-url``, ``--bridge-url``,
``--redis-url``, ``--dialect``) and ``--data-dir``, prints a table or, with ``--json``, one
JSON document on stdout, and exits 0 (done), 1 (the broker or the infrastructure failed) or
2 (bad usage or input; nothing was sent). Errors are one line on stderr naming what failed
and the fix; logs go to stderr too.

Where the broker and Redis are (``_settings``), strongest first: the URL options; the running
``up`` stack of an explicit ``--data-dir`` (its simulator and Redis, from ``endpoints.json``);
the environment and the settings file; the running ``up`` stack of the settings' data
directory, but only when nothing names a broker, a database or Redis (no URL option, no
``[[accounts]]``, no ``[tradovate]`` environment or URL, no ``DATABASE_URL``/``REDIS_URL``);
then the built-in defaults (Tradovate demo, Redis on localhost). The dialect is
``--dialect``, else the configured account's, else native: a URL option sets a URL only.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import json
import secrets
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, date, datetime
from decimal import Decimal, InvalidOperation
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer
from rich.markup import escape
from rich.table import Table

from tradebridge.cli._shared import (
    REDIS_FIX,
    ConfigOpt,
    SharedOptions,
    err,
    fail,
    no_stack,
    out,
    takes,
    unreachable,
    warn,
)
from tradebridge.domain.enums import Dialect
from tradebridge.errors import (
    BridgeError,
    ConfigError,
    DatabaseUnavailable,
    InvalidInput,
    RedisUnavailable,
)

if TYPE_CHECKING:
    from tradebridge.brokers.base import Broker
    from tradebridge.config import AccountConfig, Settings
    from tradebridge.doctor.diagnosis import DoctorReport
    from tradebridge.domain.enums import OrderType, Side
    from tradebridge.domain.ids import AccountName
    from tradebridge.domain.reports import OrderStatusReport
    from tradebridge.pipeline.market import Market
    from tradebridge.store.tokens import TokenStore

T = TypeVar("T")
R = TypeVar("R")

EXIT_OK = 0
EXIT_BROKER = 1
EXIT_USAGE = 2

EPILOG = (
    "Exit codes: 0 done; 1 the broker, Redis or the network failed (or an order's outcome "
    "is unknown); 2 bad usage or input, nothing was sent."
)

# --- the options -------------------------------------------------------------------------

_ELSE = "else a running `up` stack (see --data-dir), TRADEBRIDGE_TRADOVATE__{} or the settings"
BridgeUrlOpt = Annotated[
    str | None,
    typer.Option(
        help="TradingView bridge base URL; " + _ELSE.format("BRIDGE_URL") + ", else tv-demo"
    ),
]
NativeUrlOpt = Annotated[
    str | None,
    typer.Option(help="native REST base URL (…/v1); " + _ELSE.format("NATIVE_URL") + ", else demo"),
]
RedisUrlOpt = Annotated[
    str | None,
    typer.Option(
        help="Redis holding the tokens; else a running `up` stack (see --data-dir), REDIS_URL "
        "or \\[redis] url, else redis://127.0.0.1:6379/0"
    ),
]
DialectOpt = Annotated[
    Dialect | None,
    typer.Option(
        case_sensitive=False,
        help="talk to the account(s) natively or through the TradingView bridge",
        show_default="the configured account's dialect, else native",
    ),
]
StackDirOpt = Annotated[
    Path | None,
    typer.Option(
        "--data-dir",
        help="use the running `up` stack of this data directory (its simulator and Redis, from "
        "its endpoints.json) over the environment and the settings. Without it, the stack of "
        "the settings' data_dir is used only when nothing names a broker, database or Redis "
        "(no URL option, \\[\\[accounts]], \\[tradovate] environment/URL, DATABASE_URL, REDIS_URL)",
        show_default=".tradebridge",
    ),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="print one JSON document")]
AccountOpt = Annotated[str, typer.Option("--account", "-a", help="account name, e.g. PAAPEX...")]
OnlyAccountOpt = Annotated[str | None, typer.Option("--account", "-a", help="only this one")]
VerboseOpt = Annotated[bool, typer.Option("--verbose", "-v", help="log broker calls to stderr")]
ForceOpt = Annotated[
    bool,
    typer.Option(
        "--force",
        help="send a bracket without checking it against the market (a stop on the wrong side "
        "of it, a target already through it)",
    ),
]


@dataclasses.dataclass(frozen=True, slots=True)
class BrokerOptions(SharedOptions):
    """The options every broker command takes, after its own, in the order ``--help`` lists."""

    config: ConfigOpt = None
    data_dir: StackDirOpt = None
    native_url: NativeUrlOpt = None
    bridge_url: BridgeUrlOpt = None
    redis_url: RedisUrlOpt = None
    dialect: DialectOpt = None
    as_json: JsonOpt = False
    verbose: VerboseOpt = False


BrokerCommand = takes(BrokerOptions)


def _names_anything(settings: Settings) -> bool:
    """Return whether the settings name a broker, a database or Redis of their own."""
    return bool(
        settings.accounts
        or settings.tradovate.located
        or settings.database.url is not None
        or settings.redis.url is not None
    )


def _stack(common: BrokerOptions, settings: Settings) -> dict[str, Any] | None:
    """Return the ``endpoints.json`` of the ``up`` stack to use, or None (see the docstring)."""
    from tradebridge.runtime.endpoints import read_endpoints

    if common.data_dir is not None:
        found = read_endpoints(common.data_dir)
        if found is None or not found.get("simulator_url"):
            raise ConfigError(f"{no_stack(common.data_dir)}, or leave --data-dir out")
        return found
    urls = (common.native_url, common.bridge_url, common.redis_url)
    if any(urls) or _names_anything(settings):
        return None
    return read_endpoints(settings.data_dir)


def _settings(common: BrokerOptions, account: str | None = None) -> Settings:
    """Return the settings of a broker command: URLs resolved, dialects as ``--dialect`` says.

    With ``account`` and no accounts configured, that account is added (a quick look at a
    simulator or a stack): native unless ``--dialect`` says otherwise.
    """
    from tradebridge.config import AccountConfig, load_settings

    base = load_settings(common.config)
    tradovate: dict[str, Any] = {}
    overrides: dict[str, Any] = {}
    stack = _stack(common, base)
    if stack is not None:
        sim = str(stack["simulator_url"])
        tradovate = {"native_url": f"{sim}/v1", "bridge_url": sim, "ws_url": ""}
        overrides["redis"] = {"url": str(stack["redis_url"])}
    if common.native_url:
        tradovate["native_url"] = common.native_url
    if common.bridge_url:
        tradovate["bridge_url"] = common.bridge_url
    if common.redis_url:
        overrides["redis"] = {"url": common.redis_url}
    if tradovate:
        overrides["tradovate"] = tradovate
    if common.data_dir is not None:
        overrides["data_dir"] = common.data_dir
    settings = load_settings(common.config, **overrides) if overrides else base
    if account and not settings.accounts:
        extra = AccountConfig(name=account, dialect=common.dialect or Dialect.NATIVE)
        return settings.model_copy(update={"accounts": [extra]})
    if common.dialect is not None:
        accounts = [
            a.model_copy(update={"dialect": common.dialect}) if account in (None, a.name) else a
            for a in settings.accounts
        ]
        settings = settings.model_copy(update={"accounts": accounts})
    return settings


def _run(common: BrokerOptions, work: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """Run ``work`` with logging on stderr; turn every error into one line and an exit code.

    Redis is checked first: every command reads its tokens there, and one that does not
    answer is one line naming it (password masked) and the fix.
    """
    from redis.exceptions import RedisError

    from tradebridge.obs.logging import configure_logging
    from tradebridge.store.tokens import redis_failure

    configure_logging("INFO" if common.verbose else "ERROR", json_output=True, stream=sys.stderr)

    async def checked() -> T:
        settings = _settings(common)
        for note in settings.notes:
            warn(note)
        await _check_redis(settings)
        return await work()

    try:
        return asyncio.run(checked())
    except (DatabaseUnavailable, RedisUnavailable) as e:
        raise unreachable(e) from None
    except (InvalidInput, ConfigError) as e:
        raise fail(str(e), EXIT_USAGE) from None
    except BridgeError as e:
        raise fail(f"{type(e).__name__}: {e}", EXIT_BROKER) from None
    except RedisError as e:  # Redis went away after it answered the check
        raise fail(f"Redis failed: {redis_failure(e)}; {REDIS_FIX}", EXIT_BROKER) from None
    except OSError as e:
        raise fail(f"{type(e).__name__}: {e}", EXIT_BROKER) from None


async def _check_redis(settings: Settings) -> None:
    """Return once the settings' Redis answers; ``RedisUnavailable`` otherwise."""
    from tradebridge.store.tokens import check_redis, connect_redis, redis_url

    redis = connect_redis(settings.redis)
    try:
        await check_redis(redis, redis_url(settings.redis))
    finally:
        await redis.aclose()


def _jsonable(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [_jsonable(v) for v in value]
    return value


def _print_json(value: Any) -> None:
    sys.stdout.write(json.dumps(_jsonable(value), indent=2) + "\n")


def _table(title: str, columns: list[str], rows: list[list[object]]) -> None:
    table = Table(title=title)
    for column in columns:
        table.add_column(column, overflow="fold")
    for row in rows:
        table.add_row(*("" if v is None else str(_jsonable(v)) for v in row))
    out.print(table)


async def _discovered_settings(common: BrokerOptions, account: str | None) -> Settings:
    """Return settings; with no accounts configured, take them from Redis's token keys."""
    from tradebridge.config import AccountConfig
    from tradebridge.store.tokens import connect_redis

    settings = _settings(common, account)
    if settings.accounts:
        return settings
    template: str = settings.tokens.key_template
    prefix, _, suffix = template.partition("{account_name}")
    redis = connect_redis(settings.redis)
    try:
        keys = [k async for k in redis.scan_iter(match=f"{prefix}*{suffix}", count=500)]
    finally:
        await redis.aclose()
    names = sorted(
        {
            (k.decode() if isinstance(k, bytes) else str(k))[len(prefix) : len(k) - len(suffix)]
            for k in keys
        }
    )
    dialect = common.dialect or Dialect.NATIVE
    found = [AccountConfig(name=name, dialect=dialect) for name in names if name]
    return settings.model_copy(update={"accounts": found})


async def _listed_accounts(
    common: BrokerOptions, account: str | None
) -> tuple[Settings, list[AccountConfig]]:
    """Return the settings and the accounts a listing covers: all, or the one named."""
    settings = await _discovered_settings(common, account)
    wanted = [a for a in settings.accounts if account in (None, a.name)]
    if not wanted:
        raise ConfigError(
            "no accounts are configured and Redis holds no token keys; "
            "add [[accounts]] to tradebridge.toml or pass --account"
        )
    return settings, wanted


@asynccontextmanager
async def _token_store(settings: Settings) -> AsyncIterator[TokenStore]:
    """Yield a ``TokenStore`` on the configured Redis; close the client afterwards."""
    from tradebridge.store.tokens import TokenStore, check_redis, connect_redis, redis_url

    redis = connect_redis(settings.redis)
    try:
        await check_redis(redis, redis_url(settings.redis))  # one clear line if it is down
        yield TokenStore(redis, settings.tokens, key_for=settings.token_key)
    finally:
        await redis.aclose()


async def _with_broker(
    common: BrokerOptions, account: str, use: Callable[[Broker], Awaitable[T]]
) -> T:
    from tradebridge.brokers.factory import build_broker, build_tokens, request_budget

    settings = _settings(common, account)
    async with _token_store(settings) as store:
        # The windows running workers use too (tradovate.budget): a command counts in them.
        budget = request_budget(settings, store.redis)
        # Self-managed logins when configured.
        tokens = build_tokens(settings, account, store, budget=budget)
        try:
            broker = build_broker(settings, account, tokens, budget=budget)
            try:
                return await use(broker)
            finally:
                await broker.close()
        finally:
            await tokens.aclose()


async def order_of(common: BrokerOptions, account: str, order_id: str) -> OrderStatusReport:
    """Return the broker's order ``order_id`` of ``account``; ``NotFound`` if it has none."""
    from tradebridge.domain.ids import AccountName, BrokerOrderId

    return await _with_broker(
        common, account, lambda b: b.order_report(AccountName(account), BrokerOrderId(order_id))
    )


async def market_of(common: BrokerOptions, account: str, instrument: str) -> Market:
    """Return the market of ``instrument`` (``pipeline.market.Market``) for ``account``.

    From the TradingView bridge's ``/quotes`` with the account user's token, whatever the
    account's dialect: Tradovate's native REST API has no quote (its market data is a
    WebSocket tradebridge does not use). ``BrokerError`` names what failed.
    """
    from tradebridge.brokers.factory import build_tokens, build_tvbridge, request_budget
    from tradebridge.errors import BrokerError
    from tradebridge.pipeline.market import Market

    settings = _settings(common, account)
    async with _token_store(settings) as store:
        budget = request_budget(settings, store.redis)
        tokens = build_tokens(settings, account, store, budget=budget)
        try:
            bridge = build_tvbridge(settings, settings.account(account), tokens, budget=budget)
            try:
                quote = await bridge.quote(instrument)
            finally:
                await bridge.close()
        finally:
            await tokens.aclose()
    bid = quote.bid if quote.bid is not None else quote.lp
    ask = quote.ask if quote.ask is not None else quote.lp
    if bid is None or ask is None:
        raise BrokerError(f"the quote of {instrument} has no bid, ask or last price")
    return Market(bid=bid, ask=ask)


async def check_bracket(
    common: BrokerOptions,
    account: str,
    instrument: str,
    *,
    side: Side,
    order_type: OrderType,
    limit_price: Decimal | None,
    stop_price: Decimal | None,
    stop_loss: Decimal | None,
    take_profit: Decimal | None,
) -> None:
    """Refuse (``InvalidInput``) a bracket whose leg the market is already through."""
    from tradebridge.errors import BrokerError
    from tradebridge.pipeline.market import bracket_through_market

    if stop_loss is None and take_profit is None:
        return
    try:
        market = await market_of(common, account, instrument)
    except (InvalidInput, ConfigError, RedisUnavailable):
        raise
    except (BridgeError, OSError) as e:  # the broker or the token: say what to do
        raise BrokerError(
            f"could not read a quote of {instrument} to check the bracket against the market "
            f"({type(e).__name__}: {e}); --force sends it unchecked"
        ) from e
    why = bracket_through_market(
        side, order_type, limit_price=limit_price, stop_price=stop_price,
        stop_loss=stop_loss, take_profit=take_profit, market=market,
    )  # fmt: skip
    if why is not None:
        raise InvalidInput(f"refused: {why}; nothing was sent (--force sends it anyway)")


def _decimal(text: str | None, name: str) -> Decimal | None:
    if text is None:
        return None
    try:
        value = Decimal(text)
    except InvalidOperation:
        raise fail(f"--{name} must be a number, got {text!r}", EXIT_USAGE) from None
    if not value.is_finite():
        raise fail(f"--{name} must be a finite number, got {text!r}", EXIT_USAGE)
    return value


# --- commands ---------------------------------------------------------------------------

order_app = typer.Typer(
    name="order", help="Place one order (buy or sell).", epilog=EPILOG, no_args_is_help=True
)


def register(app: typer.Typer) -> None:
    """Add the broker commands to the ``tradebridge`` app."""
    # ``tokens`` is a group of its own (cli/tokens.py) that lists with ``tokens`` below.
    for command in (accounts, orders, positions, fills, cancel, flatten, doctor):
        app.command(cls=BrokerCommand, epilog=EPILOG)(command)
    app.add_typer(order_app, name="order")


def accounts(ctx: typer.Context, account: OnlyAccountOpt = None) -> None:
    """List the accounts the broker reports, with the ids each dialect needs."""
    common = BrokerOptions.of(ctx)

    async def work() -> list[dict[str, Any]]:
        settings, wanted = await _listed_accounts(common, account)
        found: list[dict[str, Any]] = []
        seen: set[tuple[str, str]] = set()
        for configured in wanted:
            listed = await _with_broker(common, configured.name, lambda b: b.accounts())
            for info in listed:
                key = (configured.dialect.value, info.name)
                if key in seen:
                    continue
                seen.add(key)
                found.append(
                    {
                        "name": info.name,
                        "dialect": configured.dialect.value,
                        "native_id": info.native_id,
                        "bridge_id": info.bridge_id,
                        "configured": any(a.name == info.name for a in settings.accounts),
                        "active": info.active,
                        "readonly": info.readonly,
                    }
                )
        return found

    rows = _run(common, work)
    if common.as_json:
        _print_json(rows)
        return
    _table(
        "accounts",
        ["name", "dialect", "native id", "bridge id (path)", "configured"],
        [[r["name"], r["dialect"], r["native_id"], r["bridge_id"], r["configured"]] for r in rows],
    )


def _place(
    side_name: str,
    symbol: str,
    qty: int,
    limit: str | None,
    stop: str | None,
    sl: str | None,
    tp: str | None,
    tif: str,
    account: str,
    client_id: str | None,
    force: bool,
    common: BrokerOptions,
) -> None:
    from tradebridge.domain.commands import Bracket, SubmitOrder, leg_time_in_force
    from tradebridge.domain.contracts import resolve_symbol
    from tradebridge.domain.enums import OrderType, Side, TimeInForce
    from tradebridge.domain.ids import AccountName, ClientOrderId
    from tradebridge.errors import LookupAmbiguous, OutcomeUnknown

    limit_price, stop_price = _decimal(limit, "limit"), _decimal(stop, "stop")
    stop_loss, take_profit = _decimal(sl, "sl"), _decimal(tp, "tp")
    if limit_price is not None and stop_price is not None:
        order_type = OrderType.STOP_LIMIT
    elif limit_price is not None:
        order_type = OrderType.LIMIT
    elif stop_price is not None:
        order_type = OrderType.STOP
    else:
        order_type = OrderType.MARKET
    try:
        time_in_force = TimeInForce(tif.lower())
    except ValueError:
        raise fail(f"--tif {tif!r} is not one of Day, GTC, IOC, FOK", EXIT_USAGE) from None
    coid = client_id or f"tbcli{datetime.now(UTC):%y%m%d%H%M%S}{secrets.token_hex(3)}"

    async def work() -> dict[str, Any]:
        settings = _settings(common, account)
        legs = leg_time_in_force(time_in_force, settings.orders.leg_time_in_force)
        today = datetime.now(UTC).date()
        command = SubmitOrder(
            client_order_id=ClientOrderId(coid),
            account=AccountName(account),
            contract=resolve_symbol(symbol, today, calendar=settings.contracts.calendar()),
            side=Side(side_name),
            order_type=order_type,
            quantity=qty,
            limit_price=limit_price,
            stop_price=stop_price,
            tif=time_in_force,
            bracket=Bracket(stop_loss, take_profit, legs) if (stop_loss or take_profit) else None,
        )
        if command.bracket and not force:
            await check_bracket(
                common, account, command.contract.name, side=command.side,
                order_type=order_type, limit_price=limit_price, stop_price=stop_price,
                stop_loss=stop_loss, take_profit=take_profit,
            )  # fmt: skip

        async def use(broker: Broker) -> dict[str, Any]:
            # What a lookup needs to tell this order from others if the answer is lost.
            baseline = await broker.lookup_baseline(command)
            sent = datetime.now(UTC)
            try:
                order_id = await broker.submit(command)
            except OutcomeUnknown as e:
                try:
                    found = await broker.lookup(command, sent, baseline=baseline)
                except LookupAmbiguous as ambiguous:
                    return {
                        "client_order_id": coid,
                        "outcome": "unknown",
                        "detail": f"{e}; {ambiguous}",
                        "lookup": "ambiguous",
                        "broker_order_id": None,
                    }
                return {
                    "client_order_id": coid,
                    "outcome": "unknown",
                    "detail": str(e),
                    "lookup": "absent"
                    if found.absent
                    else ("probable" if found.probable else "found"),
                    "broker_order_id": found.found.broker_order_id if found.found else None,
                }
            return {
                "client_order_id": coid,
                "outcome": "accepted",
                "broker_order_id": order_id,
                "contract": command.contract.name,
            }

        return await _with_broker(common, account, use)

    result = _run(common, work)
    if common.as_json:
        _print_json(result)
    elif result["outcome"] == "accepted":
        out.print(
            f"accepted: order {result['broker_order_id']} ({result['contract']}), client id {coid}"
        )
    else:
        err.print(
            f"outcome unknown: {result['detail']}; lookup: {result['lookup']}"
            + (f" (order {result['broker_order_id']})" if result["broker_order_id"] else "")
        )
    if result["outcome"] != "accepted" and result.get("lookup") != "found":
        # Absent: nothing was placed; probable: adopted by shape only, a human should look.
        raise typer.Exit(EXIT_BROKER)


def _order_command(side_name: str) -> Callable[..., None]:
    def command(
        ctx: typer.Context,
        symbol: Annotated[str, typer.Argument(help="MNQZ6, MNQ1!, CME_MINI:MNQ1! or MNQ")],
        qty: Annotated[int, typer.Argument(min=1, help="contracts")],
        account: AccountOpt,
        limit: Annotated[str | None, typer.Option(help="limit price")] = None,
        stop: Annotated[str | None, typer.Option(help="stop (trigger) price")] = None,
        sl: Annotated[str | None, typer.Option(help="stop-loss price (bracket)")] = None,
        tp: Annotated[str | None, typer.Option(help="take-profit price (bracket)")] = None,
        tif: Annotated[str, typer.Option(help="Day, GTC, IOC or FOK")] = "Day",
        client_id: Annotated[str | None, typer.Option(help="client order id to reuse")] = None,
        force: ForceOpt = False,
    ) -> None:
        _place(side_name, symbol, qty, limit, stop, sl, tp, tif, account, client_id, force,
               BrokerOptions.of(ctx))  # fmt: skip

    command.__doc__ = (
        f"{side_name.capitalize()} QTY contracts of SYMBOL: market, or --limit, "
        "--stop, both (stop-limit); --sl/--tp attach a bracket, checked against the market "
        "(a quote) first: a leg the market is already through is refused (exit 2) unless "
        "--force."
    )
    command.__name__ = side_name
    return command


for _side in ("buy", "sell"):
    order_app.command(_side, cls=BrokerCommand, epilog=EPILOG)(_order_command(_side))


def _report_command(
    what: str,
    fetch: Callable[[Broker, AccountName], Awaitable[Sequence[R]]],
    columns: list[str],
    row: Callable[[R], list[object]],
) -> Callable[..., None]:
    def command(ctx: typer.Context, account: AccountOpt) -> None:
        from tradebridge.domain.ids import AccountName

        common = BrokerOptions.of(ctx)

        async def work() -> Sequence[R]:
            return await _with_broker(common, account, lambda b: fetch(b, AccountName(account)))

        reports = _run(common, work)
        if common.as_json:
            _print_json(reports)
            return
        _table(f"{what} of {account}", columns, [row(r) for r in reports])

    command.__name__ = what
    command.__doc__ = f"List the {what} of an account as the broker reports them."
    return command


orders = _report_command(
    "orders",
    lambda broker, account: broker.order_reports(account),
    ["id", "contract", "side", "type", "qty", "filled", "limit", "stop", "status", "client id"],
    lambda r: [
        r.broker_order_id,
        r.contract,
        r.side,
        r.order_type,
        r.quantity,
        r.filled_qty,
        r.limit_price,
        r.stop_price,
        r.status,
        r.client_order_id,
    ],
)
positions = _report_command(
    "positions",
    lambda broker, account: broker.position_reports(account),
    ["contract", "net qty", "avg price", "open P&L"],
    lambda r: [r.contract, r.net_qty, r.avg_price, r.open_pnl],
)
fills = _report_command(
    "fills",
    lambda broker, account: broker.fill_reports(account),
    ["fill id", "order id", "contract", "side", "qty", "price", "time"],
    lambda r: [r.fill_id, r.broker_order_id, r.contract, r.side, r.qty, r.price, r.ts_event],
)


def cancel(
    ctx: typer.Context,
    order_id: Annotated[str, typer.Argument(help="the broker's order id")],
    account: AccountOpt,
) -> None:
    """Cancel one working order."""
    from tradebridge.domain.commands import CancelOrder
    from tradebridge.domain.ids import AccountName, BrokerOrderId

    common = BrokerOptions.of(ctx)
    command = CancelOrder(AccountName(account), BrokerOrderId(order_id))
    _run(common, lambda: _with_broker(common, account, lambda b: b.cancel(command)))
    if common.as_json:
        _print_json({"cancelled": order_id, "account": account})
    else:
        out.print(f"cancel of order {order_id} accepted")


def flatten(
    ctx: typer.Context,
    symbol: Annotated[
        str | None,
        typer.Argument(help="contract or continuous symbol; none: every contract of the account"),
    ] = None,
    account: OnlyAccountOpt = None,
    every: Annotated[
        bool, typer.Option("--all", help="every configured account (else discovered in Redis)")
    ] = False,
) -> None:
    """Cancel the working orders and close the positions: of one contract, of every contract
    of an account, or of every account (--all). An account already flat says so."""
    common = BrokerOptions.of(ctx)
    if every == (account is not None):
        raise fail(
            "name the account (--account NAME) or --all, not both"
            if every
            else "name the account to flatten (--account NAME), or --all for every account",
            EXIT_USAGE,
        )

    async def work() -> list[dict[str, Any]]:
        if account is not None:
            names = [account]
        else:
            names = [a.name for a in (await _listed_accounts(common, None))[1]]
        today = datetime.now(UTC).date()
        contract = None
        if symbol is not None:
            from tradebridge.domain.contracts import resolve_symbol

            calendar = _settings(common, account).contracts.calendar()
            contract = resolve_symbol(symbol, today, calendar=calendar).name
        reports = []
        for name in names:  # one after the other: each account's report as it is done
            try:
                report = await _with_broker(
                    common, name, functools.partial(_flatten_account, name, contract)
                )
            except BridgeError as e:
                if account is not None:
                    raise
                report = {"account": name, "error": f"{type(e).__name__}: {e}"}
            reports.append(report)
        return reports

    reports = _run(common, work)
    if common.as_json:
        _print_json(reports)
    else:
        for report in reports:
            out.print(escape(_flatten_line(report, symbol)))
    if any("error" in r for r in reports):
        raise typer.Exit(EXIT_BROKER)


async def _flatten_account(account: str, contract: str | None, broker: Broker) -> dict[str, Any]:
    """Flatten every contract of ``account`` (or only ``contract``) that has a position or a
    working order; return what was there, by contract (none: the account was flat)."""
    from tradebridge.domain.commands import FlattenPosition
    from tradebridge.domain.contracts import parse_contract
    from tradebridge.domain.ids import AccountName

    name = AccountName(account)
    found: dict[str, dict[str, int]] = {}
    for position in await broker.position_reports(name):
        if position.net_qty != 0 and contract in (None, position.contract):
            found.setdefault(position.contract, {"position": 0, "working_orders": 0})
            found[position.contract]["position"] = int(position.net_qty)
    for order in await broker.order_reports(name):
        if order.status.is_open and contract in (None, order.contract):
            found.setdefault(order.contract, {"position": 0, "working_orders": 0})
            found[order.contract]["working_orders"] += 1
    today = datetime.now(UTC).date()
    for held in sorted(found):
        await broker.flatten(FlattenPosition(name, parse_contract(held, today)))
    contracts = [{"contract": held, **found[held]} for held in sorted(found)]
    return {"account": account, "contracts": contracts, "already_flat": not contracts}


def _flatten_line(report: dict[str, Any], symbol: str | None) -> str:
    account = report["account"]
    if "error" in report:
        return f"{account}: failed: {report['error']}"
    if report["already_flat"]:
        where = f" in {symbol}" if symbol else ""
        return f"{account}: already flat{where} (no position, no working order); nothing sent"
    parts = []
    for held in report["contracts"]:
        done = []
        if held["position"]:
            done.append(f"position {held['position']:+d} closed")
        if held["working_orders"]:
            count = held["working_orders"]
            done.append(f"{count} working order{'s' if count > 1 else ''} cancelled")
        parts.append(f"{held['contract']} " + ", ".join(done))
    return f"{account}: " + "; ".join(parts)


def tokens(ctx: typer.Context, account: OnlyAccountOpt = None) -> None:
    """Show each account's token: Redis key, kind, user, expiry (never the token)."""
    common = BrokerOptions.of(ctx)

    async def work() -> list[dict[str, Any]]:
        settings, wanted = await _listed_accounts(common, account)
        now = datetime.now(UTC)
        rows: list[dict[str, Any]] = []
        async with _token_store(settings) as store:
            for configured in wanted:
                key = settings.token_key(configured.name)
                row: dict[str, Any] = {
                    "account": configured.name,
                    "key": key,
                    "user": configured.user,
                }
                try:
                    stored = await store.read(key)
                except BridgeError as e:
                    if not isinstance(e, InvalidInput) and "Redis" in str(e):
                        raise
                    row |= {"state": "malformed", "detail": str(e)}
                    rows.append(row)
                    continue
                if stored is None:
                    row |= {"state": "missing"}
                else:
                    left = stored.remaining(now).total_seconds()
                    row |= {
                        "state": "valid" if left > 0 else "expired",
                        "kind": stored.kind,
                        "env": stored.env,
                        "user": configured.user or stored.user_id,
                        "expires_at": stored.expires_at,
                        "expires_in_s": int(left),
                    }
                rows.append(row)
        return rows

    rows = _run(common, work)
    if common.as_json:
        _print_json(rows)
    else:
        _table(
            "tokens",
            ["account", "key", "kind", "user", "state", "expires in"],
            [
                [
                    r["account"],
                    r["key"],
                    r.get("kind"),
                    r.get("user"),
                    r["state"],
                    _expires_in(r.get("expires_in_s")),
                ]
                for r in rows
            ],
        )
    if any(r["state"] != "valid" for r in rows):
        raise typer.Exit(EXIT_BROKER)


def _expires_in(seconds: int | None) -> str:
    if seconds is None:
        return ""
    if seconds < 0:
        return f"expired {-seconds // 60} min ago"
    hours, rest = divmod(seconds, 3600)
    return f"{hours} h {rest // 60} min" if hours else f"{rest // 60} min {rest % 60} s"


def doctor(
    ctx: typer.Context,
    account: Annotated[str | None, typer.Option("--account", "-a", help="one account")] = None,
    probe: Annotated[
        bool, typer.Option("--probe", help="demo only: place a far 1-lot limit, cancel it")
    ] = False,
    request: Annotated[
        str | None,
        typer.Option(help='a failed bridge request: "POST https://tv-demo.../accounts/D1/orders"'),
    ] = None,
    form: Annotated[str, typer.Option(help="its form body: type=Limit&side=buy&...")] = "",
    symbol: Annotated[str | None, typer.Option(help="contract to check, e.g. MNQ1!")] = None,
) -> None:
    """Check Redis, tokens, broker, account ids, contracts and order shapes; explain failures.

    Given a failed bridge request (--request, --form) it walks the 404 differential of the
    reference (§10.1) and names the cause: ACCOUNT_NAME_USED_AS_ID, ACCOUNT_ID_NOT_FOUND,
    TOKEN_INVALID_OR_WRONG_ENV, INSTRUMENT_UNKNOWN_OR_EXPIRED, DURATION_NOT_SUPPORTED,
    ENUM_CASE, MISSING_BID_ASK, MALFORMED_URL, or OK.
    """
    from tradebridge.doctor.diagnosis import FailedRequest, run_doctor

    common = BrokerOptions.of(ctx)
    failed = FailedRequest.parse(request, form) if request else None

    async def work() -> list[DoctorReport]:
        settings = await _discovered_settings(common, account)
        names = [account] if account else [a.name for a in settings.accounts]
        if not names:
            raise ConfigError("no accounts are configured; add [[accounts]] or pass --account")
        async with _token_store(settings) as store:
            return [
                await run_doctor(settings, store, name, request=failed, probe=probe, symbol=symbol)
                for name in names
            ]

    reports = _run(common, work)
    if common.as_json:
        _print_json([r.to_json() for r in reports])
    else:
        for report in reports:
            _print_report(report)
    if not all(r.ok for r in reports):
        raise typer.Exit(EXIT_BROKER)


def _print_report(report: DoctorReport) -> None:
    marks = {
        "pass": "[green]ok  [/green]",
        "fail": "[red]FAIL[/red]",
        "warn": "[yellow]warn[/yellow]",
        "skip": "[dim]skip[/dim]",
    }
    # Details and fixes are text (``[[users]]``, ``[redis] url``), never rich markup.
    out.print(f"[bold]{escape(str(report.account))}[/bold]")
    for check in report.checks:
        verdict = f" [bold]{check.verdict.value}[/bold]:" if check.verdict else ""
        out.print(f"  {marks[check.status.value]} {check.name:9}{verdict} {escape(check.detail)}")
        if check.fix:
            out.print(f"       fix: {escape(check.fix)}")
    if report.verdict is not None:
        out.print(f"  verdict: [bold]{report.verdict.value}[/bold]")

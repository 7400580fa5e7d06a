"""``tradebridge review``: the rows a human must decide, with the evidence, and the decision.

A row is ``needs_review`` when its submit's answer was lost and the lookups could not tell,
within ``dispatcher.unknown_bound_s``, whether the broker holds its order (docs/dispatcher.md
"Unknown outcomes"). tradebridge never guesses and never resends it; a person looks at the
broker (``tradebridge orders``) and at the evidence here, then says which:

* ``review adopt SIGNAL ORDER``: the broker order ORDER is this row's; the row becomes
  ``working`` and reconcile takes it from there (fills, cancels). Refused when another row
  already owns the order, and, read at the broker first (the settings' broker and token
  store, as the broker commands find them), when the row's account has no such order, it
  is a bracket leg, or its contract, side, quantity (``--allow-other-quantity``), order type
  (``--allow-other-type``) or limit or stop price (``--allow-other-price``) is not the
  row's: the row would book that order's fills as its own. ``--no-broker-check`` skips
  the read (broker down, no token) and says so.
* ``review absent SIGNAL``: nothing of this row reached the broker; the row ends ``failed``.

Exit codes: 0 done; 1 refused (the row moved meanwhile, the order is another row's or not
the row's at the broker, the broker cannot be asked) or the database is unreachable; 2 bad
usage.
"""

from __future__ import annotations

import dataclasses
import json
import sys
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import TYPE_CHECKING, Annotated, TypeVar

import typer
from rich.markup import escape

from tradebridge.cli._shared import (
    LedgerOptions,
    fail,
    group,
    ledger_url,
    load,
    out,
    run_on_ledger,
    takes,
    warn,
)
from tradebridge.domain.enums import OrderType, Side
from tradebridge.domain.ids import LEG_SUFFIXES
from tradebridge.domain.lifecycle import SignalStatus
from tradebridge.errors import OrderOwned

if TYPE_CHECKING:
    from tradebridge.cli.broker import BrokerOptions
    from tradebridge.config import Settings
    from tradebridge.domain.reports import OrderStatusReport
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


@dataclasses.dataclass(frozen=True, slots=True)
class _Wanted:
    """What the row's own order is: from its latest submit's plan, else its columns.

    A field is None when neither tells it (an exit whose side came from the position, with
    no plan recorded); it is not compared then, and the command says so.
    """

    contract: str | None
    side: Side | None
    quantity: int | None
    source: str
    order_type: OrderType | None = None
    limit_price: Decimal | None = None  # compared when the row's order type carries one
    stop_price: Decimal | None = None

    def unknown(self) -> list[str]:
        """Return the names of the fields neither the plan nor the columns tell."""
        return [name for name in ("contract", "side", "quantity", "order_type")
                if getattr(self, name) is None]  # fmt: skip


async def _wanted(ledger: Ledger, row: LedgerRow, settings: Settings) -> _Wanted:
    """Return what the row's order must be: what its latest submit sent, else its columns."""
    from tradebridge.dispatch.dispatcher import root_map
    from tradebridge.pipeline.validate import RawSignal, ValidSignal, validate

    for _event, detail in await ledger.submit_details(row.signal_id):
        if isinstance(detail, dict) and detail.get("plan") == "order":
            order_type = detail.get("order_type")
            return _Wanted(
                str(detail["contract"]), Side(detail["side"]), int(detail["quantity"]),
                "its submit", None if order_type is None else OrderType(order_type),
                _dec(detail.get("limit_price")), _dec(detail.get("stop_price")),
            )  # fmt: skip
    checked = validate(
        RawSignal.of(row),
        today=datetime.now(UTC).date(),
        accounts=[row.account_name or ""],
        root_map=root_map(settings),
        calendar=settings.contracts.calendar(),
    )
    if not isinstance(checked, ValidSignal):
        return _Wanted(None, None, None, "its columns")
    contract = None if checked.contract is None else checked.contract.name
    return _Wanted(contract, checked.side, checked.quantity, "its columns",
                   checked.order_type, checked.limit_price, checked.stop_price)  # fmt: skip


def _dec(value: object) -> Decimal | None:
    return None if value is None else Decimal(str(value))


def _num(value: Decimal | None) -> str | None:
    return None if value is None else str(value)


def _price(value: Decimal | None) -> str:
    return "none" if value is None else format(value.normalize(), "f")


def _leg_of(order: OrderStatusReport) -> str | None:
    """Say how ``order`` is a bracket leg (of an entry, OSO or order strategy), or None."""
    if order.parent_id is not None:
        return f"is a bracket leg of order {order.parent_id}"
    if order.client_order_id is not None and order.client_order_id.endswith(LEG_SUFFIXES):
        return f"is a bracket leg (client id {order.client_order_id})"
    if order.oco_id is not None:
        return f"is a bracket leg (one of the one-cancels-other pair {order.oco_id})"
    return None


def _differs(
    order: OrderStatusReport,
    wanted: _Wanted,
    *,
    any_quantity: bool = False,
    any_type: bool = False,
    any_price: bool = False,
) -> str | None:
    """Say how ``order`` cannot be the row's own order, or None if it can."""
    leg = _leg_of(order)
    if leg is not None:
        return f"{leg}, never a row's own order"
    if wanted.contract is not None and order.contract != wanted.contract:
        return f"is of contract {order.contract}, the row's is {wanted.contract}"
    if wanted.side is not None and order.side is not wanted.side:
        return f"is a {order.side.value}, the row's is a {wanted.side.value}"
    if not any_quantity and wanted.quantity is not None and order.quantity != wanted.quantity:
        return (f"is for {order.quantity} contract(s), the row's for {wanted.quantity} "
                "(--allow-other-quantity takes it anyway)")  # fmt: skip
    if not any_type and wanted.order_type is not None:
        # A type tradebridge never places (a trailing stop, MIT) reads as market: named.
        kind = order.broker_order_type or order.order_type.value
        if order.broker_order_type is not None or order.order_type is not wanted.order_type:
            return (f"is a {kind} order, the row's is a {wanted.order_type.value} order "
                    "(--allow-other-type takes it anyway)")  # fmt: skip
    if not any_price:
        for name, theirs, ours in (("limit", order.limit_price, wanted.limit_price),
                                   ("stop", order.stop_price, wanted.stop_price)):  # fmt: skip
            if ours is not None and theirs != ours:
                return (f"has {name} price {_price(theirs)}, the row's {_price(ours)} "
                        "(--allow-other-price takes it anyway)")  # fmt: skip
    return None


def _broker_options(where: LedgerOptions, settings: Settings) -> BrokerOptions:
    """Return where the broker commands would find the broker for this ledger's rows.

    As ``send`` does: the settings, and the running ``up`` stack whose ledger this is
    (explicit ``--data-dir``, or the settings' data directory when they name no database).
    """
    from tradebridge.cli.broker import BrokerOptions
    from tradebridge.runtime.endpoints import read_endpoints

    stack = None
    if where.database_url is None and (where.data_dir is not None or settings.database.url is None):
        stack = where.data_dir or settings.data_dir
        if read_endpoints(stack) is None:
            stack = None
    return BrokerOptions(config=where.config, data_dir=stack)


async def _broker_order(common: BrokerOptions, row: LedgerRow, order_id: str) -> OrderStatusReport:
    """Return the broker's order ``order_id`` of the row's account; refuse (exit 1) if the
    broker has none there or cannot be asked."""
    from redis.exceptions import RedisError

    from tradebridge.cli.broker import order_of
    from tradebridge.errors import BridgeError, NotFound

    account = row.account_name or ""
    try:
        return await order_of(common, account, order_id)
    except NotFound:
        raise fail(f"refused: the broker has no order {order_id} on account {account} (the "
                   "row's); nothing changed", 1) from None  # fmt: skip
    except (BridgeError, RedisError, OSError) as e:
        raise fail(f"refused: cannot read order {order_id} of {account} at the broker "
                   f"({type(e).__name__}: {e}); nothing changed. Fix the broker or its token "
                   "(`tradebridge doctor`), or pass --no-broker-check to adopt it unchecked",
                   1) from None  # fmt: skip


@review_app.command(cls=LedgerCommand)
def adopt(
    ctx: typer.Context,
    signal_id: SignalIdArg,
    order_id: Annotated[str, typer.Argument(help="the broker order id that is this row's")],
    note: NoteOpt = "",
    allow_other_quantity: Annotated[
        bool,
        typer.Option(
            "--allow-other-quantity",
            help="take the order although its quantity differs from the row's (resized by "
            "hand); contract, side and legs are still checked",
        ),
    ] = False,
    allow_other_type: Annotated[
        bool,
        typer.Option(
            "--allow-other-type",
            help="take the order although its order type differs from the row's (market, "
            "limit, stop, stop limit); the prices the row's type carries are still checked",
        ),
    ] = False,
    allow_other_price: Annotated[
        bool,
        typer.Option(
            "--allow-other-price",
            help="take the order although its limit or stop price differs from the row's "
            "(moved by hand)",
        ),
    ] = False,
    no_broker_check: Annotated[
        bool,
        typer.Option(
            "--no-broker-check",
            help="do not read the order at the broker (it is down, no token): nothing checks "
            "that the order exists, is no bracket leg, and has the row's contract and side",
        ),
    ] = False,
) -> None:
    """Say the broker order ORDER is this row's: the row becomes working, reconcile follows it.

    The order is read at the broker first: refused unless it is on the row's account, no
    bracket leg, and of the row's contract, side, quantity, order type and prices.
    """
    from tradebridge.obs.logging import configure_logging

    where = LedgerOptions.of(ctx)
    settings = None if no_broker_check else load(where.config)
    configure_logging("ERROR", json_output=True, stream=sys.stderr)  # the broker's, not stdout

    async def work(ledger: Ledger) -> LedgerRow:
        row = await ledger.get(signal_id)
        if row is None:
            raise fail(f"no row with signal_id {signal_id!r}", 1)
        if row.status is not SignalStatus.NEEDS_REVIEW:  # the move below checks it again
            raise fail(f"signal {signal_id}: status is {row.status.value}, expected "
                       "needs_review; nothing changed", 1)  # fmt: skip
        # The ledger's unique index is per account: an order another account's row owns
        # would pass it (broker order ids are unique across accounts).
        owner = await ledger.owner_of(order_id)
        if owner is not None and owner != signal_id:
            raise OrderOwned(
                f"signal {signal_id}: broker order {order_id} already belongs to signal {owner}",
                owner=owner,
            )
        checked: dict[str, object] = {"broker_checked": False}
        if settings is None:
            warn(f"order {order_id} not checked at the broker (--no-broker-check): that it "
                 "exists on the row's account, is no bracket leg and has the row's contract "
                 "and side is your word")  # fmt: skip
        else:
            order = await _broker_order(_broker_options(where, settings), row, order_id)
            wanted = await _wanted(ledger, row, settings)
            why = _differs(order, wanted, any_quantity=allow_other_quantity,
                           any_type=allow_other_type, any_price=allow_other_price)  # fmt: skip
            if why is not None:
                raise fail(f"refused: order {order_id} {why}; nothing changed", 1)
            unknown = wanted.unknown()
            if unknown:
                warn(f"the row records no {', '.join(unknown)}: not compared with the order")
            checked = {
                "broker_checked": True, "contract": order.contract, "side": order.side.value,
                "quantity": order.quantity, "broker_status": order.status.value,
                "order_type": order.broker_order_type or order.order_type.value,
                "limit_price": _num(order.limit_price), "stop_price": _num(order.stop_price),
                "compared_with": wanted.source,
            }  # fmt: skip
        return await ledger.transition(
            signal_id, SignalStatus.WORKING, expected=SignalStatus.NEEDS_REVIEW,
            event="adopted_by_hand",
            detail={"broker_order_id": order_id, "note": note, **checked},
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

"""Routing: a valid signal plus what the broker reports becomes broker commands, or a denial.

Pure: the position, the working orders and the quote are arguments (``BrokerView``); the
dispatcher reads them from the broker at placement time, and only what ``needs`` says.

* ``order``: the row as it is; stop loss / take profit become a ``Bracket``. Where the broker
  prices legs from the fill (``brackets_from_fill``: native order strategies) and every leg is
  a tick distance, the distances go as they are: no entry reference is needed. Otherwise tick
  distances are converted to prices from the entry reference: the limit (or stop) price,
  else the row's ``reference_price``, else the broker's quote. The legs' time in force follows
  ``[orders] leg_time_in_force`` (by default the entry's). An entry's limit on the wrong side
  of the market (a buy above the ask, a sell below the bid) follows ``[orders]
  marketable_limit``: sent as it is (``fill``), as a stop at that price (``stop``, a breakout
  entry), or denied (``deny``); judged against the broker's quote, else the row's
  ``reference_price``, else not at all (the dispatcher records that it could not judge).
* ``exit``: an opposite-side order for the whole position on the contract, or for the
  row's quantity (at most the position).
* ``reverse``: the opposite side for twice the position, or a plain entry when flat.
* ``target``: the difference between ``target_position`` and the position.
  (Neither takes a bracket: ``validate`` refuses one, see its ``_NO_BRACKET``.)
* ``cancel``: cancel the working orders on the contract.
* ``flatten``: ``FlattenPosition`` for every contract with a position or working orders.

Nothing to do (flat on exit, no working orders on cancel, already at target) is a ``Denied``
whose reason starts with ``nothing to do``: nothing was sent, and the row is final.

An order that closes, reduces or turns the position is planned with ``fit_legs``: before it
is sent, the protective legs on the contract are cut to what will remain
(``pipeline/legs.py``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import date
from decimal import ROUND_HALF_UP, Decimal
from typing import Literal

from tradebridge.config import Settings
from tradebridge.domain.commands import (
    Bracket,
    CancelOrder,
    FlattenPosition,
    LegTimeInForce,
    SubmitOrder,
    leg_time_in_force,
)
from tradebridge.domain.contracts import ContractSymbol, RollCalendar, parse_contract
from tradebridge.domain.enums import Dialect, OrderType, Side, TimeInForce
from tradebridge.domain.ids import ClientOrderId
from tradebridge.domain.reports import OrderStatusReport, PositionReport
from tradebridge.errors import InvalidInput, InvalidSymbol
from tradebridge.pipeline.market import Market
from tradebridge.pipeline.validate import Denied, Intent, ValidSignal

MarketableLimit = Literal["fill", "stop", "deny"]
"""``[orders] marketable_limit``: what an entry's limit on the wrong side of the market does."""


@dataclass(frozen=True, slots=True)
class Needs:
    """Which broker facts routing (and risk) needs for one signal."""

    position: bool = False
    orders: bool = False
    quote: bool = False
    # The account's working orders, as cheaply as the adapter reads them: a plain order is
    # judged by the risk rules as if they had filled (``risk.working_ahead``).
    working: bool = False


@dataclass(frozen=True, slots=True)
class BrokerView:
    """What the broker reported at placement time (only what ``Needs`` asked for).

    With what the adapter can do (``BrokerCapabilities``). At intake nothing has been read
    yet (``pipeline/admission.py``): the view is flat and empty, and ``quote_at_placement``
    says that a quote will be read when the row is placed, so a bracket measured from it is
    priced then, not refused now.
    """

    positions: Sequence[PositionReport] = ()
    working: Sequence[OrderStatusReport] = ()
    quote: Decimal | None = None
    market: Market | None = None  # bid and ask, where the quote had them (else its last)
    quote_at_placement: bool = False
    # Bracket legs can have a time in force of their own (native); else they take the entry's.
    leg_time_in_force: bool = True

    def position(self, contract: ContractSymbol) -> int:
        """Return the net position on ``contract`` (0 when flat or unknown)."""
        return sum(p.net_qty for p in self.positions if p.contract == contract.name)


@dataclass(frozen=True, slots=True)
class PlaceOrder:
    """Send one order."""

    command: SubmitOrder
    position_before: int | None = None
    # It closes, reduces or turns the position: cut the protective legs first (legs.py).
    fit_legs: bool = False
    # Sized from the whole position (a target move, an exit of all of it), or judged by the
    # risk rules on the position read (a plain order under position rules: the dispatcher
    # sets it): sent again only on that very position (``placement.still_fits``).
    exact: bool = False
    # What routing changed about the row's order, and why (kept with the submit's event).
    note: str | None = None


@dataclass(frozen=True, slots=True)
class CancelOrders:
    """Cancel these working orders (idempotent: a second run cancels what is left)."""

    commands: tuple[CancelOrder, ...]


@dataclass(frozen=True, slots=True)
class FlattenAccount:
    """Flatten these contracts (idempotent: the target is flat)."""

    commands: tuple[FlattenPosition, ...] = field(default_factory=tuple)


Plan = PlaceOrder | CancelOrders | FlattenAccount
"""What ``route`` decided to send for one row (the dispatcher writes it ahead of the send)."""


def needs(
    signal: ValidSignal,
    *,
    position_for_risk: bool = False,
    brackets_from_fill: bool = False,
    marketable_limit: MarketableLimit = "fill",
) -> Needs:
    """Return which broker facts ``route`` needs for ``signal``."""
    entry_known = signal.limit_price is not None or signal.stop_price is not None
    ticks = signal.stop_loss_ticks is not None or signal.take_profit_ticks is not None
    priced = not (brackets_from_fill and _relative_only(signal))
    quote = ticks and priced and not entry_known and signal.reference_price is None
    # A limit entry is judged against the market unless it may fill as it is.
    quote = quote or (marketable_limit != "fill" and signal.order_type is OrderType.LIMIT)
    match signal.intent:
        case Intent.ORDER:
            # On a continuous symbol, a position left in the month before the roll is read.
            return Needs(position=position_for_risk or signal.follows_roll, quote=quote,
                         working=position_for_risk)  # fmt: skip
        case Intent.EXIT:
            return Needs(position=True)
        case Intent.REVERSE | Intent.TARGET:
            # Either may open a position (a reverse from flat, a target further out).
            return Needs(position=True, quote=quote and signal.intent is Intent.REVERSE,
                         working=position_for_risk)  # fmt: skip
        case Intent.CANCEL:
            return Needs(orders=True)
        case Intent.FLATTEN:
            return Needs(position=True, orders=True)


def route(
    signal: ValidSignal,
    view: BrokerView,
    client_order_id: ClientOrderId,
    *,
    today: date,
    legs: LegTimeInForce = "entry",
    brackets_from_fill: bool = False,
    marketable_limit: MarketableLimit = "fill",
    calendar: RollCalendar | None = None,
) -> Plan | Denied:
    """Turn ``signal`` into broker commands, or say why none can be sent.

    ``legs`` is ``[orders] leg_time_in_force``: the time in force of bracket legs.
    ``brackets_from_fill``: the broker prices bracket legs from the entry's fill
    (``BrokerCapabilities.brackets_from_fill``), so a bracket given only in ticks needs no
    entry reference. ``marketable_limit`` is ``[orders] marketable_limit``. ``calendar``
    (``[contracts] roll_days``) dates the roll in what an alert after one is told.
    """
    try:
        return _route(signal, view, client_order_id, today, legs, brackets_from_fill,
                      marketable_limit, calendar)  # fmt: skip
    except InvalidInput as e:
        return Denied(str(e), e.field)


def _route(
    signal: ValidSignal,
    view: BrokerView,
    cid: ClientOrderId,
    today: date,
    legs: LegTimeInForce,
    from_fill: bool,
    marketable: MarketableLimit = "fill",
    calendar: RollCalendar | None = None,
) -> Plan | Denied:
    if signal.intent is Intent.FLATTEN:
        return _flatten(signal, view, today)
    contract = signal.contract
    assert contract is not None  # validate requires it for every other intent
    if signal.intent is Intent.CANCEL:
        working = tuple(
            CancelOrder(signal.account, o.broker_order_id)
            for o in view.working
            if o.contract == contract.name and o.status.is_open
        )
        if not working:
            return Denied(f"nothing to do: no working orders on {contract.name}")
        return CancelOrders(working)
    position = view.position(contract)
    note = None
    earlier = _other_months(signal, view, contract, today)
    if earlier:
        rolled = _rolled(signal, contract, position, earlier, calendar)
        if isinstance(rolled, Denied):
            return rolled
        if rolled[0] != contract:
            note = (f"sent on {rolled[0].name}, the position held from before the roll on "
                    f"{rolled[0].roll_date(calendar).isoformat()} (the symbol's front month is now "
                    f"{contract.name})")  # fmt: skip
        contract, position = rolled
    match signal.intent:
        case Intent.ORDER:
            return _entry(signal, contract, signal.side, signal.quantity, view, cid, position,
                          legs, from_fill, marketable)  # fmt: skip
        case Intent.EXIT:
            if position == 0:
                return Denied(f"nothing to do: no position in {contract.name} to exit")
            side = Side.SELL if position > 0 else Side.BUY
            quantity = min(signal.quantity or abs(position), abs(position))
            whole = signal.quantity is None or signal.quantity > abs(position)
            return _place(signal, contract, side, quantity, cid, position, exact=whole,
                          note=note)  # fmt: skip
        case Intent.REVERSE:
            if position == 0:
                return _entry(signal, contract, signal.side, signal.quantity, view, cid, 0,
                              legs, from_fill, marketable)  # fmt: skip
            held = Side.BUY if position > 0 else Side.SELL
            if signal.side is held:
                return Denied(
                    f"nothing to do: reverse to {held.value} but already "
                    f"{'long' if position > 0 else 'short'} {abs(position)} {contract.name}"
                )
            return _place(signal, contract, held.opposite, 2 * abs(position), cid, position)
        case Intent.TARGET:
            assert signal.target_position is not None
            delta = signal.target_position - position
            if delta == 0:
                return Denied(
                    f"nothing to do: the position in {contract.name} is already "
                    f"{position:+d}, the target"
                )
            side = Side.BUY if delta > 0 else Side.SELL
            return _place(signal, contract, side, abs(delta), cid, position, exact=True,
                          note=note)  # fmt: skip
    raise AssertionError(signal.intent)  # pragma: no cover


def _other_months(
    signal: ValidSignal, view: BrokerView, contract: ContractSymbol, today: date
) -> dict[ContractSymbol, int]:
    """Return the positions in other months of the contract's root, when the signal named
    no month (``MNQ1!``, ``MNQ``): after a roll the sender's position is still in the old
    one."""
    if not signal.follows_roll or signal.intent is Intent.CANCEL:
        return {}
    held: dict[ContractSymbol, int] = {}
    for report in view.positions:
        if report.contract == contract.name:
            continue
        try:
            other = parse_contract(report.contract, today)
        except InvalidSymbol:
            continue  # a product tradebridge does not know is no month of this root
        if other.root == contract.root:
            held[other] = held.get(other, 0) + report.net_qty
    return {other: qty for other, qty in held.items() if qty != 0}


def _rolled(
    signal: ValidSignal,
    contract: ContractSymbol,
    position: int,
    earlier: dict[ContractSymbol, int],
    calendar: RollCalendar | None,
) -> tuple[ContractSymbol, int] | Denied:
    """Return the contract and position an alert on a rolled symbol acts on, or why it
    cannot be told.

    An exit (or a target of flat) while the front month is flat closes the one other month
    held: what the sender means, since its chart knows no months. An exit while the front
    month is held closes that, as asked. Anything else would trade the new month beside
    the old one (a strategy's sell meant to close a long would open a short; a target would
    double the position): denied, naming both months.
    """
    closes = signal.intent is Intent.EXIT or (
        signal.intent is Intent.TARGET and signal.target_position == 0
    )
    if closes and position == 0 and len(earlier) == 1:
        return next(iter(earlier.items()))
    if signal.intent is Intent.EXIT and position != 0:
        return contract, position
    held = ", ".join(f"{qty:+d} {c.name} (rolled on {c.roll_date(calendar).isoformat()})"
                     for c, qty in sorted(earlier.items()))  # fmt: skip
    return Denied(
        f"{contract.name} is the front month of {contract.root} now, but the account holds "
        f"{held}: this {signal.intent.value} would trade {contract.name} beside that "
        "position instead of it; close or roll it first (an exit on the continuous symbol "
        "closes it), or name the month in the symbol",
        "instrument",
    )


def _flatten(signal: ValidSignal, view: BrokerView, today: date) -> Plan | Denied:
    names = {p.contract for p in view.positions if p.net_qty != 0}
    names |= {o.contract for o in view.working if o.status.is_open}
    if signal.contract is not None:
        names &= {signal.contract.name}
    if not names:
        return Denied(f"nothing to do: no position or working order on {signal.account}")
    commands = tuple(
        FlattenPosition(signal.account, parse_contract(name, today)) for name in sorted(names)
    )
    return FlattenAccount(commands)


def _place(
    signal: ValidSignal,
    contract: ContractSymbol,
    side: Side,
    quantity: int,
    cid: ClientOrderId,
    position: int,
    *,
    bracket: Bracket | None = None,
    note: str | None = None,
    exact: bool = False,
) -> PlaceOrder:
    # Exits, reversals and target moves carry no bracket: its legs would be sized to the
    # order, not to the position that remains. Only entries pass one.
    after = position + side.sign * quantity
    reduces = position != 0 and (after * position <= 0 or abs(after) < abs(position))
    return PlaceOrder(
        SubmitOrder(
            client_order_id=cid,
            account=signal.account,
            contract=contract,
            side=side,
            order_type=signal.order_type,
            quantity=quantity,
            limit_price=signal.limit_price,
            stop_price=signal.stop_price,
            tif=signal.tif,
            bracket=bracket,
            text=_text(signal),
        ),
        position_before=position,
        fit_legs=reduces and signal.intent is not Intent.ORDER,
        note=note,
        exact=exact,
    )


def _entry(
    signal: ValidSignal,
    contract: ContractSymbol,
    side: Side | None,
    quantity: int | None,
    view: BrokerView,
    cid: ClientOrderId,
    position: int,
    legs: LegTimeInForce,
    from_fill: bool,
    marketable: MarketableLimit = "fill",
) -> PlaceOrder | Denied:
    if side is None:
        return Denied("side is missing (buy or sell)", "side")
    if quantity is None:
        return Denied("quantity is missing", "quantity")
    note = None
    if marketable != "fill":
        judged = judge_limit(signal, side, view, marketable)
        if isinstance(judged, Denied):
            return judged
        signal, note = judged
    refused = scale_out_refusal(signal, brackets_from_fill=from_fill)
    if refused is not None:
        return refused
    strategy_legs = leg_time_in_force(signal.tif, "entry")
    if (
        from_fill
        and _relative_only(signal)
        and leg_time_in_force(signal.tif, legs) is strategy_legs
    ):
        # The broker prices the legs from the real fill (native order strategies). Their
        # legs take the entry's time in force; a fixed other one goes as placeoso instead.
        bracket: Bracket | Denied | None = _relative_bracket(signal, quantity)
    else:
        bracket = _bracket(signal, contract, side, view, legs)
    if isinstance(bracket, Denied):
        return bracket
    return _place(signal, contract, side, quantity, cid, position, bracket=bracket, note=note)


def judge_limit(
    signal: ValidSignal, side: Side, view: BrokerView, mode: MarketableLimit
) -> tuple[ValidSignal, str | None] | Denied:
    """Return the entry as it goes (and what changed), or why a marketable limit is denied.

    A buy limit above the ask (a sell limit below the bid) would fill at once at the market.
    ``stop`` sends it as a stop at the same price instead (a breakout entry: what the
    deployment tradebridge replaces did); ``deny`` refuses it. Judged against the broker's
    quote, else the row's ``reference_price``; without either the limit goes as it is. A
    limit at the price itself fills at it either way, and stays a limit.
    """
    limit = signal.limit_price
    market, against = view.market, "the market"
    if market is None and signal.reference_price is not None:
        market = Market(signal.reference_price, signal.reference_price)
        against = "reference_price"
    if mode == "fill" or signal.order_type is not OrderType.LIMIT or limit is None:
        return signal, None
    if market is None:
        return signal, None
    buy = side is Side.BUY
    if (limit <= market.ask) if buy else (limit >= market.bid):
        return signal, None
    if against == "reference_price":
        where = f"{'above' if buy else 'below'} the reference_price {market.ask}"
    else:
        where = f"above the ask {market.ask}" if buy else f"below the bid {market.bid}"
    if mode == "deny":
        return Denied(
            f"the {side.value} limit {limit} is {where}: it would fill at once at the market "
            "(orders.marketable_limit = deny); send a stop for a breakout entry, or a limit "
            f"{'below' if buy else 'above'} the market",
            "price",
        )
    stop = replace(signal, order_type=OrderType.STOP, stop_price=limit, limit_price=None)
    return stop, (
        f"the {side.value} limit {limit} is {where}: sent as a stop at {limit} "
        "(orders.marketable_limit = stop)"
    )


def _relative_only(signal: ValidSignal) -> bool:
    """Return whether the signal's bracket has legs and every one is a tick distance."""
    ticks = signal.stop_loss_ticks is not None or signal.take_profit_ticks is not None
    ticks = ticks or signal.scales_out
    return ticks and signal.stop_loss is None and signal.take_profit is None


def brackets_from_fill(settings: Settings, account: str) -> bool:
    """Return whether ``account``'s broker prices bracket legs from the fill.

    Native accounts with ``tradovate.strategies.use = "relative"`` (order strategies); the
    same as the adapter's ``BrokerCapabilities.brackets_from_fill``.
    """
    configured = next((a for a in settings.accounts if a.name == account), None)
    native = configured is None or configured.dialect is Dialect.NATIVE
    return native and settings.tradovate.strategies.use == "relative"


def scale_out_refusal(signal: ValidSignal, *, brackets_from_fill: bool) -> Denied | None:
    """Return why several targets, a trailing stop or a break-even move cannot be placed.

    Only a broker that prices legs from the fill places them (native order strategies, as
    brackets of one strategy), and only with every leg a distance. The webhook asks the same
    question of each account before it accepts an alert.
    """
    if not signal.scales_out:
        return None
    field = ("take_profits" if signal.targets
             else "trailing_stop_ticks" if signal.trailing_stop_ticks is not None
             else "breakeven")  # fmt: skip
    if not brackets_from_fill:
        return Denied(
            f"{field}: several take profits, trailing stops and break-even moves are placed "
            "as a native order strategy; this account's broker cannot (the TradingView "
            "bridge, or tradovate.strategies.use = never)",
            field,
        )
    if not _relative_only(signal):
        return Denied(f"{field} needs every leg as a distance (ticks, points, dollars), "
                      "not a price", field)  # fmt: skip
    return None


def _relative_bracket(signal: ValidSignal, quantity: int) -> Bracket | Denied:
    stop = signal.stop_loss_ticks
    if signal.trailing_stop_ticks is not None:
        stop = signal.trailing_stop_ticks
    bracket = Bracket(
        stop_loss_ticks=stop,
        take_profit_ticks=signal.take_profit_ticks,
        targets=signal.targets,
        trailing=signal.trailing_stop_ticks is not None,
        breakeven=signal.breakeven,
    )
    if signal.targets:
        total = sum(t.quantity for t in signal.targets)
        if total > quantity:
            return Denied(f"take_profits close {total} contracts, more than the order's "
                          f"{quantity}", "take_profits")  # fmt: skip
        if total < quantity and stop is None:
            return Denied(
                f"take_profits close {total} of {quantity} contracts and there is no stop: "
                "the rest would have no protective order (add a stop, or make the "
                "quantities add up)",
                "take_profits",
            )
        if signal.breakeven and total == signal.targets[0].quantity == quantity:
            return Denied("breakeven: nothing is left after the first take profit",
                          "breakeven")  # fmt: skip
    return bracket


def entry_reference(signal: ValidSignal, quote: Decimal | None) -> Decimal | None:
    """Return the price a bracket is measured from: limit, stop, reference, quote."""
    if signal.order_type.needs_limit_price:
        return signal.limit_price
    if signal.order_type is OrderType.STOP:
        return signal.stop_price
    return signal.reference_price if signal.reference_price is not None else quote


def _leg_time_in_force(
    signal: ValidSignal, view: BrokerView, legs: LegTimeInForce
) -> TimeInForce | Denied:
    tif = leg_time_in_force(signal.tif, legs)
    if tif is not signal.tif and not view.leg_time_in_force:
        return Denied(
            f"bracket legs {tif.value} (orders.leg_time_in_force = {legs!r}) on a "
            f"{signal.tif.value} entry: this account's dialect (the TradingView bridge) gives "
            f"the legs the entry's time in force; send the entry as {tif.value}, or set "
            "leg_time_in_force to entry",
            "time_in_force",
        )
    return tif


def _bracket(
    signal: ValidSignal, contract: ContractSymbol, side: Side, view: BrokerView,
    legs: LegTimeInForce,
) -> Bracket | Denied | None:  # fmt: skip
    if not signal.has_bracket:
        return None
    leg_tif = _leg_time_in_force(signal, view, legs)
    if isinstance(leg_tif, Denied):
        return leg_tif
    tick = contract.product.tick_size
    entry = entry_reference(signal, view.quote)
    if entry is not None:
        entry = (entry / tick).quantize(Decimal(1), rounding=ROUND_HALF_UP) * tick
    stop_loss, take_profit = signal.stop_loss, signal.take_profit
    if signal.stop_loss_ticks is not None or signal.take_profit_ticks is not None:
        if entry is None and view.quote_at_placement:
            # Intake: the legs are priced from the quote read at placement; what depends on
            # its value is decided then.
            return Bracket(stop_loss, take_profit, leg_tif)
        if entry is None:
            return Denied(
                "stop_loss_ticks/take_profit_ticks need an entry reference: a limit or stop "
                "price, reference_price, or a quote from the broker (none available)",
                "reference_price",
            )
        if signal.stop_loss_ticks is not None:
            stop_loss = entry - side.sign * signal.stop_loss_ticks * tick
        if signal.take_profit_ticks is not None:
            take_profit = entry + side.sign * signal.take_profit_ticks * tick
    for name, price in (("stop_loss", stop_loss), ("take_profit", take_profit)):
        if price is not None and price <= 0:
            return Denied(f"{name} works out at {price}, not a price", name)
    if entry is not None:
        if stop_loss is not None and (stop_loss - entry) * side.sign >= 0:
            return Denied(
                f"stop_loss {stop_loss} is on the wrong side of the entry {entry} for a "
                f"{side.value} (it must be {'below' if side is Side.BUY else 'above'})",
                "stop_loss",
            )
        if take_profit is not None and (take_profit - entry) * side.sign <= 0:
            return Denied(
                f"take_profit {take_profit} is on the wrong side of the entry {entry} for a "
                f"{side.value} (it must be {'above' if side is Side.BUY else 'below'})",
                "take_profit",
            )
    return Bracket(stop_loss=stop_loss, take_profit=take_profit, time_in_force=leg_tif)


def _text(signal: ValidSignal) -> str:
    # A second correlation key next to the client order id (reference §11.2).
    return f"tb {signal.signal_id}"[:64]

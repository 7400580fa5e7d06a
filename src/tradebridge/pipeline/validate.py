"""Validation: a raw ledger row becomes a ``ValidSignal`` or a ``Denied`` with a precise reason.

Pure: no I/O. The current date and the configured accounts are arguments. Everything a
strategy can get wrong in its INSERT is caught here, before anything reaches the broker, and
named in the row's ``error_message`` (docs/dispatcher.md lists every reason).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass, fields
from datetime import date
from decimal import Decimal, InvalidOperation
from enum import StrEnum
from typing import Any

from tradebridge.domain.commands import Target
from tradebridge.domain.contracts import ContractSymbol, RollCalendar, follows_roll, resolve_symbol
from tradebridge.domain.enums import OrderType, Side, TimeInForce
from tradebridge.domain.ids import LEG_SUFFIXES, AccountName, SignalId
from tradebridge.domain.products import MAX_CONTRACTS, MAX_DISTANCE_TICKS, MAX_MAGNITUDE
from tradebridge.errors import InvalidSymbol


class Intent(StrEnum):
    """What a row asks for (the ``intent`` column)."""

    ORDER = "order"  # place the row's order as it is
    EXIT = "exit"  # close the position on the row's contract
    REVERSE = "reverse"  # turn the position around (or enter, if flat)
    CANCEL = "cancel"  # cancel working orders on the row's contract
    FLATTEN = "flatten"  # cancel everything and close every position of the account
    TARGET = "target"  # order the difference to ``target_position``


NOTHING_TO_DO = "nothing to do"
"""How the reason of a ``Denied`` that asked for what already is begins (route.py)."""


@dataclass(frozen=True, slots=True)
class Denied:
    """Our checks said no; ``reason`` becomes the row's ``error_message``."""

    reason: str
    field: str | None = None

    @property
    def nothing_to_do(self) -> bool:
        """Return whether the row asked for what already is (flat on exit, ...): not an error."""
        return self.reason.startswith(NOTHING_TO_DO)


@dataclass(frozen=True, slots=True)
class RawSignal:
    """A ledger row's strategy columns, raw: anything may be missing or wrong."""

    signal_id: str
    account_name: str | None
    instrument: str | None
    side: str | None
    order_type: str | None
    quantity: Decimal | None
    price: Decimal | None = None
    stop_price: Decimal | None = None
    stop_loss: Decimal | None = None
    take_profit: Decimal | None = None
    time_in_force: str | None = None
    intent: str | None = None
    target_position: Decimal | None = None
    stop_loss_ticks: int | None = None
    take_profit_ticks: int | None = None
    reference_price: Decimal | None = None
    strategy_name: str | None = None
    take_profits: Any = None  # JSON: [{"ticks": n, "quantity": q}, ...] (0005_scale_out)
    trailing_stop_ticks: int | None = None
    breakeven: bool | None = None
    # The webhook stores the month it resolved in ``instrument`` and the alert's own symbol
    # (``MNQ1!``) in ``metadata.webhook.symbol``: whether the row follows the roll.
    metadata: Any = None

    @classmethod
    def of(cls, row: object) -> RawSignal:
        """Read the columns from anything that carries them by name (a stored or new row)."""
        return cls(**{f.name: getattr(row, f.name) for f in fields(cls)})


@dataclass(frozen=True, slots=True)
class ValidSignal:
    """A row that passed validation; what is absent was not asked for."""

    signal_id: SignalId
    account: AccountName
    intent: Intent
    contract: ContractSymbol | None  # None only for flatten without an instrument
    side: Side | None
    order_type: OrderType
    quantity: int | None
    limit_price: Decimal | None = None
    stop_price: Decimal | None = None
    tif: TimeInForce = TimeInForce.DAY
    stop_loss: Decimal | None = None
    take_profit: Decimal | None = None
    stop_loss_ticks: int | None = None
    take_profit_ticks: int | None = None
    reference_price: Decimal | None = None
    target_position: int | None = None
    strategy_name: str = ""
    targets: tuple[Target, ...] = ()  # scale-out: several take profits (ticks)
    trailing_stop_ticks: int | None = None
    breakeven: bool = False
    # Named by a continuous symbol or a bare root (``MNQ1!``, ``MNQ``): the month is the
    # roll calendar's, not the sender's, so a position left in an earlier month is the
    # sender's too (route.py).
    follows_roll: bool = False

    @property
    def has_bracket(self) -> bool:
        """Return whether a stop loss or take profit was asked for, in prices or ticks."""
        return bool(self.targets) or any(
            x is not None
            for x in (
                self.stop_loss,
                self.take_profit,
                self.stop_loss_ticks,
                self.take_profit_ticks,
                self.trailing_stop_ticks,
            )
        )

    @property
    def scales_out(self) -> bool:
        """Return whether the bracket uses what only order strategies place: several
        targets, a trailing stop or a break-even move."""
        return bool(self.targets) or self.trailing_stop_ticks is not None or self.breakeven


ACCOUNT_NAME_BLANKS = " \t\n\r\v\f"
"""What validation strips off ``account_name``: exactly what the ledger trims where the row is
written (migration 0011), so the account a row is placed on is the queue it is claimed in.
Other blanks (a no-break space) stay, and name an unknown account: denied."""

_SIDES = {"buy": Side.BUY, "sell": Side.SELL, "long": Side.BUY, "short": Side.SELL}
_ORDER_TYPES = {
    "market": OrderType.MARKET,
    "limit": OrderType.LIMIT,
    "stop": OrderType.STOP,
    "stoplimit": OrderType.STOP_LIMIT,
    "stop_limit": OrderType.STOP_LIMIT,
}
# A bracket is attached to one order and its legs cover that whole order. The order of a
# reverse, or of a target move through zero, closes the old position and opens the new one:
# legs on it would be larger than the new position, so these intents take no bracket (a
# silent drop would leave the new position unprotected without a word).
_NO_BRACKET: dict[Intent, str] = {
    Intent.REVERSE: (
        "stop_loss/take_profit do not go with a reverse: its one order closes the old "
        "position and opens the new one, and legs attached to it would cover both; send the "
        "reverse without them, or an exit and then a buy or sell with the bracket"
    ),
    Intent.TARGET: (
        "stop_loss/take_profit do not go with a target position: its order may close or turn "
        "the position as well as open one, and legs attached to it would cover the whole "
        "order; send the target without them, or an exit and then a buy or sell with the "
        "bracket"
    ),
}
_NEEDS_CONTRACT = frozenset(
    {Intent.ORDER, Intent.EXIT, Intent.REVERSE, Intent.CANCEL, Intent.TARGET}
)
# Intents whose order takes the row's order_type and prices.
_PRICED = frozenset({Intent.ORDER, Intent.EXIT, Intent.REVERSE, Intent.TARGET})


def validate(
    raw: RawSignal,
    *,
    today: date,
    accounts: Collection[str],
    root_map: Mapping[str, str] | None = None,
    calendar: RollCalendar | None = None,
) -> ValidSignal | Denied:
    """Check a raw row; return what it asks for, or why it is denied."""
    try:
        return _validate(raw, today, accounts, dict(root_map or {}), calendar)
    except _Deny as e:
        return e.denied


class _Deny(Exception):  # internal control flow, never escapes this module
    def __init__(self, reason: str, field: str | None = None) -> None:
        super().__init__(reason)
        self.denied = Denied(reason, field)


def _validate(
    raw: RawSignal,
    today: date,
    accounts: Collection[str],
    root_map: dict[str, str],
    calendar: RollCalendar | None,
) -> ValidSignal:
    _signal_id(raw.signal_id)
    intent = _intent(raw.intent)
    account = (raw.account_name or "").strip(ACCOUNT_NAME_BLANKS)
    if not account:
        raise _Deny("account_name is missing", "account_name")
    if account not in accounts:
        known = ", ".join(sorted(accounts)) or "none"
        raise _Deny(f"unknown account {account!r} (configured: {known})", "account_name")
    contract = _contract(
        raw.instrument, today, root_map, calendar, required=intent in _NEEDS_CONTRACT
    )
    side = _side(raw.side, required=intent is Intent.ORDER)
    order_type = _order_type(raw.order_type)
    quantity = _quantity(raw.quantity, required=intent is Intent.ORDER)
    tif = _tif(raw.time_in_force)
    limit_price = _price(raw.price, "price")
    stop_price = _price(raw.stop_price, "stop_price")
    if not (raw.order_type or "").strip() and (limit_price or stop_price) and intent in _PRICED:
        # A missing order type is a market order; one with a price was meant to be something
        # else (and the price would be dropped): the strategy says which.
        raise _Deny("order_type is missing and the row has a price: name it (limit, stop or "
                    "stoplimit; a market order has no price)", "order_type")  # fmt: skip
    if intent in (Intent.CANCEL, Intent.FLATTEN):
        return ValidSignal(SignalId(raw.signal_id), AccountName(account), intent, contract,
                           side, order_type, quantity, tif=tif,
                           strategy_name=raw.strategy_name or "")  # fmt: skip
    assert contract is not None  # _NEEDS_CONTRACT
    if order_type is OrderType.STOP and stop_price is None and limit_price is not None:
        # A stop row with its trigger in price: how the deployment tradebridge replaces wrote
        # stop orders (it had no stop column; docs/migrating.md). A stop has no limit price,
        # so the price can mean nothing else.
        stop_price, limit_price = limit_price, None
    if order_type.needs_limit_price and limit_price is None:
        raise _Deny(f"a {order_type.value} order needs a price (the limit price)", "price")
    if order_type.needs_stop_price and stop_price is None:
        raise _Deny(f"a {order_type.value} order needs a stop_price", "stop_price")
    if not order_type.needs_limit_price:
        limit_price = None
    if not order_type.needs_stop_price:
        stop_price = None
    for name, value in (("price", limit_price), ("stop_price", stop_price)):
        _on_tick_grid(value, name, contract)
    stop_loss = _price(raw.stop_loss, "stop_loss")
    take_profit = _price(raw.take_profit, "take_profit")
    sl_ticks = _ticks(raw.stop_loss_ticks, "stop_loss_ticks")
    tp_ticks = _ticks(raw.take_profit_ticks, "take_profit_ticks")
    if stop_loss is not None and sl_ticks is not None:
        raise _Deny("give stop_loss or stop_loss_ticks, not both", "stop_loss_ticks")
    if take_profit is not None and tp_ticks is not None:
        raise _Deny("give take_profit or take_profit_ticks, not both", "take_profit_ticks")
    for name, value in (("stop_loss", stop_loss), ("take_profit", take_profit)):
        _on_tick_grid(value, name, contract)
    bracket = {"stop_loss": stop_loss, "stop_loss_ticks": sl_ticks, "take_profit": take_profit,
               "take_profit_ticks": tp_ticks}  # fmt: skip
    given = [name for name, value in bracket.items() if value is not None]
    if given and intent in _NO_BRACKET:
        raise _Deny(_NO_BRACKET[intent], given[0])
    if side is not None and stop_loss is not None and take_profit is not None:
        below, above = (stop_loss, take_profit) if side is Side.BUY else (take_profit, stop_loss)
        if below >= above:
            raise _Deny(
                f"stop_loss {stop_loss} and take_profit {take_profit} are on the wrong sides "
                f"for a {side.value}: a {side.value}'s stop loss must be "
                f"{'below' if side is Side.BUY else 'above'} its take profit",
                "stop_loss",
            )
    targets = _targets(raw.take_profits)
    trailing = _ticks(raw.trailing_stop_ticks, "trailing_stop_ticks")
    if targets and (take_profit is not None or tp_ticks is not None):
        raise _Deny("give take_profits or take_profit / take_profit_ticks, not both",
                    "take_profits")  # fmt: skip
    if trailing is not None and (stop_loss is not None or sl_ticks is not None):
        raise _Deny("give trailing_stop_ticks or stop_loss / stop_loss_ticks, not both",
                    "trailing_stop_ticks")  # fmt: skip
    breakeven = bool(raw.breakeven)
    if (targets or trailing is not None or breakeven) and intent is not Intent.ORDER:
        field = ("take_profits" if targets
                 else "trailing_stop_ticks" if trailing is not None else "breakeven")  # fmt: skip
        raise _Deny(f"{field} is only for entries (intent order), not {intent.value}", field)
    if breakeven and not targets:
        raise _Deny("breakeven moves the stop after the first of take_profits; there are none",
                    "breakeven")  # fmt: skip
    if breakeven and sl_ticks is None and trailing is None:
        raise _Deny("breakeven needs a stop in ticks (stop_loss_ticks or trailing_stop_ticks)",
                    "breakeven")  # fmt: skip
    target = None
    if intent is Intent.TARGET:
        target = _target(raw.target_position)
    reference = _price(raw.reference_price, "reference_price")
    entry = limit_price if order_type.needs_limit_price else stop_price or reference
    legs = {"stop_loss_ticks": sl_ticks, "trailing_stop_ticks": trailing,
            "take_profit_ticks": tp_ticks,
            "take_profits": max((t.ticks for t in targets), default=None)}  # fmt: skip
    _check_above_zero(legs, side, entry, contract)
    return ValidSignal(
        signal_id=SignalId(raw.signal_id),
        account=AccountName(account),
        intent=intent,
        contract=contract,
        side=side,
        order_type=order_type,
        quantity=quantity,
        limit_price=limit_price,
        stop_price=stop_price,
        tif=tif,
        stop_loss=stop_loss,
        take_profit=take_profit,
        stop_loss_ticks=sl_ticks,
        take_profit_ticks=tp_ticks,
        reference_price=reference,
        target_position=target,
        strategy_name=raw.strategy_name or "",
        targets=targets,
        trailing_stop_ticks=trailing,
        breakeven=breakeven,
        follows_roll=contract is not None and _follows_roll(raw, root_map),
    )


def _follows_roll(raw: RawSignal, root_map: dict[str, str]) -> bool:
    symbols = [raw.instrument]
    if isinstance(raw.metadata, Mapping):
        hook = raw.metadata.get("webhook")
        if isinstance(hook, Mapping):
            symbols.append(hook.get("symbol"))
    return any(isinstance(s, str) and follows_roll(s, root_map) for s in symbols)


def _signal_id(value: str) -> None:
    # The row's orders are "tb-<signal_id>"; the tracker and reconcile take an id ending in a
    # leg suffix for a bracket leg of another row, and would book this row's fills there.
    suffix = next((s for s in LEG_SUFFIXES if value.endswith(s)), None)
    if suffix is not None:
        raise _Deny(
            f"signal_id {value!r} ends with {suffix!r}, which is reserved for bracket legs' "
            f"order ids; rename the signal so it ends otherwise (e.g. {value + '-1'!r})",
            "signal_id",
        )


def _intent(value: str | None) -> Intent:
    text = (value or "order").strip().lower()
    try:
        return Intent(text)
    except ValueError:
        known = ", ".join(i.value for i in Intent)
        raise _Deny(f"unknown intent {value!r} (one of {known})", "intent") from None


def _contract(
    value: str | None,
    today: date,
    root_map: dict[str, str],
    calendar: RollCalendar | None,
    *,
    required: bool,
) -> ContractSymbol | None:
    text = (value or "").strip()
    if not text:
        if required:
            raise _Deny("instrument is missing", "instrument")
        return None
    try:
        return resolve_symbol(text, today, root_map, calendar)
    except InvalidSymbol as e:
        raise _Deny(f"instrument {text!r}: {e}", "instrument") from None


def _side(value: str | None, *, required: bool) -> Side | None:
    text = (value or "").strip().lower()
    if not text:
        if required:
            raise _Deny("side is missing (buy or sell)", "side")
        return None
    side = _SIDES.get(text)
    if side is None:
        raise _Deny(f"unknown side {value!r} (buy or sell)", "side")
    return side


def _order_type(value: str | None) -> OrderType:
    text = (value or "").strip().lower()
    if not text:
        return OrderType.MARKET
    found = _ORDER_TYPES.get(text)
    if found is None:
        raise _Deny(
            f"unknown order_type {value!r} (market, limit, stop or stoplimit)", "order_type"
        )
    return found


def _quantity(value: Decimal | None, *, required: bool) -> int | None:
    if value is None:
        if required:
            raise _Deny("quantity is missing", "quantity")
        return None
    if not value.is_finite() or value <= 0:
        raise _Deny(f"quantity {value} must be a positive whole number of contracts", "quantity")
    if value != value.to_integral_value():
        raise _Deny(f"quantity {value} is fractional; contracts are whole numbers", "quantity")
    if value > MAX_CONTRACTS:
        raise _Deny(f"quantity {value} is more than {MAX_CONTRACTS:,} contracts", "quantity")
    return int(value)


def _tif(value: str | None) -> TimeInForce:
    text = (value or "").strip().lower()
    if not text:
        return TimeInForce.DAY
    try:
        tif = TimeInForce(text)
    except ValueError:
        raise _Deny(
            f"unknown time_in_force {value!r} (day, gtc, ioc, fok)", "time_in_force"
        ) from None
    if tif is TimeInForce.GTD:
        raise _Deny(
            "time_in_force gtd needs an expire time, which rows cannot carry", "time_in_force"
        )
    return tif


def _price(value: Decimal | None, name: str) -> Decimal | None:
    # 0 or null means none (the documented convention for stop_loss/take_profit; a zero
    # price is never a real futures price either).
    if value is None or value == 0:
        return None
    if not value.is_finite() or value < 0:
        raise _Deny(f"{name} {value} must be a positive price", name)
    if value >= MAX_MAGNITUDE:
        raise _Deny(f"{name} {value} is too large: a price must be below {MAX_MAGNITUDE:,}", name)
    return value


def _on_tick_grid(value: Decimal | None, name: str, contract: ContractSymbol) -> None:
    """Deny ``value`` unless it is a whole number of the contract's ticks."""
    tick = contract.product.tick_size
    try:
        on_grid = value is None or value % tick == 0
    except InvalidOperation:  # more digits than Decimal's context holds (_price bounds them)
        on_grid = False
    if not on_grid:
        raise _Deny(f"{name} {value} is not on the tick grid of {contract.root} ({tick})", name)


def _ticks(value: int | None, name: str) -> int | None:
    if value is None or value == 0:
        return None
    if value < 0:
        raise _Deny(f"{name} {value} must be a positive number of ticks", name)
    if value > MAX_DISTANCE_TICKS:
        raise _Deny(f"{name} {value} is too far: at most {MAX_DISTANCE_TICKS:,} ticks", name)
    return int(value)


def _check_above_zero(
    legs: dict[str, int | None], side: Side | None, entry: Decimal | None, contract: ContractSymbol
) -> None:
    """Deny a leg in ticks that is (or, side unknown, may be) below the known entry by as much
    as the entry's price: it would lie at or below zero, where it never triggers nor fills."""
    if entry is None:
        return  # measured from the quote at placement (route.py)
    most = contract.product.ticks_above_zero(entry)
    for name, ticks in legs.items():
        is_stop = name not in ("take_profit_ticks", "take_profits")
        below = side is None or (side is Side.BUY) == is_stop
        if ticks is not None and below and ticks > most:
            raise _Deny(
                f"{name} {ticks} puts the leg {ticks * contract.product.tick_size} points from "
                f"the entry {entry}, at or below zero: use at most {most:,} ticks",
                name,
            )


MAX_TARGETS = 3


def _targets(value: Any) -> tuple[Target, ...]:
    if value is None:
        return ()
    shape = 'a list of up to 3 {"ticks": n, "quantity": q}'
    if not isinstance(value, list) or len(value) > MAX_TARGETS:
        raise _Deny(f"take_profits must be {shape}", "take_profits")
    found: list[Target] = []
    for index, item in enumerate(value):
        where = f"take_profits[{index}]"
        if not isinstance(item, dict) or set(item) != {"ticks", "quantity"}:
            raise _Deny(f'{where} must be {{"ticks": n, "quantity": q}}', "take_profits")
        ticks, quantity = item["ticks"], item["quantity"]
        for name, number in (("ticks", ticks), ("quantity", quantity)):
            if isinstance(number, bool) or not isinstance(number, int) or number < 1:
                raise _Deny(f"{where}.{name} must be a whole number above 0", "take_profits")
        if ticks > MAX_DISTANCE_TICKS:
            raise _Deny(f"{where}.ticks {ticks} is too far: at most {MAX_DISTANCE_TICKS:,} "
                        "ticks", "take_profits")  # fmt: skip
        if quantity > MAX_CONTRACTS:
            raise _Deny(f"{where}.quantity {quantity} is more than {MAX_CONTRACTS:,} contracts",
                        "take_profits")  # fmt: skip
        found.append(Target(quantity=quantity, ticks=ticks))
    return tuple(found)


def _target(value: Decimal | None) -> int:
    if value is None:
        raise _Deny("intent target needs target_position (signed contracts)", "target_position")
    try:
        whole = value.to_integral_value()
    except InvalidOperation:
        raise _Deny(f"target_position {value} is not a number", "target_position") from None
    if not value.is_finite() or value != whole:
        raise _Deny(
            f"target_position {value} must be a whole number of contracts", "target_position"
        )
    return int(whole)

"""tradebridge's own alert format (docs/tradingview.md): strict, every field documented.

An unknown field is a 400 that names it: a typo such as ``stoploss`` must never silently
drop a stop loss.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Literal

from pydantic import Field

from tradebridge.intake.formats._fields import (
    FieldReader,
    check_whole,
    reject_unknown,
    to_decimal,
)
from tradebridge.intake.formats._schema import Number, OpenApiModel
from tradebridge.intake.formats.alert import (
    AccountRef,
    AlertBracket,
    AlertIntent,
    AlertRejected,
    BracketUnit,
    ParsedAlert,
    TakeProfit,
)

TRADEBRIDGE_FIELDS: frozenset[str] = frozenset(
    {
        "secret",
        "symbol",
        "action",
        "side",
        "quantity",
        "order_type",
        "price",
        "stop_price",
        "tif",
        "stop_loss",
        "take_profit",
        "trailing_stop",
        "breakeven",
        "account",
        "accounts",
        "strategy",
        "id",
        "time",
        "target_position",
        "market_position",
        "reference_price",
        "comment",
        "flatten",
    }
)
KILL_FIELDS: frozenset[str] = frozenset(
    {"secret", "action", "account", "accounts", "flatten", "comment", "strategy", "id", "time"}
)
"""The fields of a ``kill`` alert (docs/kill-switch.md)."""

ACTIONS: dict[str, str] = {
    "buy": "buy",
    "sell": "sell",
    "exit": "exit",
    "reverse": "reverse",
    "cancel": "cancel",
    "flatten": "flatten",
}
ORDER_TYPES: dict[str, str] = {
    "market": "market",
    "limit": "limit",
    "stop": "stop",
    "stoplimit": "stoplimit",
    "stop_limit": "stoplimit",
}
TIFS: dict[str, str] = {"day": "day", "gtc": "gtc", "ioc": "ioc", "fok": "fok"}
MARKET_POSITIONS: dict[str, str] = {"long": "long", "short": "short", "flat": "flat"}
# The side of the position a reverse ends in (it needs one: from flat nothing else says it).
REVERSE_SIDES: dict[str, str] = {"buy": "buy", "long": "buy", "sell": "sell", "short": "sell"}
BRACKET_UNITS: tuple[BracketUnit, ...] = ("ticks", "points", "price", "dollars")

# Which intents a field means something for; elsewhere it is accepted and listed as ignored
# (one TradingView template often serves several actions) or, for brackets, refused.
_ORDER_FIELDS = ("order_type", "price", "stop_price", "tif")
_BRACKET_INTENTS = frozenset({"order", "reverse", "target"})


@dataclass(frozen=True, slots=True)
class KillAlert:
    """An alert that throws the kill switch: of every account, or of the accounts named."""

    accounts: tuple[AccountRef, ...]  # empty: the global switch
    flatten: bool
    reason: str | None
    strategy: str | None
    alert_id: str | None


def is_kill(body: Mapping[str, Any]) -> bool:
    """Return whether a tradebridge-format body asks for the kill switch (``action: kill``)."""
    action = body.get("action")
    return isinstance(action, str) and action.strip().lower() == "kill"


def parse_kill(body: Mapping[str, Any]) -> KillAlert:
    """Parse a ``kill`` alert; ``AlertRejected`` names the first problem."""
    fields = FieldReader(body)
    fields.raw("secret")
    fields.raw("action")
    reject_unknown([name for name in body if name not in KILL_FIELDS], KILL_FIELDS)
    fields.time("time")  # checked, though a kill is never too old to act on
    return KillAlert(
        accounts=_accounts(fields),
        flatten=bool(fields.boolean("flatten")),
        reason=fields.text("comment"),
        strategy=fields.text("strategy"),
        alert_id=fields.text("id"),
    )


def parse_tradebridge(body: Mapping[str, Any]) -> ParsedAlert:
    """Parse a tradebridge-format alert; ``AlertRejected`` names the first problem."""
    fields = FieldReader(body)
    fields.raw("secret")  # checked by the endpoint before parsing
    reject_unknown(fields_unknown(body), TRADEBRIDGE_FIELDS)
    if fields.has("flatten"):
        raise AlertRejected(
            "flatten only goes with action kill",
            field="flatten",
            expected='no flatten; {"action": "kill", "flatten": true} closes everything '
            'and stops trading, {"action": "flatten"} closes the positions',
        )
    fields.raw("flatten")
    ignored: list[str] = []

    target = fields.whole("target_position", signed=True)
    market_position = fields.choice("market_position", MARKET_POSITIONS)
    intent: AlertIntent
    side: str | None = None
    if target is not None:
        intent = "target"
        ignored += [name for name in ("action", "quantity") if fields.has(name)]
        fields.raw("action")
        fields.raw("quantity")
        _check_market_position(target, market_position)
        quantity = None
    else:
        if market_position is not None:
            ignored.append("market_position")
        action = fields.choice("action", ACTIONS, required=True)
        assert action is not None
        if action in {"buy", "sell"}:
            intent, side = "order", action
            quantity = fields.whole("quantity", required=True)
        else:
            intent = action  # type: ignore[assignment]  # exit/reverse/cancel/flatten
            if intent == "reverse":
                # In a position, a reverse turns it (twice the position, opposite side). From
                # flat it opens `quantity` on `side`: the webhook cannot know which case it
                # is, so both are required rather than denied later by a worker.
                side = fields.choice("side", REVERSE_SIDES, required=True)
                quantity = fields.whole("quantity", required=True)
            elif intent == "exit":
                quantity = fields.whole("quantity")
            else:
                quantity = None
                if fields.has("quantity"):
                    ignored.append("quantity")
                fields.raw("quantity")

    if intent != "reverse" and fields.has("side"):
        raise AlertRejected(
            "side only goes with action reverse, not with "
            + ("target_position" if intent == "target" else f"action {side or intent}"),
            field="side",
            expected="no side: buy and sell say it in action (reverse: the side to end on)",
        )
    fields.raw("side")
    symbol = fields.text("symbol", required=intent != "flatten", expected="a symbol like MNQ1!")
    if intent == "flatten" and symbol is not None:
        ignored.append("symbol")
        symbol = None

    order_type = fields.choice("order_type", ORDER_TYPES, default="market")
    assert order_type is not None
    price = fields.positive("price")
    stop_price = fields.positive("stop_price")
    tif = fields.choice("tif", TIFS)
    if intent in {"cancel", "flatten"}:
        ignored += [name for name in _ORDER_FIELDS if fields.has(name)]
        order_type, price, stop_price, tif = "market", None, None, None
    else:
        _check_order_shape(order_type, price, stop_price)

    stop_loss = _bracket(fields, "stop_loss")
    take_profit, take_profits = _take_profits(fields)
    trailing_stop = _bracket(fields, "trailing_stop", distances_only=True)
    breakeven = bool(fields.boolean("breakeven"))
    if trailing_stop is not None and stop_loss is not None:
        raise AlertRejected(
            "stop_loss and trailing_stop are both given",
            field="trailing_stop",
            expected="one stop: stop_loss, or trailing_stop (a stop loss that trails)",
        )
    for name, given in (("stop_loss", stop_loss), ("take_profit", take_profit or take_profits),
                        ("trailing_stop", trailing_stop), ("breakeven", breakeven)):  # fmt: skip
        if given and intent not in _BRACKET_INTENTS:
            raise AlertRejected(
                f"{name} does not apply to action {intent}",
                field=name,
                expected="brackets only with buy, sell, reverse or target_position",
            )
    for name, given in (("take_profit", take_profits), ("trailing_stop", trailing_stop),
                        ("breakeven", breakeven)):  # fmt: skip
        if given and intent != "order":
            # A reversal or target move places no bracket on a position it turns (item 4 of
            # issue 9 decides that); these must never be dropped silently.
            raise AlertRejected(
                f"{name} is only for buy and sell entries, not {intent}",
                field=name,
                expected="several take profits, trailing stops and breakeven with buy or sell",
            )
    if breakeven and (len(take_profits) < 1 or (stop_loss is None and trailing_stop is None)):
        raise AlertRejected(
            "breakeven needs take profits with quantities and a stop",
            field="breakeven",
            expected="take_profit as a list with quantities, and stop_loss or trailing_stop",
        )
    if take_profits and quantity is not None and intent == "order":
        _check_scale_out(take_profits, quantity, stop=stop_loss or trailing_stop,
                         breakeven=breakeven)  # fmt: skip

    return ParsedAlert(
        format="tradebridge",
        intent=intent,
        symbol=symbol,
        side=side,
        quantity=quantity,
        order_type=order_type,
        price=price,
        stop_price=stop_price,
        tif=tif,
        stop_loss=stop_loss,
        take_profit=take_profit,
        take_profits=take_profits,
        trailing_stop=trailing_stop,
        breakeven=breakeven,
        accounts=_accounts(fields),
        strategy=fields.text("strategy"),
        alert_id=fields.text("id"),
        fired_at=fields.time("time"),
        target_position=target,
        reference_price=fields.positive("reference_price"),
        comment=fields.text("comment"),
        ignored_fields=tuple(dict.fromkeys(ignored)),
    )


def fields_unknown(body: Mapping[str, Any]) -> list[str]:
    """Return the top-level fields the tradebridge format does not define."""
    return [name for name in body if name not in TRADEBRIDGE_FIELDS]


def _check_order_shape(order_type: str, price: Any, stop_price: Any) -> None:
    needs_price = order_type in {"limit", "stoplimit"}
    needs_stop = order_type in {"stop", "stoplimit"}
    if needs_price and price is None:
        raise AlertRejected(
            f"a {order_type} order needs price", field="price", expected="the limit price"
        )
    if needs_stop and stop_price is None:
        raise AlertRejected(
            f"a {order_type} order needs stop_price",
            field="stop_price",
            expected="the stop (trigger) price",
        )
    if not needs_price and price is not None:
        raise AlertRejected(
            f"price is only for limit and stoplimit orders, this one is {order_type}",
            field="price",
            expected="no price, or order_type limit; put {{close}} in reference_price",
        )
    if not needs_stop and stop_price is not None:
        raise AlertRejected(
            f"stop_price is only for stop and stoplimit orders, this one is {order_type}",
            field="stop_price",
            expected="no stop_price, or order_type stop / stoplimit",
        )


def _check_market_position(target: Any, market_position: str | None) -> None:
    if market_position is None:
        return
    agrees = {"long": target > 0, "short": target < 0, "flat": target == 0}[market_position]
    if not agrees:
        raise AlertRejected(
            f"market_position {market_position} contradicts target_position {target}",
            field="market_position",
            expected="long with a positive, short with a negative, flat with a zero target",
        )


MAX_TAKE_PROFITS = 3
_DISTANCES: tuple[BracketUnit, ...] = ("ticks", "points", "dollars")


def _take_profits(fields: FieldReader) -> tuple[AlertBracket | None, tuple[TakeProfit, ...]]:
    """Read ``take_profit``: one object, or a list of up to three with quantities."""
    value = fields.raw("take_profit")
    if not isinstance(value, list):
        return _bracket(fields, "take_profit"), ()
    expected = ('a list of up to 3 {"ticks"|"points"|"dollars": x, "quantity": q}, '
                "each closing q contracts")  # fmt: skip
    if not value or len(value) > MAX_TAKE_PROFITS:
        raise AlertRejected(f"take_profit has {len(value)} targets", field="take_profit",
                            expected=expected)  # fmt: skip
    found: list[TakeProfit] = []
    for index, item in enumerate(value):
        where = f"take_profit[{index}]"
        if not isinstance(item, dict):
            raise AlertRejected(f"{where} is not an object", field=where, expected=expected)
        leg = FieldReader(item, prefix=f"{where}.")
        quantity = leg.whole("quantity", required=len(value) > 1)
        units = {k: v for k, v in item.items() if k != "quantity"}
        bracket = _bracket_of(units, where, distances_only=True)
        if quantity is None:  # one target without a quantity: the plain take profit
            return bracket, ()
        found.append(TakeProfit(bracket, quantity))
    return None, tuple(found)


def _check_scale_out(
    take_profits: tuple[TakeProfit, ...], quantity: Any, *, stop: Any, breakeven: bool
) -> None:
    total = sum(t.quantity for t in take_profits)
    if total > quantity:
        raise AlertRejected(
            f"take_profit quantities add up to {total}, more than the order's {quantity}",
            field="take_profit",
            expected="target quantities that add up to at most quantity",
        )
    if total < quantity and stop is None:
        raise AlertRejected(
            f"take_profit closes {total} of {quantity} contracts and there is no stop: the "
            "rest would have no protective order",
            field="take_profit",
            expected="quantities that add up to quantity, or a stop_loss / trailing_stop",
        )
    if breakeven and take_profits[0].quantity == quantity:
        raise AlertRejected(
            "breakeven: nothing is left after the first take profit",
            field="breakeven",
            expected="a first take profit for part of the quantity",
        )


def _bracket(
    fields: FieldReader, name: str, *, distances_only: bool = False
) -> AlertBracket | None:
    value = fields.obj(name)
    if value is None:
        return None
    return _bracket_of(value, name, distances_only=distances_only)


def _bracket_of(
    value: Mapping[str, Any], name: str, *, distances_only: bool = False
) -> AlertBracket:
    units = _DISTANCES if distances_only else BRACKET_UNITS
    expected = "one of " + ", ".join(f'{{"{u}": x}}' for u in units)
    present = [k for k in value if value[k] is not None]
    unknown = [k for k in present if k not in units]
    if unknown or len(present) != 1:
        what = f"unknown key {unknown[0]}" if unknown else f"{len(present)} units"
        if distances_only and unknown == ["price"]:
            what = "a price; it must be a distance from the fill"
        raise AlertRejected(f"{name} has {what}", field=name, expected=expected)
    unit = present[0]
    number = to_decimal(value[unit], f"{name}.{unit}", "a number above 0")
    if number <= 0:
        raise AlertRejected(
            f"{name}.{unit} is {number}", field=f"{name}.{unit}", expected="a number above 0"
        )
    if unit == "ticks":
        number = check_whole(number, f"{name}.ticks")
    return AlertBracket(unit=unit, value=number)  # type: ignore[arg-type]  # unit is a BracketUnit


def _accounts(fields: FieldReader) -> tuple[AccountRef, ...]:
    single = fields.text("account", expected="an account name or group:NAME")
    many = fields.raw("accounts")
    if single is not None and many is not None:
        raise AlertRejected(
            "account and accounts are both given",
            field="accounts",
            expected="account (one name) or accounts (a list), not both",
        )
    if single is not None:
        return (AccountRef(single),)
    if many is None:
        return ()
    if isinstance(many, str):
        many = [many]
    if not isinstance(many, list) or not many:
        raise AlertRejected(
            "accounts must be a non-empty list",
            field="accounts",
            expected='a list of names, "group:NAME" or {"account": name, "multiplier": n}',
        )
    refs: list[AccountRef] = []
    for index, item in enumerate(many):
        where = f"accounts[{index}]"
        if isinstance(item, str) and item.strip():
            refs.append(AccountRef(item.strip()))
            continue
        if not isinstance(item, dict):
            raise AlertRejected(
                f"{where} is not a name or an object",
                field=where,
                expected='a name, "group:NAME" or {"account": name, "multiplier": n}',
            )
        entry = FieldReader(item, prefix=f"{where}.")
        name = entry.text("account", required=True, expected="an account name")
        multiplier = entry.positive("multiplier") or to_decimal(1, where)
        extra = entry.unread()
        if extra:
            raise AlertRejected(
                f"{where} has unknown field {extra[0]}",
                field=f"{where}.{extra[0]}",
                expected="account and multiplier",
            )
        assert name is not None
        refs.append(AccountRef(name, multiplier))
    return tuple(refs)


# --- OpenAPI ---------------------------------------------------------------------------------
# Documentation only: the webhook reads the raw body itself (TradingView may send JSON as
# text/plain) and the parser above enforces the rules; a test checks that this model and
# TRADEBRIDGE_FIELDS name the same fields.


class BracketSpec(OpenApiModel):
    """A stop loss or take profit: exactly one unit."""

    ticks: int | str | None = Field(None, description="whole ticks from the entry")
    points: Number | None = Field(None, description="price points from the entry")
    price: Number | None = Field(None, description="an absolute price")
    dollars: Number | None = Field(None, description="dollars of risk (or profit) per contract")


class TargetSpec(OpenApiModel):
    """One take profit of a scale-out: a distance and the contracts it closes."""

    ticks: int | str | None = Field(None, description="whole ticks from the fill")
    points: Number | None = Field(None, description="price points from the fill")
    dollars: Number | None = Field(None, description="dollars of profit per contract")
    quantity: Number | None = Field(None, description="contracts; required with 2 or 3 targets")


class DistanceSpec(OpenApiModel):
    """A distance from the fill: exactly one unit (a trailing stop)."""

    ticks: int | str | None = None
    points: Number | None = None
    dollars: Number | None = None


class AccountSpec(OpenApiModel):
    """One account of a fan-out with its quantity multiplier."""

    account: str
    multiplier: Number = Field(Decimal(1), description="quantity x multiplier must be whole")


class TradebridgeAlert(OpenApiModel):
    """tradebridge's own format (docs/tradingview.md). Unknown fields are a 400."""

    secret: str | None = Field(None, description="the webhook secret, unless in the URL path")
    symbol: str | None = Field(
        None, description="MNQ1!, CME_MINI:MNQ1!, MNQZ6, MNQZ2026 or MNQ; not needed to flatten"
    )
    action: Literal["buy", "sell", "exit", "reverse", "cancel", "flatten", "kill"] | None = Field(
        None,
        description="required unless target_position is given; kill throws the kill switch "
        "(docs/kill-switch.md)",
    )
    side: Literal["buy", "sell", "long", "short"] | None = Field(
        None,
        description="reverse only (required): the side to end on, which a reverse from flat opens",
    )
    quantity: Number | None = Field(
        None, description="whole contracts; required for buy, sell and reverse"
    )
    order_type: Literal["market", "limit", "stop", "stoplimit"] = "market"
    price: Number | None = Field(None, description="limit price (limit, stoplimit)")
    stop_price: Number | None = Field(None, description="trigger price (stop, stoplimit)")
    tif: Literal["day", "gtc", "ioc", "fok"] | None = None
    stop_loss: BracketSpec | None = None
    take_profit: BracketSpec | list[TargetSpec] | None = Field(
        None, description="one take profit, or up to 3 with quantities (scale-out; native)"
    )
    trailing_stop: DistanceSpec | None = Field(
        None, description="a stop loss that follows the best price by this distance (native)"
    )
    breakeven: bool | None = Field(
        None, description="after the first take profit, move the other stops to the fill"
    )
    account: str | None = Field(None, description='an account name or "group:NAME"')
    accounts: list[str | AccountSpec] | None = Field(
        None, description='names, "group:NAME" or {"account", "multiplier"}'
    )
    strategy: str | None = None
    id: str | None = Field(None, description="the alert's identity, e.g. {{strategy.order.id}}")
    time: str | None = Field(None, description="fire time, {{timenow}}")
    target_position: Number | None = Field(
        None, description="signed position wanted ({{strategy.position_size}})"
    )
    market_position: Literal["long", "short", "flat"] | None = Field(
        None, description="{{strategy.market_position}}; checked against target_position"
    )
    reference_price: Number | None = Field(None, description="{{close}}; informational")
    comment: str | None = Field(None, description="kept with the rows; with kill: the reason")
    flatten: bool | None = Field(
        None, description="kill only: also close the positions and cancel the working orders"
    )

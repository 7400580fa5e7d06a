"""Alerts written for TradersPost, read with the meanings TradersPost documents.

https://docs.traderspost.io/docs/developer-resources/webhook-reference ; the subset supported
is in docs/tradingview.md. A field that would change the order but that tradebridge cannot
honour (``action: add``, a trailing-stop order type) is a 400 naming it; a field that changes
nothing here (``interval``) is accepted and listed in the answer's ``ignored_fields``. A field
TradersPost does not document is a 400, as in the tradebridge format.
"""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal
from typing import Any, Literal

from pydantic import Field

from tradebridge.intake.formats._fields import FieldReader, reject_unknown, unsupported
from tradebridge.intake.formats._schema import Number, OpenApiModel
from tradebridge.intake.formats.alert import AlertBracket, AlertIntent, AlertRejected, ParsedAlert

TRADERSPOST_FIELDS: frozenset[str] = frozenset(
    {
        "ticker", "action", "sentiment", "quantity", "quantityType", "signalPrice", "price",
        "orderType", "limitPrice", "stopPrice", "timeInForce", "takeProfit", "stopLoss",
        "cancel", "time", "interval", "extras", "extendedHours", "ignoreTradingWindows",
        "trailAmount", "trailPercent", "secret", "passphrase",
    }
)  # fmt: skip
# Informational (or, for futures, inert) in TradersPost's own documentation.
_INERT = ("interval", "extras", "extendedHours", "ignoreTradingWindows")
_ACTIONS = {"buy": "buy", "sell": "sell", "exit": "exit", "cancel": "cancel", "add": "add"}
_SENTIMENTS = {"bullish": "long", "long": "long", "bearish": "short", "short": "short",
               "flat": "flat"}  # fmt: skip
_ORDER_TYPES = {"market": "market", "limit": "limit", "stop": "stop",
                "stop_limit": "stoplimit", "trailing_stop": "trailing_stop"}  # fmt: skip
_TIFS = {"day": "day", "gtc": "gtc", "ioc": "ioc", "fok": "fok", "opg": "opg", "cls": "cls"}


def parse_traderspost(body: Mapping[str, Any]) -> ParsedAlert:
    """Parse a TradersPost-style alert."""
    fields = FieldReader(body)
    reject_unknown([k for k in body if k not in TRADERSPOST_FIELDS], TRADERSPOST_FIELDS)
    fields.raw("secret")
    fields.raw("passphrase")
    ignored = [name for name in _INERT if name in body]
    for name in _INERT:
        fields.raw(name)

    action = fields.choice("action", _ACTIONS, required=True)
    if action == "add":
        unsupported("action", "add (adding in the position's direction needs the position)")
    sentiment = fields.choice("sentiment", _SENTIMENTS)
    if sentiment is not None and action not in {"buy", "sell"}:
        raise AlertRejected(
            f"sentiment is only valid with buy or sell, not {action}",
            field="sentiment",
            expected="no sentiment with exit / cancel",
        )
    quantity_type = fields.text("quantityType")
    if quantity_type is not None and quantity_type != "fixed_quantity":
        unsupported("quantityType", f"{quantity_type} (only fixed_quantity: contracts)")
    for name in ("trailAmount", "trailPercent"):
        if fields.has(name):
            unsupported(name, "trailing stops")

    intent: AlertIntent
    side: str | None = None
    quantity = fields.whole("quantity")
    if action == "cancel":
        intent = "cancel"
        if quantity is not None:
            ignored.append("quantity")
            quantity = None
    elif action == "exit" or sentiment == "flat":
        # TradersPost: exit, or buy/sell with sentiment flat, closes the position (an exit
        # with a quantity closes that many).
        intent = "exit"
        if sentiment == "flat" and quantity is not None:
            ignored.append("quantity")
            quantity = None
    else:
        intent, side = "order", action
        if quantity is None:
            raise AlertRejected(
                "quantity is missing", field="quantity", expected="a whole number above 0"
            )

    reference = fields.positive("signalPrice")
    alias = fields.positive("price")
    if reference is not None and alias is not None and reference != alias:
        raise AlertRejected(
            "signalPrice and price differ", field="price", expected="one reference price"
        )
    reference = reference if reference is not None else alias

    order_type = fields.choice("orderType", _ORDER_TYPES, default="market")
    if order_type == "trailing_stop":
        unsupported("orderType", "trailing_stop")
    limit_price = fields.positive("limitPrice")
    stop_price = fields.positive("stopPrice")
    tif = fields.choice("timeInForce", _TIFS)
    if tif in {"opg", "cls"}:
        unsupported("timeInForce", f"{tif} (futures have no opening or closing auction order)")
    assert order_type is not None
    if intent == "cancel":
        ignored += [n for n in ("orderType", "limitPrice", "stopPrice", "timeInForce")
                    if fields.has(n)]  # fmt: skip
        order_type, limit_price, stop_price, tif = "market", None, None, None
    else:
        _check_shape("orderType", order_type, limit_price, stop_price)

    take_profit = _bracket(fields, "takeProfit", reference)
    trailing_stop = _trailing_stop(fields, reference)
    stop_loss = None if trailing_stop is not None else _bracket(fields, "stopLoss", reference)
    if intent != "order" and (take_profit or stop_loss or trailing_stop):
        raise AlertRejected(
            f"takeProfit / stopLoss do not apply to {action}",
            field="takeProfit" if take_profit else "stopLoss",
            expected="brackets only on buy / sell entries",
        )
    cancel_first = bool(fields.boolean("cancel")) and intent != "cancel"

    return ParsedAlert(
        format="traderspost",
        intent=intent,
        symbol=fields.text("ticker", required=True, expected="a symbol like MNQU2025"),
        side=side,
        quantity=quantity,
        order_type=order_type,
        price=limit_price,
        stop_price=stop_price,
        tif=tif,
        stop_loss=stop_loss,
        take_profit=take_profit,
        trailing_stop=trailing_stop,
        fired_at=fields.time("time"),
        reference_price=reference,
        cancel_first=cancel_first,
        ignored_fields=tuple(dict.fromkeys(ignored)),
    )


def _trailing_stop(fields: FieldReader, reference: Decimal | None) -> AlertBracket | None:
    """Read ``stopLoss`` of ``type: "trailing_stop"``: a stop loss that trails (or None).

    ``trailAmount`` is a distance in price units (points), ``trailPercent`` a percentage of
    ``signalPrice``; the stop follows the best price by it (a native order strategy).
    """
    value = fields.obj("stopLoss")
    if value is None or str(value.get("type", "")).strip().lower() != "trailing_stop":
        return None
    leg = FieldReader(value, prefix="stopLoss.")
    leg.raw("type")
    amount, percent = leg.positive("trailAmount"), leg.positive("trailPercent")
    extra = leg.unread()
    if extra:
        raise AlertRejected(
            f"stopLoss has {extra[0]} with type trailing_stop",
            field=f"stopLoss.{extra[0]}",
            expected="type trailing_stop with one of trailAmount, trailPercent",
        )
    if (amount is None) == (percent is None):
        raise AlertRejected(
            "stopLoss of type trailing_stop needs exactly one of trailAmount, trailPercent",
            field="stopLoss",
            expected="one of trailAmount (price units), trailPercent",
        )
    if amount is not None:
        return AlertBracket("points", amount)
    assert percent is not None
    if reference is None:
        raise AlertRejected(
            "stopLoss.trailPercent needs the alert's price",
            field="signalPrice",
            expected="signalPrice ({{close}}) with a percent trailing stop",
        )
    return AlertBracket("points", reference * percent / 100)


def _bracket(fields: FieldReader, name: str, reference: Decimal | None) -> AlertBracket | None:
    value = fields.obj(name)
    if value is None:
        return None
    leg = FieldReader(value, prefix=f"{name}.")
    if name == "stopLoss":
        kind = leg.choice("type", {"stop": "stop", "stop_limit": "stop_limit",
                                   "trailing_stop": "trailing_stop"}, default="stop")  # fmt: skip
        if kind != "stop":
            unsupported(f"{name}.type", f"{kind} (stop losses are stop orders)")
        for trail in ("trailAmount", "trailPercent"):
            if leg.has(trail):
                unsupported(f"{name}.{trail}", "trailing stops")
        if leg.has("limitPrice"):
            unsupported(f"{name}.limitPrice", "stop-limit stop losses")
        price_key = "stopPrice"
    else:
        price_key = "limitPrice"
    forms = {
        "price": leg.positive(price_key),
        "percent": leg.positive("percent"),
        "amount": leg.positive("amount"),
    }
    extra = leg.unread()
    if extra:
        raise AlertRejected(
            f"{name} has unknown field {extra[0]}",
            field=f"{name}.{extra[0]}",
            expected=f"one of {price_key}, percent, amount",
        )
    given = {k: v for k, v in forms.items() if v is not None}
    if len(given) != 1:
        raise AlertRejected(
            f"{name} has {len(given)} forms", field=name,
            expected=f"exactly one of {price_key}, percent, amount",
        )  # fmt: skip
    form, number = next(iter(given.items()))
    if form == "price":
        return AlertBracket("price", number)
    if form == "amount":  # TradersPost: a distance in price units from the entry
        return AlertBracket("points", number)
    if reference is None:
        raise AlertRejected(
            f"{name}.percent needs the alert's price",
            field="signalPrice",
            expected="signalPrice ({{close}}) with a percent bracket",
        )
    return AlertBracket("points", reference * number / 100)


def _check_shape(name: str, order_type: str, limit: Any, stop: Any) -> None:
    if order_type in {"limit", "stoplimit"} and limit is None:
        raise AlertRejected(
            f"{name} {order_type} needs limitPrice", field="limitPrice", expected="a price"
        )
    if order_type in {"stop", "stoplimit"} and stop is None:
        raise AlertRejected(
            f"{name} {order_type} needs stopPrice", field="stopPrice", expected="a price"
        )
    if order_type not in {"limit", "stoplimit"} and limit is not None:
        raise AlertRejected(
            f"limitPrice is set on a {order_type} order",
            field="limitPrice",
            expected=f"no limitPrice, or {name} limit",
        )
    if order_type not in {"stop", "stoplimit"} and stop is not None:
        raise AlertRejected(
            f"stopPrice is set on a {order_type} order",
            field="stopPrice",
            expected=f"no stopPrice, or {name} stop",
        )


# --- OpenAPI ---------------------------------------------------------------------------------
# Documentation only: the webhook reads the raw body itself (TradingView may send JSON as
# text/plain) and the parser above enforces the rules; a test checks that this model and
# TRADERSPOST_FIELDS name the same fields.


class TakeProfitSpec(OpenApiModel):
    """TradersPost ``takeProfit``: exactly one form."""

    limitPrice: Number | None = None  # noqa: N815 - the vendor's field name
    percent: Number | None = None
    amount: Number | None = None


class StopLossSpec(OpenApiModel):
    """TradersPost ``stopLoss``: type stop and one of stopPrice, percent, amount; or type
    trailing_stop and one of trailAmount, trailPercent (native accounts)."""

    type: Literal["stop", "trailing_stop"] = "stop"
    stopPrice: Number | None = None  # noqa: N815 - the vendor's field name
    percent: Number | None = None
    amount: Number | None = None
    trailAmount: Number | None = None  # noqa: N815 - the vendor's field name
    trailPercent: Number | None = None  # noqa: N815 - the vendor's field name


class TradersPostAlert(OpenApiModel):
    """TradersPost-style alert: the supported subset (docs/tradingview.md)."""

    ticker: str
    action: Literal["buy", "sell", "exit", "cancel"]
    sentiment: Literal["bullish", "long", "bearish", "short", "flat"] | None = None
    quantity: Number | None = None
    quantityType: Literal["fixed_quantity"] | None = None  # noqa: N815 - vendor name
    signalPrice: Number | None = None  # noqa: N815 - vendor name
    price: Number | None = None
    orderType: Literal["market", "limit", "stop", "stop_limit"] | None = None  # noqa: N815
    limitPrice: Number | None = None  # noqa: N815 - vendor name
    stopPrice: Number | None = None  # noqa: N815 - vendor name
    timeInForce: Literal["day", "gtc", "ioc", "fok"] | None = None  # noqa: N815
    takeProfit: TakeProfitSpec | None = None  # noqa: N815 - vendor name
    stopLoss: StopLossSpec | None = None  # noqa: N815 - vendor name
    cancel: bool | None = None
    time: str | None = None
    interval: str | None = Field(None, description="ignored")
    extras: dict[str, Any] | None = Field(None, description="ignored")
    extendedHours: bool | None = Field(None, description="ignored")  # noqa: N815
    ignoreTradingWindows: bool | None = Field(None, description="ignored")  # noqa: N815
    trailAmount: None = Field(None, description="refused: trailing stops")  # noqa: N815
    trailPercent: None = Field(None, description="refused: trailing stops")  # noqa: N815
    secret: str | None = None
    passphrase: str | None = None

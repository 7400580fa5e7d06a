"""Alerts written for TradersPost or PickMyTrade, read with the meanings their vendors document.

The subset supported is in docs/tradingview.md. A field that would change the order but that
tradebridge cannot honour (a trailing stop, risk-based sizing) is a 400 naming it; a field
that changes nothing here (TradersPost's ``interval``) is accepted and listed in the answer's
``ignored_fields``. A field neither vendor documents is a 400, as in the tradebridge format.
"""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal
from typing import Any

from tradebridge.intake.formats import (
    AccountRef,
    AlertRejected,
    Bracket,
    FieldReader,
    Intent,
    ParsedAlert,
    reject_unknown,
)

# --- TradersPost -----------------------------------------------------------------------------
# https://docs.traderspost.io/docs/developer-resources/webhook-reference

TRADERSPOST_FIELDS: frozenset[str] = frozenset(
    {
        "ticker", "action", "sentiment", "quantity", "quantityType", "signalPrice", "price",
        "orderType", "limitPrice", "stopPrice", "timeInForce", "takeProfit", "stopLoss",
        "cancel", "time", "interval", "extras", "extendedHours", "ignoreTradingWindows",
        "trailAmount", "trailPercent", "secret", "passphrase",
    }
)  # fmt: skip
# Informational (or, for futures, inert) in TradersPost's own documentation.
_TP_INERT = ("interval", "extras", "extendedHours", "ignoreTradingWindows")
_TP_ACTIONS = {"buy": "buy", "sell": "sell", "exit": "exit", "cancel": "cancel", "add": "add"}
_TP_SENTIMENTS = {"bullish": "long", "long": "long", "bearish": "short", "short": "short",
                  "flat": "flat"}  # fmt: skip
_TP_ORDER_TYPES = {"market": "market", "limit": "limit", "stop": "stop",
                   "stop_limit": "stoplimit", "trailing_stop": "trailing_stop"}  # fmt: skip
_TP_TIFS = {"day": "day", "gtc": "gtc", "ioc": "ioc", "fok": "fok", "opg": "opg", "cls": "cls"}


def parse_traderspost(body: Mapping[str, Any]) -> ParsedAlert:
    """Parse a TradersPost-style alert."""
    fields = FieldReader(body)
    reject_unknown([k for k in body if k not in TRADERSPOST_FIELDS], TRADERSPOST_FIELDS)
    fields.raw("secret")
    fields.raw("passphrase")
    ignored = [name for name in _TP_INERT if name in body]
    for name in _TP_INERT:
        fields.raw(name)

    action = fields.choice("action", _TP_ACTIONS, required=True)
    if action == "add":
        _unsupported("action", "add (adding in the position's direction needs the position)")
    sentiment = fields.choice("sentiment", _TP_SENTIMENTS)
    if sentiment is not None and action not in {"buy", "sell"}:
        raise AlertRejected(
            f"sentiment is only valid with buy or sell, not {action}",
            field="sentiment",
            expected="no sentiment with exit / cancel",
        )
    quantity_type = fields.text("quantityType")
    if quantity_type is not None and quantity_type != "fixed_quantity":
        _unsupported("quantityType", f"{quantity_type} (only fixed_quantity: contracts)")
    for name in ("trailAmount", "trailPercent"):
        if fields.has(name):
            _unsupported(name, "trailing stops")

    intent: Intent
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

    order_type = fields.choice("orderType", _TP_ORDER_TYPES, default="market")
    if order_type == "trailing_stop":
        _unsupported("orderType", "trailing_stop")
    limit_price = fields.positive("limitPrice")
    stop_price = fields.positive("stopPrice")
    tif = fields.choice("timeInForce", _TP_TIFS)
    if tif in {"opg", "cls"}:
        _unsupported("timeInForce", f"{tif} (futures have no opening or closing auction order)")
    assert order_type is not None
    if intent == "cancel":
        ignored += [n for n in ("orderType", "limitPrice", "stopPrice", "timeInForce")
                    if fields.has(n)]  # fmt: skip
        order_type, limit_price, stop_price, tif = "market", None, None, None
    else:
        _check_shape("orderType", order_type, limit_price, stop_price)

    take_profit = _tp_bracket(fields, "takeProfit", reference)
    trailing_stop = _tp_trailing_stop(fields, reference)
    stop_loss = None if trailing_stop is not None else _tp_bracket(fields, "stopLoss", reference)
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


def _tp_trailing_stop(fields: FieldReader, reference: Decimal | None) -> Bracket | None:
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
        return Bracket("points", amount)
    assert percent is not None
    if reference is None:
        raise AlertRejected(
            "stopLoss.trailPercent needs the alert's price",
            field="signalPrice",
            expected="signalPrice ({{close}}) with a percent trailing stop",
        )
    return Bracket("points", reference * percent / 100)


def _tp_bracket(fields: FieldReader, name: str, reference: Decimal | None) -> Bracket | None:
    value = fields.obj(name)
    if value is None:
        return None
    leg = FieldReader(value, prefix=f"{name}.")
    if name == "stopLoss":
        kind = leg.choice("type", {"stop": "stop", "stop_limit": "stop_limit",
                                   "trailing_stop": "trailing_stop"}, default="stop")  # fmt: skip
        if kind != "stop":
            _unsupported(f"{name}.type", f"{kind} (stop losses are stop orders)")
        for trail in ("trailAmount", "trailPercent"):
            if leg.has(trail):
                _unsupported(f"{name}.{trail}", "trailing stops")
        if leg.has("limitPrice"):
            _unsupported(f"{name}.limitPrice", "stop-limit stop losses")
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
        return Bracket("price", number)
    if form == "amount":  # TradersPost: a distance in price units from the entry
        return Bracket("points", number)
    if reference is None:
        raise AlertRejected(
            f"{name}.percent needs the alert's price",
            field="signalPrice",
            expected="signalPrice ({{close}}) with a percent bracket",
        )
    return Bracket("points", reference * number / 100)


# --- PickMyTrade -----------------------------------------------------------------------------
# https://pickmytrade.trade/pages/alert.html ; https://docs.pickmytrade.trade/

PICKMYTRADE_FIELDS: frozenset[str] = frozenset(
    {
        "symbol", "date", "data", "quantity", "risk_percentage", "price", "order_type",
        "tp", "percentage_tp", "dollar_tp", "sl", "percentage_sl", "dollar_sl",
        "trail", "trail_stop", "trail_trigger", "trail_freq", "update_tp", "update_sl",
        "breakeven", "token", "account_id", "duplicate_position_allow", "pyramid",
        "reverse_order_close", "same_direction_ignore", "platform", "connection_name",
        "multiple_accounts",
    }
)  # fmt: skip
_PMT_DATA = {"buy": "buy", "sell": "sell", "close": "close"}
_PMT_ORDER_TYPES = {"mkt": "market", "market": "market", "lmt": "limit", "limit": "limit"}
# Values that mean "off" in PickMyTrade's templates: accepted (and listed) when off.
_PMT_OFF_NUMBERS = ("risk_percentage", "percentage_tp", "percentage_sl", "trail_trigger",
                    "trail_freq", "breakeven")  # fmt: skip
_PMT_OFF_BOOLS = ("update_tp", "update_sl")
_PMT_ENTRY_FIELDS = frozenset(
    {"token", "account_id", "connection_name", "risk_percentage", "quantity_multiplier"}
)


def parse_pickmytrade(body: Mapping[str, Any]) -> ParsedAlert:
    """Parse a PickMyTrade-style alert."""
    fields = FieldReader(body)
    reject_unknown([k for k in body if k not in PICKMYTRADE_FIELDS], PICKMYTRADE_FIELDS)
    fields.raw("token")
    ignored: list[str] = []
    for name in _PMT_OFF_NUMBERS:
        value = fields.decimal(name)
        if value is not None and value != 0:
            _unsupported(name, _PMT_WHY.get(name, name))
        if value is not None:
            ignored.append(name)
    for name in _PMT_OFF_BOOLS:
        flag = fields.boolean(name)
        if flag:
            _unsupported(name, "modifying the brackets of an open position")
        if flag is not None:
            ignored.append(name)
    # The broker is the account's, from the settings: these change nothing here.
    ignored += [n for n in ("platform", "connection_name") if fields.text(n) is not None]
    trailing_stop = _pmt_trailing_stop(fields, ignored)

    data = fields.choice("data", _PMT_DATA, required=True)
    reverse_close = bool(fields.boolean("reverse_order_close"))
    pyramid = fields.boolean("pyramid")
    duplicate_allow = fields.boolean("duplicate_position_allow")
    same_ignore = fields.boolean("same_direction_ignore")
    reference = fields.positive("price")
    order_type = fields.choice("order_type", _PMT_ORDER_TYPES, default="market")
    quantity = fields.whole("quantity", allow_zero=True)

    intent: Intent
    side: str | None = None
    target: Decimal | None = None
    if data == "close":
        # PickMyTrade: close the open position and cancel its open orders.
        intent = "exit"
        if quantity is not None:
            ignored.append("quantity")
        quantity = None
        for name, flag in (("reverse_order_close", reverse_close), ("pyramid", pyramid),
                            ("duplicate_position_allow", duplicate_allow),
                            ("same_direction_ignore", same_ignore)):  # fmt: skip
            if flag is not None and name in body:
                ignored.append(name)
    else:
        side = data
        if quantity is None or quantity == 0:
            raise AlertRejected(
                "quantity is missing or 0",
                field="quantity",
                expected="a whole number of contracts above 0 (risk sizing is not supported)",
            )
        if reverse_close and pyramid:
            _unsupported(
                "pyramid",
                "pyramid with reverse_order_close (closing the opposite side while stacking "
                "this side needs the broker position; send a close alert first)",
            )
        if reverse_close:
            # reverse_order_close without pyramid closes any position, then opens
            # ``quantity`` in this direction: the position this alert wants is +/- quantity.
            intent, target = "target", quantity if data == "buy" else -quantity
            quantity = None
            # reverse_order_close and pyramid made it a target: honoured, not ignored.
            ignored += [n for n in ("duplicate_position_allow", "same_direction_ignore")
                        if n in body]  # fmt: skip
        else:
            intent = "order"
            if duplicate_allow is False:
                _unsupported("duplicate_position_allow", "false (skipping a signal because a "
                             "position exists needs the broker position)")  # fmt: skip
            if same_ignore:
                _unsupported("same_direction_ignore", "true (it needs the broker position)")
            ignored += [n for n in ("reverse_order_close", "pyramid", "duplicate_position_allow",
                                    "same_direction_ignore") if n in body]  # fmt: skip

    assert order_type is not None
    limit_price: Decimal | None = None
    if intent == "exit":
        if "order_type" in body:
            ignored.append("order_type")
        order_type = "market"
    elif order_type == "limit":
        if reference is None:
            raise AlertRejected(
                "an LMT order needs price", field="price", expected="the limit price"
            )
        limit_price = reference  # PickMyTrade: price is the limit price of an LMT order

    units = quantity if quantity is not None else (abs(target) if target is not None else None)
    take_profit = _pmt_bracket(fields, "tp", "dollar_tp", units)
    stop_loss = _pmt_bracket(fields, "sl", "dollar_sl", units)
    if trailing_stop is not None and stop_loss is not None:
        raise AlertRejected(
            "sl / dollar_sl and a trailing stop (trail) are both set",
            field="trail",
            expected="one stop: sl or dollar_sl, or trail 1 with trail_stop",
        )
    if trailing_stop is not None and intent != "order":
        raise AlertRejected(
            "a trailing stop (trail) is only for plain buy / sell entries, not with "
            "reverse_order_close or close",
            field="trail",
            expected="trail 0 here, or reverse_order_close false",
        )
    if intent == "exit" and (take_profit or stop_loss or trailing_stop):
        raise AlertRejected(
            "tp / sl do not apply to close", field="tp" if take_profit else "sl",
            expected="0 or absent with data close",
        )  # fmt: skip

    return ParsedAlert(
        format="pickmytrade",
        intent=intent,
        symbol=fields.text("symbol", required=True, expected="a symbol like MNQ1!"),
        side=side,
        quantity=quantity,
        order_type=order_type,
        price=limit_price,
        stop_loss=stop_loss,
        take_profit=take_profit,
        trailing_stop=trailing_stop,
        accounts=_pmt_accounts(fields),
        fired_at=fields.time("date"),
        target_position=target,
        reference_price=reference,
        ignored_fields=tuple(dict.fromkeys(ignored)),
    )


_PMT_WHY = {
    "risk_percentage": "risk-based sizing (send quantity)",
    "percentage_tp": "percentage take profits (use tp or dollar_tp)",
    "percentage_sl": "percentage stop losses (use sl or dollar_sl)",
    "trail_trigger": "a trailing stop that starts after a trigger (it trails from the fill)",
    "trail_freq": "a trailing stop that moves in steps (it follows every tick)",
    "breakeven": "breakeven offsets (tradebridge's breakeven follows the first of several "
    "take profits, which PickMyTrade alerts cannot express here)",
}


def _pmt_trailing_stop(fields: FieldReader, ignored: list[str]) -> Bracket | None:
    """Read ``trail`` (1 on, 0 off) and ``trail_stop``: a stop that trails by that many points."""
    trail = fields.decimal("trail")
    distance = fields.decimal("trail_stop")
    if trail is None or trail == 0:
        if distance:
            raise AlertRejected("trail_stop is set but trail is 0", field="trail",
                                expected="trail 1 to use trail_stop")  # fmt: skip
        ignored += [n for n in ("trail", "trail_stop") if fields.has(n)]
        return None
    if trail != 1:
        raise AlertRejected(f"trail is {trail}", field="trail", expected="1 (on) or 0 (off)")
    if distance is None or distance <= 0:
        raise AlertRejected("trail is 1 without a trail_stop", field="trail_stop",
                            expected="the trailing distance in price points, above 0")  # fmt: skip
    return Bracket("points", distance)


def _pmt_bracket(
    fields: FieldReader, price_key: str, dollar_key: str, units: Decimal | None
) -> Bracket | None:
    price = fields.decimal(price_key)
    dollars = fields.decimal(dollar_key)
    for key, number in ((price_key, price), (dollar_key, dollars)):
        if number is not None and number < 0:
            raise AlertRejected(f"{key} is {number}", field=key, expected="0 (off) or above 0")
    price = price or None
    dollars = dollars or None
    if price is not None and dollars is not None:
        raise AlertRejected(
            f"{price_key} and {dollar_key} are both set",
            field=dollar_key,
            expected="one of them, the other 0",
        )
    if price is not None:
        return Bracket("price", price)
    if dollars is not None:
        # PickMyTrade's dollar forms are the total for the alert's quantity; per contract
        # that is the total over the contracts (docs/tradingview.md).
        if units is None:  # data close: the caller refuses tp / sl there
            return Bracket("dollars", dollars)
        return Bracket("dollars", dollars / units)
    return None


def _pmt_accounts(fields: FieldReader) -> tuple[AccountRef, ...]:
    refs: list[AccountRef] = []
    main = fields.text("account_id", expected="an account name")
    if main is not None:
        refs.append(AccountRef(main))
    many = fields.raw("multiple_accounts")
    if many is None:
        return tuple(refs)
    if not isinstance(many, list):
        raise AlertRejected(
            "multiple_accounts must be a list",
            field="multiple_accounts",
            expected="a list of {account_id, quantity_multiplier, token}",
        )
    for index, item in enumerate(many):
        where = f"multiple_accounts[{index}]"
        if not isinstance(item, dict):
            raise AlertRejected(
                f"{where} is not an object", field=where, expected="{account_id, ...}"
            )
        entry = FieldReader(item, prefix=f"{where}.")
        unknown = [k for k in item if k not in _PMT_ENTRY_FIELDS]
        if unknown:
            raise AlertRejected(
                f"{where} has unknown field {unknown[0]}",
                field=f"{where}.{unknown[0]}",
                expected=", ".join(sorted(_PMT_ENTRY_FIELDS)),
            )
        name = entry.text("account_id", required=True, expected="an account name")
        risk = entry.decimal("risk_percentage")
        if risk:
            _unsupported(f"{where}.risk_percentage", "risk-based sizing")
        multiplier = entry.positive("quantity_multiplier") or Decimal(1)
        assert name is not None
        refs.append(AccountRef(name, multiplier))
    return tuple(refs)


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


def _unsupported(field: str, what: str) -> None:
    raise AlertRejected(
        f"{field}: tradebridge does not support {what}",
        field=field,
        expected="the supported subset in docs/tradingview.md",
    )

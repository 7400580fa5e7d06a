"""Alerts written for PickMyTrade, read with the meanings PickMyTrade documents.

https://pickmytrade.trade/pages/alert.html ; https://docs.pickmytrade.trade/ ; the subset
supported is in docs/tradingview.md. A field that would change the order but that
tradebridge cannot honour (risk-based sizing) is a 400 naming it; a field that changes
nothing here (``platform``, or a switch left off) is accepted and listed in the answer's
``ignored_fields``. A field PickMyTrade does not document is a 400, as in the tradebridge
format.
"""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal
from typing import Any, Literal

from pydantic import Field

from tradebridge.intake.formats._fields import FieldReader, reject_unknown, unsupported
from tradebridge.intake.formats._schema import Number, OpenApiModel
from tradebridge.intake.formats.alert import (
    AccountRef,
    AlertBracket,
    AlertIntent,
    AlertRejected,
    ParsedAlert,
)

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
_DATA = {"buy": "buy", "sell": "sell", "close": "close"}
_ORDER_TYPES = {"mkt": "market", "market": "market", "lmt": "limit", "limit": "limit"}
# Values that mean "off" in PickMyTrade's templates: accepted (and listed) when off.
_OFF_NUMBERS = ("risk_percentage", "percentage_tp", "percentage_sl", "trail_trigger",
                "trail_freq", "breakeven")  # fmt: skip
_OFF_BOOLS = ("update_tp", "update_sl")
_ENTRY_FIELDS = frozenset(
    {"token", "account_id", "connection_name", "risk_percentage", "quantity_multiplier"}
)


def parse_pickmytrade(body: Mapping[str, Any]) -> ParsedAlert:
    """Parse a PickMyTrade-style alert."""
    fields = FieldReader(body)
    reject_unknown([k for k in body if k not in PICKMYTRADE_FIELDS], PICKMYTRADE_FIELDS)
    fields.raw("token")
    ignored: list[str] = []
    for name in _OFF_NUMBERS:
        value = fields.decimal(name)
        if value is not None and value != 0:
            unsupported(name, _WHY.get(name, name))
        if value is not None:
            ignored.append(name)
    for name in _OFF_BOOLS:
        flag = fields.boolean(name)
        if flag:
            unsupported(name, "modifying the brackets of an open position")
        if flag is not None:
            ignored.append(name)
    # The broker is the account's, from the settings: these change nothing here.
    ignored += [n for n in ("platform", "connection_name") if fields.text(n) is not None]
    trailing_stop = _trailing_stop(fields, ignored)

    data = fields.choice("data", _DATA, required=True)
    reverse_close = bool(fields.boolean("reverse_order_close"))
    pyramid = fields.boolean("pyramid")
    duplicate_allow = fields.boolean("duplicate_position_allow")
    same_ignore = fields.boolean("same_direction_ignore")
    reference = fields.positive("price")
    order_type = fields.choice("order_type", _ORDER_TYPES, default="market")
    quantity = fields.whole("quantity", allow_zero=True)

    intent: AlertIntent
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
            unsupported(
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
                unsupported("duplicate_position_allow", "false (skipping a signal because a "
                            "position exists needs the broker position)")  # fmt: skip
            if same_ignore:
                unsupported("same_direction_ignore", "true (it needs the broker position)")
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
    take_profit = _bracket(fields, "tp", "dollar_tp", units)
    stop_loss = _bracket(fields, "sl", "dollar_sl", units)
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
        accounts=_accounts(fields),
        fired_at=fields.time("date"),
        target_position=target,
        reference_price=reference,
        ignored_fields=tuple(dict.fromkeys(ignored)),
    )


_WHY = {
    "risk_percentage": "risk-based sizing (send quantity)",
    "percentage_tp": "percentage take profits (use tp or dollar_tp)",
    "percentage_sl": "percentage stop losses (use sl or dollar_sl)",
    "trail_trigger": "a trailing stop that starts after a trigger (it trails from the fill)",
    "trail_freq": "a trailing stop that moves in steps (it follows every tick)",
    "breakeven": "breakeven offsets (tradebridge's breakeven follows the first of several "
    "take profits, which PickMyTrade alerts cannot express here)",
}


def _trailing_stop(fields: FieldReader, ignored: list[str]) -> AlertBracket | None:
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
    return AlertBracket("points", distance)


def _bracket(
    fields: FieldReader, price_key: str, dollar_key: str, units: Decimal | None
) -> AlertBracket | None:
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
        return AlertBracket("price", price)
    if dollars is not None:
        # PickMyTrade's dollar forms are the total for the alert's quantity; per contract
        # that is the total over the contracts (docs/tradingview.md).
        if units is None:  # data close: the caller refuses tp / sl there
            return AlertBracket("dollars", dollars)
        return AlertBracket("dollars", dollars / units)
    return None


def _accounts(fields: FieldReader) -> tuple[AccountRef, ...]:
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
        unknown = [k for k in item if k not in _ENTRY_FIELDS]
        if unknown:
            raise AlertRejected(
                f"{where} has unknown field {unknown[0]}",
                field=f"{where}.{unknown[0]}",
                expected=", ".join(sorted(_ENTRY_FIELDS)),
            )
        name = entry.text("account_id", required=True, expected="an account name")
        risk = entry.decimal("risk_percentage")
        if risk:
            unsupported(f"{where}.risk_percentage", "risk-based sizing")
        multiplier = entry.positive("quantity_multiplier") or Decimal(1)
        assert name is not None
        refs.append(AccountRef(name, multiplier))
    return tuple(refs)


# --- OpenAPI ---------------------------------------------------------------------------------
# Documentation only: the webhook reads the raw body itself (TradingView may send JSON as
# text/plain) and the parser above enforces the rules; a test checks that this model and
# PICKMYTRADE_FIELDS name the same fields.


class PickMyTradeAccount(OpenApiModel):
    """One entry of PickMyTrade's ``multiple_accounts``."""

    account_id: str
    token: str | None = None
    connection_name: str | None = None
    risk_percentage: Number | None = Field(None, description="must be 0")
    quantity_multiplier: Number | None = None


class PickMyTradeAlert(OpenApiModel):
    """PickMyTrade-style alert: the supported subset (docs/tradingview.md)."""

    symbol: str
    date: str | None = Field(None, description="{{timenow}}")
    data: Literal["buy", "sell", "close"]
    quantity: Number | None = None
    risk_percentage: Number | None = Field(None, description="must be 0")
    price: Number | None = Field(None, description="{{close}}; the limit price of LMT")
    order_type: Literal["MKT", "LMT"] | None = None
    tp: Number | None = Field(None, description="take-profit price; 0 off")
    percentage_tp: Number | None = Field(None, description="must be 0")
    dollar_tp: Number | None = Field(None, description="take profit in $ for the quantity")
    sl: Number | None = Field(None, description="stop-loss price; 0 off")
    percentage_sl: Number | None = Field(None, description="must be 0")
    dollar_sl: Number | None = Field(None, description="stop loss in $ for the quantity")
    trail: Number | None = Field(None, description="1: a trailing stop (native); 0 off")
    trail_stop: Number | None = Field(None, description="the trailing distance in points")
    trail_trigger: Number | None = Field(None, description="must be 0")
    trail_freq: Number | None = Field(None, description="must be 0")
    update_tp: bool | str | None = Field(None, description="must be false")
    update_sl: bool | str | None = Field(None, description="must be false")
    breakeven: Number | None = Field(None, description="must be 0")
    token: str | None = Field(None, description="the webhook secret")
    account_id: str | None = None
    duplicate_position_allow: bool | str | None = None
    pyramid: bool | str | None = None
    reverse_order_close: bool | str | None = None
    same_direction_ignore: bool | str | None = None
    platform: str | None = Field(None, description="ignored")
    connection_name: str | None = Field(None, description="ignored")
    multiple_accounts: list[PickMyTradeAccount] | None = None

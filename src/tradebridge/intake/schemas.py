"""OpenAPI models of the webhook: the three alert dialects and every answer.

Documentation only: the endpoint reads the raw body itself (TradingView may send JSON as
``text/plain``) and the parsers in ``intake/formats/`` enforce the rules;
a test checks that these models and the parsers know the same fields.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

Number = Decimal | str


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class BracketSpec(_Model):
    """A stop loss or take profit: exactly one unit."""

    ticks: int | str | None = Field(None, description="whole ticks from the entry")
    points: Number | None = Field(None, description="price points from the entry")
    price: Number | None = Field(None, description="an absolute price")
    dollars: Number | None = Field(None, description="dollars of risk (or profit) per contract")


class TargetSpec(_Model):
    """One take profit of a scale-out: a distance and the contracts it closes."""

    ticks: int | str | None = Field(None, description="whole ticks from the fill")
    points: Number | None = Field(None, description="price points from the fill")
    dollars: Number | None = Field(None, description="dollars of profit per contract")
    quantity: Number | None = Field(None, description="contracts; required with 2 or 3 targets")


class DistanceSpec(_Model):
    """A distance from the fill: exactly one unit (a trailing stop)."""

    ticks: int | str | None = None
    points: Number | None = None
    dollars: Number | None = None


class AccountSpec(_Model):
    """One account of a fan-out with its quantity multiplier."""

    account: str
    multiplier: Number = Field(Decimal(1), description="quantity x multiplier must be whole")


class TradebridgeAlert(_Model):
    """tradebridge's own format (docs/tradingview.md). Unknown fields are a 400."""

    secret: str | None = Field(None, description="the webhook secret, unless in the URL path")
    symbol: str | None = Field(
        None, description="MNQ1!, CME_MINI:MNQ1!, MNQZ6, MNQZ2026 or MNQ; not needed to flatten"
    )
    action: Literal["buy", "sell", "exit", "reverse", "cancel", "flatten"] | None = Field(
        None, description="required unless target_position is given"
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
    comment: str | None = None


class TakeProfitSpec(_Model):
    """TradersPost ``takeProfit``: exactly one form."""

    limitPrice: Number | None = None  # noqa: N815 - the vendor's field name
    percent: Number | None = None
    amount: Number | None = None


class StopLossSpec(_Model):
    """TradersPost ``stopLoss``: type stop and one of stopPrice, percent, amount; or type
    trailing_stop and one of trailAmount, trailPercent (native accounts)."""

    type: Literal["stop", "trailing_stop"] = "stop"
    stopPrice: Number | None = None  # noqa: N815 - the vendor's field name
    percent: Number | None = None
    amount: Number | None = None
    trailAmount: Number | None = None  # noqa: N815 - the vendor's field name
    trailPercent: Number | None = None  # noqa: N815 - the vendor's field name


class TradersPostAlert(_Model):
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


class PickMyTradeAccount(_Model):
    """One entry of PickMyTrade's ``multiple_accounts``."""

    account_id: str
    token: str | None = None
    connection_name: str | None = None
    risk_percentage: Number | None = Field(None, description="must be 0")
    quantity_multiplier: Number | None = None


class PickMyTradeAlert(_Model):
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


class AcceptedAnswer(BaseModel):
    """200: the alert is stored; workers place it."""

    status: Literal["accepted", "duplicate", "rejected"]
    signal_ids: list[str]
    group_id: str | None = None
    instrument: str | None = None
    format: str | None = None
    reason: str | None = Field(None, description="why a stored alert is not traded (stale)")
    detail: str | None = None
    ignored_fields: list[str] = Field(default_factory=list)
    notes: list[str] = Field(default_factory=list, description="e.g. rounding of brackets")
    original_status: str | None = Field(None, description="for a duplicate: the first answer")


class ErrorAnswer(BaseModel):
    """4xx / 503: nothing was stored."""

    status: Literal["invalid", "unauthorized", "forbidden", "too_large", "rate_limited",
                    "unavailable"]  # fmt: skip
    error: str
    field: str | None = None
    expected: str | None = None

"""Enumerations shared by every part of tradebridge, in our own (lowercase) spelling.

Each adapter translates them to its dialect in one place: the native API wants ``Buy`` and
``Limit``, the TradingView bridge wants ``buy`` and ``limit``.
"""

from __future__ import annotations

from enum import StrEnum


class Side(StrEnum):
    """Direction of an order."""

    BUY = "buy"
    SELL = "sell"

    @property
    def opposite(self) -> Side:
        """Return the other side (the side of a closing or bracket order)."""
        return Side.SELL if self is Side.BUY else Side.BUY

    @property
    def sign(self) -> int:
        """Return +1 for a buy and -1 for a sell."""
        return 1 if self is Side.BUY else -1


class OrderType(StrEnum):
    """Order types tradebridge places."""

    MARKET = "market"
    LIMIT = "limit"
    STOP = "stop"
    STOP_LIMIT = "stoplimit"

    @property
    def needs_limit_price(self) -> bool:
        """Return whether the type carries a limit price."""
        return self in (OrderType.LIMIT, OrderType.STOP_LIMIT)

    @property
    def needs_stop_price(self) -> bool:
        """Return whether the type carries a stop (trigger) price."""
        return self in (OrderType.STOP, OrderType.STOP_LIMIT)


class TimeInForce(StrEnum):
    """How long an order stays working."""

    DAY = "day"
    GTC = "gtc"
    IOC = "ioc"
    FOK = "fok"
    GTD = "gtd"


class OrderStatus(StrEnum):
    """The status of one order at the broker, as its reports and events say."""

    INITIALIZED = "initialized"  # known locally, not sent
    DENIED = "denied"  # our own checks said no; nothing was sent
    SUBMITTED = "submitted"  # sent, no answer yet
    UNKNOWN = "unknown"  # sent, answer lost: must be looked up before anything else
    WORKING = "working"  # accepted by the broker, resting
    PARTIALLY_FILLED = "partially_filled"
    PENDING_CANCEL = "pending_cancel"
    PENDING_REPLACE = "pending_replace"
    FILLED = "filled"
    CANCELLED = "cancelled"
    EXPIRED = "expired"
    REJECTED = "rejected"  # the broker said no

    @property
    def is_terminal(self) -> bool:
        """Return whether nothing can happen to the order any more."""
        return self in TERMINAL_STATUSES

    @property
    def is_open(self) -> bool:
        """Return whether the order rests at the broker and may still fill."""
        return self in OPEN_STATUSES


TERMINAL_STATUSES: frozenset[OrderStatus] = frozenset(
    {
        OrderStatus.DENIED,
        OrderStatus.FILLED,
        OrderStatus.CANCELLED,
        OrderStatus.EXPIRED,
        OrderStatus.REJECTED,
    }
)
OPEN_STATUSES: frozenset[OrderStatus] = frozenset(
    {
        OrderStatus.WORKING,
        OrderStatus.PARTIALLY_FILLED,
        OrderStatus.PENDING_CANCEL,
        OrderStatus.PENDING_REPLACE,
    }
)


class Dialect(StrEnum):
    """The two ways of talking to Tradovate."""

    NATIVE = "native"  # demo|live.tradovateapi.com/v1, JSON, WebSocket user sync
    TVBRIDGE = "tvbridge"  # tv-demo|tv-live.tradovateapi.com, form bodies, lowercase enums


class Environment(StrEnum):
    """Tradovate's two separate worlds; tokens and accounts never cross between them."""

    DEMO = "demo"
    LIVE = "live"

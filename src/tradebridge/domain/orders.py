"""The order aggregate: an order's status as a state machine fed by past-tense events.

``Order.apply(event)`` returns the next ``Order`` or raises ``IllegalTransition``; an order
never moves backwards and nothing happens to it after a terminal status.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime
from decimal import Decimal

from tradebridge.domain.enums import OrderStatus, OrderType, Side, TimeInForce
from tradebridge.domain.ids import AccountName, BrokerOrderId, ClientOrderId
from tradebridge.errors import IllegalTransition


@dataclass(frozen=True, slots=True)
class OrderSubmitted:
    """The submit request was sent."""

    ts_event: datetime


@dataclass(frozen=True, slots=True)
class OrderDenied:
    """Our own checks refused the order; nothing was sent."""

    reason: str
    ts_event: datetime


@dataclass(frozen=True, slots=True)
class OrderAccepted:
    """The broker acknowledged the order under ``broker_order_id``."""

    broker_order_id: BrokerOrderId
    ts_event: datetime


@dataclass(frozen=True, slots=True)
class OrderRejected:
    """The broker refused the order in so many words."""

    reason: str
    text: str
    ts_event: datetime


@dataclass(frozen=True, slots=True)
class OrderOutcomeUnknown:
    """The submit was sent but its answer was lost (timeout, disconnect, 5xx)."""

    detail: str
    ts_event: datetime


@dataclass(frozen=True, slots=True)
class OrderFoundAbsent:
    """A lookup proved that an unknown submit never reached the broker; it may be resent."""

    ts_event: datetime


@dataclass(frozen=True, slots=True)
class OrderFilled:
    """Some or all of the order traded."""

    qty: int
    price: Decimal
    ts_event: datetime
    fill_id: str = ""


@dataclass(frozen=True, slots=True)
class OrderPendingCancel:
    """A cancel request was sent."""

    ts_event: datetime


@dataclass(frozen=True, slots=True)
class OrderPendingReplace:
    """A modify request was sent."""

    ts_event: datetime


@dataclass(frozen=True, slots=True)
class OrderModified:
    """The broker applied a modification."""

    quantity: int
    limit_price: Decimal | None
    stop_price: Decimal | None
    ts_event: datetime


@dataclass(frozen=True, slots=True)
class OrderCancelled:
    """The order was cancelled (by us, by an OCO sibling, or by the broker)."""

    ts_event: datetime
    reason: str = ""


@dataclass(frozen=True, slots=True)
class OrderExpired:
    """The order's time in force ran out."""

    ts_event: datetime


OrderEvent = (
    OrderSubmitted
    | OrderDenied
    | OrderAccepted
    | OrderRejected
    | OrderOutcomeUnknown
    | OrderFoundAbsent
    | OrderFilled
    | OrderPendingCancel
    | OrderPendingReplace
    | OrderModified
    | OrderCancelled
    | OrderExpired
)

_S = OrderStatus
_LIVE = frozenset({_S.WORKING, _S.PARTIALLY_FILLED, _S.PENDING_CANCEL, _S.PENDING_REPLACE})
_SENT = frozenset({_S.SUBMITTED, _S.UNKNOWN})

# Which statuses each event may arrive in. A fill, a cancel or an acceptance can overtake
# the submit's own answer, so "sent" statuses accept them too.
_ALLOWED: dict[type[object], frozenset[OrderStatus]] = {
    OrderSubmitted: frozenset({_S.INITIALIZED}),
    OrderDenied: frozenset({_S.INITIALIZED}),
    OrderAccepted: _SENT,
    OrderRejected: _SENT | _LIVE,
    OrderOutcomeUnknown: frozenset({_S.SUBMITTED}),
    OrderFoundAbsent: frozenset({_S.UNKNOWN}),
    OrderFilled: _SENT | _LIVE,
    OrderPendingCancel: frozenset({_S.WORKING, _S.PARTIALLY_FILLED, _S.PENDING_REPLACE}),
    OrderPendingReplace: frozenset({_S.WORKING, _S.PARTIALLY_FILLED}),
    OrderModified: _LIVE,
    OrderCancelled: _SENT | _LIVE,
    OrderExpired: _SENT | _LIVE,
}


@dataclass(frozen=True, slots=True)
class Order:
    """One order from intent to final state, with what filled and at what average price."""

    client_order_id: ClientOrderId
    account: AccountName
    contract: str
    side: Side
    order_type: OrderType
    quantity: int
    limit_price: Decimal | None = None
    stop_price: Decimal | None = None
    tif: TimeInForce = TimeInForce.DAY
    status: OrderStatus = OrderStatus.INITIALIZED
    broker_order_id: BrokerOrderId | None = None
    filled_qty: int = 0
    avg_fill_price: Decimal | None = None
    reason: str = ""
    ts_last: datetime | None = None

    @property
    def leaves_qty(self) -> int:
        """Return the quantity still to fill."""
        return self.quantity - self.filled_qty

    def is_done(self) -> bool:
        """Return whether the order reached a terminal status."""
        return self.status.is_terminal

    def apply(self, event: OrderEvent) -> Order:
        """Return the order after ``event``; raise ``IllegalTransition`` if it cannot happen."""
        allowed = _ALLOWED[type(event)]
        if self.status not in allowed:
            raise IllegalTransition(
                f"order {self.client_order_id}: {type(event).__name__} is illegal "
                f"in status {self.status.value}"
            )
        order = replace(self, ts_last=event.ts_event)
        match event:
            case OrderSubmitted():
                return replace(order, status=_S.SUBMITTED)
            case OrderDenied(reason=reason):
                return replace(order, status=_S.DENIED, reason=reason)
            case OrderAccepted(broker_order_id=broker_id):
                return replace(order, status=_S.WORKING, broker_order_id=broker_id)
            case OrderRejected(reason=reason, text=text):
                detail = f"{reason}: {text}" if text else reason
                return replace(order, status=_S.REJECTED, reason=detail)
            case OrderOutcomeUnknown(detail=detail):
                return replace(order, status=_S.UNKNOWN, reason=detail)
            case OrderFoundAbsent():
                return replace(order, status=_S.INITIALIZED, reason="")
            case OrderFilled():
                return _apply_fill(order, event)
            case OrderPendingCancel():
                return replace(order, status=_S.PENDING_CANCEL)
            case OrderPendingReplace():
                return replace(order, status=_S.PENDING_REPLACE)
            case OrderModified():
                return _apply_modify(order, event)
            case OrderCancelled(reason=reason):
                return replace(order, status=_S.CANCELLED, reason=reason or order.reason)
            case OrderExpired():
                return replace(order, status=_S.EXPIRED)
        raise IllegalTransition(f"unhandled event {event!r}")  # pragma: no cover


def _apply_fill(order: Order, event: OrderFilled) -> Order:
    if event.qty <= 0 or event.qty > order.leaves_qty:
        raise IllegalTransition(
            f"order {order.client_order_id}: fill of {event.qty} with {order.leaves_qty} left"
        )
    filled = order.filled_qty + event.qty
    previous = (order.avg_fill_price or Decimal(0)) * order.filled_qty
    average = (previous + event.price * event.qty) / filled
    status = _S.FILLED if filled == order.quantity else _S.PARTIALLY_FILLED
    if status is _S.PARTIALLY_FILLED and order.status in (_S.PENDING_CANCEL, _S.PENDING_REPLACE):
        status = order.status  # the pending request is still outstanding
    return replace(order, status=status, filled_qty=filled, avg_fill_price=average)


def _apply_modify(order: Order, event: OrderModified) -> Order:
    if event.quantity < order.filled_qty or event.quantity <= 0:
        raise IllegalTransition(
            f"order {order.client_order_id}: cannot modify to {event.quantity} "
            f"with {order.filled_qty} filled"
        )
    status = _S.PARTIALLY_FILLED if order.filled_qty else _S.WORKING
    return replace(
        order,
        status=status,
        quantity=event.quantity,
        limit_price=event.limit_price,
        stop_price=event.stop_price,
    )

"""What the broker reports about an order: past-tense events, in the adapters' common words.

Adapters turn their dialect's answers and pushes into these (``Broker.events``); the tracker
writes them to the ledger under the lifecycle of ``domain/lifecycle.py``, the one state
machine, which refuses any move backwards.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from tradebridge.domain.ids import BrokerOrderId


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
class OrderFilled:
    """Some or all of the order traded.

    ``total_qty`` and ``total_avg``: where the broker reports an order's running totals
    instead of its fills (the TradingView bridge), the order's filled quantity and average
    price after this one. Each poller derives ``qty`` from what it saw before, so two
    workers may report overlapping spans (one saw 0 → 1 → 2, another 0 → 2): the row takes
    the total, never the sum of the spans.
    """

    qty: int
    price: Decimal
    ts_event: datetime
    fill_id: str = ""
    total_qty: int | None = None
    total_avg: Decimal | None = None


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
    OrderAccepted | OrderRejected | OrderFilled | OrderModified | OrderCancelled | OrderExpired
)

"""A signal: one trading intent for one account, as the ledger stores it."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any

from tradebridge.domain.enums import OrderType, Side, TimeInForce
from tradebridge.domain.ids import AccountName, SignalId


@dataclass(frozen=True, slots=True)
class Signal:
    """What a strategy asked for, before any checks; prices are absolute."""

    signal_id: SignalId
    account: AccountName
    instrument: str
    side: Side
    order_type: OrderType
    quantity: int
    price: Decimal | None = None
    stop_price: Decimal | None = None
    stop_loss: Decimal | None = None
    take_profit: Decimal | None = None
    tif: TimeInForce = TimeInForce.DAY
    strategy: str = ""
    source: str = "db"
    ts_created: datetime | None = None
    metadata: dict[str, Any] = field(default_factory=dict)

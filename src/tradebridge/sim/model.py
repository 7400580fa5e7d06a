"""The simulator's vocabulary: Tradovate's entities in snake_case, and what the dialects
send to the engine and get back from it.

Entities keep Tradovate's meaning and names (``orderVersion`` is ``SimOrderVersion``); each
dialect module translates them to its wire shape. The engine (``engine.py``) makes and
changes them; everything here is data.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from enum import StrEnum

from tradebridge.domain.contracts import ContractSymbol
from tradebridge.domain.enums import OrderType, Side, TimeInForce
from tradebridge.domain.products import Product


class OrdStatus(StrEnum):
    """Tradovate's ``ordStatus`` values."""

    PENDING_NEW = "PendingNew"
    WORKING = "Working"
    SUSPENDED = "Suspended"  # bracket legs waiting for their parent to fill
    PENDING_CANCEL = "PendingCancel"
    PENDING_REPLACE = "PendingReplace"
    FILLED = "Filled"
    CANCELED = "Canceled"
    REJECTED = "Rejected"
    EXPIRED = "Expired"


FINAL_ORD_STATUSES = frozenset(
    {OrdStatus.FILLED, OrdStatus.CANCELED, OrdStatus.REJECTED, OrdStatus.EXPIRED}
)
OPEN_ORD_STATUSES = frozenset({OrdStatus.WORKING, OrdStatus.SUSPENDED})


@dataclass
class SimAccount:
    """An account (``account`` entity)."""

    id: int
    name: str
    bridge_id: str
    user_id: int
    readonly: bool = False
    active: bool = True


@dataclass
class SimContract:
    """A contract (``contract`` entity), with its product and maturity."""

    id: int
    symbol: ContractSymbol
    product: Product
    maturity_id: int

    @property
    def name(self) -> str:
        """Return the Tradovate name, e.g. ``MNQZ6``."""
        return self.symbol.name


@dataclass
class SimOrderVersion:
    """Prices and quantities of an order (``orderVersion`` entity)."""

    id: int
    order_id: int
    order_qty: int
    order_type: OrderType
    price: Decimal | None
    stop_price: Decimal | None
    time_in_force: TimeInForce
    expire_time: datetime | None
    text: str = ""


@dataclass
class SimOrder:
    """An order (``order`` entity) plus the matching state the engine keeps for it."""

    id: int
    account_id: int
    contract_id: int
    action: Side
    ord_status: OrdStatus
    timestamp: datetime
    version: SimOrderVersion  # the current version
    cl_ord_id: str | None = None
    is_automated: bool = False
    oco_id: int | None = None  # shared by the legs of an OCO pair
    parent_id: int | None = None  # the entry order of a bracket leg
    linked_id: int | None = None  # the other leg of an OCO pair
    filled_qty: int = 0
    avg_fill_price: Decimal | None = None
    triggered: bool = False  # stop and stop-limit orders: the stop price was reached
    reject_reason: str | None = None
    ts_final: datetime | None = None  # when it reached a final status

    @property
    def leaves_qty(self) -> int:
        """Return the quantity still to fill."""
        return self.version.order_qty - self.filled_qty


@dataclass
class SimCommand:
    """A place, modify or cancel request (``command`` entity); carries ``clOrdId``."""

    id: int
    order_id: int
    timestamp: datetime
    command_type: str  # New | Modify | Cancel
    command_status: str  # RiskPassed | RiskRejected | ExecutionRejected | AtExecution ...
    cl_ord_id: str | None = None
    is_automated: bool = False


@dataclass
class SimExecutionReport:
    """One step in an order's life (``executionReport`` entity)."""

    id: int
    command_id: int | None
    account_id: int
    contract_id: int
    order_id: int
    timestamp: datetime
    exec_type: str  # New | Trade | Canceled | Rejected | Expired | Replaced | ...
    ord_status: OrdStatus
    action: Side
    cum_qty: int = 0
    avg_px: Decimal | None = None
    last_qty: int | None = None
    last_px: Decimal | None = None
    reject_reason: str | None = None
    text: str = ""


@dataclass
class SimFill:
    """One execution (``fill`` entity)."""

    id: int
    order_id: int
    account_id: int
    contract_id: int
    timestamp: datetime
    action: Side
    qty: int
    price: Decimal
    active: bool = True


@dataclass
class SimPosition:
    """Net position of an account in a contract (``position`` entity), with its P&L."""

    id: int
    account_id: int
    contract_id: int
    timestamp: datetime
    net_pos: int = 0
    net_price: Decimal | None = None  # average price of the open position
    bought: int = 0
    bought_value: Decimal = Decimal(0)
    sold: int = 0
    sold_value: Decimal = Decimal(0)
    realized_pnl: Decimal = Decimal(0)


@dataclass
class SimCashBalance:
    """Cash of an account (``cashBalance`` entity)."""

    id: int
    account_id: int
    timestamp: datetime
    amount: Decimal  # initial cash plus realized P&L
    realized_pnl: Decimal = Decimal(0)


@dataclass(frozen=True, slots=True)
class StrategyBracket:
    """One bracket of a Bracket strategy: a quantity and price distances from the fill."""

    qty: int
    profit_target: Decimal | None = None  # above a long's fill (below a short's)
    stop_loss: Decimal | None = None  # positive distance, on the losing side
    trailing: bool = False  # the stop follows the best price by its distance
    breakeven: bool = False  # once another bracket's target filled, the stop moves to the fill


@dataclass
class SimOrderStrategy:
    """An order strategy (``orderStrategy`` entity) plus the engine's state for it."""

    id: int
    account_id: int
    contract_id: int
    timestamp: datetime
    action: Side
    order_strategy_type_id: int
    params: str
    uuid: str | None
    status: str = "ActiveStrategy"
    failure_message: str | None = None
    entry_id: int | None = None
    brackets: tuple[StrategyBracket, ...] = ()
    basis: Decimal | None = None  # the first fill's price: what the legs are priced from
    covered: list[int] = field(default_factory=list)  # per bracket: quantity given to legs
    legs: list[list[int]] = field(default_factory=list)  # per bracket: its leg order ids

    @property
    def active(self) -> bool:
        """Return whether the strategy still runs."""
        return self.status == "ActiveStrategy"


@dataclass
class SimOrderStrategyLink:
    """One order of a strategy (``orderStrategyLink`` entity)."""

    id: int
    order_strategy_id: int
    order_id: int
    label: str


@dataclass(frozen=True, slots=True)
class StrategyResult:
    """Outcome of a strategy request: the strategy, or an ``errorText``."""

    strategy: SimOrderStrategy | None = None
    error_text: str | None = None


@dataclass(frozen=True, slots=True)
class Quote:
    """Top of book of one contract."""

    contract_id: int
    bid: Decimal
    ask: Decimal
    last: Decimal
    timestamp: datetime


@dataclass(frozen=True, slots=True)
class PlaceResult:
    """Outcome of a place, OSO, OCO or liquidate: ids on success, a failure otherwise."""

    order_id: int | None = None
    oso1_id: int | None = None
    oso2_id: int | None = None
    oco_id: int | None = None
    failure_reason: str | None = None
    failure_text: str | None = None

    @property
    def ok(self) -> bool:
        """Return whether the request was accepted."""
        return self.failure_reason is None


@dataclass(frozen=True, slots=True)
class CommandResult:
    """Outcome of a modify or cancel."""

    command_id: int | None = None
    failure_reason: str | None = None
    failure_text: str | None = None

    @property
    def ok(self) -> bool:
        """Return whether the request was accepted."""
        return self.failure_reason is None


@dataclass(frozen=True, slots=True)
class OrderRequest:
    """A new order as any dialect asks for it (already parsed into our enums)."""

    account_id: int
    symbol: str  # contract name as sent (e.g. ``MNQZ6``); resolved and checked by the engine
    action: Side
    order_type: OrderType
    order_qty: int
    price: Decimal | None = None
    stop_price: Decimal | None = None
    time_in_force: TimeInForce = TimeInForce.DAY
    expire_time: datetime | None = None
    cl_ord_id: str | None = None
    text: str = ""
    is_automated: bool = False


@dataclass(frozen=True, slots=True)
class BracketRequest:
    """A bracket or OCO leg (a ``RestrainedOrderVersion``); quantity follows the parent."""

    action: Side
    order_type: OrderType
    price: Decimal | None = None
    stop_price: Decimal | None = None
    time_in_force: TimeInForce = TimeInForce.GTC
    cl_ord_id: str | None = None
    text: str = ""
    expire_time: datetime | None = None  # for GTD legs


Entity = (
    SimOrder
    | SimOrderVersion
    | SimExecutionReport
    | SimFill
    | SimPosition
    | SimCashBalance
    | SimCommand
    | SimOrderStrategy
    | SimOrderStrategyLink
)


@dataclass(frozen=True, slots=True)
class EntityChange:
    """One change to user data: ``entity_type`` is Tradovate's lower-camel entity name."""

    user_id: int
    entity_type: (
        str  # order | orderVersion | executionReport | fill | position | cashBalance | command
    )
    event_type: str  # created | updated | deleted (mapped to wire strings by the WebSocket)
    entity: Entity


Subscriber = Callable[[EntityChange], None]


ACCESS_DENIED = "Access is denied"
"""Tradovate's ``failureText`` for things the caller may not touch (reference §5.1)."""

TOO_LATE = "Too late"

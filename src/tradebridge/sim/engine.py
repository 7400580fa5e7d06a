"""The simulator's one state: accounts, contracts, prices, orders, fills, positions, cash.

Every dialect (native REST, WebSocket, TradingView bridge) reads and changes this state and
nothing else. Entities carry Tradovate's meaning in snake_case; each dialect module
translates them to its wire shape. Every change is published as an ``EntityChange`` to the
subscribers (the WebSocket's ``props`` events).

The engine is synchronous and single-threaded: it runs on the server's event loop and no
method awaits, so each call is atomic.

API CONTRACT (shared by native.py, websocket.py, tvbridge.py, admin.py): the names and
signatures below are what the dialect modules code against.
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
from tradebridge.sim.clock import Clock
from tradebridge.sim.config import SimAccountConfig, SimConfig


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


Entity = (
    SimOrder
    | SimOrderVersion
    | SimExecutionReport
    | SimFill
    | SimPosition
    | SimCashBalance
    | SimCommand
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


@dataclass
class SimEngine:
    """The state and the matching engine (see the module docstring for the contract)."""

    config: SimConfig
    clock: Clock
    _subscribers: list[Subscriber] = field(default_factory=list)

    # --- events -----------------------------------------------------------------------
    def subscribe(self, subscriber: Subscriber) -> Callable[[], None]:
        """Call ``subscriber`` on every change; return a function that unsubscribes."""
        raise NotImplementedError

    # --- reference data -----------------------------------------------------------------
    def accounts(self, user_id: int | None = None) -> list[SimAccount]:
        """Return all accounts, or those of one user."""
        raise NotImplementedError

    def account(self, account_id: int) -> SimAccount | None:
        """Return an account by native id."""
        raise NotImplementedError

    def account_by_name(self, name: str) -> SimAccount | None:
        """Return an account by name (``accountSpec``)."""
        raise NotImplementedError

    def account_by_bridge_id(self, bridge_id: str) -> SimAccount | None:
        """Return an account by its bridge id (``D...``)."""
        raise NotImplementedError

    def account_config(self, account_id: int) -> SimAccountConfig:
        """Return the configuration an account was made from."""
        raise NotImplementedError

    def find_contract(self, name: str) -> SimContract | None:
        """Return the contract named ``name`` (expired ones included), or None if no such."""
        raise NotImplementedError

    def contract(self, contract_id: int) -> SimContract | None:
        """Return a contract by id."""
        raise NotImplementedError

    def suggest_contracts(self, text: str, limit: int) -> list[SimContract]:
        """Return unexpired contracts whose name starts with ``text``, front month first."""
        raise NotImplementedError

    def listed_contracts(self) -> list[SimContract]:
        """Return every unexpired contract the simulator lists now."""
        raise NotImplementedError

    def is_expired(self, contract: SimContract) -> bool:
        """Return whether a contract no longer trades at the engine's clock."""
        raise NotImplementedError

    # --- market ---------------------------------------------------------------------------
    def quote(self, contract_id: int) -> Quote:
        """Return the current top of book (the price path advanced to now)."""
        raise NotImplementedError

    def set_price(self, contract_id: int, last: Decimal) -> None:
        """Move a contract's price (test hook, admin endpoint) and match resting orders."""
        raise NotImplementedError

    def advance(self) -> None:
        """Step every traded contract's price path up to the clock and match orders."""
        raise NotImplementedError

    # --- orders -----------------------------------------------------------------------------
    def place_order(self, request: OrderRequest) -> PlaceResult:
        """Validate, accept and match a new order."""
        raise NotImplementedError

    def place_oso(
        self, entry: OrderRequest, bracket1: BracketRequest, bracket2: BracketRequest | None
    ) -> PlaceResult:
        """Place an entry whose brackets activate when it fills (two brackets are OCO)."""
        raise NotImplementedError

    def place_oco(self, first: OrderRequest, other: BracketRequest) -> PlaceResult:
        """Place two orders of which the first to fill cancels the other."""
        raise NotImplementedError

    def modify_order(
        self,
        order_id: int,
        order_qty: int,
        order_type: OrderType,
        price: Decimal | None,
        stop_price: Decimal | None,
        time_in_force: TimeInForce | None = None,
        cl_ord_id: str | None = None,
        is_automated: bool = False,
    ) -> CommandResult:
        """Change a working order (a new version); ``TooLate`` if it is final."""
        raise NotImplementedError

    def cancel_order(
        self, order_id: int, cl_ord_id: str | None = None, is_automated: bool = False
    ) -> CommandResult:
        """Cancel a working order; ``TooLate`` if it is final."""
        raise NotImplementedError

    def liquidate_position(
        self, account_id: int, contract_id: int, is_automated: bool = False
    ) -> PlaceResult:
        """Cancel working orders on the contract and close the position at market."""
        raise NotImplementedError

    # --- reads --------------------------------------------------------------------------------
    def orders(self, account_id: int | None = None) -> list[SimOrder]:
        """Return orders, oldest first."""
        raise NotImplementedError

    def order(self, order_id: int) -> SimOrder | None:
        """Return one order."""
        raise NotImplementedError

    def order_versions(self, order_id: int) -> list[SimOrderVersion]:
        """Return an order's versions, oldest first."""
        raise NotImplementedError

    def execution_reports(self, order_id: int | None = None) -> list[SimExecutionReport]:
        """Return execution reports, of one order or all."""
        raise NotImplementedError

    def commands(self, order_id: int | None = None) -> list[SimCommand]:
        """Return commands, of one order or all."""
        raise NotImplementedError

    def fills(self, order_id: int | None = None, account_id: int | None = None) -> list[SimFill]:
        """Return fills, of one order, one account, or all."""
        raise NotImplementedError

    def positions(self, account_id: int | None = None) -> list[SimPosition]:
        """Return positions, of one account or all."""
        raise NotImplementedError

    def cash_balance(self, account_id: int) -> SimCashBalance:
        """Return an account's cash balance."""
        raise NotImplementedError

    def open_pnl(self, account_id: int) -> Decimal:
        """Return the open P&L of an account's positions at current prices."""
        raise NotImplementedError

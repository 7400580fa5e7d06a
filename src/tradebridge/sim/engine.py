"""The simulator's one state: accounts, contracts, prices, orders, fills, positions, cash.

Every dialect (native REST, WebSocket, TradingView bridge) reads and changes this state and
nothing else, through ``SimEngine``. Entities carry Tradovate's meaning in snake_case; each
dialect module translates them to its wire shape. Every change is published as an
``EntityChange`` to the subscribers (the WebSocket's ``props`` events).

The engine is synchronous and single-threaded: it runs on the server's event loop and no
method awaits, so each call is atomic.

``SimEngine`` is a facade over one part per concern, each calling only the parts listed
before it:

* ``model.py``: the entities, requests and results (their names are re-exported here);
* ``_reference.py``: accounts and contracts;
* ``_records.py``: ids; orders, versions, commands, reports and fills; publishing;
* ``_positions.py``: positions, realized and open P&L, cash;
* ``_book.py``: a book per contract, its prices, matching, trailing stops, GTD expiry;
* ``_checks.py``: the refusals and the risk limits;
* ``_orders.py``: order requests, and an order's fills, end, OSO legs and OCO partner;
* ``_strategies.py``: order strategies (Bracket).

Two calls go the other way, through protocols wired in ``SimEngine``: the market asks its
``Trader`` (the order desk) to book a fill or end an order, and the desk tells its
``Watcher`` (the strategies) of each fill and each final order.

API CONTRACT (shared by native.py, websocket.py, tvbridge.py, admin.py): the names and
signatures below are what the dialect modules code against.

How the engine behaves where Tradovate's documents are silent (reference §4, §5, §12):

* Ids: one counter per entity type (orders from 1_000_001, versions from 2_000_001, ...).
  Contract ids are computed from root, year and month, so they are the same in every run
  and ``contract(id)`` knows contracts nobody has looked up by name yet.
* Contracts: ``find_contract`` returns expired contracts (``is_expired`` says so); orders on
  them fail ``InvalidContract`` with the expiry date. Names in months a product does not
  list, unknown roots and malformed names give None.
* Prices (``prices.PricePath``): a seeded walk in whole ticks, one step per
  ``price_step_s``. The quote is ``bid = last`` and ``ask = last + one tick``. Moving a
  price (a step, ``set_price``, ``advance``) runs a matching pass over that contract.
* Refusals without an order (``PlaceResult`` has no ``order_id``, no command exists): an
  injected fault, unknown account (``UnknownReason`` "Access is denied"), read-only
  account (``Unauthorized``), unknown contract (``InvalidContract`` or "Access is denied"),
  expired contract (``InvalidContract``), a malformed request (``Unsupported``: quantity
  below 1, GTD without a future ``expireTime``, a bracket on the entry's side), a bad price
  (``InvalidPrice``: missing, not positive, off tick, or a stop the market has already
  passed), ``isAutomated`` missing when required and a repeated ``clOrdId`` when duplicates
  are refused (both ``UnknownReason``).
* Risk refusals create an order: ``MaxOrderQtyLimitReached``, ``MaxPosLimitReached``
  (net position plus same-side working quantity plus the order) and ``SessionClosed``
  leave an order in ``Rejected`` with a ``RiskRejected`` command and a ``Rejected``
  execution report; the ``PlaceResult`` carries both that ``order_id`` and the failure.
* Matching: market orders take the ask (buy) or the bid (sell). A limit order marketable
  when it arrives fills at the touch (price improvement); one the market moves through
  later fills at its limit. Stops trigger when the ask reaches a buy stop (the bid a sell
  stop) and then arrive as a market (stop) or limit (stop-limit) order.
  ``liquidity_per_fill`` caps what one order takes per pass; a pass is a placement,
  modification or activation (for that order) and every price move, ``set_price`` and
  ``advance`` (for the whole contract).
* Time in force: IOC and FOK are judged on the first pass in which the order can trade,
  i.e. on arrival, or for stops when they trigger; what they cannot fill is ``Canceled``.
  GTD orders expire at ``expire_time``; DAY orders never expire in the simulator.
* OCO pairs (``place_oco`` and the two legs of an OSO): a complete fill, cancel or expiry
  of one cancels the other; a partial fill shrinks the other to the same remaining
  quantity, so the pair never closes more than it should.
* OSO: legs are ``Suspended`` until the entry is final. A filled entry activates them; one
  that ends partly filled (cancel, IOC, expiry) activates them for the filled quantity;
  one that ends unfilled cancels them. A risk-rejected entry creates no legs.
* Execution reports: ``New`` on acceptance (also for suspended legs, whose ``ord_status``
  says ``Suspended``), ``OrderStatus`` when a leg activates, ``Trade`` per fill,
  ``Replaced`` per modification, ``Canceled``, ``Expired``, ``Rejected``.
* Modify and cancel always leave a command when the order exists and its account may
  trade: ``RiskPassed``, ``RiskRejected`` (bad values, risk) or ``ExecutionRejected``
  (``TooLate`` on a final order).
* Positions pair fills first in, first out, like Tradovate's fill pairs: realized P&L is
  exact in ticks times ``value_per_point``; ``net_price`` is the average open price.
  Cash is initial cash plus realized P&L (no commissions). ``open_pnl`` marks longs at
  the bid and shorts at the ask (what closing would get).
* Order strategies (``start_order_strategy``, reference §5.8: the built-in Bracket strategy,
  much of it unverified): an ``orderStrategy`` entity (``uuid`` kept as sent), the entry
  order, and one ``orderStrategyLink`` per order (labels ``Entry``, ``StopLoss``,
  ``ProfitTarget``; configurable). The entry is an ordinary working order without a
  ``clOrdId``. Its legs are created on the entry's **first fill**, priced from that fill
  (target ``+profitTarget``, stop ``-stopLoss`` in the entry's favour), one OCO pair per
  bracket, with ``parentId`` = the entry. Partial entry fills: the legs cover what has
  filled; each further fill raises them (bracket by bracket, in order, at the first fill's
  prices), so the filled part is protected at once and never over-covered. A stop the
  market has already passed is placed anyway and triggers at once. A trailing bracket's stop
  follows the best price by its distance on every pass (a new version each time it moves;
  it never moves back). A ``breakeven`` bracket's stop moves to the first fill's price once
  another bracket's target has filled, if that is a better stop and the market has not
  already passed it (then it stays). Cancelling an entry that has not filled ends the strategy
  (``StoppedByUser`` by request, ``ExecutionFinished`` otherwise); an entry that ends
  partly filled keeps its legs. ``interrupt_order_strategy`` cancels the working entry and
  every open leg (``ExecutionInterrupted``). A strategy is ``ExecutionFinished`` once its
  entry and every leg are final. Links are published before the orders they name, the
  strategy before its links.
* ``liquidate_position`` cancels the account's open orders on the contract, then places a
  market order for the opposite of the net position; when flat it succeeds with no
  ``order_id``.
* Subscribers get a copy of each entity as it was at that change; one that raises is
  logged and skipped.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from tradebridge.domain.enums import OrderType, TimeInForce
from tradebridge.sim._book import Market
from tradebridge.sim._checks import Checks
from tradebridge.sim._orders import OrderDesk
from tradebridge.sim._positions import Positions
from tradebridge.sim._records import Records
from tradebridge.sim._reference import Reference
from tradebridge.sim._strategies import OrderStrategies
from tradebridge.sim.clock import Clock
from tradebridge.sim.config import SimAccountConfig, SimConfig
from tradebridge.sim.model import (
    ACCESS_DENIED,
    FINAL_ORD_STATUSES,
    TOO_LATE,
    BracketRequest,
    CommandResult,
    Entity,
    EntityChange,
    OrderRequest,
    OrdStatus,
    PlaceResult,
    Quote,
    SimAccount,
    SimCashBalance,
    SimCommand,
    SimContract,
    SimExecutionReport,
    SimFill,
    SimOrder,
    SimOrderStrategy,
    SimOrderStrategyLink,
    SimOrderVersion,
    SimPosition,
    StrategyBracket,
    StrategyResult,
    Subscriber,
)

__all__ = [
    "ACCESS_DENIED",
    "FINAL_ORD_STATUSES",
    "TOO_LATE",
    "BracketRequest",
    "CommandResult",
    "Entity",
    "EntityChange",
    "OrdStatus",
    "OrderRequest",
    "PlaceResult",
    "Quote",
    "SimAccount",
    "SimCashBalance",
    "SimCommand",
    "SimContract",
    "SimEngine",
    "SimExecutionReport",
    "SimFill",
    "SimOrder",
    "SimOrderStrategy",
    "SimOrderStrategyLink",
    "SimOrderVersion",
    "SimPosition",
    "StrategyBracket",
    "StrategyResult",
    "Subscriber",
]


@dataclass
class SimEngine:
    """The state and the matching engine (see the module docstring for the contract)."""

    config: SimConfig
    clock: Clock
    _subscribers: list[Subscriber] = field(default_factory=list)

    _reference: Reference = field(init=False, repr=False)
    _records: Records = field(init=False, repr=False)
    _positions: Positions = field(init=False, repr=False)
    _market: Market = field(init=False, repr=False)
    _checks: Checks = field(init=False, repr=False)
    _desk: OrderDesk = field(init=False, repr=False)
    _strategies: OrderStrategies = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._reference = Reference(self.config, self.clock)
        self._records = Records(self.config, self.clock, self._reference, self._subscribers)
        self._positions = Positions(self.clock, self._reference, self._records)
        self._market = Market(self.config, self.clock, self._reference, self._records)
        self._checks = Checks(
            self.config, self.clock, self._reference, self._records, self._market, self._positions
        )
        self._desk = OrderDesk(
            self.clock, self._records, self._market, self._positions, self._checks
        )
        self._strategies = OrderStrategies(
            self.config,
            self.clock,
            self._reference,
            self._records,
            self._market,
            self._checks,
            self._desk,
        )
        # The two calls up the list: each side needs the other, so they are wired last.
        self._market.trader = self._desk
        self._desk.watcher = self._strategies

    # --- events ---------------------------------------------------------------------------
    def subscribe(self, subscriber: Subscriber) -> Callable[[], None]:
        """Call ``subscriber`` on every change; return a function that unsubscribes."""
        return self._records.subscribe(subscriber)

    # --- reference data -------------------------------------------------------------------
    def accounts(self, user_id: int | None = None) -> list[SimAccount]:
        """Return all accounts, or those of one user."""
        return self._reference.accounts(user_id)

    def account(self, account_id: int) -> SimAccount | None:
        """Return an account by native id."""
        return self._reference.account(account_id)

    def account_by_name(self, name: str) -> SimAccount | None:
        """Return an account by name (``accountSpec``)."""
        return self._reference.account_by_name(name)

    def account_by_bridge_id(self, bridge_id: str) -> SimAccount | None:
        """Return an account by its bridge id (``D...``)."""
        return self._reference.account_by_bridge_id(bridge_id)

    def account_config(self, account_id: int) -> SimAccountConfig:
        """Return the configuration an account was made from (KeyError if unknown)."""
        return self._reference.account_config(account_id)

    def find_contract(self, name: str) -> SimContract | None:
        """Return the contract named ``name`` (expired ones included), or None if no such."""
        return self._reference.find_contract(name)

    def contract(self, contract_id: int) -> SimContract | None:
        """Return a contract by id."""
        return self._reference.contract(contract_id)

    def suggest_contracts(self, text: str, limit: int) -> list[SimContract]:
        """Return unexpired contracts whose name starts with ``text``, front month first."""
        return self._reference.suggest_contracts(text, limit)

    def listed_contracts(self) -> list[SimContract]:
        """Return every unexpired contract the simulator lists now."""
        return self._reference.listed_contracts()

    def is_expired(self, contract: SimContract) -> bool:
        """Return whether a contract no longer trades at the engine's clock."""
        return self._reference.is_expired(contract)

    # --- market ---------------------------------------------------------------------------
    def quote(self, contract_id: int) -> Quote:
        """Return the current top of book (the price path advanced to now)."""
        return self._market.quote(contract_id)

    def set_price(self, contract_id: int, last: Decimal) -> None:
        """Move a contract's price (test hook, admin endpoint) and match resting orders.

        Raises KeyError for an unknown contract and ValueError for a price off tick.
        """
        self._market.set_price(contract_id, last)

    def advance(self) -> None:
        """Step every traded contract's price path up to the clock and match orders."""
        self._market.advance()

    # --- orders ---------------------------------------------------------------------------
    def place_order(self, request: OrderRequest) -> PlaceResult:
        """Validate, accept and match a new order."""
        return self._desk.place_order(request)

    def place_oso(
        self, entry: OrderRequest, bracket1: BracketRequest, bracket2: BracketRequest | None
    ) -> PlaceResult:
        """Place an entry whose brackets activate when it fills (two brackets are OCO)."""
        return self._desk.place_oso(entry, bracket1, bracket2)

    def place_oco(self, first: OrderRequest, other: BracketRequest) -> PlaceResult:
        """Place two orders of which the first to fill cancels the other."""
        return self._desk.place_oco(first, other)

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
        return self._desk.modify_order(
            order_id,
            order_qty,
            order_type,
            price,
            stop_price,
            time_in_force,
            cl_ord_id,
            is_automated,
        )

    def cancel_order(
        self, order_id: int, cl_ord_id: str | None = None, is_automated: bool = False
    ) -> CommandResult:
        """Cancel a working order; ``TooLate`` if it is final."""
        return self._desk.cancel_order(order_id, cl_ord_id, is_automated)

    def liquidate_position(
        self, account_id: int, contract_id: int, is_automated: bool = False
    ) -> PlaceResult:
        """Cancel working orders on the contract and close the position at market."""
        return self._desk.liquidate_position(account_id, contract_id, is_automated)

    # --- order strategies -----------------------------------------------------------------
    def start_order_strategy(
        self,
        entry: OrderRequest,
        brackets: tuple[StrategyBracket, ...],
        *,
        type_id: int,
        params: str,
        uuid: str | None = None,
    ) -> StrategyResult:
        """Start a Bracket strategy: the entry now, its legs on the entry's fill."""
        return self._strategies.start_order_strategy(
            entry, brackets, type_id=type_id, params=params, uuid=uuid
        )

    def interrupt_order_strategy(self, strategy_id: int) -> StrategyResult:
        """Stop a strategy: cancel its working entry and every open leg."""
        return self._strategies.interrupt_order_strategy(strategy_id)

    # --- reads ----------------------------------------------------------------------------
    def orders(self, account_id: int | None = None) -> list[SimOrder]:
        """Return orders, oldest first."""
        return self._records.orders(account_id)

    def order(self, order_id: int) -> SimOrder | None:
        """Return one order."""
        return self._records.order(order_id)

    def order_versions(self, order_id: int) -> list[SimOrderVersion]:
        """Return an order's versions, oldest first."""
        return self._records.order_versions(order_id)

    def entity(self, kind: str, entity_id: int) -> Any | None:
        """Return one order, ``orderVersion``, ``executionReport``, ``command`` or ``fill``."""
        return self._records.entity(kind, entity_id)

    def execution_reports(self, order_id: int | None = None) -> list[SimExecutionReport]:
        """Return execution reports, of one order or all."""
        return self._records.execution_reports(order_id)

    def commands(self, order_id: int | None = None) -> list[SimCommand]:
        """Return commands, of one order or all."""
        return self._records.commands(order_id)

    def fills(self, order_id: int | None = None, account_id: int | None = None) -> list[SimFill]:
        """Return fills, of one order, one account, or all."""
        return self._records.fills(order_id, account_id)

    def positions(self, account_id: int | None = None) -> list[SimPosition]:
        """Return positions, of one account or all."""
        return self._positions.positions(account_id)

    def order_strategies(self, account_id: int | None = None) -> list[SimOrderStrategy]:
        """Return order strategies, of one account or all, oldest first."""
        return self._strategies.order_strategies(account_id)

    def order_strategy(self, strategy_id: int) -> SimOrderStrategy | None:
        """Return one order strategy."""
        return self._strategies.order_strategy(strategy_id)

    def order_strategy_links(self, strategy_id: int | None = None) -> list[SimOrderStrategyLink]:
        """Return the links of one strategy, or all."""
        return self._strategies.order_strategy_links(strategy_id)

    def cash_balance(self, account_id: int) -> SimCashBalance:
        """Return an account's cash balance (KeyError if the account is unknown)."""
        return self._positions.cash_balance(account_id)

    def open_pnl(self, account_id: int) -> Decimal:
        """Return the open P&L of an account's positions at current prices."""
        return self._positions.open_pnl(account_id, self._market.quote)

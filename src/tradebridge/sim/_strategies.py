"""Order strategies: Tradovate's built-in Bracket strategy (reference §5.8, much of it
unverified).

A strategy is an ``orderStrategy`` entity (``uuid`` kept as sent), its entry order and one
``orderStrategyLink`` per order. The legs are made on the entry's first fill and priced from
it, one OCO pair per bracket; later fills raise them bracket by bracket, so what has filled
is protected at once and never over-covered. A ``breakeven`` bracket's stop moves to the
first fill's price once another bracket's target has filled. A strategy ends when its entry
ends unfilled, when it is interrupted, or once its entry and every leg are final. Links are
published before the orders they name, the strategy before its links.
"""

from __future__ import annotations

from dataclasses import replace
from decimal import Decimal

from tradebridge.domain.enums import OrderType, Side, TimeInForce
from tradebridge.sim._book import Book, Market
from tradebridge.sim._checks import Checks, Leg, Refusal, check_brackets
from tradebridge.sim._orders import OrderDesk
from tradebridge.sim._records import Records
from tradebridge.sim._reference import Reference
from tradebridge.sim.clock import Clock
from tradebridge.sim.config import SimConfig
from tradebridge.sim.model import (
    ACCESS_DENIED,
    FINAL_ORD_STATUSES,
    OPEN_ORD_STATUSES,
    OrderRequest,
    OrdStatus,
    SimAccount,
    SimOrder,
    SimOrderStrategy,
    SimOrderStrategyLink,
    StrategyBracket,
    StrategyResult,
)


class OrderStrategies:
    """Every order strategy, its links, and the legs it places as its entry fills."""

    def __init__(
        self,
        config: SimConfig,
        clock: Clock,
        reference: Reference,
        records: Records,
        market: Market,
        checks: Checks,
        desk: OrderDesk,
    ) -> None:
        self._config = config
        self._clock = clock
        self._reference = reference
        self._records = records
        self._market = market
        self._checks = checks
        self._desk = desk
        self._strategies: dict[int, SimOrderStrategy] = {}
        self._strategy_links: dict[int, list[SimOrderStrategyLink]] = {}
        self._strategy_of: dict[int, int] = {}  # order id -> the id of its strategy

    # --- requests -------------------------------------------------------------------------
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
        self._market.expire_due()
        cfg = self._config
        if type_id != cfg.strategy_type_id:
            return StrategyResult(error_text=f"Unsupported: unknown orderStrategyTypeId {type_id}")
        try:
            account, book, entry_leg = self._checks.prepare(replace(entry, cl_ord_id=None))
            check_brackets(book, entry_leg, brackets)
        except Refusal as refusal:
            return StrategyResult(error_text=f"{refusal.reason}: {refusal.text}")
        strategy = SimOrderStrategy(
            self._records.next_id("orderStrategy"), account.id, book.contract.id, self._clock.now(),
            entry.action, type_id, params, uuid, brackets=brackets,
            covered=[0] * len(brackets), legs=[[] for _ in brackets],
        )  # fmt: skip
        self._strategies[strategy.id] = strategy
        self._records.publish(account.id, "orderStrategy", "created", strategy)
        entry_id = strategy.entry_id = self._records.next_id("order")
        self._link(strategy, entry_id, cfg.strategy_entry_label)
        risk = self._checks.risk_failure(account, book, entry_leg.action, entry_leg.order_qty)
        if risk is not None:
            self._desk.create(entry_id, account, book, entry_leg, OrdStatus.REJECTED, reject=risk)
            self._end_strategy(strategy, "ExecutionFailed", f"{risk.reason}: {risk.text}")
            return StrategyResult(strategy)
        order = self._desk.create(entry_id, account, book, entry_leg, OrdStatus.WORKING)
        self._market.execute(book, order, fresh=True)
        return StrategyResult(strategy)

    def interrupt_order_strategy(self, strategy_id: int) -> StrategyResult:
        """Stop a strategy: cancel its working entry (``strategy_interrupt_cancels_entry``)
        and every open leg."""
        self._market.expire_due()
        strategy = self._strategies.get(strategy_id)
        if strategy is None:
            return StrategyResult(error_text=ACCESS_DENIED)
        if not strategy.active:
            return StrategyResult(strategy, f"Strategy {strategy_id} is {strategy.status}")
        self._market.refresh(self._market.books[strategy.contract_id])
        strategy.status = "ExecutionInterrupted"  # first: the cancels below must not end it
        for order_id in self._strategy_orders(strategy):
            order = self._records.order_of(order_id)
            if order_id == strategy.entry_id and not self._config.strategy_interrupt_cancels_entry:
                continue
            if order.ord_status in OPEN_ORD_STATUSES:
                self._records.command(order, "Cancel", "RiskPassed", None, True)
                self._desk.finalize(order, OrdStatus.CANCELED, "Canceled", "Strategy interrupted")
        self._records.publish(strategy.account_id, "orderStrategy", "updated", strategy)
        return StrategyResult(strategy)

    # --- reads ----------------------------------------------------------------------------
    def order_strategies(self, account_id: int | None = None) -> list[SimOrderStrategy]:
        """Return order strategies, of one account or all, oldest first."""
        return [s for s in self._strategies.values()
                if account_id is None or s.account_id == account_id]  # fmt: skip

    def order_strategy(self, strategy_id: int) -> SimOrderStrategy | None:
        """Return one order strategy."""
        return self._strategies.get(strategy_id)

    def order_strategy_links(self, strategy_id: int | None = None) -> list[SimOrderStrategyLink]:
        """Return the links of one strategy, or all."""
        if strategy_id is not None:
            return list(self._strategy_links.get(strategy_id, ()))
        return [link for links in self._strategy_links.values() for link in links]

    # --- the desk's watcher ---------------------------------------------------------------
    def on_fill(self, order: SimOrder, price: Decimal) -> None:
        """Give a strategy's legs what its entry has filled (the desk's watcher)."""
        strategy_id = self._strategy_of.get(order.id)
        if strategy_id is not None and self._strategies[strategy_id].entry_id == order.id:
            self._cover_fill(self._strategies[strategy_id], order, price)

    def on_final(self, order: SimOrder) -> None:
        """Settle the strategy of an order that has ended (the desk's watcher)."""
        if order.id in self._strategy_of:
            self._settle_strategy(order)

    # --- the strategy's life --------------------------------------------------------------
    def _link(self, strategy: SimOrderStrategy, order_id: int, label: str) -> None:
        link = SimOrderStrategyLink(
            self._records.next_id("orderStrategyLink"), strategy.id, order_id, label
        )
        self._strategy_links.setdefault(strategy.id, []).append(link)
        self._strategy_of[order_id] = strategy.id
        self._records.publish(strategy.account_id, "orderStrategyLink", "created", link)

    def _strategy_orders(self, strategy: SimOrderStrategy) -> list[int]:
        return [link.order_id for link in self._strategy_links.get(strategy.id, ())]

    def _end_strategy(self, strategy: SimOrderStrategy, status: str, message: str = "") -> None:
        strategy.status = status
        strategy.failure_message = message or None
        self._records.publish(strategy.account_id, "orderStrategy", "updated", strategy)

    def _cover_fill(self, strategy: SimOrderStrategy, entry: SimOrder, price: Decimal) -> None:
        """Give the strategy's legs what the entry has filled (created on its first fill)."""
        if not strategy.active:
            return
        if strategy.basis is None:
            strategy.basis = price
        book = self._market.books[entry.contract_id]
        account = self._reference.account_of(entry.account_id)
        ahead = 0
        fresh: list[SimOrder] = []
        for index, bracket in enumerate(strategy.brackets):
            want = min(bracket.qty, max(0, entry.filled_qty - ahead))
            ahead += bracket.qty
            extra = want - strategy.covered[index]
            if extra <= 0:
                continue
            strategy.covered[index] = want
            legs = [self._records.order_of(i) for i in strategy.legs[index]]
            if legs and all(leg.ord_status in OPEN_ORD_STATUSES for leg in legs):
                for leg in legs:
                    self._desk.resize(leg, leg.version.order_qty + extra, "Entry filled further")
                continue
            fresh += self._bracket_pair(strategy, bracket, index, account, book, extra)
        for leg in fresh:
            self._market.execute(book, leg, fresh=True)

    def _bracket_pair(
        self,
        strategy: SimOrderStrategy,
        bracket: StrategyBracket,
        index: int,
        account: SimAccount,
        book: Book,
        qty: int,
    ) -> list[SimOrder]:
        basis = strategy.basis
        assert basis is not None
        assert strategy.entry_id is not None
        sign = strategy.action.sign
        exit_side = strategy.action.opposite
        specs: list[tuple[OrderType, Decimal, str]] = []
        if bracket.stop_loss is not None:
            specs.append((OrderType.STOP, basis - sign * bracket.stop_loss,
                          self._config.strategy_stop_label))  # fmt: skip
        if bracket.profit_target is not None:
            specs.append((OrderType.LIMIT, basis + sign * bracket.profit_target,
                          self._config.strategy_target_label))  # fmt: skip
        # The legs take the entry's time in force (an IOC or FOK entry's legs rest as Day): the
        # strategy's params carry none of their own (reference §5.8; unverified).
        entry_tif = self._records.order_of(strategy.entry_id).version.time_in_force
        leg_tif = TimeInForce.DAY if entry_tif in (TimeInForce.IOC, TimeInForce.FOK) else entry_tif
        ids = [self._records.next_id("order") for _ in specs]
        oco_id = self._records.next_id("oco") if len(ids) == 2 else None
        legs: list[SimOrder] = []
        for position, (kind, raw, label) in enumerate(specs):
            price = max(raw, book.contract.product.tick_size)  # a target beyond zero: the floor
            leg = Leg(
                exit_side, kind, qty, price if kind is OrderType.LIMIT else None,
                price if kind is OrderType.STOP else None, leg_tif, None, None,
                f"Strategy {strategy.id} bracket {index + 1}", True,
            )  # fmt: skip
            self._link(strategy, ids[position], label)
            linked = ids[1 - position] if oco_id is not None else None
            order = self._desk.create(
                ids[position], account, book, leg, OrdStatus.WORKING,
                parent_id=strategy.entry_id, oco_id=oco_id, linked_id=linked,
            )  # fmt: skip
            if kind is OrderType.STOP and bracket.trailing and bracket.stop_loss is not None:
                self._market.follow(order.id, bracket.stop_loss)
            strategy.legs[index].append(order.id)
            legs.append(order)
        return legs

    def _settle_strategy(self, order: SimOrder) -> None:
        """React to a final order of a strategy: end the strategy when nothing is left."""
        strategy_id = self._strategy_of.get(order.id)
        strategy = self._strategies.get(strategy_id) if strategy_id is not None else None
        if strategy is None or not strategy.active:
            return
        if order.ord_status is OrdStatus.FILLED and order.version.order_type is OrderType.LIMIT:
            self._breakeven(strategy, order)
        if order.id == strategy.entry_id and order.filled_qty == 0:
            stopped = order.ord_status is OrdStatus.CANCELED
            self._end_strategy(strategy, "StoppedByUser" if stopped else "ExecutionFinished")
            return
        if all(self._records.order_of(i).ord_status in FINAL_ORD_STATUSES
               for i in self._strategy_orders(strategy)):  # fmt: skip
            self._end_strategy(strategy, "ExecutionFinished")

    def _breakeven(self, strategy: SimOrderStrategy, target: SimOrder) -> None:
        """A target filled: move the stops of the other break-even brackets to the fill."""
        basis = strategy.basis
        assert basis is not None
        book = self._market.books[strategy.contract_id]
        bid, ask = self._market.touch(book)
        for index, bracket in enumerate(strategy.brackets):
            if not bracket.breakeven or target.id in strategy.legs[index]:
                continue
            for leg in (self._records.order_of(i) for i in strategy.legs[index]):
                stop = leg.version.stop_price
                if leg.ord_status not in OPEN_ORD_STATUSES or stop is None or leg.triggered:
                    continue
                sell = leg.action is Side.SELL
                better = basis > stop if sell else basis < stop
                legal = basis < bid if sell else basis > ask
                if not (better and legal):
                    continue
                self._records.new_version(leg, replace(leg.version, stop_price=basis))
                self._records.publish(leg.account_id, "order", "updated", leg)
                self._records.report(leg, "Replaced", text=f"Break-even after order {target.id}")
                if leg.ord_status is OrdStatus.WORKING:
                    self._market.unrest(book, leg)
                    self._market.rest(book, leg)

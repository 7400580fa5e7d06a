"""The order desk: new orders, OSO and OCO groups, modify, cancel and liquidate, and what
happens to an order after that: its fills, its final status, its OSO legs, its OCO partner.

An OSO's legs are ``Suspended`` until the entry is final: a filled entry activates them, one
that ends partly filled activates them for the filled quantity, one that ends unfilled
cancels them. In an OCO pair a complete fill, cancel or expiry of one leg cancels the other,
and a partial fill shrinks the other to the same remaining quantity. The ``Watcher`` (the
order strategies) is told of every fill and every final order.
"""

from __future__ import annotations

from dataclasses import replace
from decimal import Decimal
from typing import Protocol

from tradebridge.domain.enums import OrderType, Side, TimeInForce
from tradebridge.sim._book import Book, Market
from tradebridge.sim._checks import Checks, Leg, Refusal, check_bracket_side, check_new_qty
from tradebridge.sim._positions import Positions
from tradebridge.sim._records import Records
from tradebridge.sim.clock import Clock
from tradebridge.sim.model import (
    ACCESS_DENIED,
    OPEN_ORD_STATUSES,
    TOO_LATE,
    BracketRequest,
    CommandResult,
    OrderRequest,
    OrdStatus,
    PlaceResult,
    SimAccount,
    SimFill,
    SimOrder,
    SimOrderVersion,
)


class Watcher(Protocol):
    """Who follows orders past their own life (the order strategies)."""

    def on_fill(self, order: SimOrder, price: Decimal) -> None: ...

    def on_final(self, order: SimOrder) -> None: ...


class OrderDesk:
    """Takes order requests and carries each order through its fills to its end."""

    watcher: Watcher  # set by the engine: the watcher places orders through the desk

    def __init__(
        self,
        clock: Clock,
        records: Records,
        market: Market,
        positions: Positions,
        checks: Checks,
    ) -> None:
        self._clock = clock
        self._records = records
        self._market = market
        self._positions = positions
        self._checks = checks
        self._children: dict[int, list[int]] = {}  # OSO entry id -> its leg ids
        self._fill_values: dict[int, Decimal] = {}  # order id -> sum of qty * price filled

    # --- requests -------------------------------------------------------------------------
    def place_order(self, request: OrderRequest) -> PlaceResult:
        """Validate, accept and match a new order."""
        self._market.expire_due()
        try:
            account, book, leg = self._checks.prepare(request)
            self._checks.check_request(account, request.is_automated, [request.cl_ord_id])
        except Refusal as refusal:
            return PlaceResult(failure_reason=refusal.reason, failure_text=refusal.text)
        risk = self._checks.risk_failure(account, book, leg.action, leg.order_qty)
        if risk is not None:
            return self._reject(account, book, leg, risk)
        order = self.create(self._records.next_id("order"), account, book, leg, OrdStatus.WORKING)
        self._market.execute(book, order, fresh=True)
        return PlaceResult(order_id=order.id)

    def place_oso(
        self, entry: OrderRequest, bracket1: BracketRequest, bracket2: BracketRequest | None
    ) -> PlaceResult:
        """Place an entry whose brackets activate when it fills (two brackets are OCO)."""
        self._market.expire_due()
        brackets = [bracket1] if bracket2 is None else [bracket1, bracket2]
        try:
            account, book, entry_leg = self._checks.prepare(entry)
            legs: list[Leg] = []
            for number, bracket in enumerate(brackets, start=1):
                check_bracket_side(number, bracket, entry_leg)
                legs.append(self._checks.bracket_leg(book, bracket, entry_leg, live=False))
            cl_ord_ids = [entry.cl_ord_id, *(b.cl_ord_id for b in brackets)]
            self._checks.check_request(account, entry.is_automated, cl_ord_ids)
        except Refusal as refusal:
            return PlaceResult(failure_reason=refusal.reason, failure_text=refusal.text)
        risk = self._checks.risk_failure(account, book, entry_leg.action, entry_leg.order_qty)
        if risk is not None:
            return self._reject(account, book, entry_leg, risk)
        entry_id = self._records.next_id("order")
        leg_ids = [self._records.next_id("order") for _ in legs]
        oco_id = self._records.next_id("oco") if len(legs) == 2 else None
        order = self.create(entry_id, account, book, entry_leg, OrdStatus.WORKING)
        for index, leg in enumerate(legs):
            linked = leg_ids[1 - index] if oco_id is not None else None
            self.create(
                leg_ids[index], account, book, leg, OrdStatus.SUSPENDED,
                parent_id=entry_id, oco_id=oco_id, linked_id=linked,
            )  # fmt: skip
        self._children[entry_id] = leg_ids
        self._market.execute(book, order, fresh=True)
        return PlaceResult(
            order_id=entry_id,
            oso1_id=leg_ids[0],
            oso2_id=leg_ids[1] if len(leg_ids) > 1 else None,
        )

    def place_oco(self, first: OrderRequest, other: BracketRequest) -> PlaceResult:
        """Place two orders of which the first to fill cancels the other."""
        self._market.expire_due()
        try:
            account, book, first_leg = self._checks.prepare(first)
            other_leg = self._checks.bracket_leg(book, other, first_leg, live=True)
            self._checks.check_request(
                account, first.is_automated, [first.cl_ord_id, other.cl_ord_id]
            )
        except Refusal as refusal:
            return PlaceResult(failure_reason=refusal.reason, failure_text=refusal.text)
        risk = self._checks.risk_failure(
            account, book, first_leg.action, first_leg.order_qty
        ) or self._checks.risk_failure(account, book, other_leg.action, other_leg.order_qty)
        if risk is not None:
            return self._reject(account, book, first_leg, risk)
        first_id, other_id = self._records.next_id("order"), self._records.next_id("order")
        oco_id = self._records.next_id("oco")
        one = self.create(
            first_id, account, book, first_leg, OrdStatus.WORKING, oco_id=oco_id, linked_id=other_id
        )
        two = self.create(
            other_id, account, book, other_leg, OrdStatus.WORKING, oco_id=oco_id, linked_id=first_id
        )
        self._market.execute(book, one, fresh=True)
        self._market.execute(book, two, fresh=True)
        return PlaceResult(order_id=first_id, oco_id=other_id)

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
        self._market.expire_due()
        order = self._records.order(order_id)
        if order is None:
            return CommandResult(failure_reason="UnknownReason", failure_text=ACCESS_DENIED)
        try:
            account = self._checks.check_account(order.account_id)
        except Refusal as refusal:
            return CommandResult(failure_reason=refusal.reason, failure_text=refusal.text)
        book = self._market.books[order.contract_id]
        self._market.refresh(book)  # the market may fill the order before the change arrives

        def refuse(status: str, refusal: Refusal) -> CommandResult:
            command = self._records.command(order, "Modify", status, cl_ord_id, is_automated)
            return CommandResult(command.id, refusal.reason, refusal.text)

        if order.ord_status not in OPEN_ORD_STATUSES:
            return refuse("ExecutionRejected", Refusal("TooLate", TOO_LATE))
        old = order.version
        # A triggered stop stays triggered unless its trigger changes.
        keep_trigger = (
            order.triggered and order_type is old.order_type and stop_price == old.stop_price
        )
        tif = time_in_force or old.time_in_force
        try:
            self._checks.check_automated(is_automated)
            check_new_qty(order, order_qty)
            live = order.ord_status is OrdStatus.WORKING and not keep_trigger
            new_price, new_stop = self._checks.check_prices(
                book, order.action, order_type, price, stop_price, live=live
            )
            expire = self._checks.check_tif(tif, old.expire_time)
        except Refusal as refusal:
            return refuse("RiskRejected", refusal)
        added = order_qty - old.order_qty if order.ord_status is OrdStatus.WORKING else 0
        risk = self._checks.risk_failure(account, book, order.action, order_qty, added=added)
        if risk is not None:
            return refuse("RiskRejected", risk)
        command = self._records.command(order, "Modify", "RiskPassed", cl_ord_id, is_automated)
        changed = replace(
            old, order_qty=order_qty, order_type=order_type, price=new_price,
            stop_price=new_stop, time_in_force=tif, expire_time=expire,
        )  # fmt: skip
        self._records.new_version(order, changed)
        order.triggered = keep_trigger
        if order_type is not OrderType.STOP:
            self._market.unfollow(order.id)  # only a stop order trails
        self._records.publish(order.account_id, "order", "updated", order)
        self._records.report(order, "Replaced", text="Modified by request")
        if expire is not None:
            self._market.expire_at(expire, order.id)
        for leg in self._suspended_legs(order):
            if leg.version.order_qty != order_qty:
                self.resize(leg, order_qty, "Follows the entry's quantity")
        if order.ord_status is OrdStatus.WORKING:
            self._market.unrest(book, order)
            self._market.execute(book, order, fresh=True)
        return CommandResult(command.id)

    def cancel_order(
        self, order_id: int, cl_ord_id: str | None = None, is_automated: bool = False
    ) -> CommandResult:
        """Cancel a working order; ``TooLate`` if it is final."""
        self._market.expire_due()
        order = self._records.order(order_id)
        if order is None:
            return CommandResult(failure_reason="UnknownReason", failure_text=ACCESS_DENIED)
        try:
            self._checks.check_account(order.account_id)
        except Refusal as refusal:
            return CommandResult(failure_reason=refusal.reason, failure_text=refusal.text)
        self._market.refresh(self._market.books[order.contract_id])  # a fill may win the race
        if order.ord_status not in OPEN_ORD_STATUSES:
            command = self._records.command(
                order, "Cancel", "ExecutionRejected", cl_ord_id, is_automated
            )
            return CommandResult(command.id, "TooLate", TOO_LATE)
        try:
            self._checks.check_automated(is_automated)
        except Refusal as refusal:
            command = self._records.command(
                order, "Cancel", "RiskRejected", cl_ord_id, is_automated
            )
            return CommandResult(command.id, refusal.reason, refusal.text)
        command = self._records.command(order, "Cancel", "RiskPassed", cl_ord_id, is_automated)
        self.finalize(order, OrdStatus.CANCELED, "Canceled", "Canceled by request")
        return CommandResult(command.id)

    def liquidate_position(
        self, account_id: int, contract_id: int, is_automated: bool = False
    ) -> PlaceResult:
        """Cancel working orders on the contract and close the position at market."""
        self._market.expire_due()
        try:
            self._checks.check_account(account_id)
            contract = self._checks.contract_by_id(contract_id)
            self._checks.check_automated(is_automated)
        except Refusal as refusal:
            return PlaceResult(failure_reason=refusal.reason, failure_text=refusal.text)
        book = self._market.book(contract)
        self._market.refresh(book)
        for order in list(book.live.values()):
            # Cancelling an entry may activate or cancel its legs: look at each one afresh.
            if order.account_id == account_id and order.ord_status in OPEN_ORD_STATUSES:
                self._records.command(order, "Cancel", "RiskPassed", None, is_automated)
                self.finalize(order, OrdStatus.CANCELED, "Canceled", "Canceled by liquidation")
        position = self._positions.position(account_id, contract_id)
        if position is None or position.net_pos == 0:
            return PlaceResult()
        return self.place_order(
            OrderRequest(
                account_id=account_id,
                symbol=contract.name,
                action=Side.SELL if position.net_pos > 0 else Side.BUY,
                order_type=OrderType.MARKET,
                order_qty=abs(position.net_pos),
                text="Liquidate position",
                is_automated=is_automated,
            )
        )

    # --- order life -----------------------------------------------------------------------
    def create(
        self,
        order_id: int,
        account: SimAccount,
        book: Book,
        leg: Leg,
        status: OrdStatus,
        parent_id: int | None = None,
        oco_id: int | None = None,
        linked_id: int | None = None,
        reject: Refusal | None = None,
    ) -> SimOrder:
        """Create an order, its first version, its ``New`` command and report."""
        now = self._clock.now()
        version = SimOrderVersion(
            self._records.next_id("orderVersion"), order_id, leg.order_qty, leg.order_type,
            leg.price, leg.stop_price, leg.time_in_force, leg.expire_time, leg.text,
        )  # fmt: skip
        order = SimOrder(
            order_id, account.id, book.contract.id, leg.action, status, now, version,
            cl_ord_id=leg.cl_ord_id, is_automated=leg.is_automated, oco_id=oco_id,
            parent_id=parent_id, linked_id=linked_id,
        )  # fmt: skip
        self._records.add_order(order)
        if reject is not None:
            order.ord_status = OrdStatus.REJECTED
            order.reject_reason = reject.reason
            order.ts_final = now
        else:
            book.live[order_id] = order
            if leg.expire_time is not None:
                self._market.expire_at(leg.expire_time, order_id)
        self._records.publish(account.id, "order", "created", order)
        self._records.publish(account.id, "orderVersion", "created", version)
        status_text = "RiskPassed" if reject is None else "RiskRejected"
        self._records.command(order, "New", status_text, leg.cl_ord_id, leg.is_automated)
        if reject is None:
            self._records.report(order, "New")
        else:
            self._records.report(order, "Rejected", reject_reason=reject.reason, text=reject.text)
        return order

    def _reject(self, account: SimAccount, book: Book, leg: Leg, risk: Refusal) -> PlaceResult:
        """Create an order that the risk checks rejected."""
        order_id = self._records.next_id("order")
        self.create(order_id, account, book, leg, OrdStatus.REJECTED, reject=risk)
        return PlaceResult(order_id=order_id, failure_reason=risk.reason, failure_text=risk.text)

    def resize(self, order: SimOrder, order_qty: int, text: str) -> None:
        """Give an order a new quantity (bracket legs follow the entry, OCO legs each other)."""
        self._records.new_version(order, replace(order.version, order_qty=order_qty))
        self._records.publish(order.account_id, "order", "updated", order)
        self._records.report(order, "Replaced", text=text)

    def fill(self, book: Book, order: SimOrder, qty: int, price: Decimal | None) -> None:
        """Book one execution: fill, report, order, position and cash."""
        assert price is not None
        now = self._clock.now()
        fill = SimFill(
            self._records.next_id("fill"), order.id, order.account_id, order.contract_id, now,
            order.action, qty, price,
        )  # fmt: skip
        self._records.add_fill(fill)
        value = self._fill_values.get(order.id, Decimal(0)) + qty * price
        self._fill_values[order.id] = value
        order.filled_qty += qty
        order.avg_fill_price = value / order.filled_qty
        if order.leaves_qty == 0:
            order.ord_status = OrdStatus.FILLED
            order.ts_final = now
        self._records.report(order, "Trade", last_qty=qty, last_px=price)
        self._records.publish(order.account_id, "order", "updated", order)
        self._positions.apply_fill(fill, book.contract)
        self.watcher.on_fill(order, price)
        if order.ord_status is OrdStatus.FILLED:
            self._on_final(order)
            return
        partner = self._partner(order)
        if partner is not None and partner.ord_status in OPEN_ORD_STATUSES:
            # One OCO leg traded part: the other now covers only what is left.
            target = partner.filled_qty + order.leaves_qty
            if target < partner.version.order_qty:
                self.resize(partner, target, f"OCO: order {order.id} filled in part")

    def finalize(self, order: SimOrder, status: OrdStatus, exec_type: str, text: str) -> None:
        """End an open order (cancel, expiry) and report it."""
        order.ord_status = status
        order.ts_final = self._clock.now()
        self._records.publish(order.account_id, "order", "updated", order)
        self._records.report(order, exec_type, text=text)
        self._on_final(order)

    def _on_final(self, order: SimOrder) -> None:
        """Take a final order out of its book; settle its bracket legs and OCO partner."""
        book = self._market.books[order.contract_id]
        book.live.pop(order.id, None)
        self._market.unrest(book, order)
        legs = self._suspended_legs(order)
        if legs and order.filled_qty == 0:
            for leg in legs:
                if leg.ord_status is OrdStatus.SUSPENDED:
                    self.finalize(
                        leg,
                        OrdStatus.CANCELED,
                        "Canceled",
                        f"Parent order {order.id} ended unfilled",
                    )
        elif legs:
            for leg in legs:
                self._activate(leg, order.filled_qty)
            for leg in legs:
                self._market.execute(book, leg, fresh=True)
        partner = self._partner(order)
        if partner is not None and partner.ord_status in OPEN_ORD_STATUSES:
            self.finalize(
                partner, OrdStatus.CANCELED, "Canceled", f"OCO: order {order.id} {order.ord_status}"
            )
        self.watcher.on_final(order)
        self._market.tidy(book)

    def _activate(self, leg: SimOrder, qty: int) -> None:
        """Turn a suspended bracket leg into a working order for ``qty``."""
        if leg.ord_status is not OrdStatus.SUSPENDED:
            return
        if leg.version.order_qty != qty:
            self._records.new_version(leg, replace(leg.version, order_qty=qty))
        leg.ord_status = OrdStatus.WORKING
        self._records.publish(leg.account_id, "order", "updated", leg)
        self._records.report(leg, "OrderStatus", text=f"Parent order {leg.parent_id} filled")

    def _suspended_legs(self, order: SimOrder) -> list[SimOrder]:
        legs = (self._records.order_of(i) for i in self._children.get(order.id, ()))
        return [leg for leg in legs if leg.ord_status is OrdStatus.SUSPENDED]

    def _partner(self, order: SimOrder) -> SimOrder | None:
        if order.oco_id is None or order.linked_id is None:
            return None
        return self._records.order(order.linked_id)

"""The market: one book per contract, its price path, and matching orders against it.

Prices (``prices.PricePath``) are a seeded walk in whole ticks, one step per
``price_step_s``; the quote is ``bid = last`` and ``ask = last + one tick``. Moving a price
(a step, ``set_price``, ``advance``) runs a matching pass over that contract.

A pass moves the trailing stops first, then trades the stops the quote has triggered, the
limits it crosses and the marketable orders ``liquidity_per_fill`` left unfilled last time.
The market decides what trades, how much and at what price (``execute``); the ``Trader``
(the order desk) books the fill or ends the order. Orders that cannot trade rest in heaps by
price and time; an entry goes stale when its order changes or ends, and stale entries are
dropped once they outnumber the live orders (``tidy``). GTD orders expire at the first
call after their ``expire_time`` (``expire_due``).
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import datetime
from decimal import Decimal
from typing import Protocol

from tradebridge.domain.enums import Side, TimeInForce
from tradebridge.sim._records import Records
from tradebridge.sim._reference import Reference
from tradebridge.sim.clock import Clock
from tradebridge.sim.config import SimConfig
from tradebridge.sim.model import (
    FINAL_ORD_STATUSES,
    OPEN_ORD_STATUSES,
    OrdStatus,
    Quote,
    SimContract,
    SimOrder,
)
from tradebridge.sim.prices import PricePath

_COMPACT_MIN = 64  # heaps smaller than this are never rebuilt
_IMMEDIATE = frozenset({TimeInForce.IOC, TimeInForce.FOK})

# A heap entry: (sort key, time priority, order id).
_Entry = tuple[Decimal, int, int]


@dataclass(slots=True)
class Book:
    """One contract's market: its price path and the orders that may trade on it."""

    contract: SimContract
    path: PricePath
    live: dict[int, SimOrder] = field(default_factory=dict)  # Working and Suspended
    bids: list[_Entry] = field(default_factory=list)  # resting buy limits, highest first
    asks: list[_Entry] = field(default_factory=list)  # resting sell limits, lowest first
    buy_stops: list[_Entry] = field(default_factory=list)  # lowest stop first
    sell_stops: list[_Entry] = field(default_factory=list)  # highest stop first
    # Marketable orders that liquidity_per_fill left unfilled; they trade on the next pass.
    pending: dict[int, SimOrder] = field(default_factory=dict)

    def heap_size(self) -> int:
        """Return how many entries the heaps hold, stale ones included."""
        return len(self.bids) + len(self.asks) + len(self.buy_stops) + len(self.sell_stops)


class Trader(Protocol):
    """What a matching pass needs done to an order (the order desk does it)."""

    def fill(self, book: Book, order: SimOrder, qty: int, price: Decimal | None) -> None: ...

    def finalize(self, order: SimOrder, status: OrdStatus, exec_type: str, text: str) -> None: ...


class Market:
    """Every traded contract's book, where each working order rests, and GTD expiries."""

    trader: Trader  # set by the engine: the trader needs the market too

    def __init__(
        self, config: SimConfig, clock: Clock, reference: Reference, records: Records
    ) -> None:
        self._config = config
        self._clock = clock
        self._reference = reference
        self._records = records
        self.books: dict[int, Book] = {}  # by contract id, made on first use
        self._trailing: dict[int, Decimal] = {}  # trailing stops: order id -> distance
        self._rest_seq: dict[int, int] = {}  # order id -> its time priority while it rests
        self._seq = itertools.count()
        self._aggressive: set[int] = set()  # orders that took liquidity on arrival
        self._expiries: list[tuple[datetime, int]] = []  # heap of (expire time, order id)

    # --- prices ---------------------------------------------------------------------------
    def quote(self, contract_id: int) -> Quote:
        """Return the current top of book (the price path advanced to now)."""
        book = self._book_of(contract_id)
        self.expire_due()
        self.refresh(book)
        bid, ask = self.touch(book)
        return Quote(contract_id, bid, ask, book.path.last, self._clock.now())

    def set_price(self, contract_id: int, last: Decimal) -> None:
        """Move a contract's price (test hook, admin endpoint) and match resting orders.

        Raises KeyError for an unknown contract and ValueError for a price off tick.
        """
        book = self._book_of(contract_id)
        self.expire_due()
        self.refresh(book)
        book.path.set_last(last)
        self._match(book)

    def advance(self) -> None:
        """Step every traded contract's price path up to the clock and match orders."""
        self.expire_due()
        now = self._clock.now()
        for book in tuple(self.books.values()):
            if book.live:
                book.path.advance_to(now)
                self._match(book)

    def book(self, contract: SimContract) -> Book:
        """Return a contract's book, made (with its price path) on first use."""
        book = self.books.get(contract.id)
        if book is None:
            path = PricePath(
                self._config.seed,
                contract.name,
                contract.product,
                self._clock.now(),
                self._config.price_step_s,
            )
            book = self.books[contract.id] = Book(contract, path)
        return book

    def refresh(self, book: Book) -> None:
        """Advance the book's price to now; a move is a matching pass."""
        if book.path.advance_to(self._clock.now()) and book.live:
            self._match(book)

    @staticmethod
    def touch(book: Book) -> tuple[Decimal, Decimal]:
        """Return the bid and the ask."""
        last = book.path.last
        return last, last + book.path.tick_size

    def _book_of(self, contract_id: int) -> Book:
        contract = self._reference.contract(contract_id)
        if contract is None:
            raise KeyError(f"no contract with id {contract_id}")
        return self.book(contract)

    # --- matching -------------------------------------------------------------------------
    def _match(self, book: Book) -> None:
        """Run one matching pass over a contract at its current quote."""
        self._move_trailing_stops(book)
        bid, ask = self.touch(book)
        pending = list(book.pending.values())
        book.pending.clear()
        triggered = self._pop_while(book.buy_stops, lambda key: key <= ask)
        triggered += self._pop_while(book.sell_stops, lambda key: -key >= bid)
        crossing = self._pop_while(book.bids, lambda key: -key >= ask)
        crossing += self._pop_while(book.asks, lambda key: key <= bid)
        for order in itertools.chain(triggered, crossing, pending):
            self.execute(book, order, fresh=False)

    def execute(self, book: Book, order: SimOrder, fresh: bool) -> None:
        """Trade one order at the current quote as far as it can, then rest the rest.

        ``fresh`` is the order's first pass (placed, modified or activated).
        """
        if order.ord_status is not OrdStatus.WORKING:
            return
        version = order.version
        buy = order.action is Side.BUY
        bid, ask = self.touch(book)
        if version.order_type.needs_stop_price and not order.triggered:
            stop = version.stop_price
            assert stop is not None
            if not (ask >= stop if buy else bid <= stop):
                self.rest(book, order)
                return
            order.triggered = True
            fresh = True  # a triggered stop arrives in the market now
        touch = ask if buy else bid
        limit = version.price if version.order_type.needs_limit_price else None
        crossing = limit is None or (touch <= limit if buy else touch >= limit)
        tif = version.time_in_force
        immediate = fresh and tif in _IMMEDIATE
        if not crossing:
            self._aggressive.discard(order.id)
            if immediate:
                self.trader.finalize(
                    order, OrdStatus.CANCELED, "Canceled", f"{tif.upper()}: not marketable"
                )
            else:
                self.rest(book, order)
            return
        if fresh:
            self._aggressive.add(order.id)
        leaves = order.leaves_qty
        cap = self._config.liquidity_per_fill
        qty = leaves if cap is None else min(leaves, cap)
        if immediate and tif is TimeInForce.FOK and qty < leaves:
            self.trader.finalize(
                order, OrdStatus.CANCELED, "Canceled", "FOK: not enough liquidity to fill all"
            )
            return
        aggressive = limit is None or order.id in self._aggressive
        self.trader.fill(book, order, qty, touch if aggressive else limit)
        if order.ord_status in FINAL_ORD_STATUSES:  # filled, or cancelled through a link
            return
        if immediate:
            self.trader.finalize(order, OrdStatus.CANCELED, "Canceled", "IOC: remainder canceled")
        elif aggressive:
            book.pending[order.id] = order
        else:
            self.rest(book, order)

    def _pop_while(self, heap: list[_Entry], hit: Callable[[Decimal], bool]) -> list[SimOrder]:
        """Pop the live orders at the top of a heap whose key the market has reached."""
        found: list[SimOrder] = []
        while heap and hit(heap[0][0]):
            _, seq, order_id = heapq.heappop(heap)
            order = self._resting(order_id, seq)
            if order is not None:
                found.append(order)
        return found

    def _resting(self, order_id: int, seq: int) -> SimOrder | None:
        """Return the order of a heap entry, or None if the entry is stale."""
        order = self._records.order_of(order_id)
        if order.ord_status is OrdStatus.WORKING and self._rest_seq.get(order_id) == seq:
            return order
        return None

    def rest(self, book: Book, order: SimOrder) -> None:
        """Put a working order that cannot trade now into its heap (keeping time priority)."""
        seq = self._rest_seq.get(order.id)
        if seq is None:
            seq = self._rest_seq[order.id] = next(self._seq)
        version = order.version
        buy = order.action is Side.BUY
        if version.order_type.needs_stop_price and not order.triggered:
            stop = version.stop_price
            assert stop is not None
            heapq.heappush(
                book.buy_stops if buy else book.sell_stops, (stop if buy else -stop, seq, order.id)
            )
        else:
            limit = version.price
            assert limit is not None
            heapq.heappush(
                book.bids if buy else book.asks, (-limit if buy else limit, seq, order.id)
            )

    def unrest(self, book: Book, order: SimOrder) -> None:
        """Forget where an order rests (its heap entries go stale); it arrives afresh."""
        self._rest_seq.pop(order.id, None)
        book.pending.pop(order.id, None)
        self._aggressive.discard(order.id)

    def tidy(self, book: Book) -> None:
        """Drop stale heap entries (cancelled, filled, modified orders) once they pile up."""
        if book.heap_size() > max(_COMPACT_MIN, 2 * len(book.live)):
            for heap in (book.bids, book.asks, book.buy_stops, book.sell_stops):
                heap[:] = [e for e in heap if self._resting(e[2], e[1]) is not None]
                heapq.heapify(heap)

    # --- trailing stops -------------------------------------------------------------------
    def follow(self, order_id: int, distance: Decimal) -> None:
        """Make a stop order trail the best price by ``distance`` on every pass."""
        self._trailing[order_id] = distance

    def unfollow(self, order_id: int) -> None:
        """Stop trailing an order (it was changed into a type without a stop to move)."""
        self._trailing.pop(order_id, None)

    def _move_trailing_stops(self, book: Book) -> None:
        """Move trailing stops towards the market: never back, one version per move."""
        if not self._trailing:
            return
        bid, ask = self.touch(book)
        for order_id, distance in list(self._trailing.items()):
            order = self._records.order_of(order_id)
            if order.ord_status not in OPEN_ORD_STATUSES or order.triggered:
                if order.ord_status not in OPEN_ORD_STATUSES:
                    del self._trailing[order_id]
                continue
            if order.contract_id != book.contract.id:
                continue
            stop = order.version.stop_price
            assert stop is not None
            # A sell stop protects a long: it rises with the bid; a buy stop falls with the ask.
            wanted = bid - distance if order.action is Side.SELL else ask + distance
            better = wanted > stop if order.action is Side.SELL else wanted < stop
            if not better:
                continue
            self._records.new_version(order, replace(order.version, stop_price=wanted))
            self._records.publish(order.account_id, "order", "updated", order)
            self._records.report(order, "Replaced", text=f"Trailing stop moved to {wanted}")
            if order.ord_status is OrdStatus.WORKING:
                self.unrest(book, order)
                self.rest(book, order)

    # --- time in force --------------------------------------------------------------------
    def expire_at(self, expire_time: datetime, order_id: int) -> None:
        """Expire a GTD order at ``expire_time`` unless it has ended or changed by then."""
        heapq.heappush(self._expiries, (expire_time, order_id))

    def expire_due(self) -> None:
        """Expire GTD orders whose time has come."""
        heap = self._expiries
        if not heap:
            return
        now = self._clock.now()
        while heap and heap[0][0] <= now:
            _, order_id = heapq.heappop(heap)
            order = self._records.order_of(order_id)
            version = order.version
            if (
                order.ord_status in OPEN_ORD_STATUSES
                and version.time_in_force is TimeInForce.GTD
                and version.expire_time is not None
                and version.expire_time <= now
            ):
                self.trader.finalize(order, OrdStatus.EXPIRED, "Expired", "GTD order expired")

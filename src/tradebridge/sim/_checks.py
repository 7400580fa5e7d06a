"""The checks a request passes before the engine acts on it.

Two kinds, as Tradovate has them. A ``Refusal`` raised here refuses the request without an
order (an injected fault, an account that may not trade, an unknown or expired contract, a
malformed request, a bad price, a missing ``isAutomated``, a repeated ``clOrdId``).
``risk_failure`` returns the risk limit an order breaks instead of raising: the caller then
creates the order as ``Rejected`` (``MaxOrderQtyLimitReached``, ``MaxPosLimitReached``,
``SessionClosed``).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal

from tradebridge.domain.enums import OrderType, Side, TimeInForce
from tradebridge.domain.products import Product
from tradebridge.sim._book import Book, Market
from tradebridge.sim._positions import Positions
from tradebridge.sim._records import Records
from tradebridge.sim._reference import Reference
from tradebridge.sim.clock import Clock
from tradebridge.sim.config import SimConfig
from tradebridge.sim.model import (
    ACCESS_DENIED,
    BracketRequest,
    OrderRequest,
    OrdStatus,
    SimAccount,
    SimContract,
    SimOrder,
    StrategyBracket,
)


class Refusal(Exception):
    """A request the engine refuses: Tradovate's ``failureReason`` and a text."""

    def __init__(self, reason: str, text: str) -> None:
        super().__init__(text)
        self.reason = reason
        self.text = text


@dataclass(frozen=True, slots=True)
class Leg:
    """A checked order, ready to become a ``SimOrder``."""

    action: Side
    order_type: OrderType
    order_qty: int
    price: Decimal | None
    stop_price: Decimal | None
    time_in_force: TimeInForce
    expire_time: datetime | None
    cl_ord_id: str | None
    text: str
    is_automated: bool


def _check_price(product: Product, value: Decimal | None, name: str, kind: OrderType) -> Decimal:
    if value is None:
        raise Refusal("InvalidPrice", f"{name} is required for a {kind.value} order")
    if not value.is_finite() or value <= 0:
        raise Refusal("InvalidPrice", f"{name} {value} must be a positive price")
    if not product.is_on_tick(value):
        raise Refusal(
            "InvalidPrice",
            f"{name} {value} is not a multiple of the tick size {product.tick_size}",
        )
    return value


def check_bracket_side(number: int, bracket: BracketRequest, entry: Leg) -> None:
    """Refuse an OSO bracket on the entry's side (it must close what the entry opens)."""
    if bracket.action is entry.action:
        raise Refusal(
            "Unsupported",
            f"bracket{number} must {entry.action.opposite.value} to close a "
            f"{entry.action.value} entry",
        )


def check_new_qty(order: SimOrder, order_qty: int) -> None:
    """Refuse a modified quantity that does not exceed what has filled."""
    if order_qty <= order.filled_qty:
        raise Refusal(
            "Unsupported",
            f"orderQty {order_qty} must exceed the filled quantity {order.filled_qty}",
        )


def check_brackets(book: Book, entry: Leg, brackets: tuple[StrategyBracket, ...]) -> None:
    """Refuse a Bracket strategy's brackets that do not fit its entry or the tick size."""
    if not brackets:
        raise Refusal("Unsupported", "A bracket strategy needs at least one bracket")
    if sum(b.qty for b in brackets) != entry.order_qty:
        raise Refusal(
            "Unsupported",
            f"Bracket quantities add up to {sum(b.qty for b in brackets)}, the entry's "
            f"orderQty is {entry.order_qty}",
        )
    tick = book.contract.product.tick_size
    for number, bracket in enumerate(brackets, start=1):
        if bracket.qty < 1:
            raise Refusal("Unsupported", f"Bracket {number}: qty must be at least 1")
        if bracket.profit_target is None and bracket.stop_loss is None:
            raise Refusal("Unsupported", f"Bracket {number} has no target and no stop")
        for name, distance in (("profitTarget", bracket.profit_target),
                               ("stopLoss", bracket.stop_loss)):  # fmt: skip
            if distance is not None and (distance <= 0 or distance % tick != 0):
                raise Refusal(
                    "InvalidPrice",
                    f"Bracket {number}: {name} {distance} is not a positive multiple of "
                    f"the tick size {tick}",
                )


class Checks:
    """The checks that need the engine's state: accounts, contracts, prices, positions."""

    def __init__(
        self,
        config: SimConfig,
        clock: Clock,
        reference: Reference,
        records: Records,
        market: Market,
        positions: Positions,
    ) -> None:
        self._config = config
        self._clock = clock
        self._reference = reference
        self._records = records
        self._market = market
        self._positions = positions

    def prepare(self, request: OrderRequest) -> tuple[SimAccount, Book, Leg]:
        """Run the checks that refuse an order without creating one."""
        self._take_injected_failure()
        account = self.check_account(request.account_id)
        contract = self._reference.find_contract(request.symbol)
        if contract is None:
            if self._config.unknown_contract_failure == "AccessDenied":
                raise Refusal("UnknownReason", ACCESS_DENIED)
            raise Refusal("InvalidContract", f"Unknown contract {request.symbol!r}")
        if self._reference.is_expired(contract):
            raise Refusal(
                "InvalidContract",
                f"Contract {contract.name} expired on {contract.symbol.expiry().isoformat()}",
            )
        book = self._market.book(contract)
        self._market.refresh(book)
        if request.order_qty <= 0:
            raise Refusal("Unsupported", f"orderQty {request.order_qty} must be at least 1")
        price, stop = self.check_prices(
            book, request.action, request.order_type, request.price, request.stop_price, live=True
        )
        expire = self.check_tif(request.time_in_force, request.expire_time)
        leg = Leg(
            request.action, request.order_type, request.order_qty, price, stop,
            request.time_in_force, expire, request.cl_ord_id, request.text, request.is_automated,
        )  # fmt: skip
        return account, book, leg

    def bracket_leg(self, book: Book, bracket: BracketRequest, parent: Leg, live: bool) -> Leg:
        """Check an OSO or OCO leg; its quantity and ``isAutomated`` follow ``parent``."""
        price, stop = self.check_prices(
            book, bracket.action, bracket.order_type, bracket.price, bracket.stop_price, live=live
        )
        expire = self.check_tif(bracket.time_in_force, bracket.expire_time)
        return Leg(
            bracket.action, bracket.order_type, parent.order_qty, price, stop,
            bracket.time_in_force, expire, bracket.cl_ord_id, bracket.text, parent.is_automated,
        )  # fmt: skip

    def _take_injected_failure(self) -> None:
        faults = self._config.faults
        if faults.inject_failure_reason and faults.inject_failure_count > 0:
            faults.inject_failure_count -= 1
            text = faults.inject_failure_text or f"Injected failure {faults.inject_failure_reason}"
            raise Refusal(faults.inject_failure_reason, text)

    def check_account(self, account_id: int) -> SimAccount:
        """Return an account that exists and may trade."""
        account = self._reference.account(account_id)
        if account is None:
            raise Refusal("UnknownReason", ACCESS_DENIED)
        if account.readonly:
            raise Refusal("Unauthorized", f"Account {account.name} is read-only")
        if not account.active:
            raise Refusal("AccountClosed", f"Account {account.name} is closed")
        return account

    def contract_by_id(self, contract_id: int) -> SimContract:
        """Return a contract that exists."""
        contract = self._reference.contract(contract_id)
        if contract is None:
            raise Refusal("InvalidContract", f"Unknown contract id {contract_id}")
        return contract

    def check_automated(self, is_automated: bool) -> None:
        """Refuse a request without ``isAutomated`` where the configuration requires it."""
        if self._config.require_automated and not is_automated:
            raise Refusal("UnknownReason", "isAutomated is required")

    def check_request(
        self, account: SimAccount, is_automated: bool, cl_ord_ids: list[str | None]
    ) -> None:
        """Check ``isAutomated`` and, when duplicates are refused, the ``clOrdId`` values."""
        self.check_automated(is_automated)
        if self._config.duplicate_cl_ord_id == "reject":
            seen: set[str] = set()
            for cl_ord_id in cl_ord_ids:
                if cl_ord_id is None:
                    continue
                if cl_ord_id in seen or self._records.has_cl_ord_id(account.id, cl_ord_id):
                    raise Refusal("UnknownReason", f"Duplicate clOrdId {cl_ord_id!r}")
                seen.add(cl_ord_id)

    def check_prices(
        self,
        book: Book,
        action: Side,
        order_type: OrderType,
        price: Decimal | None,
        stop_price: Decimal | None,
        live: bool,
    ) -> tuple[Decimal | None, Decimal | None]:
        """Return the prices the type uses; ``live`` also checks stops against the market."""
        prod = book.contract.product
        limit = stop = None
        if order_type.needs_limit_price:
            limit = _check_price(prod, price, "price", order_type)
        if order_type.needs_stop_price:
            stop = _check_price(prod, stop_price, "stopPrice", order_type)
            if live:
                bid, ask = self._market.touch(book)
                # Exchanges refuse a stop the market has already passed: it would trigger at once.
                if action is Side.BUY and stop <= ask:
                    raise Refusal("InvalidPrice", f"Buy stop {stop} must be above the ask {ask}")
                if action is Side.SELL and stop >= bid:
                    raise Refusal("InvalidPrice", f"Sell stop {stop} must be below the bid {bid}")
        return limit, stop

    def check_tif(self, tif: TimeInForce, expire_time: datetime | None) -> datetime | None:
        """Return the expiry of a GTD order (UTC if naive), which must be in the future."""
        if tif is not TimeInForce.GTD:
            return None
        if expire_time is None:
            raise Refusal("Unsupported", "timeInForce GTD needs an expireTime")
        if expire_time.tzinfo is None:
            expire_time = expire_time.replace(tzinfo=UTC)
        if expire_time <= self._clock.now():
            raise Refusal("Unsupported", f"expireTime {expire_time.isoformat()} has passed")
        return expire_time

    def risk_failure(
        self, account: SimAccount, book: Book, action: Side, qty: int, added: int | None = None
    ) -> Refusal | None:
        """Return the risk check an order (or ``added`` more of a working one) fails."""
        cfg = self._config
        if cfg.max_order_qty is not None and qty > cfg.max_order_qty:
            return Refusal(
                "MaxOrderQtyLimitReached",
                f"Order quantity {qty} is over the limit of {cfg.max_order_qty}",
            )
        if cfg.max_position is not None and (added is None or added > 0):
            position = self._positions.position(account.id, book.contract.id)
            working = sum(
                o.leaves_qty
                for o in book.live.values()
                if o.account_id == account.id
                and o.action is action
                and o.ord_status is OrdStatus.WORKING
            )
            net = position.net_pos if position is not None else 0
            extra = qty if added is None else added
            resulting = abs(net + action.sign * (working + extra))
            if resulting > cfg.max_position:
                return Refusal(
                    "MaxPosLimitReached",
                    f"Position would reach {resulting}, over the limit of {cfg.max_position}",
                )
        if cfg.session_closed:
            return Refusal("SessionClosed", "The trading session is closed")
        return None

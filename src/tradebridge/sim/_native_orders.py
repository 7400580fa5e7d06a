"""Parsing of native order-command bodies (reference §5) into engine requests.

A body that is not what the reference describes (a missing required field, a wrong JSON
type, an enum value that is neither Tradovate's spelling nor a known order type) is a
``BadRequest`` (HTTP 400). An order type Tradovate knows but the simulator does not model
(``TrailingStop``, ``MIT`` ..., and the tutorial's typo ``TralingStop``) is a business
failure ``Unsupported`` (HTTP 200), as a real server would refuse an order it cannot route.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any, Literal, TypeVar

from tradebridge.domain.enums import OrderType, Side, TimeInForce
from tradebridge.sim._native_wire import ACTIONS, ORDER_TYPES, TIMES_IN_FORCE
from tradebridge.sim.engine import BracketRequest, OrderRequest, StrategyBracket

E = TypeVar("E")

UNSUPPORTED_ORDER_TYPES = frozenset(
    {"MIT", "QTS", "TrailingStop", "TrailingStopLimit", "LimitIfTouched", "TralingStop"}
)


class BadRequest(Exception):
    """The body is malformed: answer HTTP 400 with this short text."""


class Unsupported(Exception):
    """The request names something the simulator does not support: ``Unsupported``."""


class OrderBody:
    """Typed access to the fields of one JSON order body."""

    def __init__(self, body: Any, *, lowercase_enums: Literal["reject", "accept"]) -> None:
        if not isinstance(body, Mapping):
            raise BadRequest("the body must be a JSON object")
        self.body: Mapping[str, Any] = body
        self.lowercase_enums = lowercase_enums

    def required(self, key: str) -> Any:
        """Return a field that must be present."""
        value = self.body.get(key)
        if value is None:
            raise BadRequest(f"{key} is required")
        return value

    def string(self, key: str, *, required: bool = False) -> str | None:
        """Return a string field."""
        value = self.required(key) if required else self.body.get(key)
        if value is None:
            return None
        if not isinstance(value, str):
            raise BadRequest(f"{key} must be a string")
        return value

    def integer(self, key: str, *, required: bool = False) -> int | None:
        """Return an integer field (``cid``-style numeric strings are not integers here)."""
        value = self.required(key) if required else self.body.get(key)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, float) and value.is_integer():
                return int(value)
            raise BadRequest(f"{key} must be an integer")
        return value

    def boolean(self, key: str, *, required: bool = False) -> bool | None:
        """Return a boolean field."""
        value = self.required(key) if required else self.body.get(key)
        if value is None:
            return None
        if not isinstance(value, bool):
            raise BadRequest(f"{key} must be a boolean")
        return value

    def decimal(self, key: str) -> Decimal | None:
        """Return a price field as a Decimal (from its JSON text, without float noise)."""
        value = self.body.get(key)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise BadRequest(f"{key} must be a number")
        try:
            result = Decimal(str(value))
        except InvalidOperation:
            raise BadRequest(f"{key} must be a number") from None
        if not result.is_finite():
            raise BadRequest(f"{key} must be a number")
        return result

    def timestamp(self, key: str) -> datetime | None:
        """Return an ISO-8601 datetime field (UTC when no offset is given)."""
        text = self.string(key)
        if text is None:
            return None
        try:
            parsed = datetime.fromisoformat(text)
        except ValueError:
            raise BadRequest(f"{key} must be an ISO-8601 datetime") from None
        return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)

    def action(self, key: str = "action") -> Side:
        """Return the ``action`` enum."""
        return self._enum(key, ACTIONS, required=True)

    def order_type(self, key: str = "orderType") -> OrderType:
        """Return the ``orderType`` enum; known but unmodelled types are ``Unsupported``."""
        value = self.string(key, required=True)
        if value in UNSUPPORTED_ORDER_TYPES:
            raise Unsupported(f"Order type {value} is not supported")
        return self._enum(key, ORDER_TYPES, required=True)

    def time_in_force(self, default: TimeInForce) -> TimeInForce:
        """Return the ``timeInForce`` enum, or ``default`` when absent."""
        if self.body.get("timeInForce") is None:
            return default
        return self._enum("timeInForce", TIMES_IN_FORCE, required=True)

    def _enum(self, key: str, wire: Mapping[E, str], *, required: bool) -> E:
        value = self.string(key, required=required)
        for member, spelling in wire.items():
            if value == spelling:
                return member
        # Tradovate's enums are capitalised (§4.9). Whether the real server refuses
        # lowercase spellings is unverified, so ``lowercase_enums`` decides.
        if self.lowercase_enums == "accept" and isinstance(value, str):
            for member, spelling in wire.items():
                if value.lower() == spelling.lower():
                    return member
        allowed = ", ".join(wire.values())
        raise BadRequest(f"{key}: {value!r} is not one of {allowed}")


def parse_bracket(
    raw: Any, key: str, *, lowercase_enums: Literal["reject", "accept"]
) -> BracketRequest:
    """Return a ``RestrainedOrderVersion`` (bracket or OCO leg) as a ``BracketRequest``."""
    leg = OrderBody(raw, lowercase_enums=lowercase_enums) if raw is not None else None
    if leg is None:
        raise BadRequest(f"{key} is required")
    return BracketRequest(
        action=leg.action(),
        order_type=leg.order_type(),
        price=leg.decimal("price"),
        stop_price=leg.decimal("stopPrice"),
        time_in_force=leg.time_in_force(TimeInForce.GTC),
        cl_ord_id=leg.string("clOrdId"),
        text=leg.string("text") or "",
    )


def parse_strategy_params(
    raw: str,
    *,
    units: Literal["points", "ticks"],
    tick: Decimal | None,
    lowercase_enums: Literal["reject", "accept"],
    breakeven_key: str = "breakeven",
) -> tuple[OrderRequest, tuple[StrategyBracket, ...]]:
    """Parse ``startorderstrategy``'s ``params`` string (reference §5.8).

    Returns the entry (account, symbol and action are the caller's) and the brackets with
    their distances as prices. ``tick`` None (an unknown contract) leaves tick distances
    as they are: the engine refuses the contract anyway.
    """
    try:
        params = json.loads(raw)
    except ValueError:
        raise BadRequest("params must be a JSON string") from None
    if not isinstance(params, Mapping):
        raise BadRequest("params must hold a JSON object")
    entry = OrderBody(params.get("entryVersion"), lowercase_enums=lowercase_enums)
    qty = entry.integer("orderQty", required=True)
    if qty is None or qty <= 0:
        raise BadRequest("entryVersion.orderQty must be a positive integer")
    request = OrderRequest(
        account_id=0,
        symbol="",
        action=Side.BUY,
        order_type=entry.order_type(),
        order_qty=qty,
        price=entry.decimal("price"),
        stop_price=entry.decimal("stopPrice"),
        time_in_force=entry.time_in_force(TimeInForce.DAY),
        expire_time=entry.timestamp("expireTime"),
        text="",
        is_automated=True,
    )
    raw_brackets = params.get("brackets")
    if not isinstance(raw_brackets, list) or not raw_brackets:
        raise BadRequest("params.brackets must be a non-empty list")
    scale = tick if units == "ticks" and tick is not None else Decimal(1)
    brackets = []
    for index, item in enumerate(raw_brackets):
        leg = OrderBody(item, lowercase_enums=lowercase_enums)
        where = f"brackets[{index}]"
        bracket_qty = leg.integer("qty", required=True)
        target, stop = leg.decimal("profitTarget"), leg.decimal("stopLoss")
        if target is not None and target <= 0:
            raise BadRequest(f"{where}.profitTarget must be positive (a distance from the fill)")
        if stop is not None and stop >= 0:
            raise BadRequest(f"{where}.stopLoss must be negative (a distance from the fill)")
        brackets.append(
            StrategyBracket(
                qty=bracket_qty or 0,
                profit_target=None if target is None else target * scale,
                stop_loss=None if stop is None else -stop * scale,
                trailing=bool(leg.boolean("trailingStop")),
                breakeven=bool(leg.boolean(breakeven_key)),
            )
        )
    return request, tuple(brackets)

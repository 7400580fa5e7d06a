"""Risk: pre-trade rules on a routed order; a breach is a ``Denied`` naming the rule and numbers.

Pure: the position, the account's activity in the ledger and its balance are arguments. Each
rule is a small function of (the order's facts, the account's state, the rules in force)
returning a ``Verdict`` (its name, its numbers, pass or deny), or None where it is off. The
engine (``assess``) runs them in the fixed order of ``RULES``, after the kill switch, and
keeps every verdict; the first denial becomes the row's ``error_message`` and all of them go
to its ``order_history`` (docs/risk.md).

Rules guard exposure, so an order that only reduces the position (an exit, a flatten) passes
every one, the kill switch included: a trader who switched trading off, or hit a limit, must
still be able to get out.

The rules in force for a row are ``[risk]``, then its account's ``risk`` table, then
``[risk.strategies.<strategy_name>]``: the narrower wins, field by field (``rules_for``).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field, fields
from datetime import datetime, time, timedelta
from decimal import ROUND_CEILING, Decimal
from typing import Any
from zoneinfo import ZoneInfo

from tradebridge.config import RISK_RAILS, RiskConfig, RiskRules, Settings
from tradebridge.domain.commands import SubmitOrder
from tradebridge.domain.enums import Side
from tradebridge.domain.reports import OrderStatusReport
from tradebridge.domain.sessions import in_flat_window, session_at
from tradebridge.pipeline.legs import group_covers
from tradebridge.pipeline.validate import Denied


@dataclass(frozen=True, slots=True)
class RiskLimits:
    """The kill switch: ``[risk] kill_switch``, or a switch in the database (pipeline/kill.py)."""

    kill_switch: bool = False
    # Which switch is on, who threw it, when and why (pipeline/kill.py), for the denial.
    kill_switch_source: str = "risk.kill_switch"

    @classmethod
    def from_config(cls, config: RiskConfig) -> RiskLimits:
        """Build the limits from the settings section."""
        return cls(config.kill_switch)


def reduces_only(command: SubmitOrder, position: int | None, ahead: int = 0) -> bool:
    """Return whether ``command`` can only shrink the position toward flat.

    ``ahead``: what the account's other open orders on the same contract and side have
    still to fill: the order only reduces if it still does once they have filled (two
    resting sells of a long 1 each "reduce" it; together they turn it).
    Never with a bracket: its legs rest on what is left (a flat account, once the order has
    closed the position) and one of them would open a position.
    """
    if position is None or position == 0 or command.bracket is not None:
        return False
    after = position + command.side.sign * (command.quantity + ahead)
    return abs(after) < abs(position) and (after == 0 or (after > 0) == (position > 0))


def check_risk(
    command: SubmitOrder, *, position: int | None, limits: RiskLimits, ahead: int = 0
) -> Denied | None:
    """Return why the kill switch refuses ``command``, or ``None`` if it may be sent
    (``ahead``: as ``reduces_only``)."""
    if reduces_only(command, position, ahead):
        return None
    if limits.kill_switch:
        why = ""
        if ahead and reduces_only(command, position):
            # Alone it reduces: say why it does not, or an exit looks refused for nothing.
            why = (f"; with {ahead} more in working orders on its side it would not only "
                   "reduce the position (an exit cuts the legs first)")  # fmt: skip
        return Denied(
            f"kill switch is on: new orders are refused ({limits.kill_switch_source}){why}",
            "risk",
        )
    return None


def working_ahead(
    orders: Sequence[OrderStatusReport], contract: str, side: Side, ours: Collection[str]
) -> int:
    """Return what the broker's working orders on ``contract`` and ``side`` may still fill,
    besides the ledger's open rows (``ours``: their broker and client order ids; the ledger
    counts those itself).

    Counted as if every one filled, the conservative reading (docs/risk.md): an order
    without a parent for what it has left; bracket legs (stops and targets, of our rows or
    not) per entry, the larger of its stops' and its targets' (one-cancels-other: at most
    one of a pair fills), and while their entry still works no more than it has filled
    (what it fills later adds as much on the other side). Legs are exits of their entry's
    position: on the side of a long's protective stop they count as sells like any other.
    """
    working = [o for o in orders if o.contract == contract and not o.status.is_terminal]
    by_id: dict[str, OrderStatusReport] = {o.broker_order_id: o for o in working}
    total = 0
    groups: dict[str, list[OrderStatusReport]] = {}
    for order in working:
        if order.side is not side or order.broker_order_id in ours:
            continue
        if order.client_order_id is not None and order.client_order_id in ours:
            continue
        if order.parent_id is None:
            total += max(order.quantity - order.filled_qty, 0)
        else:
            groups.setdefault(order.parent_id, []).append(order)
    for parent_id, legs in groups.items():
        covered = group_covers(legs)
        parent = by_id.get(parent_id)
        if parent is not None:  # its entry still works: its legs follow what it fills
            covered = min(covered, parent.filled_qty)
        total += covered
    return total


# --- the rules in force ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Rules:
    """The rules in force for one account and strategy; None (or False) is a rule that is off.

    ``origin`` names the setting each value comes from (for messages); ``undefined`` the
    rails (``RISK_RAILS``) nobody set, which a live account must not have.
    """

    allowed_roots: frozenset[str] | None = None
    max_order_qty: int | None = None
    max_position: int | None = None
    max_account_position: int | None = None
    max_open_orders: int | None = None
    max_orders_per_minute: int | None = None
    max_orders_per_day: int | None = None
    daily_loss_limit: Decimal | None = None
    daily_profit_target: Decimal | None = None
    trailing_drawdown: Decimal | None = None
    trailing_mode: str = "intraday"
    trailing_start_balance: Decimal | None = None
    trailing_stop_balance: Decimal | None = None
    trailing_margin: Decimal = Decimal(0)
    timezone: str = "America/Chicago"
    day_reset: time = time(17, 0)
    trading_hours: bool = False
    session_open: time = time(17, 0)
    session_close: time = time(16, 0)
    no_entry_before_close_min: int | None = None
    cooldown_s: float | None = None
    min_stop_ticks: int | None = None
    max_stop_ticks: int | None = None
    require_stop_loss: bool = False
    flatten_at: time | None = None
    flatten_on_loss: bool = False
    origin: tuple[tuple[str, str], ...] = ()
    undefined: frozenset[str] = frozenset()

    def setting(self, name: str) -> str:
        """Return the setting ``name`` comes from, e.g. ``risk.max_order_qty``."""
        return _origins(self.origin).get(name, f"risk.{name}")

    @property
    def zone(self) -> ZoneInfo:
        """Return the exchange's time zone."""
        return ZoneInfo(self.timezone)

    @property
    def counts(self) -> bool:
        """Return whether a rule needs the account's activity in the ledger."""
        return any(
            x is not None
            for x in (self.max_open_orders, self.max_orders_per_minute, self.max_orders_per_day,
                      self.cooldown_s)
        )  # fmt: skip

    @property
    def balance(self) -> bool:
        """Return whether a rule needs the account's balance from the broker."""
        return any(
            x is not None
            for x in (self.daily_loss_limit, self.trailing_drawdown, self.daily_profit_target)
        )

    @property
    def position(self) -> bool:
        """Return whether checking an order needs the broker position.

        Whenever any rule is on: an order that only reduces the position passes every rule,
        and only the position tells.
        """
        return any(
            getattr(self, f.name) not in (None, False) for f in fields(self) if f.name in _SWITCHES
        )


@functools.lru_cache(maxsize=256)
def _origins(origin: tuple[tuple[str, str], ...]) -> dict[str, str]:
    return dict(origin)


# The fields of Rules whose None / False means "off" (the others are parameters; the minutes
# before the close count with trading_hours only).
_SWITCHES = frozenset({
    "allowed_roots", "max_order_qty", "max_position", "max_account_position", "max_open_orders",
    "max_orders_per_minute", "max_orders_per_day", "daily_loss_limit", "daily_profit_target",
    "trailing_drawdown", "trading_hours", "cooldown_s",
    "min_stop_ticks", "max_stop_ticks", "require_stop_loss", "flatten_at",
})  # fmt: skip


def _value(name: str, value: Any) -> Any:
    if value == "off" or value is None:
        return None
    if name == "allowed_roots":
        return frozenset(value)
    if name == "trading_hours":
        return value == "cme"
    return value


def rules_for(settings: Settings, account: str, strategy: str | None) -> Rules:
    """Return the rules in force for ``account`` and ``strategy`` (narrower wins)."""
    config = settings.risk
    values: dict[str, Any] = {name: getattr(config, name) for name in RiskRules.model_fields}
    origin = {name: f"risk.{name}" for name in values}
    configured = next((a for a in settings.accounts if a.name == account), None)
    layers: list[tuple[RiskRules | None, str]] = [
        (configured.risk if configured else None, f"accounts[{account}].risk"),
        (config.strategies.get(strategy or ""), f"risk.strategies.{strategy}"),
    ]
    for layer, where in layers:
        if layer is None:
            continue
        for name, value in layer.given().items():
            values[name] = value
            origin[name] = f"{where}.{name}"
    undefined = frozenset(name for name in RISK_RAILS if values[name] is None)
    return Rules(
        **{name: _value(name, value) for name, value in values.items()},
        origin=tuple(sorted(origin.items())),
        undefined=undefined,
    )


class RulesBook:
    """The rules in force per (account, strategy), resolved once from the settings."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._cache: dict[tuple[str, str], Rules] = {}

    def of(self, account: str, strategy: str | None) -> Rules:
        """Return the rules in force for ``account`` and ``strategy``."""
        key = (account, strategy or "")
        found = self._cache.get(key)
        if found is None:
            found = self._cache[key] = rules_for(self.settings, account, strategy)
        return found


# --- facts, state, verdicts -----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class OrderFacts:
    """The order a rule judges, and what the broker reported around it."""

    command: SubmitOrder
    now: datetime
    position: int | None = None  # net on the order's contract before it; None: not read
    positions: Mapping[str, int] | None = None  # net per contract of the account
    entry_price: Decimal | None = None  # what a stop's distance is measured from
    # What the account's other open orders on the contract and side have still to fill: they
    # may fill first, so the order is judged as if they had.
    ahead: int = 0

    @property
    def reduces(self) -> bool:
        """Return whether the order only shrinks the position toward flat."""
        return reduces_only(self.command, self.position, self.ahead)


@dataclass(frozen=True, slots=True)
class AccountState:
    """The account's state a rule needs; None where it was not read (its rules are off)."""

    open_orders: int | None = None
    orders_last_minute: int | None = None
    orders_today: int | None = None
    last_entry: datetime | None = None  # the latest entry on the order's root
    balance: Decimal | None = None  # net liquidation value now (cash and open P&L)
    day_start_balance: Decimal | None = None
    high_water: Decimal | None = None

    @property
    def day_pnl(self) -> Decimal | None:
        """Return the day's P&L (the balance less the day's start), None if either is unknown."""
        if self.balance is None or self.day_start_balance is None:
            return None
        return self.balance - self.day_start_balance


@dataclass(frozen=True, slots=True)
class Verdict:
    """What one rule said about one order: its name, its numbers, pass or deny."""

    rule: str
    passed: bool
    reason: str
    setting: str = ""
    numbers: tuple[tuple[str, str], ...] = ()
    field: str | None = "risk"

    def to_json(self) -> dict[str, Any]:
        """Return the verdict as JSON data (for ``order_history``)."""
        return {
            "rule": self.rule,
            "passed": self.passed,
            "reason": self.reason,
            "setting": self.setting,
            "numbers": dict(self.numbers),
        }


@dataclass(frozen=True, slots=True)
class RiskDenied(Denied):
    """A denial by a risk rule, with every verdict of the assessment."""

    rule: str = ""
    verdicts: tuple[Verdict, ...] = field(default_factory=tuple)

    def detail(self) -> dict[str, Any]:
        """Return the denial as ``order_history`` detail."""
        return {"rule": self.rule, "verdicts": [v.to_json() for v in self.verdicts]}


def _verdict(rule: str, rules: Rules, setting: str, passed: bool, reason: str,
             field_: str | None = "risk", **numbers: object) -> Verdict:  # fmt: skip
    return Verdict(rule, passed, reason, rules.setting(setting),
                   tuple((k, str(v)) for k, v in numbers.items()), field_)  # fmt: skip


Rule = Callable[[OrderFacts, AccountState, Rules], Verdict | None]


def allowed_roots(order: OrderFacts, state: AccountState, rules: Rules) -> Verdict | None:
    """Only the listed product roots may be traded."""
    del state
    if rules.allowed_roots is None:
        return None
    root = order.command.contract.root
    allowed = ", ".join(sorted(rules.allowed_roots))
    if root in rules.allowed_roots:
        return _verdict("allowed_roots", rules, "allowed_roots", True,
                        f"{root} is allowed", "instrument", root=root, allowed=allowed)  # fmt: skip
    return _verdict("allowed_roots", rules, "allowed_roots", False,
                    f"{root} is not among the allowed roots ({allowed})", "instrument",
                    root=root, allowed=allowed)  # fmt: skip


def max_order_qty(order: OrderFacts, state: AccountState, rules: Rules) -> Verdict | None:
    """At most this many contracts in one order."""
    del state
    limit = rules.max_order_qty
    if limit is None:
        return None
    qty = order.command.quantity
    passed = qty <= limit
    words = "is within" if passed else "exceeds"
    return _verdict("max_order_qty", rules, "max_order_qty", passed,
                    f"quantity {qty} {words} the limit of {limit} contracts per order",
                    "quantity", quantity=qty, limit=limit)  # fmt: skip


def trading_window(order: OrderFacts, state: AccountState, rules: Rules) -> Verdict | None:
    """Entries only inside the session, and none in its last minutes."""
    del state
    if not rules.trading_hours:
        return None
    zone = rules.zone
    local = order.now.astimezone(zone).strftime("%a %Y-%m-%d %H:%M %Z")
    session = session_at(order.now, zone, rules.session_open, rules.session_close)
    if session is None:
        return _verdict("trading_window", rules, "trading_hours", False,
                        f"the exchange is closed at {local} (sessions "
                        f"{rules.session_open:%H:%M}-{rules.session_close:%H:%M} {rules.timezone}"
                        ", business days of the roll calendar)", now=local)  # fmt: skip
    left = session.closes - order.now
    closes = session.closes.astimezone(zone).strftime("%H:%M %Z")
    minutes = rules.no_entry_before_close_min
    if minutes is not None and left <= timedelta(minutes=minutes):
        return _verdict("trading_window", rules, "no_entry_before_close_min", False,
                        f"no new entries in the last {minutes} minutes before the close at "
                        f"{closes} ({_minutes(left)} left at {local})",
                        now=local, close=closes, minutes_left=_minutes(left),
                        limit_min=minutes)  # fmt: skip
    return _verdict("trading_window", rules, "trading_hours", True,
                    f"inside the session, {_minutes(left)} before the close at {closes}",
                    now=local, close=closes, minutes_left=_minutes(left))  # fmt: skip


def flatten_at(order: OrderFacts, state: AccountState, rules: Rules) -> Verdict | None:
    """No new entries from ``flatten_at`` (when the account is flattened) until the reset."""
    del state
    if rules.flatten_at is None:
        return None
    zone = rules.zone
    local = order.now.astimezone(zone).strftime("%H:%M %Z")
    flat, reset = f"{rules.flatten_at:%H:%M}", f"{rules.day_reset:%H:%M}"
    if in_flat_window(order.now, zone, rules.flatten_at, rules.day_reset):
        return _verdict("flatten_at", rules, "flatten_at", False,
                        f"the account is flat from {flat} until the trading day's reset at "
                        f"{reset} ({rules.timezone}): no new entries at {local}",
                        now=local, flatten_at=flat, reset=reset)  # fmt: skip
    return _verdict("flatten_at", rules, "flatten_at", True,
                    f"before the flat time {flat} ({local})", now=local,
                    flatten_at=flat)  # fmt: skip


def _minutes(delta: timedelta) -> str:
    return f"{math.ceil(delta.total_seconds() / 60)} min"


def _stop_ticks(order: OrderFacts) -> Decimal | None:
    """Return how many ticks the order's stop loss is from its entry (None: not known)."""
    command, bracket = order.command, order.command.bracket
    if bracket is None:
        return None
    if bracket.stop_loss_ticks is not None:
        return Decimal(bracket.stop_loss_ticks)
    if bracket.stop_loss is None:
        return None
    entry = command.limit_price if command.limit_price is not None else command.stop_price
    entry = entry if entry is not None else order.entry_price
    if entry is None:
        return None
    tick = command.contract.product.tick_size
    return (abs(entry - bracket.stop_loss) / tick).quantize(Decimal(1), rounding=ROUND_CEILING)


def _has_stop(command: SubmitOrder) -> bool:
    bracket = command.bracket
    return bracket is not None and (
        bracket.stop_loss is not None or bracket.stop_loss_ticks is not None
    )


def require_stop_loss(order: OrderFacts, state: AccountState, rules: Rules) -> Verdict | None:
    """An entry must carry a stop loss."""
    del state
    if not rules.require_stop_loss:
        return None
    if _has_stop(order.command):
        return _verdict("require_stop_loss", rules, "require_stop_loss", True,
                        "the entry has a stop loss", "stop_loss")  # fmt: skip
    return _verdict(
        "require_stop_loss",
        rules,
        "require_stop_loss",
        False,
        "the entry has no stop loss and the policy requires one",
        "stop_loss",
    )


def stop_distance(order: OrderFacts, state: AccountState, rules: Rules) -> Verdict | None:
    """An entry's stop loss lies between the minimum and maximum distance (ticks)."""
    del state
    low, high = rules.min_stop_ticks, rules.max_stop_ticks
    if (low is None and high is None) or not _has_stop(order.command):
        return None
    setting = "min_stop_ticks" if low is not None else "max_stop_ticks"
    ticks = _stop_ticks(order)
    bounds = {"min_ticks": low, "max_ticks": high}
    shown = {k: v for k, v in bounds.items() if v is not None}
    if ticks is None:
        return _verdict("stop_distance", rules, setting, False,
                        "the stop loss's distance cannot be measured: the order has no entry "
                        "price, reference_price or quote; give the stop in ticks or send "
                        "reference_price", "stop_loss", **shown)  # fmt: skip
    if low is not None and ticks < low:
        return _verdict("stop_distance", rules, "min_stop_ticks", False,
                        f"the stop loss is {ticks} ticks from the entry, under the minimum of "
                        f"{low}", "stop_loss", ticks=ticks, **shown)  # fmt: skip
    if high is not None and ticks > high:
        return _verdict("stop_distance", rules, "max_stop_ticks", False,
                        f"the stop loss is {ticks} ticks from the entry, over the maximum of "
                        f"{high}", "stop_loss", ticks=ticks, **shown)  # fmt: skip
    return _verdict("stop_distance", rules, setting, True,
                    f"the stop loss is {ticks} ticks from the entry", "stop_loss",
                    ticks=ticks, **shown)  # fmt: skip


def cooldown(order: OrderFacts, state: AccountState, rules: Rules) -> Verdict | None:
    """No entry on a root within the cooldown after the last entry on it."""
    if rules.cooldown_s is None:
        return None
    root = order.command.contract.root
    last = state.last_entry
    if last is None:
        return _verdict("cooldown", rules, "cooldown_s", True, f"no recent entry on {root}",
                        root=root, cooldown_s=f"{rules.cooldown_s:g}")  # fmt: skip
    since = (order.now - last).total_seconds()
    passed = since >= rules.cooldown_s
    words = "after" if passed else "only"
    return _verdict("cooldown", rules, "cooldown_s", passed,
                    f"the last entry on {root} was {words} {since:.1f}s ago (cooldown "
                    f"{rules.cooldown_s:g}s)", root=root, since_s=f"{since:.1f}",
                    cooldown_s=f"{rules.cooldown_s:g}")  # fmt: skip


def _after(order: OrderFacts) -> int:
    """Return the net position once the order and the open orders ahead of it have filled."""
    return (order.position or 0) + order.command.side.sign * (order.command.quantity + order.ahead)


def _with_ahead(order: OrderFacts) -> str:
    return f" with {order.ahead} more in open orders" if order.ahead else ""


def max_position(order: OrderFacts, state: AccountState, rules: Rules) -> Verdict | None:
    """The net position on the contract stays within the limit."""
    del state
    limit = rules.max_position
    if limit is None:
        return None
    name = order.command.contract.name
    current, after = order.position or 0, _after(order)
    passed = abs(after) <= limit
    words = "within" if passed else "beyond"
    return _verdict("max_position", rules, "max_position", passed,
                    f"the position in {name} would be {after:+d} (now {current:+d}"
                    f"{_with_ahead(order)}), {words} the limit of {limit}", "quantity",
                    contract=name, position=current, after=after, limit=limit,
                    **({"ahead": order.ahead} if order.ahead else {}))  # fmt: skip


def max_account_position(order: OrderFacts, state: AccountState, rules: Rules) -> Verdict | None:
    """The sum of the absolute net positions of the account stays within the limit."""
    del state
    limit = rules.max_account_position
    if limit is None:
        return None
    nets = dict(order.positions or {})
    name = order.command.contract.name
    nets[name] = _after(order)
    current = sum(abs(v) for v in (order.positions or {}).values())
    total = sum(abs(v) for v in nets.values())
    passed = total <= limit
    words = "within" if passed else "beyond"
    return _verdict("max_account_position", rules, "max_account_position", passed,
                    f"the account would hold {total} contracts in all (now {current}"
                    f"{_with_ahead(order)}), {words} the limit of {limit}", "quantity",
                    contracts=total, now=current, limit=limit)  # fmt: skip


def _count(rule: str, rules: Rules, value: int | None, limit: int | None, what: str
           ) -> Verdict | None:  # fmt: skip
    if limit is None:
        return None
    count = value or 0
    passed = count < limit
    if passed:
        reason = f"{count} {what}, under the limit of {limit}"
    else:
        reason = f"{count} {what} already, the limit is {limit}"
    return _verdict(rule, rules, rule, passed, reason, count=count, limit=limit)


def max_open_orders(order: OrderFacts, state: AccountState, rules: Rules) -> Verdict | None:
    """The account has fewer open orders than the limit (one more would reach it at most)."""
    del order
    return _count("max_open_orders", rules, state.open_orders, rules.max_open_orders,
                  "orders of the account are open")  # fmt: skip


def max_orders_per_minute(order: OrderFacts, state: AccountState, rules: Rules) -> Verdict | None:
    """Fewer orders than the limit went out for the account in the last 60 seconds."""
    del order
    return _count("max_orders_per_minute", rules, state.orders_last_minute,
                  rules.max_orders_per_minute, "orders sent in the last minute")  # fmt: skip


def max_orders_per_day(order: OrderFacts, state: AccountState, rules: Rules) -> Verdict | None:
    """Fewer orders than the limit went out for the account in the trading day."""
    del order
    return _count("max_orders_per_day", rules, state.orders_today, rules.max_orders_per_day,
                  "orders sent in the trading day")  # fmt: skip


def _no_balance(rule: str, rules: Rules, setting: str) -> Verdict:
    return _verdict(rule, rules, setting, False,
                    "the account's balance could not be read from the broker, so the limit "
                    "cannot be checked")  # fmt: skip


def daily_loss_limit(order: OrderFacts, state: AccountState, rules: Rules) -> Verdict | None:
    """The day's P&L (realized and open) has not lost the limit."""
    del order
    limit = rules.daily_loss_limit
    if limit is None:
        return None
    pnl = state.day_pnl
    if pnl is None:
        return _no_balance("daily_loss_limit", rules, "daily_loss_limit")
    passed = -pnl < limit
    if passed:
        reason = f"the day's P&L is {pnl:+.2f}, the loss limit {limit:.2f}"
    else:
        reason = (f"the day's P&L is {pnl:+.2f}: the daily loss limit of {limit:.2f} is "
                  "reached; only orders that reduce a position pass until the reset")  # fmt: skip
    return _verdict("daily_loss_limit", rules, "daily_loss_limit", passed, reason,
                    pnl=f"{pnl:.2f}", limit=f"{limit:.2f}", balance=f"{state.balance:.2f}",
                    day_start=f"{state.day_start_balance:.2f}")  # fmt: skip


def trailing_threshold(rules: Rules, high_water: Decimal) -> Decimal | None:
    """Return the firm's threshold under a highest balance (None: the rule is off)."""
    if rules.trailing_drawdown is None:
        return None
    mark = high_water
    if rules.trailing_start_balance is not None:
        mark = max(mark, rules.trailing_start_balance)
    threshold = mark - rules.trailing_drawdown
    if rules.trailing_stop_balance is not None:
        threshold = min(threshold, rules.trailing_stop_balance)
    return threshold


def trailing_drawdown(order: OrderFacts, state: AccountState, rules: Rules) -> Verdict | None:
    """The balance stays more than the margin above the trailing threshold."""
    del order
    if rules.trailing_drawdown is None:
        return None
    if state.balance is None or state.high_water is None:
        return _no_balance("trailing_drawdown", rules, "trailing_drawdown")
    threshold = trailing_threshold(rules, state.high_water)
    assert threshold is not None
    room = state.balance - threshold
    margin = rules.trailing_margin
    passed = room > margin
    if passed:
        reason = (f"the balance {state.balance:.2f} is {room:.2f} above the trailing threshold "
                  f"{threshold:.2f} (margin {margin:.2f})")  # fmt: skip
    else:
        reason = (f"the balance {state.balance:.2f} is {room:.2f} above the trailing threshold "
                  f"{threshold:.2f}, within the margin of {margin:.2f}: only orders that reduce "
                  "a position pass")  # fmt: skip
    return _verdict("trailing_drawdown", rules, "trailing_drawdown", passed, reason,
                    balance=f"{state.balance:.2f}", threshold=f"{threshold:.2f}",
                    high_water=f"{state.high_water:.2f}", room=f"{room:.2f}",
                    margin=f"{margin:.2f}", mode=rules.trailing_mode)  # fmt: skip


def daily_profit_target(order: OrderFacts, state: AccountState, rules: Rules) -> Verdict | None:
    """New entries stop once the day's P&L reached the target."""
    del order
    target = rules.daily_profit_target
    if target is None:
        return None
    pnl = state.day_pnl
    if pnl is None:
        return _no_balance("daily_profit_target", rules, "daily_profit_target")
    passed = pnl < target
    words = "under" if passed else "reached"
    return _verdict("daily_profit_target", rules, "daily_profit_target", passed,
                    f"the day's P&L is {pnl:+.2f}, {words} the profit target of {target:.2f}",
                    pnl=f"{pnl:.2f}", target=f"{target:.2f}")  # fmt: skip


RULES: tuple[Rule, ...] = (
    allowed_roots,
    max_order_qty,
    trading_window,
    flatten_at,
    require_stop_loss,
    stop_distance,
    cooldown,
    max_position,
    max_account_position,
    max_open_orders,
    max_orders_per_minute,
    max_orders_per_day,
    daily_loss_limit,
    trailing_drawdown,
    daily_profit_target,
)
"""The engine's fixed order, after the kill switch: what the row alone tells first, then the
position, the ledger's counts, the broker's balance."""

INTAKE_RULES: tuple[Rule, ...] = (
    allowed_roots,
    max_order_qty,
    trading_window,
    flatten_at,
    require_stop_loss,
    stop_distance,
)
"""The rules the row alone decides (with the time): the webhook runs them before it stores."""


def assess(
    order: OrderFacts,
    state: AccountState,
    rules: Rules,
    limits: RiskLimits,
    *,
    only: tuple[Rule, ...] = RULES,
) -> list[Verdict]:
    """Run the kill switch, then ``only`` (every rule) in order; return every verdict."""
    if order.reduces:
        return [Verdict("reduces_only", True,
                        f"the order only reduces the position ({order.position:+d}): it passes "
                        "every rule", "", (("position", str(order.position)),))]  # fmt: skip
    killed = check_risk(order.command, position=order.position, limits=limits, ahead=order.ahead)
    verdicts = [
        Verdict("kill_switch", killed is None, killed.reason if killed else "off",
                limits.kill_switch_source)
    ]  # fmt: skip
    for rule in only:
        verdict = rule(order, state, rules)
        if verdict is not None:
            verdicts.append(verdict)
    return verdicts


def denial(verdicts: list[Verdict]) -> RiskDenied | None:
    """Return the denial of an assessment (its first failed rule), or None if all passed."""
    failed = [v for v in verdicts if not v.passed]
    if not failed:
        return None
    first = failed[0]
    reason = f"risk rule {first.rule}: {first.reason} ({first.setting})"
    if first.rule == "kill_switch":
        reason = first.reason
    others = [v.rule for v in failed[1:]]
    if others:
        reason += f"; also denied by {', '.join(others)}"
    return RiskDenied(reason, first.field, rule=first.rule, verdicts=tuple(verdicts))


def check_order(
    order: OrderFacts, state: AccountState, rules: Rules, limits: RiskLimits
) -> tuple[list[Verdict], RiskDenied | None]:
    """Assess ``order`` with every rule; return the verdicts and the denial, if any."""
    verdicts = assess(order, state, rules, limits)
    return verdicts, denial(verdicts)

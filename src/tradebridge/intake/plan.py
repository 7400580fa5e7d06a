"""A parsed alert to ledger rows: symbol resolved, accounts fanned out, brackets in ticks.

Then every row is put to the worker's own decisions (``pipeline/admission.py``): what a
worker would deny whatever the broker reports is a 400 now, naming the account, and nothing
of the alert is stored (one bad account refuses the whole fan-out: a partial fan-out would
be a surprise of its own).
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, replace
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from tradebridge.brokers.factory import dialect_capabilities
from tradebridge.config import Settings, WebhookAccountEntry
from tradebridge.domain.clock import utcnow
from tradebridge.domain.contracts import ContractSymbol, resolve_symbol
from tradebridge.domain.enums import Dialect
from tradebridge.domain.kill import KillSwitches
from tradebridge.domain.lifecycle import SignalStatus
from tradebridge.domain.products import MAX_CONTRACTS
from tradebridge.errors import InvalidSymbol
from tradebridge.intake.formats.alert import (
    AccountRef,
    AlertRejected,
    Format,
    ParsedAlert,
)
from tradebridge.intake.sizing import BracketLeg, convert_bracket
from tradebridge.obs import metrics
from tradebridge.pipeline.admission import Admission, admit
from tradebridge.pipeline.kill import with_kill_switch
from tradebridge.pipeline.risk import RiskDenied, RiskLimits, RulesBook
from tradebridge.pipeline.route import brackets_from_fill
from tradebridge.pipeline.validate import RawSignal
from tradebridge.store.ledger import NewSignal

STALE = "stale"
"""``error_message`` of a row stored denied because its alert fired too long ago."""


@dataclass(frozen=True, slots=True)
class AlertPlan:
    """The rows one alert becomes, with what the answer should tell the sender."""

    group_id: str
    rows: tuple[NewSignal, ...]
    instrument: str | None
    notes: tuple[str, ...]


def new_group_id() -> str:
    """Return a fresh group id; row ids are ``<group>-<n>``."""
    return f"tv-{secrets.token_hex(8)}"


def plan_alert(
    alert: ParsedAlert,
    settings: Settings,
    today: date,
    *,
    group_id: str,
    stale_reason: str | None = None,
    kill: KillSwitches | None = None,
    now: datetime | None = None,
    rules: RulesBook | None = None,
) -> AlertPlan:
    """Build the ledger rows of ``alert``; ``AlertRejected`` if it cannot be traded.

    ``kill``: the kill switches as the database has them (``store/kill.py``); None: only
    the settings' ``risk.kill_switch``. ``now`` is when it arrived (the trading window
    judges it by that; default: now). ``rules``: the caller's book of rules for these
    settings (it resolves each account and strategy once); None: a new one.
    """
    contract = _contract(alert.symbol, settings, today)
    accounts = expand_accounts(alert.accounts, settings)
    notes: list[str] = []
    stop_loss, take_profit = _brackets(alert, contract, notes)
    targets, trailing = _scale_out(alert, contract, notes, accounts, settings)
    metadata: dict[str, Any] = {"webhook": {"format": alert.format}}
    if alert.alert_id is not None:
        metadata["webhook"]["id"] = alert.alert_id
    if alert.fired_at is not None:
        metadata["webhook"]["time"] = alert.fired_at.isoformat()
    if alert.symbol is not None:
        metadata["webhook"]["symbol"] = alert.symbol
    if alert.comment is not None:
        metadata["webhook"]["comment"] = alert.comment
    if notes:
        metadata["webhook"]["notes"] = notes
    status = SignalStatus.DENIED if stale_reason else SignalStatus.PENDING
    if stale_reason:
        metadata["webhook"]["stale"] = stale_reason
    strategy = alert.strategy or settings.webhook.default_strategy

    rows: list[NewSignal] = []
    for name, multiplier in accounts:
        common: dict[str, Any] = {
            "account_name": name,
            "instrument": contract.name if contract else None,
            "strategy_name": strategy,
            "metadata": metadata,
            "group_id": group_id,
            "status": status,
            "error_message": STALE if stale_reason else None,
            "reference_price": alert.reference_price,
        }
        quantity = _scaled(alert.quantity, multiplier, "quantity", name)
        target = _scaled(alert.target_position, multiplier, "target_position", name)
        if alert.cancel_first:
            rows.append(
                NewSignal(signal_id=f"{group_id}-{len(rows) + 1}", intent="cancel", **common)
            )
        rows.append(
            NewSignal(
                signal_id=f"{group_id}-{len(rows) + 1}",
                intent=alert.intent,
                side=alert.side if alert.intent in {"order", "reverse"} else None,
                quantity=quantity,
                target_position=target,
                order_type=None if alert.intent in {"cancel", "flatten"} else alert.order_type,
                price=alert.price,
                stop_price=alert.stop_price,
                time_in_force=alert.tif,
                stop_loss=stop_loss.price,
                take_profit=take_profit.price,
                stop_loss_ticks=stop_loss.ticks,
                take_profit_ticks=take_profit.ticks,
                take_profits=(
                    [
                        {
                            "ticks": ticks,
                            "quantity": int(_scaled(q, multiplier, "quantity", name) or 0),
                        }
                        for ticks, q in targets
                    ]
                    if targets
                    else None
                ),
                trailing_stop_ticks=trailing,
                breakeven=alert.breakeven or None,
                **common,
            )
        )
    _admit(alert, rows, settings, today, now or utcnow(),
           kill or KillSwitches(forced=settings.risk.kill_switch),
           rules or RulesBook(settings))  # fmt: skip
    return AlertPlan(
        group_id=group_id,
        rows=tuple(rows),
        instrument=contract.name if contract else None,
        notes=tuple(notes),
    )


def _contract(symbol: str | None, settings: Settings, today: date) -> ContractSymbol | None:
    if symbol is None:
        return None
    root_map = {k.upper(): v.upper() for k, v in settings.webhook.symbol_map.items()}
    try:
        return resolve_symbol(symbol, today, root_map, settings.contracts.calendar())
    except InvalidSymbol as e:
        raise AlertRejected(
            f"symbol {symbol[:40]!r}: {e}",
            field="symbol",
            expected="a listed, unexpired contract: MNQ1!, CME_MINI:MNQ1!, MNQZ6, MNQZ2026 or MNQ",
        ) from None


def expand_accounts(refs: tuple[AccountRef, ...], settings: Settings) -> list[tuple[str, Decimal]]:
    """Return (account, multiplier) per row: groups expanded, the default filled in."""
    hook = settings.webhook
    if not refs:
        default = hook.default_account
        if default is None and len(settings.accounts) == 1:
            default = settings.accounts[0].name
        if default is None:
            raise AlertRejected(
                "the alert names no account and no default account is configured",
                field="account",
                expected="account, accounts, or webhook.default_account in the settings",
            )
        refs = (AccountRef(default),)
    out: list[tuple[str, Decimal]] = []
    for ref in refs:
        if ref.name.startswith("group:"):
            group = ref.name.removeprefix("group:")
            members = hook.groups.get(group)
            if not members:
                known = ", ".join(sorted(hook.groups)) or "none configured"
                raise AlertRejected(
                    f"account group {group[:40]!r} is not configured",
                    field="accounts",
                    expected=f"one of the groups in webhook.groups ({known})",
                )
            for member in members:
                entry = member if isinstance(member, WebhookAccountEntry) else None
                name = entry.account if entry else str(member)
                out.append((name, ref.multiplier * (entry.multiplier if entry else 1)))
        else:
            out.append((ref.name, ref.multiplier))
    configured = {a.name for a in settings.accounts}
    seen: set[str] = set()
    for name, _ in out:
        if configured and name not in configured:
            raise AlertRejected(
                f"account {name[:60]!r} is not configured",
                field="account",
                expected="one of the accounts in the settings: " + ", ".join(sorted(configured)),
            )
        if name in seen:
            raise AlertRejected(
                f"account {name[:60]!r} is listed twice (directly or through a group)",
                field="accounts",
                expected="each account once",
            )
        seen.add(name)
    return out


def _scaled(value: Decimal | None, multiplier: Decimal, field: str, account: str) -> Decimal | None:
    if value is None:
        return None
    scaled = value * multiplier
    if scaled != scaled.to_integral_value():
        raise AlertRejected(
            f"{field} {value} x multiplier {multiplier} for account {account[:60]!r} is "
            f"{scaled}: contracts come in whole numbers",
            field="accounts",
            expected="multipliers that keep quantities whole",
        )
    if field == "quantity" and scaled < 1:
        raise AlertRejected(f"{field} for {account[:60]!r} is {scaled}", field="accounts",
                            expected="at least one contract per account")  # fmt: skip
    if abs(scaled) > MAX_CONTRACTS:
        raise AlertRejected(
            f"{field} for {account[:60]!r} is {scaled}",
            field="accounts",
            expected=f"at most {MAX_CONTRACTS:,} contracts per account",
        )
    return scaled.to_integral_value() + 0


def _scale_out(
    alert: ParsedAlert,
    contract: ContractSymbol | None,
    notes: list[str],
    accounts: list[tuple[str, Decimal]],
    settings: Settings,
) -> tuple[list[tuple[int, Decimal]], int | None]:
    """Return the take profits (ticks, quantity) and the trailing stop's ticks of an alert.

    Refused (400) for an account whose broker cannot place them: they go as a native order
    strategy (pipeline/route.py ``scale_out_refusal`` says the same to the worker).
    """
    if not (alert.take_profits or alert.trailing_stop or alert.breakeven):
        return [], None
    field = ("take_profit" if alert.take_profits
             else "trailing_stop" if alert.trailing_stop else "breakeven")  # fmt: skip
    for name, _ in accounts:
        if not brackets_from_fill(settings, name):
            raise AlertRejected(
                f"{field}: account {name[:60]!r} cannot place several take profits, trailing "
                "stops or break-even moves (they go as a native Tradovate order strategy; "
                "this account uses the TradingView bridge, or tradovate.strategies.use is "
                "never)",
                field=field,
                expected="one take_profit and a stop_loss, or a native account",
            )
    assert contract is not None  # the alert's intent needs a symbol
    direction = 1 if alert.side != "sell" else -1
    targets: list[tuple[int, Decimal]] = []
    for index, target in enumerate(alert.take_profits):
        leg = convert_bracket(target.bracket, contract.product, leg=f"take_profit[{index}]",
                              direction=direction)  # fmt: skip
        if leg.note:
            notes.append(leg.note)
        assert leg.ticks is not None  # distances only (formats/tradebridge.py)
        targets.append((leg.ticks, target.quantity))
    trailing = None
    if alert.trailing_stop is not None:
        leg = convert_bracket(alert.trailing_stop, contract.product, leg="trailing_stop",
                              direction=direction)  # fmt: skip
        if leg.note:
            notes.append(leg.note)
        trailing = leg.ticks
    return targets, trailing


def _brackets(
    alert: ParsedAlert, contract: ContractSymbol | None, notes: list[str]
) -> tuple[BracketLeg, BracketLeg]:
    if contract is None or (alert.stop_loss is None and alert.take_profit is None):
        return BracketLeg(), BracketLeg()
    direction: int | None = None
    if alert.intent == "order":
        direction = 1 if alert.side == "buy" else -1
    elif alert.intent == "target" and alert.target_position is not None:
        if alert.target_position == 0:
            raise AlertRejected(
                "a stop loss or take profit on a flat target_position protects nothing",
                field="stop_loss" if alert.stop_loss else "take_profit",
                expected="no brackets with target_position 0",
            )
        direction = 1 if alert.target_position > 0 else -1
    entry = alert.price if alert.price is not None else alert.reference_price
    legs: list[BracketLeg] = []
    for name, bracket in (("stop_loss", alert.stop_loss), ("take_profit", alert.take_profit)):
        if bracket is None:
            legs.append(BracketLeg())
            continue
        leg = convert_bracket(bracket, contract.product, leg=name, direction=direction,
                              entry=entry)  # fmt: skip
        if leg.note:
            notes.append(leg.note)
        legs.append(leg)
    return legs[0], legs[1]


# The alert field a row column comes from, per dialect (for the 400's ``field``).
_ALERT_FIELDS: dict[Format, dict[str, str]] = {
    "tradebridge": {
        "account_name": "account", "instrument": "symbol", "time_in_force": "tif",
        "stop_loss_ticks": "stop_loss", "take_profit_ticks": "take_profit", "intent": "action",
    },
    "traderspost": {
        "account_name": "account", "instrument": "ticker", "time_in_force": "timeInForce",
        "stop_loss": "stopLoss", "stop_loss_ticks": "stopLoss", "take_profit": "takeProfit",
        "take_profit_ticks": "takeProfit", "reference_price": "signalPrice",
        "price": "limitPrice", "stop_price": "stopPrice", "order_type": "orderType",
        "side": "action", "intent": "action",
    },
    "pickmytrade": {
        "account_name": "account_id", "instrument": "symbol", "stop_loss": "sl",
        "stop_loss_ticks": "dollar_sl", "take_profit": "tp", "take_profit_ticks": "dollar_tp",
        "reference_price": "price", "side": "data", "intent": "data",
        "target_position": "reverse_order_close", "time_in_force": "order_type",
    },
}  # fmt: skip


def _admit(
    alert: ParsedAlert,
    rows: list[NewSignal],
    settings: Settings,
    today: date,
    now: datetime,
    kill: KillSwitches,
    rules: RulesBook,
) -> None:
    """Refuse the alert if a worker is sure to deny one of its rows (pipeline/admission.py)."""
    # An intake-only process without [[accounts]] cannot tell (expand_accounts lets any
    # name through then); the workers' own settings decide.
    configured = frozenset(a.name for a in settings.accounts)
    base = Admission(
        today=today,
        accounts=configured or frozenset(row.account_name for row in rows),
        root_map={k.upper(): v.upper() for k, v in settings.webhook.symbol_map.items()},
        limits=RiskLimits.from_config(settings.risk),
        legs=settings.orders.leg_time_in_force,
        rules=rules.of,
        now=now,
        calendar=settings.contracts.calendar(),
    )
    dialects = {a.name: a.dialect for a in settings.accounts}
    abilities = {d: dialect_capabilities(d) for d in {*dialects.values(), Dialect.NATIVE}}
    # The rows of a fan-out differ only in their account and sizes: one verdict per dialect,
    # intent and size serves every configured account (any other is judged on its own).
    passed: set[tuple[Any, ...]] = set()
    for row in rows:
        dialect = dialects.get(row.account_name, Dialect.NATIVE)
        from_fill = brackets_from_fill(settings, row.account_name)
        # A kill switch of the row's account (or the global one) is known here: refused now.
        limits = with_kill_switch(base.limits, kill, row.account_name)
        known = base if limits is base.limits else replace(base, limits=limits)
        stopped = limits.kill_switch_source if limits.kill_switch else None
        # Accounts under rules of their own are judged on their own.
        own = known.rules(row.account_name, row.strategy_name) if known.rules else None
        key = (dialect, from_fill, row.intent, row.quantity, row.target_position, stopped, own)
        if key in passed and row.account_name in configured:
            continue
        can = abilities[dialect]
        denied = admit(RawSignal.of(row), known, quotes=can.quotes,
                       leg_time_in_force=can.leg_time_in_force,
                       brackets_from_fill=from_fill)  # fmt: skip
        if denied is None:
            passed.add(key)
            continue
        if isinstance(denied, RiskDenied):
            metrics.RISK_DENIALS.labels(rule=denied.rule, stage="intake").inc()
        # "risk" names a setting (the kill switch), not a field of the alert.
        field = None if denied.field in (None, "risk") else denied.field
        field = _ALERT_FIELDS[alert.format].get(field or "", field)
        raise AlertRejected(
            f"account {row.account_name[:60]!r}: {denied.reason}",
            field=field,
            expected="an alert every account can trade as written (nothing was stored; "
            "docs/tradingview.md §3)",
        )

"""A parsed alert to ledger rows: symbol resolved, accounts fanned out, brackets in ticks."""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from typing import Any

from tradebridge.config import Settings, WebhookAccountEntry
from tradebridge.domain.contracts import ContractSymbol, resolve_symbol
from tradebridge.errors import InvalidSymbol
from tradebridge.intake.formats import MAX_CONTRACTS, AccountRef, AlertRejected, ParsedAlert
from tradebridge.intake.sizing import BracketLeg, convert_bracket
from tradebridge.store.ledger import LedgerStatus, NewSignal

STALE = "stale"
"""``error_message`` of a row stored denied because its alert fired too long ago."""


@dataclass(frozen=True, slots=True)
class Plan:
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
) -> Plan:
    """Build the ledger rows of ``alert``; ``AlertRejected`` if it cannot be traded."""
    contract = _contract(alert.symbol, settings, today)
    accounts = expand_accounts(alert.accounts, settings)
    notes: list[str] = []
    stop_loss, take_profit = _brackets(alert, contract, notes)
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
    status = LedgerStatus.DENIED if stale_reason else LedgerStatus.PENDING
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
                side=alert.side if alert.intent == "order" else None,
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
                **common,
            )
        )
    return Plan(
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
        return resolve_symbol(symbol, today, root_map)
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

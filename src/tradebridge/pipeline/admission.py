"""Admission: would a worker deny this row for a reason already known before placement?

The webhook stores alerts as rows and answers at once; a worker places them later. Anything
the worker would deny whatever the broker then reports must be refused at intake (a 400),
never answered "accepted" and denied afterwards. So intake runs the worker's own decisions
(``validate``, ``route``, ``check_risk``) on each row, with what is known before placement:

* the row and the settings (accounts, symbol map, risk limits, leg time in force);
* what the account's adapter can do (``BrokerCapabilities``): read a quote at placement,
  give bracket legs a time in force of their own, price legs from the fill (strategies);
* nothing the broker reports: the position is taken as flat and no order as working, and a
  denial whose reason depends on them ("nothing to do") is not a refusal.

Risk at intake runs the rules the row alone decides, with the time of arrival
(``risk.INTAKE_RULES``), on every order the route would send from flat: the kill switch, the
allowed roots, the trading window, a required stop loss and its distance (so buy, sell,
reverse, and a target position other than 0 are refused by them; exit, cancel, flatten and a
target of 0 pass, so a trader can still get out), and ``max_order_qty`` for plain orders,
whose quantity is the row's own. What depends on the position, the ledger's counts or the
balance is checked at placement only (docs/risk.md).
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, replace
from datetime import date, datetime

from tradebridge.domain.commands import Bracket, LegTimeInForce
from tradebridge.domain.contracts import DEFAULT_ROLLS, RollCalendar
from tradebridge.domain.ids import ClientOrderId
from tradebridge.pipeline.risk import (
    INTAKE_RULES,
    AccountState,
    OrderFacts,
    RiskLimits,
    Rules,
    assess,
    check_risk,
    denial,
    max_order_qty,
)
from tradebridge.pipeline.route import BrokerView, PlaceOrder, route
from tradebridge.pipeline.validate import Denied, Intent, RawSignal, validate


@dataclass(frozen=True, slots=True)
class Admission:
    """What admission knows about the worker that will place a row (from the settings)."""

    today: date
    accounts: Collection[str]
    root_map: Mapping[str, str]
    limits: RiskLimits
    legs: LegTimeInForce = "entry"
    # The rules in force per (account, strategy) (``risk.RulesBook.of``), and the time of
    # arrival; without them only the kill switch is checked.
    rules: Callable[[str, str | None], Rules] | None = None
    now: datetime | None = None
    calendar: RollCalendar = DEFAULT_ROLLS  # when continuous symbols roll ([contracts])


def admit(
    raw: RawSignal,
    known: Admission,
    *,
    quotes: bool,
    leg_time_in_force: bool,
    brackets_from_fill: bool = False,
) -> Denied | None:
    """Return why a worker is sure to deny ``raw``, or None if it may place it.

    ``quotes``, ``leg_time_in_force`` and ``brackets_from_fill`` are the capabilities of the
    adapter of the row's account (``BrokerCapabilities``).
    """
    checked = validate(raw, today=known.today, accounts=known.accounts, root_map=known.root_map,
                       calendar=known.calendar)  # fmt: skip
    if isinstance(checked, Denied):
        return checked
    view = BrokerView(quote_at_placement=quotes, leg_time_in_force=leg_time_in_force)
    plan = route(checked, view, ClientOrderId(raw.signal_id), today=known.today, legs=known.legs,
                 brackets_from_fill=brackets_from_fill, calendar=known.calendar)  # fmt: skip
    if isinstance(plan, Denied):
        return None if plan.nothing_to_do else plan
    if not isinstance(plan, PlaceOrder):
        return None
    if known.rules is None or known.now is None:
        # position None: not known here, so nothing counts as only reducing it.
        return check_risk(plan.command, position=None, limits=known.limits)
    rules = known.rules(checked.account, checked.strategy_name)
    command = plan.command
    if checked.stop_loss_ticks is not None and not (
        command.bracket
        and (command.bracket.stop_loss is not None or command.bracket.stop_loss_ticks)
    ):
        # Legs in ticks priced from the quote at placement: the stop's distance is its ticks.
        command = replace(
            command,
            bracket=replace(command.bracket or Bracket(), stop_loss_ticks=checked.stop_loss_ticks),
        )
    # A reverse or target's quantity at placement follows the position, not the row.
    only = tuple(
        r for r in INTAKE_RULES if r is not max_order_qty or checked.intent is Intent.ORDER
    )
    facts = OrderFacts(command, known.now, entry_price=checked.reference_price)
    return denial(assess(facts, AccountState(), rules, known.limits, only=only))

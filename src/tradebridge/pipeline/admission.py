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

Risk at intake keeps the limits that do not depend on the position: the kill switch for
every order the route would send from flat (so buy, sell, reverse, and a target position
other than 0 are refused while it is on; exit, cancel, flatten and a target of 0 pass, so a
trader can still get out), and ``max_order_qty`` for plain orders, whose quantity is the
row's own. A position limit is checked at placement only.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass, replace
from datetime import date

from tradebridge.domain.commands import LegTimeInForce
from tradebridge.domain.ids import ClientOrderId
from tradebridge.pipeline.risk import RiskLimits, check_risk
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
    checked = validate(raw, today=known.today, accounts=known.accounts, root_map=known.root_map)
    if isinstance(checked, Denied):
        return checked
    view = BrokerView(quote_at_placement=quotes, leg_time_in_force=leg_time_in_force)
    plan = route(checked, view, ClientOrderId(raw.signal_id), today=known.today, legs=known.legs,
                 brackets_from_fill=brackets_from_fill)  # fmt: skip
    if isinstance(plan, Denied):
        return None if plan.nothing_to_do else plan
    if not isinstance(plan, PlaceOrder):
        return None
    limits = replace(
        known.limits,
        max_order_qty=known.limits.max_order_qty if checked.intent is Intent.ORDER else None,
        max_position=None,
    )
    # position None: not known here, so nothing counts as only reducing it.
    return check_risk(plan.command, position=None, limits=limits)

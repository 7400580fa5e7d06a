"""Matching a lost submit by shape, the same way for both dialects (reference §11.3).

A lookup first looks for the submit's own client id (native ``clOrdId``, bridge ``requestId``
when echoed): that is proof. Only where no order carries it may an order be adopted by shape,
and only one that nothing else can own (DESIGN.md "Exactly-once effect"): each adapter drops
orders that carry another client id, that other ledger rows own, that this process placed, or
that existed before the submit; what is left is judged here, field by field and bracket leg by
bracket leg. The verdict of each order is one of three:

* a reason it is not ours (``"side sell, not buy"``): it is ignored;
* ``"unsure: …"``: it could be ours and we cannot tell (no creation time, a bracket we cannot
  see): the lookup must not conclude "absent" (a resend could duplicate it) nor adopt it;
* None: it matches.

Exactly one match and nothing unsure → probable (adopt, flag for review); none of either →
absent; anything else → ``LookupAmbiguous``: a human decides, nobody guesses.
"""

from __future__ import annotations

from collections.abc import Sequence
from decimal import Decimal

from tradebridge.domain.commands import Bracket, SubmitOrder
from tradebridge.domain.enums import OrderType
from tradebridge.domain.ids import ClientOrderId
from tradebridge.domain.reports import LookupResult, OrderStatusReport
from tradebridge.errors import LookupAmbiguous

UNSURE = "unsure"


def shape_mismatch(report: OrderStatusReport, command: SubmitOrder) -> str | None:
    """Return how an order differs from the submit (side, type, quantity, prices), or None."""
    if report.side is not command.side:
        return f"side {report.side.value}, not {command.side.value}"
    if report.order_type is not command.order_type:
        return f"type {report.order_type.value}, not {command.order_type.value}"
    if report.quantity != command.quantity:
        return f"quantity {report.quantity}, not {command.quantity}"
    if report.limit_price != command.limit_price:
        return f"limit price {report.limit_price}, not {command.limit_price}"
    if report.stop_price != command.stop_price:
        return f"stop price {report.stop_price}, not {command.stop_price}"
    return None


def legs_bracket(legs: Sequence[OrderStatusReport]) -> Bracket | None:
    """Return the bracket an entry's legs form (None: it has no visible legs)."""
    if not legs:
        return None
    stop_loss: Decimal | None = None
    take_profit: Decimal | None = None
    for leg in legs:
        if leg.order_type is OrderType.LIMIT:
            take_profit = leg.limit_price
        else:
            stop_loss = leg.stop_price
    return Bracket(stop_loss, take_profit)


def bracket_mismatch(command: SubmitOrder, seen: Bracket | None) -> str | None:
    """Return how a candidate's bracket differs from the submit's, ``unsure: …``, or None.

    ``seen`` None means the broker shows no legs. A submit without a bracket never matches an
    order with legs; a submit with one cannot be told from an order without visible legs
    (a dialect may place legs later, or not show them), so that is unsure, never "absent".
    """
    wanted = command.bracket or Bracket()
    if not wanted:
        return None if seen is None or not seen else "has a bracket; the submit had none"
    if seen is None or not seen:
        return f"{UNSURE}: the submit had a bracket and the order shows no legs"
    if (seen.stop_loss, seen.take_profit) != (wanted.stop_loss, wanted.take_profit):
        return (
            f"bracket stop {seen.stop_loss} / target {seen.take_profit}, not "
            f"{wanted.stop_loss} / {wanted.take_profit}"
        )
    return None


def decide_by_shape(
    client_order_id: ClientOrderId,
    matches: Sequence[OrderStatusReport],
    unsure: Sequence[str],
    evidence: tuple[str, ...],
) -> LookupResult:
    """Return probable (one match, nothing unsure) or absent (neither); raise if ambiguous."""
    if len(matches) == 1 and not unsure:
        return LookupResult(client_order_id, matches[0], probable=True, evidence=evidence)
    if not matches and not unsure:
        return LookupResult(client_order_id, None, evidence=evidence)
    candidates = tuple(str(m.broker_order_id) for m in matches) + tuple(unsure)
    raise LookupAmbiguous(
        f"lookup of {client_order_id}: no order carries our id and {len(candidates)} may be "
        f"ours ({', '.join(candidates)}); not adopting or resending: review by hand",
        client_order_id=client_order_id,
        candidates=candidates,
        evidence=evidence,
    )

"""The lifecycle of a signal: its statuses, which move may follow which, and fill arithmetic.

This is the one state machine of the bridge. The ledger refuses any other move before
writing (``check_move``), and the table's trigger refuses it again whoever writes (the SQL
function ``tradebridge_status_move_allowed``, compared with ``ALLOWED_MOVES`` by a test).
The machine is drawn in docs/ledger.md.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from enum import StrEnum

from tradebridge.errors import IllegalTransition


class SignalStatus(StrEnum):
    """Where one signal (a ledger row) stands, from inserted to final."""

    PENDING = "pending"  # inserted, waiting for a worker
    PROCESSING = "processing"  # claimed by a worker; nothing sent yet
    SUBMITTED = "submitted"  # the submit is being sent or was sent; answer not yet known
    UNKNOWN = "unknown"  # sent, answer lost: look it up at the broker before anything else
    # Escalated unknown: lookups were ambiguous or ran past the bound. Never resent; blocks
    # nothing; reconcile adopts exact late evidence, else a human decides (docs/ledger.md).
    NEEDS_REVIEW = "needs_review"
    WORKING = "working"  # accepted by the broker, resting
    PARTIALLY_FILLED = "partially_filled"
    FILLED = "filled"
    CANCELLED = "cancelled"
    REJECTED = "rejected"  # the broker said no
    DENIED = "denied"  # our own checks said no; nothing was sent
    FAILED = "failed"  # given up without a broker verdict; no order rests at the broker
    EXPIRED = "expired"  # the order's time in force ran out at the broker


_S = SignalStatus
FINAL_STATUSES: frozenset[SignalStatus] = frozenset(
    {_S.FILLED, _S.CANCELLED, _S.REJECTED, _S.DENIED, _S.FAILED, _S.EXPIRED}
)
# A row in one of these keeps the rest of its account waiting (insertion order per account).
IN_FLIGHT_STATUSES: frozenset[SignalStatus] = frozenset({_S.PROCESSING, _S.SUBMITTED, _S.UNKNOWN})
_BROKER_VERDICTS = frozenset(
    {_S.WORKING, _S.PARTIALLY_FILLED, _S.FILLED, _S.CANCELLED, _S.REJECTED, _S.EXPIRED}
)

# Which status may follow which: the same table as tradebridge_status_move_allowed() in
# store/sql/0001_ledger.sql (tests/store/test_ledger.py compares them). processing -> pending
# is only for a row whose worker died before anything was sent (requeue_stale).
ALLOWED_MOVES: Mapping[SignalStatus, frozenset[SignalStatus]] = {
    _S.PENDING: frozenset({_S.PROCESSING, _S.DENIED, _S.CANCELLED}),
    _S.PROCESSING: frozenset({_S.SUBMITTED, _S.DENIED, _S.FAILED, _S.PENDING}),
    _S.SUBMITTED: _BROKER_VERDICTS | {_S.UNKNOWN, _S.FAILED},
    _S.UNKNOWN: _BROKER_VERDICTS | {_S.SUBMITTED, _S.FAILED, _S.NEEDS_REVIEW},
    _S.NEEDS_REVIEW: _BROKER_VERDICTS | {_S.FAILED},
    _S.WORKING: frozenset({_S.PARTIALLY_FILLED, _S.FILLED, _S.CANCELLED, _S.REJECTED, _S.EXPIRED}),
    _S.PARTIALLY_FILLED: frozenset({_S.FILLED, _S.CANCELLED, _S.REJECTED, _S.EXPIRED}),
    **{final: frozenset() for final in FINAL_STATUSES},
}


def check_move(signal_id: str, old: SignalStatus, new: SignalStatus) -> None:
    """Raise ``IllegalTransition`` unless a row may move from ``old`` to ``new``.

    Staying in a non-final status is allowed (an event without a status change).
    """
    if old is new and old not in FINAL_STATUSES:
        return
    if new not in ALLOWED_MOVES[old]:
        raise IllegalTransition(
            f"signal {signal_id}: status {old.value} cannot move to {new.value}"
            + (" (final)" if old in FINAL_STATUSES else "")
        )


@dataclass(frozen=True, slots=True)
class Filled:
    """A row's fill state after one more fill: quantity, average price, status."""

    filled_qty: Decimal
    avg_fill_price: Decimal
    status: SignalStatus


def apply_fill(
    filled_qty: Decimal,
    avg_fill_price: Decimal | None,
    qty: Decimal | int,
    price: Decimal,
    ordered: Decimal | int | None,
) -> Filled:
    """Return the fill state after a fill of ``qty`` at ``price``.

    ``ordered`` is the quantity the row's order carries at the broker (``None`` when not
    known: the fill then completes the row). The average is weighted by quantity.
    """
    filled = filled_qty + Decimal(qty)
    average = ((avg_fill_price or Decimal(0)) * filled_qty + price * Decimal(qty)) / filled
    done = ordered is None or filled >= Decimal(ordered)
    return Filled(filled, average, _S.FILLED if done else _S.PARTIALLY_FILLED)

"""The lifecycle of a signal (domain/lifecycle.py): legal moves, refused ones, fill arithmetic."""

from __future__ import annotations

from decimal import Decimal

import pytest

from tradebridge.domain.enums import OPEN_STATUSES, TERMINAL_STATUSES, OrderStatus
from tradebridge.domain.ids import client_order_id_for
from tradebridge.domain.lifecycle import (
    ALLOWED_MOVES,
    FINAL_STATUSES,
    IN_FLIGHT_STATUSES,
    SignalStatus,
    apply_fill,
    check_move,
)
from tradebridge.errors import IllegalTransition

S = SignalStatus


def test_every_status_has_a_row_and_final_statuses_have_no_move() -> None:
    assert set(ALLOWED_MOVES) == set(SignalStatus)
    assert all(not ALLOWED_MOVES[final] for final in FINAL_STATUSES)
    assert not IN_FLIGHT_STATUSES & FINAL_STATUSES
    assert S.NEEDS_REVIEW not in IN_FLIGHT_STATUSES | FINAL_STATUSES  # blocks nothing, not done


@pytest.mark.parametrize("final", sorted(FINAL_STATUSES))
@pytest.mark.parametrize("new", sorted(SignalStatus))
def test_check_move_nothing_leaves_a_final_status(final: SignalStatus, new: SignalStatus) -> None:
    with pytest.raises(IllegalTransition, match="final"):
        check_move("s-1", final, new)


@pytest.mark.parametrize(
    ("old", "new"),
    [
        (S.WORKING, S.SUBMITTED),  # never backwards
        (S.PARTIALLY_FILLED, S.WORKING),
        (S.SUBMITTED, S.PENDING),  # a sent row is never handed back to the queue
        (S.UNKNOWN, S.PENDING),  # nor an unknown one: it is looked up first
        (S.UNKNOWN, S.PROCESSING),
        (S.NEEDS_REVIEW, S.SUBMITTED),  # an escalated row is never resent
        (S.PENDING, S.SUBMITTED),  # claimed before sent
        (S.PENDING, S.FILLED),
    ],
)
def test_check_move_refuses_what_could_place_twice_or_go_back(
    old: SignalStatus, new: SignalStatus
) -> None:
    with pytest.raises(IllegalTransition, match=f"{old.value} cannot move to {new.value}"):
        check_move("s-1", old, new)


@pytest.mark.parametrize(
    ("old", "new"),
    [
        (S.PENDING, S.PROCESSING),
        (S.PROCESSING, S.SUBMITTED),
        (S.PROCESSING, S.PENDING),  # the worker died before sending (requeue_stale)
        (S.SUBMITTED, S.UNKNOWN),
        (S.UNKNOWN, S.SUBMITTED),  # resubmitted after a lookup proved the order absent
        (S.UNKNOWN, S.NEEDS_REVIEW),
        (S.NEEDS_REVIEW, S.FILLED),  # exact late evidence adopted
        (S.SUBMITTED, S.FILLED),  # a fill overtakes the submit's own answer
        (S.WORKING, S.WORKING),  # an event without a status change
    ],
)
def test_check_move_allows_the_documented_paths(old: SignalStatus, new: SignalStatus) -> None:
    check_move("s-1", old, new)


def test_apply_fill_weights_the_average_and_completes_at_the_ordered_quantity() -> None:
    first = apply_fill(Decimal(0), None, 1, Decimal(100), 3)
    second = apply_fill(first.filled_qty, first.avg_fill_price, 2, Decimal(103), 3)

    assert (first.filled_qty, first.avg_fill_price, first.status) == (
        Decimal(1), Decimal(100), S.PARTIALLY_FILLED,
    )  # fmt: skip
    assert (second.filled_qty, second.avg_fill_price, second.status) == (
        Decimal(3), Decimal(102), S.FILLED,
    )  # fmt: skip


def test_apply_fill_without_a_known_order_quantity_completes_the_row() -> None:
    assert apply_fill(Decimal(0), None, 2, Decimal("21000.25"), None).status is S.FILLED


def test_broker_order_statuses_open_and_terminal_do_not_overlap() -> None:
    assert not TERMINAL_STATUSES & OPEN_STATUSES
    assert OrderStatus.UNKNOWN not in TERMINAL_STATUSES | OPEN_STATUSES


def test_client_order_id_is_stable_and_new_only_for_new_decisions() -> None:
    assert client_order_id_for("42") == client_order_id_for("42") == "tb-42"
    assert client_order_id_for("42", attempt=2) == "tb-42-r2"

"""The position check's judgement (dispatch/positions.py), pure: baseline, suspicion, divergence."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

from tradebridge.dispatch.positions import judge
from tradebridge.store.ledger import PositionCheck

T0 = datetime(2026, 12, 6, 14, 0, tzinfo=UTC)
D = Decimal


def _look(
    stored: list[PositionCheck],
    broker: dict[str, int],
    ours: dict[str, int],
    n: int = 1,
    *,
    baselined: bool = True,
    flattened: bool = False,
) -> dict[str, PositionCheck]:
    found = judge(
        "A", {c.contract: c for c in stored}, {k: D(v) for k, v in broker.items()},
        {k: D(v) for k, v in ours.items()}, baselined=baselined, flattened=flattened,
        now=T0 + timedelta(minutes=n),
    )  # fmt: skip
    return {c.contract: c for c in found}


def test_judge_first_check_accepts_whatever_the_account_holds() -> None:
    found = _look([], {"MNQZ6": 3, "ESZ6": -1}, {"MNQZ6": 1}, baselined=False)

    assert {k: (c.accepted, c.unexplained, c.accepted_by) for k, c in found.items()} == {
        "ESZ6": (D(-1), D(0), "baseline"), "MNQZ6": (D(2), D(0), "baseline"),
    }  # fmt: skip
    assert all(c.diverged_since is None and c.divergence is None for c in found.values())


def test_judge_unexplained_move_is_suspected_then_diverged_on_the_second_look() -> None:
    base = _look([], {"MNQZ6": 1}, {"MNQZ6": 1}, baselined=False)["MNQZ6"]

    first = _look([base], {"MNQZ6": 3}, {"MNQZ6": 1}, 2)["MNQZ6"]
    second = _look([first], {"MNQZ6": 3}, {"MNQZ6": 1}, 3)["MNQZ6"]

    assert (first.unexplained, first.diverged_since) == (D(2), None)
    assert first.divergence is not None
    assert first.divergence["seen"] == 1
    assert second.diverged_since == T0 + timedelta(minutes=3)
    assert second.divergence is not None
    assert second.divergence["seen"] == 2


def test_judge_move_that_changes_between_looks_is_not_confirmed() -> None:
    base = _look([], {"MNQZ6": 0}, {}, baselined=False)["MNQZ6"]

    first = _look([base], {"MNQZ6": 1}, {}, 2)["MNQZ6"]
    second = _look([first], {"MNQZ6": 2}, {}, 3)["MNQZ6"]

    assert second.diverged_since is None
    assert second.divergence is not None
    assert second.divergence["unexplained"] == "2"


def test_judge_divergence_keeps_its_start_when_it_grows_and_ends_when_explained() -> None:
    base = _look([], {"MNQZ6": 0}, {}, baselined=False)["MNQZ6"]
    diverged = _look([_look([base], {"MNQZ6": 1}, {}, 2)["MNQZ6"]], {"MNQZ6": 1}, {}, 3)["MNQZ6"]

    grown = _look([diverged], {"MNQZ6": 2}, {}, 4)["MNQZ6"]
    explained = _look([grown], {"MNQZ6": 2}, {"MNQZ6": 2}, 5)["MNQZ6"]

    assert grown.diverged_since == diverged.diverged_since == T0 + timedelta(minutes=3)
    assert (explained.unexplained, explained.diverged_since, explained.divergence) == (
        D(0), None, None,
    )  # fmt: skip


def test_judge_contract_first_seen_after_the_baseline_starts_from_nothing_held() -> None:
    found = _look([], {"ESZ6": 1}, {}, baselined=True)["ESZ6"]

    assert (found.accepted, found.unexplained, found.accepted_by) == (D(0), D(1), "new")


def test_judge_flatten_since_the_last_look_accepts_what_it_left() -> None:
    base = _look([], {"MNQZ6": 1}, {"MNQZ6": 1}, baselined=False)["MNQZ6"]

    after = _look([base], {"MNQZ6": 0}, {"MNQZ6": 1}, 2, flattened=True)["MNQZ6"]

    assert (after.accepted, after.unexplained, after.accepted_by) == (D(-1), D(0), "flatten")

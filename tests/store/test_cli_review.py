"""``tradebridge review``: list the rows a human must decide, show the evidence, decide."""

from __future__ import annotations

import asyncio

from click.testing import Result
from typer.testing import CliRunner

from tradebridge.cli.main import app
from tradebridge.domain.lifecycle import SignalStatus
from tradebridge.store.ledger import Ledger

S = SignalStatus


async def _cli(*argv: str) -> Result:
    # The command runs its own event loop: give it a thread without one.
    env = {"TRADEBRIDGE_CONFIG": "", "DATABASE_URL": ""}
    return await asyncio.to_thread(
        CliRunner().invoke, app, ["review", *argv], env=env, terminal_width=200
    )


async def _needs_review(ledger: Ledger, signal_id: str) -> None:
    await ledger.insert_signal(
        signal_id=signal_id, instrument="MNQZ6", side="buy", quantity=1, account_name="ACC1"
    )
    await ledger.transition(signal_id, S.PROCESSING)
    await ledger.transition(signal_id, S.SUBMITTED, client_order_id=f"tb-{signal_id}")
    await ledger.transition(signal_id, S.UNKNOWN)
    await ledger.add_event(signal_id, "lookup_ambiguous", {"candidates": ["7", "8"]})
    await ledger.transition(
        signal_id, S.NEEDS_REVIEW, event="escalated", error_message="needs review (ambiguous)"
    )


async def test_review_list_and_show_name_the_row_and_its_evidence(
    ledger: Ledger, ledger_db: str
) -> None:
    await _needs_review(ledger, "r1")

    listed = await _cli("list", "--database-url", ledger_db)
    shown = await _cli("show", "r1", "--database-url", ledger_db)

    assert listed.exit_code == 0, listed.output
    assert "r1  needs_review  ACC1" in listed.output
    assert shown.exit_code == 0, shown.output
    assert "lookup_ambiguous" in shown.output
    assert '"candidates": ["7", "8"]' in shown.output


async def test_review_adopt_makes_the_row_working_on_that_order(
    ledger: Ledger, ledger_db: str
) -> None:
    await _needs_review(ledger, "r1")

    # No broker here: what the broker says of the order is test_review_adopt_broker.py's.
    result = await _cli("adopt", "r1", "8", "--note", "checked in the web UI",
                        "--no-broker-check", "--database-url", ledger_db)  # fmt: skip

    assert result.exit_code == 0, result.output
    row = await ledger.get("r1")
    assert row is not None
    assert (row.status, row.tradovate_order_id) == (S.WORKING, "8")
    events = [e.event for e in await ledger.history("r1")]
    assert events[-1] == "adopted_by_hand"


async def test_review_adopt_order_of_another_row_refused(ledger: Ledger, ledger_db: str) -> None:
    await _needs_review(ledger, "r1")
    await ledger.insert_signal(
        signal_id="owner", instrument="MNQZ6", side="buy", quantity=1, account_name="ACC1"
    )
    await ledger.transition("owner", S.PROCESSING)
    await ledger.transition("owner", S.SUBMITTED, client_order_id="tb-owner")
    await ledger.transition("owner", S.WORKING, tradovate_order_id="8")

    result = await _cli("adopt", "r1", "8", "--database-url", ledger_db)

    assert result.exit_code == 1
    assert "already belongs to signal owner" in result.output
    row = await ledger.get("r1")
    assert row is not None
    assert row.status is S.NEEDS_REVIEW


async def test_review_absent_ends_the_row_failed(ledger: Ledger, ledger_db: str) -> None:
    await _needs_review(ledger, "r1")

    result = await _cli("absent", "r1", "--database-url", ledger_db)

    assert result.exit_code == 0, result.output
    row = await ledger.get("r1")
    assert row is not None
    assert row.status is S.FAILED
    assert row.error_message == "not placed: checked by hand"


async def test_review_decision_on_a_row_not_in_review_refused(
    ledger: Ledger, ledger_db: str
) -> None:
    await ledger.insert_signal(
        signal_id="p1", instrument="MNQZ6", side="buy", quantity=1, account_name="ACC1"
    )

    result = await _cli("absent", "p1", "--database-url", ledger_db)

    assert result.exit_code == 1
    assert "status is pending, expected needs_review" in result.output

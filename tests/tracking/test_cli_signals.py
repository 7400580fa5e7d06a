"""``tradebridge signals`` and ``tradebridge trace`` (issue 14): rows placed through a real
simulator, then listed, filtered, exported and traced from the ledger by the CLI."""

from __future__ import annotations

import asyncio
import csv
import io
import json
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
import typer
from click.testing import Result
from typer.testing import CliRunner

from _support.rig import front
from tracking.conftest import ACCOUNT, ACCOUNT_2, Stack
from tradebridge.cli.main import app
from tradebridge.cli.signals import parse_since
from tradebridge.store.ledger import NewAlert, NewSignal


async def _cli(*argv: str) -> Result:
    env = {"TRADEBRIDGE_CONFIG": "", "DATABASE_URL": ""}
    return await asyncio.to_thread(CliRunner().invoke, app, list(argv), env=env,
                                   terminal_width=250)  # fmt: skip


async def _placed(stack: Stack) -> None:
    stack.start(stack.dispatcher())
    await stack.insert("s-fill", strategy_name="trend")
    await stack.wait("s-fill", "filled")
    await stack.insert("s-deny", quantity=99, strategy_name="scalp", account_name=ACCOUNT_2)
    await stack.wait("s-deny", "denied")


async def test_signals_lists_filters_and_exports(stack: Stack, ledger_url: str) -> None:
    await _placed(stack)

    listed = await _cli("signals", "--database-url", ledger_url)
    denied = await _cli("signals", "--status", "denied", "--json", "--database-url", ledger_url)
    trend = await _cli("signals", "--strategy", "trend", "--csv", "--since", "1h",
                       "--database-url", ledger_url)  # fmt: skip
    future = await _cli("signals", "--since", "2999-01-01T00:00:00", "--database-url", ledger_url)

    assert listed.exit_code == 0, listed.output
    lines = listed.stdout.splitlines()
    assert "s-deny" in lines[0]
    assert "s-fill" in lines[1]
    assert "filled 1 @ " in lines[1]
    assert "risk rule max_order_qty" in lines[0]
    [record] = [json.loads(line) for line in denied.stdout.splitlines()]
    assert (record["signal_id"], record["status"], record["account"]) == (
        "s-deny", "denied", ACCOUNT_2,
    )  # fmt: skip
    [row] = list(csv.DictReader(io.StringIO(trend.stdout)))
    assert (row["signal_id"], row["status"], row["filled_qty"]) == ("s-fill", "filled", "1")
    assert float(row["latency_ms"]) > 0
    assert future.stdout.strip() == "no signals match"


async def test_trace_tells_the_whole_story(stack: Stack, ledger_url: str) -> None:
    await _placed(stack)

    text = await _cli("trace", "s-fill", "--database-url", ledger_url)
    data = await _cli("trace", "s-deny", "--json", "--database-url", ledger_url)
    missing = await _cli("trace", "nope", "--database-url", ledger_url)

    assert text.exit_code == 0, text.output
    assert "signal s-fill: filled" in text.stdout
    assert "alert: none (inserted into the table directly)" in text.stdout
    assert "POST /order/placeorder  200" in text.stdout
    for event in ("claimed", "submitted", "accepted", "fill"):
        assert f"  {event}  " in text.stdout, event
    trace = json.loads(data.stdout)
    [denied] = [e for e in trace["history"] if e["event"] == "denied"]
    assert denied["detail"]["rule"] == "max_order_qty"
    assert trace["broker_calls"] == [] or all(
        "placeorder" not in c["path"] for c in trace["broker_calls"]
    )
    assert missing.exit_code == 1
    assert "no signal with signal_id 'nope'" in missing.stderr


async def test_trace_shows_the_alert_a_signal_came_from(stack: Stack, ledger_url: str) -> None:
    received = datetime.now(UTC)
    alert = NewAlert(received_at=received, format="tradebridge", outcome="accepted",
                     payload={"action": "buy", "symbol": "MNQ1!", "secret": "***"},
                     source_ip="52.89.214.238", group_id="g-hook")  # fmt: skip
    row = NewSignal(signal_id="s-hook", account_name=ACCOUNT, instrument=front().name,
                    side="buy", quantity=Decimal(1), group_id="g-hook",
                    source="webhook")  # fmt: skip
    await stack.ledger.insert_alert(alert, [row])

    result = await _cli("trace", "s-hook", "--database-url", ledger_url)

    assert result.exit_code == 0, result.output
    assert "alert: tradebridge from 52.89.214.238 at" in result.stdout
    assert '"symbol": "MNQ1!"' in result.stdout


@pytest.mark.parametrize(
    ("text", "ago"),
    [("90s", timedelta(seconds=90)), ("30m", timedelta(minutes=30)), ("1h", timedelta(hours=1)),
     ("2d", timedelta(days=2)), (" 1.5H ", timedelta(hours=1.5))],
)  # fmt: skip
def test_since_takes_an_age(text: str, ago: timedelta) -> None:
    now = datetime(2026, 12, 5, 12, tzinfo=UTC)
    assert parse_since(text, now) == now - ago


def test_since_takes_an_iso_time_and_refuses_the_rest() -> None:
    now = datetime(2026, 12, 5, 12, tzinfo=UTC)
    assert parse_since("2026-12-05T10:00:00", now) == datetime(2026, 12, 5, 10, tzinfo=UTC)
    with pytest.raises(typer.BadParameter, match="neither an age"):
        parse_since("yesterday", now)


@pytest.mark.parametrize("text", ["99999999d", "9" * 400 + "s"])
def test_since_too_far_back_is_a_bad_parameter(text: str) -> None:
    now = datetime(2026, 12, 5, 12, tzinfo=UTC)
    with pytest.raises(typer.BadParameter, match="too far back"):
        parse_since(text, now)


def test_signals_with_an_age_too_far_back_exits_2_without_a_traceback() -> None:
    env = {"TRADEBRIDGE_CONFIG": "", "DATABASE_URL": ""}
    result = CliRunner().invoke(
        app, ["signals", "--since", "99999999d", "--database-url", "postgresql://u@127.0.0.1:1/x"],
        env=env, terminal_width=250,
    )  # fmt: skip
    assert not isinstance(result.exception, OverflowError), repr(result.exception)
    assert result.exit_code == 2, result.output
    assert "too far back" in result.output

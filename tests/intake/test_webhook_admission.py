"""No accept-then-deny (issue 9, item 4): what a worker would deny is a 400 at intake.

A real uvicorn socket and a real PostgreSQL ledger. Every refusal names the field and the
account, and stores no row (the alert itself is kept for audit with outcome ``invalid``).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from intake.conftest import SECRET, Hook, HookFactory

BRIDGE_ACC = {"name": "ACC1", "dialect": "tvbridge"}
NATIVE_ACC = {"name": "ACC2"}


def now_iso() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def alert(**fields: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"secret": SECRET, "symbol": "MNQ1!", "action": "buy", "quantity": 1}
    body.update(fields)
    return {k: v for k, v in body.items() if v is not None}


async def _refused(hook: Hook, body: dict[str, Any], field: str | None, *words: str) -> None:
    response = await hook.post(body)
    assert response.status_code == 400, response.text
    answer = response.json()
    assert answer["status"] == "invalid"
    assert answer.get("field") == field, answer
    for word in words:
        assert word in answer["error"], answer
    assert await hook.rows() == []
    (stored,) = await hook.alerts()
    assert stored["outcome"] == "invalid"


NO_STRATEGIES = {"tradovate": {"strategies": {"use": "never"}}}


async def test_webhook_native_market_ticks_without_strategies_or_reference_is_400(
    make_hook: HookFactory,
) -> None:
    hook = await make_hook(sections=NO_STRATEGIES)
    body = alert(time=now_iso(), stop_loss={"points": 10}, take_profit={"points": 20})

    await _refused(hook, body, "reference_price", "account 'ACC1'", "entry reference")


async def test_webhook_native_market_ticks_without_reference_is_accepted_as_a_strategy(
    hook: Hook,
) -> None:
    # By default native legs in distances go as an order strategy priced from the fill.
    response = await hook.post(alert(stop_loss={"points": 10}, take_profit={"points": 20}))

    assert response.status_code == 200, response.text
    (row,) = await hook.rows()
    assert (row["stop_loss_ticks"], row["take_profit_ticks"]) == (40, 80)


async def test_webhook_bridge_market_ticks_without_reference_is_accepted(
    make_hook: HookFactory,
) -> None:
    hook = await make_hook(accounts=[BRIDGE_ACC], default_account="ACC1", groups={})
    response = await hook.post(alert(stop_loss={"points": 10}, take_profit={"points": 20}))

    assert response.status_code == 200, response.text
    (row,) = await hook.rows()
    assert (row["stop_loss_ticks"], row["take_profit_ticks"]) == (40, 80)


async def test_webhook_fan_out_with_one_account_that_cannot_trade_it_refuses_the_whole_alert(
    make_hook: HookFactory,
) -> None:
    hook = await make_hook(
        accounts=[BRIDGE_ACC, NATIVE_ACC], default_account="ACC1",
        groups={"team": ["ACC1", "ACC2"]}, sections=NO_STRATEGIES,
    )  # fmt: skip
    body = alert(accounts=["group:team"], stop_loss={"ticks": 40})

    await _refused(hook, body, "reference_price", "account 'ACC2'", "entry reference")


@pytest.mark.parametrize(
    ("fields", "refused"),
    [
        ({}, True),
        ({"action": "reverse", "side": "sell"}, True),
        ({"action": None, "quantity": None, "target_position": "1"}, True),
        ({"action": "exit", "quantity": None}, False),
        ({"action": None, "quantity": None, "target_position": "0"}, False),
        ({"action": "cancel", "quantity": None}, False),
        ({"action": "flatten", "quantity": None, "symbol": None}, False),
    ],
)
async def test_webhook_kill_switch_refuses_what_may_open_and_lets_exits_through(
    make_hook: HookFactory, fields: dict[str, Any], refused: bool
) -> None:
    hook = await make_hook(sections={"risk": {"kill_switch": True}})
    body = alert(**fields)

    if refused:
        await _refused(hook, body, None, "kill switch is on")
    else:
        response = await hook.post(body)
        assert response.status_code == 200, response.text
        assert len(await hook.rows()) == 1


@pytest.mark.parametrize(
    ("fields", "field", "words"),
    [
        ({"order_type": "limit", "price": "21000.1"}, "price", ("tick grid",)),
        ({"order_type": "limit", "price": "21000", "stop_loss": {"price": "21000.25"}},
         "stop_loss", ("not below the entry",)),
        ({"quantity": 7}, "quantity", ("limit of 5 contracts",)),
    ],
)  # fmt: skip
async def test_webhook_what_a_worker_would_deny_is_400_naming_the_field(
    make_hook: HookFactory, fields: dict[str, Any], field: str, words: tuple[str, ...]
) -> None:
    hook = await make_hook(sections={"risk": {"max_order_qty": 5}})

    await _refused(hook, alert(**fields), field, *words)


# Always inside the last 24 hours before a close, or outside a session: never a new entry.
NEVER_OPEN = {"trading_hours": "cme", "no_entry_before_close_min": 1440}


@pytest.mark.parametrize(
    ("risk", "field", "words"),
    [
        ({"allowed_roots": ["MES"]}, "symbol",
         (("risk rule allowed_roots: MNQ is not among the allowed roots (MES) "
          "(risk.allowed_roots)"),)),
        (NEVER_OPEN, None, ("risk rule trading_window: ", "(risk.")),
        ({"require_stop_loss": True}, "stop_loss",
         ("risk rule require_stop_loss: the entry has no stop loss",)),
        ({"max_stop_ticks": 20}, "stop_loss",
         (("risk rule stop_distance: the stop loss is 40 ticks from the entry, over the maximum "
          "of 20"),)),
    ],
)  # fmt: skip
async def test_webhook_risk_rule_known_at_intake_is_400_naming_the_rule(
    make_hook: HookFactory, risk: dict[str, Any], field: str | None, words: tuple[str, ...]
) -> None:
    hook = await make_hook(sections={"risk": risk})
    stop = {"stop_loss": {"points": 10}} if "max_stop_ticks" in risk else {}

    await _refused(hook, alert(**stop), field, "account 'ACC1'", *words)


@pytest.mark.parametrize("risk", [{"allowed_roots": ["MES"]}, NEVER_OPEN])
async def test_webhook_exit_passes_the_rules_known_at_intake(
    make_hook: HookFactory, risk: dict[str, Any]
) -> None:
    hook = await make_hook(sections={"risk": risk})

    response = await hook.post(alert(action="exit", quantity=None))

    assert response.status_code == 200, response.text
    (row,) = await hook.rows()
    assert row["intent"] == "exit"


async def test_webhook_reverse_with_side_stores_the_side(hook: Hook) -> None:
    response = await hook.post(alert(action="reverse", side="long", quantity=2))

    assert response.status_code == 200, response.text
    (row,) = await hook.rows()
    assert (row["intent"], row["side"], row["quantity"]) == ("reverse", "buy", 2)


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"action": "reverse"}, "side"),
        ({"action": "reverse", "side": "sell", "quantity": None}, "quantity"),
        ({"action": "reverse", "side": "up"}, "side"),
        ({"side": "buy"}, "side"),
        ({"action": None, "quantity": None, "target_position": "1", "side": "buy"}, "side"),
    ],
)
async def test_webhook_reverse_needs_its_side_which_nothing_else_takes(
    hook: Hook, fields: dict[str, Any], field: str
) -> None:
    await _refused(hook, alert(**fields), field)


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (alert(action="reverse", side="sell", stop_loss={"ticks": 8}, reference_price="21000"),
         "stop_loss"),
        (alert(action=None, quantity=None, target_position="2",
               take_profit={"price": "21100"}), "take_profit"),
        ({"symbol": "MNQ1!", "date": "{now}", "token": SECRET, "data": "buy", "quantity": 1,
          "price": "21000", "reverse_order_close": True, "dollar_sl": "20"}, "dollar_sl"),
        ({"symbol": "MNQ1!", "date": "{now}", "token": SECRET, "data": "sell", "quantity": 1,
          "price": "21000", "reverse_order_close": True, "sl": "21010"}, "sl"),
    ],
)  # fmt: skip
async def test_webhook_bracket_on_reverse_or_target_is_400_never_dropped(
    hook: Hook, body: dict[str, Any], field: str
) -> None:
    body = {k: (now_iso() if v == "{now}" else v) for k, v in body.items()}

    await _refused(hook, body, field, "do not go with")


async def test_webhook_pickmytrade_reverse_order_close_is_honoured_not_listed_ignored(
    hook: Hook,
) -> None:
    response = await hook.post({
        "symbol": "MNQ1!", "date": now_iso(), "token": SECRET, "data": "buy", "quantity": 1,
        "reverse_order_close": True, "pyramid": False, "platform": "TRADOVATE",
    })  # fmt: skip

    assert response.status_code == 200, response.text
    assert response.json()["ignored_fields"] == ["platform"]
    (row,) = await hook.rows()
    assert (row["intent"], row["target_position"]) == ("target", 1)


async def test_webhook_traderspost_native_bracket_without_signal_price_is_400(
    make_hook: HookFactory,
) -> None:
    hook = await make_hook(sections=NO_STRATEGIES)
    body = {"ticker": "MNQ1!", "action": "buy", "quantity": 1, "secret": SECRET,
            "stopLoss": {"type": "stop", "amount": "5"}}  # fmt: skip

    await _refused(hook, body, "signalPrice", "entry reference")


async def test_webhook_bridge_legs_that_cannot_follow_the_setting_are_400(
    make_hook: HookFactory,
) -> None:
    hook = await make_hook(
        accounts=[BRIDGE_ACC], default_account="ACC1", groups={},
        sections={"orders": {"leg_time_in_force": "GTC"}},
    )  # fmt: skip
    body = alert(stop_loss={"ticks": 40}, time=(datetime.now(UTC) - timedelta(seconds=1))
                 .strftime("%Y-%m-%dT%H:%M:%SZ"))  # fmt: skip

    await _refused(hook, body, "tif", "the entry's time in force")


async def test_webhook_fan_out_refused_for_the_account_whose_multiplied_size_breaks_a_limit(
    make_hook: HookFactory,
) -> None:
    # The default group: ACC1 x1, ACC2 x2. Only ACC2's order is over max_order_qty.
    hook = await make_hook(sections={"risk": {"max_order_qty": 1}})
    body = alert(accounts=["group:team"])

    await _refused(hook, body, "quantity", "account 'ACC2'", "exceeds the limit of 1")

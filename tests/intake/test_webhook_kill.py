"""The kill switch at intake (issue 13): the database's switches refuse what may open a
position (a 400 naming the switch), and the webhook action ``kill`` throws one.

A real uvicorn socket and a real PostgreSQL ledger; the switches are thrown through the
ledger, as another process (the CLI, another worker) would.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from intake.conftest import SECRET, Hook, HookFactory


def now_iso() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def alert(**fields: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"secret": SECRET, "symbol": "MNQ1!", "action": "buy", "quantity": 1}
    body.update(fields)
    return {k: v for k, v in body.items() if v is not None}


def kill(**fields: Any) -> dict[str, Any]:
    return {"secret": SECRET, "action": "kill", **fields}


async def _switches(hook: Hook) -> list[tuple[str, bool, str]]:
    rows = await hook.db.fetch("select scope, engaged, via from kill_switches order by scope")
    return [(r["scope"], r["engaged"], r["via"]) for r in rows]


async def test_webhook_global_kill_in_the_database_refuses_an_entry_naming_who_and_why(
    hook: Hook,
) -> None:
    await hook.ledger.engage_kill_switch(None, changed_by="ops@desk", via="cli", reason="loop")

    response = await hook.post(alert())

    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert "kill switch is on" in error
    assert "kill_switch global" in error
    assert "ops@desk" in error
    assert "loop" in error
    assert await hook.rows() == []


@pytest.mark.parametrize(
    "fields",
    [
        {"action": "exit", "quantity": None},
        {"action": "flatten", "quantity": None, "symbol": None},
        {"action": None, "quantity": None, "target_position": "0"},
    ],
)
async def test_webhook_global_kill_in_the_database_lets_exits_through(
    hook: Hook, fields: dict[str, Any]
) -> None:
    await hook.ledger.engage_kill_switch(None, changed_by="ops", via="cli")

    response = await hook.post(alert(**fields))

    assert response.status_code == 200, response.text
    assert len(await hook.rows()) == 1


async def test_webhook_account_kill_refuses_that_account_and_accepts_another(hook: Hook) -> None:
    await hook.ledger.engage_kill_switch("ACC1", changed_by="ops", via="cli")

    refused = await hook.post(alert(account="ACC1"))
    accepted = await hook.post(alert(account="ACC2"))

    assert refused.status_code == 400, refused.text
    assert "account 'ACC1'" in refused.json()["error"]
    assert "kill_switch account ACC1" in refused.json()["error"]
    assert accepted.status_code == 200, accepted.text
    assert [r["account_name"] for r in await hook.rows()] == ["ACC2"]


async def test_webhook_account_kill_refuses_a_fan_out_that_includes_it(hook: Hook) -> None:
    await hook.ledger.engage_kill_switch("ACC2", changed_by="ops", via="cli")

    response = await hook.post(alert(accounts=["ACC1", "ACC2"]))

    assert response.status_code == 400, response.text
    assert "account 'ACC2'" in response.json()["error"]
    assert await hook.rows() == []


async def test_webhook_after_resume_accepts_entries_again(hook: Hook) -> None:
    await hook.ledger.engage_kill_switch(None, changed_by="ops", via="cli")
    assert (await hook.post(alert())).status_code == 400
    await hook.ledger.release_kill_switch(None, changed_by="ops", via="cli")

    response = await hook.post(alert())

    assert response.status_code == 200, response.text


# --- action kill -------------------------------------------------------------------------------


async def test_webhook_action_kill_throws_the_global_switch_and_records_the_alert(
    hook: Hook,
) -> None:
    response = await hook.post(kill(comment="strategy went wild", time=now_iso()))

    assert response.status_code == 200, response.text
    answer = response.json()
    assert answer["status"] == "killed"
    assert answer["signal_ids"] == []
    assert "every account" in answer["detail"]
    assert await _switches(hook) == [("global", True, "webhook")]
    (stored,) = await hook.alerts()
    assert stored["outcome"] == "kill"
    assert SECRET not in str(stored["payload"])
    switch = (await hook.ledger.kill_switches()).global_switch
    assert switch is not None
    assert switch.reason == "strategy went wild"
    assert switch.changed_by.startswith("webhook 127.0.0.1")
    refused = await hook.post(alert())
    assert refused.status_code == 400, refused.text


async def test_webhook_action_kill_of_an_account_with_flatten_queues_its_flatten(
    hook: Hook,
) -> None:
    response = await hook.post(kill(account="ACC1", flatten=True))

    assert response.status_code == 200, response.text
    (signal_id,) = response.json()["signal_ids"]
    assert await _switches(hook) == [("account:ACC1", True, "webhook")]
    (row,) = await hook.rows()
    assert (row["signal_id"], row["account_name"], row["intent"], row["status"]) == (
        signal_id, "ACC1", "flatten", "pending",
    )  # fmt: skip


async def test_webhook_action_kill_with_flatten_queues_one_flatten_per_configured_account(
    hook: Hook,
) -> None:
    response = await hook.post(kill(flatten="true"))

    assert response.status_code == 200, response.text
    rows = await hook.rows()
    assert len(response.json()["signal_ids"]) == len(rows) == 3
    assert {r["intent"] for r in rows} == {"flatten"}
    assert len({r["account_name"] for r in rows}) == 3


async def test_webhook_action_kill_twice_with_one_fire_time_is_a_duplicate(hook: Hook) -> None:
    body = kill(time=now_iso())

    first = await hook.post(body)
    again = await hook.post(body)

    assert first.json()["status"] == "killed"
    assert again.status_code == 200, again.text
    assert again.json()["status"] == "duplicate"


async def test_webhook_action_kill_wrong_secret_is_401_and_changes_nothing(hook: Hook) -> None:
    response = await hook.post({**kill(), "secret": "not-the-secret-at-all"})

    assert response.status_code == 401
    assert await _switches(hook) == []


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"account": "NOPE"}, "account"),
        ({"symbol": "MNQ1!"}, "symbol"),
        ({"flatten": "maybe"}, "flatten"),
    ],
)
async def test_webhook_action_kill_bad_field_is_400_naming_it_and_changes_nothing(
    hook: Hook, fields: dict[str, Any], field: str
) -> None:
    response = await hook.post(kill(**fields))

    assert response.status_code == 400, response.text
    assert response.json()["field"] == field, response.json()
    assert await _switches(hook) == []


async def test_webhook_flatten_field_on_an_entry_is_400(hook: Hook) -> None:
    response = await hook.post(alert(flatten=True))

    assert response.status_code == 400, response.text
    assert response.json()["field"] == "flatten"
    assert await hook.rows() == []


async def test_webhook_action_kill_with_flatten_without_configured_accounts_is_400(
    make_hook: HookFactory,
) -> None:
    hook = await make_hook(accounts=[], default_account="ACC1", groups={})

    response = await hook.post(kill(flatten=True))

    assert response.status_code == 400, response.text
    assert "no accounts are configured" in response.json()["error"]
    assert await _switches(hook) == []

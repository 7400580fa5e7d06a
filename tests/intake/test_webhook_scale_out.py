"""Several take profits, trailing stops and break-even at the webhook (issue 9, item 3).

In tradebridge's format and mapped from TradersPost / PickMyTrade: stored as the
``take_profits`` / ``trailing_stop_ticks`` / ``breakeven`` columns, or refused with a 400
that names the field, never accepted for a worker to deny later.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import pytest

from intake.conftest import SECRET, Hook, HookFactory, build_app, serving
from intake.test_webhook import alert, now_iso
from tradebridge.config import load_settings
from tradebridge.store.ledger import Ledger


def _targets(row: Any) -> Any:
    """Return a row's take_profits (a raw connection reads jsonb as text)."""
    value = row["take_profits"]
    return None if value is None else json.loads(value)


THREE_TARGETS = [
    {"ticks": 20, "quantity": 1},
    {"points": 10, "quantity": 1},  # 40 MNQ ticks
    {"dollars": 30, "quantity": 1},  # 60 MNQ ticks of $0.50
]


async def test_take_profit_list_is_stored_as_targets_in_ticks(hook: Hook) -> None:
    body = alert(quantity=3, take_profit=THREE_TARGETS, stop_loss={"ticks": 16}, breakeven=True)

    response = await hook.post(body)

    assert response.status_code == 200, response.text
    (row,) = await hook.rows()
    assert _targets(row) == [
        {"ticks": 20, "quantity": 1},
        {"ticks": 40, "quantity": 1},
        {"ticks": 60, "quantity": 1},
    ]
    assert (row["take_profit_ticks"], row["stop_loss_ticks"], row["breakeven"]) == (None, 16, True)


async def test_target_quantities_scale_with_the_account_multiplier(hook: Hook) -> None:
    targets = [{"ticks": 20, "quantity": 1}, {"ticks": 40, "quantity": 1}]
    body = alert(quantity=2, take_profit=targets, stop_loss={"ticks": 16}, accounts="group:team")

    response = await hook.post(body)

    assert response.status_code == 200, response.text
    rows = {r["account_name"]: r for r in await hook.rows()}
    assert [t["quantity"] for t in _targets(rows["ACC2"])] == [2, 2]
    assert rows["ACC2"]["quantity"] == 4
    assert [t["quantity"] for t in _targets(rows["ACC1"])] == [1, 1]


async def test_one_take_profit_in_a_list_without_quantity_is_the_plain_one(hook: Hook) -> None:
    response = await hook.post(alert(take_profit=[{"ticks": 20}]))

    assert response.status_code == 200, response.text
    (row,) = await hook.rows()
    assert (row["take_profit_ticks"], _targets(row)) == (20, None)


@pytest.mark.parametrize(
    ("body", "ticks"),
    [
        (alert(trailing_stop={"points": 5}), 20),
        (
            {"ticker": "MNQ1!", "action": "buy", "quantity": 1, "secret": SECRET,
             "stopLoss": {"type": "trailing_stop", "trailAmount": "5"}},
            20,
        ),
        (
            {"ticker": "MNQ1!", "action": "buy", "quantity": 1, "secret": SECRET,
             "signalPrice": 20000, "stopLoss": {"type": "trailing_stop", "trailPercent": "0.05"}},
            40,
        ),
        (
            {"symbol": "MNQ1!", "data": "buy", "quantity": 1, "token": SECRET, "date": now_iso(),
             "trail": 1, "trail_stop": "2.5", "trail_trigger": 0, "trail_freq": 0},
            10,
        ),
    ],
    ids=["tradebridge", "traderspost-amount", "traderspost-percent", "pickmytrade"],
)  # fmt: skip
async def test_trailing_stop_is_stored_in_ticks(
    hook: Hook, body: dict[str, Any], ticks: int
) -> None:
    response = await hook.post(body)

    assert response.status_code == 200, response.text
    ignored = set(response.json()["ignored_fields"])
    assert not {"trail", "trail_stop", "stopLoss", "trailing_stop"} & ignored
    (row,) = await hook.rows()
    assert (row["trailing_stop_ticks"], row["stop_loss_ticks"], row["stop_loss"]) == (
        ticks,
        None,
        None,
    )


@pytest.mark.parametrize(
    ("body", "field", "needle"),
    [
        (alert(quantity=2, take_profit=THREE_TARGETS, stop_loss={"ticks": 8}), "take_profit",
         "more than the order's 2"),
        (alert(quantity=3, take_profit=THREE_TARGETS[:2]), "take_profit", "no stop"),
        (alert(quantity=2, stop_loss={"ticks": 8},
               take_profit=[{"price": 21000, "quantity": 1}, {"ticks": 8, "quantity": 1}]),
         "take_profit[0]", "distance"),
        (alert(quantity=4, take_profit=[*THREE_TARGETS, {"ticks": 90, "quantity": 1}]),
         "take_profit", "4 targets"),
        (alert(quantity=2, take_profit=[{"ticks": 8}, {"ticks": 16}], stop_loss={"ticks": 8}),
         "take_profit[0].quantity", "missing"),
        (alert(stop_loss={"ticks": 8}, trailing_stop={"ticks": 8}), "trailing_stop", "both"),
        (alert(trailing_stop={"price": 21000}), "trailing_stop", "distance"),
        (alert(stop_loss={"ticks": 8}, breakeven=True), "breakeven", "take profits"),
        (alert(quantity=1, take_profit=[{"ticks": 8, "quantity": 1}], stop_loss={"ticks": 8},
               breakeven=True), "breakeven", "nothing is left"),
        (alert(action="exit", trailing_stop={"ticks": 8}), "trailing_stop", "does not apply"),
        (alert(action="reverse", side="buy", trailing_stop={"ticks": 8}), "trailing_stop",
         "only for buy"),
        (alert(target_position=2, take_profit=[{"ticks": 8, "quantity": 1}],
               stop_loss={"ticks": 8}), "take_profit", "only for buy"),
        (
            {"symbol": "MNQ1!", "data": "buy", "quantity": 1, "token": SECRET, "date": now_iso(),
             "trail": 1, "trail_stop": 2, "reverse_order_close": True},
            "trail", "only for plain",
        ),
        (
            {"symbol": "MNQ1!", "data": "buy", "quantity": 1, "token": SECRET, "date": now_iso(),
             "trail": 1, "trail_stop": 2, "trail_trigger": 3},
            "trail_trigger", "does not support",
        ),
        (
            {"symbol": "MNQ1!", "data": "buy", "quantity": 1, "token": SECRET, "date": now_iso(),
             "trail": 1, "trail_stop": 2, "sl": 20000},
            "trail", "both set",
        ),
        (
            {"ticker": "MNQ1!", "action": "buy", "quantity": 1, "secret": SECRET,
             "stopLoss": {"type": "trailing_stop", "stopPrice": 20000}},
            "stopLoss.stopPrice", "trailing_stop",
        ),
    ],
)  # fmt: skip
async def test_scale_out_that_cannot_be_placed_is_400_naming_the_field(
    hook: Hook, body: dict[str, Any], field: str, needle: str
) -> None:
    response = await hook.post(body)

    assert response.status_code == 400, response.text
    answer = response.json()
    assert answer["field"] == field
    assert needle in answer["error"]
    assert await hook.rows() == []


@pytest.fixture
async def bridge_hook(ledger: Ledger, make_hook: HookFactory) -> AsyncIterator[Hook]:
    """A webhook whose one account speaks the TradingView bridge."""
    hook = await make_hook()  # for the client and the database connection
    settings = load_settings(
        accounts=[{"name": "ACC1", "dialect": "tvbridge"}],
        webhook={"secret": SECRET, "default_account": "ACC1", "rate_limit_per_minute": 0},
        data_dir="/nonexistent",
    )
    async with serving(build_app(settings, ledger), settings) as url:
        yield Hook(url=url, client=hook.client, ledger=ledger, db=hook.db)


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"quantity": 2, "take_profit": THREE_TARGETS[:2], "stop_loss": {"ticks": 8}},
         "take_profit"),
        ({"trailing_stop": {"ticks": 8}}, "trailing_stop"),
    ],
)  # fmt: skip
async def test_scale_out_for_a_bridge_account_is_400(
    bridge_hook: Hook, fields: dict[str, Any], field: str
) -> None:
    response = await bridge_hook.post(alert(**fields))

    assert response.status_code == 400, response.text
    assert response.json()["field"] == field
    assert "TradingView bridge" in response.json()["error"]
    assert await bridge_hook.rows() == []

"""The webhook end to end: a real uvicorn socket, a real PostgreSQL ledger."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from types import SimpleNamespace
from typing import Any, get_args

import asyncpg
import pytest

from _support.fixtures import log_records, logs_to
from intake.conftest import SECRET, Hook, HookFactory
from tradebridge.domain.contracts import front_month
from tradebridge.intake.formats.alert import AlertIntent
from tradebridge.intake.formats.pickmytrade import PICKMYTRADE_FIELDS, PickMyTradeAlert
from tradebridge.intake.formats.tradebridge import TRADEBRIDGE_FIELDS, TradebridgeAlert
from tradebridge.intake.formats.traderspost import TRADERSPOST_FIELDS, TradersPostAlert
from tradebridge.pipeline.validate import Intent
from tradebridge.store.ledger import Ledger

TODAY = datetime.now(UTC).date()
MNQ = front_month("MNQ", TODAY).name


RFC4514_SUBJECT = "CN=TradingView Webhooks,O=TradingView\\, Inc.,L=Westerville,ST=Ohio,C=US"
OPENSSL_SUBJECT = "/C=US/ST=Ohio/L=Westerville/O=TradingView, Inc./CN=TradingView Webhooks"


def now_iso(offset_s: float = 0) -> str:
    return (datetime.now(UTC) + timedelta(seconds=offset_s)).strftime("%Y-%m-%dT%H:%M:%SZ")


def alert(**fields: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"secret": SECRET, "symbol": "MNQ1!", "action": "buy", "quantity": 1}
    body.update(fields)
    return {k: v for k, v in body.items() if v is not None}


# --- actions and formats -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({"action": "buy"}, {"intent": "order", "side": "buy", "quantity": 1, "instrument": MNQ}),
        ({"action": "SELL", "quantity": "2"}, {"intent": "order", "side": "sell", "quantity": 2}),
        ({"action": "exit", "quantity": None}, {"intent": "exit", "side": None, "quantity": None}),
        ({"action": "exit", "quantity": "1.0"}, {"intent": "exit", "quantity": 1}),
        (
            {"action": "reverse", "side": "short"},
            {"intent": "reverse", "side": "sell", "quantity": 1},
        ),
        ({"action": "cancel"}, {"intent": "cancel", "order_type": None, "instrument": MNQ}),
        ({"action": "flatten", "symbol": None}, {"intent": "flatten", "instrument": None}),
        (
            {"order_type": "limit", "price": "21000.25", "tif": "gtc"},
            {"order_type": "limit", "price": Decimal("21000.25"), "time_in_force": "gtc"},
        ),
        ({"order_type": "stop", "stop_price": 21001}, {"order_type": "stop", "stop_price": 21001}),
        (
            {"order_type": "stoplimit", "price": 21001, "stop_price": 21000},
            {"order_type": "stoplimit", "price": 21001, "stop_price": 21000},
        ),
        ({"symbol": "CME_MINI:MNQ1!"}, {"instrument": MNQ}),
        ({"symbol": MNQ}, {"instrument": MNQ}),
        ({"symbol": front_month("MNQ", TODAY).tradingview_name}, {"instrument": MNQ}),
        ({"symbol": "MNQ"}, {"instrument": MNQ}),
        ({"symbol": "NQ1!"}, {"instrument": MNQ}),  # symbol_map NQ -> MNQ
        (
            {"reference_price": "21000.5", "strategy": "ema"},
            {"reference_price": Decimal("21000.5"), "strategy_name": "ema"},
        ),
    ],
)
async def test_webhook_tradebridge_action_stores_expected_row(
    hook: Hook, fields: dict[str, Any], expected: dict[str, Any]
) -> None:
    response = await hook.post(alert(**fields))
    assert response.status_code == 200, response.text
    assert response.json()["status"] == "accepted"
    rows = await hook.rows()
    assert len(rows) == 1
    assert rows[0]["status"] == "pending"
    assert rows[0]["source"] == "webhook"
    assert rows[0]["signal_id"] == response.json()["signal_ids"][0]
    for column, value in expected.items():
        assert rows[0][column] == value, column


async def test_webhook_target_position_ignores_action_and_quantity(hook: Hook) -> None:
    response = await hook.post(
        alert(target_position="-2", market_position="short", action="sell", quantity=3)
    )
    assert response.status_code == 200, response.text
    assert response.json()["ignored_fields"] == ["action", "quantity"]
    (row,) = await hook.rows()
    assert (row["intent"], row["target_position"], row["side"], row["quantity"]) == (
        "target",
        -2,
        None,
        None,
    )


async def test_webhook_plain_text_and_one_element_array_are_accepted(hook: Hook) -> None:
    text = json.dumps(alert(id="a"))
    first = await hook.post(text, headers={"content-type": "text/plain"})
    second = await hook.post("[" + json.dumps(alert(id="b")) + "]")
    assert (first.status_code, second.status_code) == (200, 200)
    assert len(await hook.rows()) == 2


async def test_webhook_secret_in_path_is_accepted(hook: Hook) -> None:
    body = alert()
    del body["secret"]
    response = await hook.post(body, path=f"/webhook/{SECRET}")
    assert response.status_code == 200, response.text


# --- fan-out --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({}, [("ACC1", 1)]),
        ({"account": "ACC3"}, [("ACC3", 1)]),
        ({"accounts": ["ACC1", {"account": "ACC3", "multiplier": 3}]}, [("ACC1", 1), ("ACC3", 3)]),
        ({"accounts": "group:team"}, [("ACC1", 1), ("ACC2", 2)]),
        (
            {"accounts": [{"account": "group:team", "multiplier": 2}], "quantity": 2},
            [("ACC1", 4), ("ACC2", 8)],
        ),
        ({"accounts": [{"account": "ACC2", "multiplier": "0.5"}], "quantity": 4}, [("ACC2", 2)]),
    ],
)
async def test_webhook_accounts_fan_out_with_multipliers_in_one_group(
    hook: Hook, fields: dict[str, Any], expected: list[tuple[str, int]]
) -> None:
    response = await hook.post(alert(**fields))
    assert response.status_code == 200, response.text
    rows = await hook.rows()
    assert [(r["account_name"], r["quantity"]) for r in rows] == expected
    assert {r["group_id"] for r in rows} == {response.json()["group_id"]}
    assert [r["signal_id"] for r in rows] == response.json()["signal_ids"]


# --- brackets -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("symbol", "leg", "expected_ticks", "expected_price", "rounded"),
    [
        ("ES1!", {"ticks": 8}, 8, None, False),
        ("ES1!", {"points": "2.5"}, 10, None, False),
        ("ES1!", {"points": "2.6"}, 10, None, True),
        ("ES1!", {"dollars": 125}, 10, None, False),  # $12.50 a tick
        ("ES1!", {"dollars": 130}, 10, None, True),
        ("MNQ1!", {"dollars": "20"}, 40, None, False),  # $0.50 a tick
        ("MNQ1!", {"points": 10}, 40, None, False),
        ("CL1!", {"dollars": 250}, 25, None, False),  # $10 a tick
        ("CL1!", {"points": "0.255"}, 25, None, True),
        ("GC1!", {"dollars": 100}, 10, None, False),  # $10 a tick
        ("GC1!", {"points": "1.05"}, 10, None, True),
        ("GC1!", {"price": "2600.1"}, None, Decimal("2600.1"), False),
        ("GC1!", {"price": "2600.15"}, None, Decimal("2600.2"), True),  # up: towards entry
    ],
)
async def test_webhook_stop_loss_units_convert_per_product(
    hook: Hook,
    symbol: str,
    leg: dict[str, Any],
    expected_ticks: int | None,
    expected_price: Decimal | None,
    rounded: bool,
) -> None:
    # A market order on a native account: ticks are priced from reference_price.
    reference = {"ES1!": "6000", "MNQ1!": "21000", "CL1!": "70", "GC1!": "2700"}[symbol]
    response = await hook.post(alert(symbol=symbol, stop_loss=leg, reference_price=reference))
    assert response.status_code == 200, response.text
    (row,) = await hook.rows()
    assert (row["stop_loss_ticks"], row["stop_loss"]) == (expected_ticks, expected_price)
    notes = response.json()["notes"]
    assert bool(notes) is rounded
    if rounded:
        assert "rounded towards the entry" in notes[0]


async def test_webhook_take_profit_price_for_a_short_rounds_up_towards_entry(hook: Hook) -> None:
    response = await hook.post(alert(action="sell", symbol="ES1!", take_profit={"price": "5990.1"}))
    assert response.status_code == 200, response.text
    (row,) = await hook.rows()
    assert row["take_profit"] == Decimal("5990.25")


# --- compatible formats ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "expected", "ignored"),
    [
        (
            {
                "ticker": "MNQ1!",
                "action": "buy",
                "quantity": "2",
                "interval": "5",
                "signalPrice": "21000",
                "takeProfit": {"limitPrice": "21010"},
                "stopLoss": {"type": "stop", "amount": "5"},
                "time": "{now}",
            },
            [
                {
                    "intent": "order",
                    "side": "buy",
                    "quantity": 2,
                    "take_profit": 21010,
                    "stop_loss_ticks": 20,
                    "reference_price": 21000,
                }
            ],
            ["interval"],
        ),
        ({"ticker": "MNQ1!", "action": "exit"}, [{"intent": "exit", "quantity": None}], []),
        (
            {"ticker": "MNQ1!", "action": "sell", "sentiment": "flat", "quantity": 1},
            [{"intent": "exit", "quantity": None}],
            ["quantity"],
        ),
        ({"ticker": "MNQ1!", "action": "cancel"}, [{"intent": "cancel"}], []),
        (
            {
                "ticker": "MNQ1!",
                "action": "buy",
                "quantity": 1,
                "cancel": True,
                "orderType": "limit",
                "limitPrice": "20990",
            },
            [{"intent": "cancel"}, {"intent": "order", "price": Decimal(20990)}],
            [],
        ),
        (
            {
                "ticker": "MNQ1!",
                "action": "buy",
                "quantity": 1,
                "signalPrice": "20000",
                "stopLoss": {"percent": "0.1"},
            },
            [{"stop_loss_ticks": 80}],
            [],
        ),  # 20 points
    ],
)
async def test_webhook_traderspost_format_maps_to_rows(
    hook: Hook, body: dict[str, Any], expected: list[dict[str, Any]], ignored: list[str]
) -> None:
    body = {k: (now_iso() if v == "{now}" else v) for k, v in body.items()}
    response = await hook.post(body, path=f"/webhook/{SECRET}")
    assert response.status_code == 200, response.text
    assert response.json()["format"] == "traderspost"
    assert response.json()["ignored_fields"] == ignored
    rows = await hook.rows()
    assert len(rows) == len(expected)
    for row, want in zip(rows, expected, strict=True):
        for column, value in want.items():
            assert row[column] == value, column


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (
            {
                "data": "buy",
                "quantity": "2",
                "price": "{{close}}",
                "dollar_sl": "20",
                "tp": "0",
                "risk_percentage": "0",
                "update_tp": "false",
            },
            [
                {
                    "intent": "order",
                    "side": "buy",
                    "quantity": 2,
                    "stop_loss_ticks": 20,
                    "take_profit": None,
                }
            ],
        ),  # $20 over 2 contracts = $10 = 20 MNQ ticks
        ({"data": "close", "quantity": "1"}, [{"intent": "exit", "quantity": None}]),
        (
            {"data": "sell", "quantity": "1", "reverse_order_close": "true"},
            [{"intent": "target", "target_position": -1, "quantity": None}],
        ),
        (
            {"data": "buy", "quantity": 1, "order_type": "LMT", "price": "21000.5", "sl": "20990"},
            [{"order_type": "limit", "price": Decimal("21000.5"), "stop_loss": 20990}],
        ),
        (
            {
                "data": "buy",
                "quantity": 1,
                "multiple_accounts": [
                    {"token": SECRET, "account_id": "ACC2", "quantity_multiplier": 2},
                    {"token": SECRET, "account_id": "ACC3", "risk_percentage": 0},
                ],
            },
            [{"account_name": "ACC2", "quantity": 2}, {"account_name": "ACC3", "quantity": 1}],
        ),
    ],
)
async def test_webhook_pickmytrade_format_maps_to_rows(
    hook: Hook, body: dict[str, Any], expected: list[dict[str, Any]]
) -> None:
    full = {"symbol": "MNQ1!", "date": now_iso(), "token": SECRET, **body}
    if full.get("price") == "{{close}}":
        full["price"] = "21000"
    response = await hook.post(full)
    assert response.status_code == 200, response.text
    assert response.json()["format"] == "pickmytrade"
    rows = await hook.rows()
    assert len(rows) == len(expected)
    for row, want in zip(rows, expected, strict=True):
        for column, value in want.items():
            assert row[column] == value, column
    stored = json.loads((await hook.alerts())[0]["payload"])
    assert stored["token"] == "***"
    assert SECRET not in json.dumps(stored)


# --- duplicates and stale alerts ------------------------------------------------------------


async def test_webhook_four_deliveries_of_one_alert_make_one_set_of_rows(hook: Hook) -> None:
    body = alert(id="Long", time=now_iso(), accounts="group:team")
    answers = [await hook.post(body) for _ in range(4)]
    assert [a.json()["status"] for a in answers] == ["accepted"] + ["duplicate"] * 3
    assert {tuple(a.json()["signal_ids"]) for a in answers} == {
        tuple(answers[0].json()["signal_ids"])
    }
    assert len(await hook.rows()) == 2
    assert len(await hook.alerts()) == 1


async def test_webhook_concurrent_deliveries_store_once(hook: Hook) -> None:
    body = alert(id="Long", time=now_iso())
    answers = await asyncio.gather(*(hook.post(body) for _ in range(4)))
    assert sorted(a.json()["status"] for a in answers) == ["accepted"] + ["duplicate"] * 3
    assert len(await hook.rows()) == 1


@pytest.mark.parametrize("with_time", [True, False])
async def test_webhook_repeat_that_todays_settings_refuse_answered_duplicate(
    make_hook: HookFactory, with_time: bool
) -> None:
    # Stored under yesterday's settings; the group is gone by the time TradingView resends.
    body = alert(id="Long", time=now_iso() if with_time else None, accounts="group:team")
    first = await (await make_hook()).post(body)
    today = await make_hook(groups={})
    again = await today.post(body)
    fresh = await today.post({**body, "id": "Other"})

    assert first.json()["status"] == "accepted", first.text
    assert (again.status_code, again.json()["status"]) == (200, "duplicate"), again.text
    assert again.json()["signal_ids"] == first.json()["signal_ids"]
    assert fresh.status_code == 400, fresh.text
    assert len(await today.rows()) == 2


async def test_webhook_alert_without_time_dedupes_on_body(hook: Hook) -> None:
    first = await hook.post(alert(id="x"))
    second = await hook.post(alert(id="x"))
    other = await hook.post(alert(id="y"))
    assert [first.json()["status"], second.json()["status"], other.json()["status"]] == [
        "accepted",
        "duplicate",
        "accepted",
    ]
    assert len(await hook.rows()) == 2


async def test_webhook_two_orders_fired_in_the_same_second_are_two_alerts(hook: Hook) -> None:
    # One strategy, one second, one id: a market buy and a limit buy are two orders. Only a
    # byte-for-byte resend of the same body is a duplicate (TradingView resends the body it
    # sent); keying on a few identity fields made the limit order a "duplicate" of the market
    # one, an accepted alert lost.
    fired = now_iso()
    market = await hook.post(alert(id="Long", time=fired))
    limit = await hook.post(alert(id="Long", time=fired, order_type="limit", price=20000))
    again = await hook.post(alert(id="Long", time=fired, order_type="limit", price=20000))
    assert [market.json()["status"], limit.json()["status"], again.json()["status"]] == [
        "accepted",
        "accepted",
        "duplicate",
    ], (market.text, limit.text, again.text)
    assert again.json()["signal_ids"] == limit.json()["signal_ids"]
    assert len(await hook.rows()) == 2


async def test_webhook_a_resend_with_its_keys_in_another_order_is_a_duplicate(hook: Hook) -> None:
    # The same alert, its JSON keys in another order or spaced otherwise: one alert.
    fired = now_iso()
    body = alert(id="Long", time=fired, comment="x")
    first = await hook.post(body)
    again = await hook.post(dict(reversed(list(body.items()))))
    assert [first.json()["status"], again.json()["status"]] == ["accepted", "duplicate"]
    assert len(await hook.rows()) == 1


async def test_webhook_same_id_at_a_new_time_is_a_new_alert(hook: Hook) -> None:
    await hook.post(alert(id="Long", time=now_iso(-2)))
    second = await hook.post(alert(id="Long", time=now_iso()))
    assert second.json()["status"] == "accepted"
    assert len(await hook.rows()) == 2


async def test_webhook_stale_alert_is_stored_denied_and_answered_rejected(hook: Hook) -> None:
    # One body, sent twice: two now_iso() calls may straddle a second on a loaded machine.
    body = alert(time=now_iso(-120))
    response = await hook.post(body)
    assert response.status_code == 200
    assert (response.json()["status"], response.json()["reason"]) == ("rejected", "stale")
    (row,) = await hook.rows()
    assert (row["status"], row["error_message"]) == ("denied", "stale")
    assert row["ts_final"] is not None
    again = await hook.post(body)
    assert again.json().get("original_status") == "stale", again.json()
    assert len(await hook.rows()) == 1


@pytest.mark.parametrize(
    "body",
    [
        alert(reference_price=21000, stop_loss={"ticks": 100_000}),  # 25,000 points below
        alert(reference_price=21000, stop_loss={"points": 21000}),  # exactly at zero
        alert(order_type="limit", price="21000", stop_loss={"ticks": 84_000}),
        alert(action="sell", reference_price=21000, take_profit={"points": 30000}),
    ],
    ids=["ticks", "points-to-zero", "limit-entry", "short-target"],
)
async def test_webhook_leg_at_or_below_zero_from_the_entry_is_400(
    hook: Hook, body: dict[str, Any]
) -> None:
    response = await hook.post(body)

    assert response.status_code == 400, response.text
    answer = response.json()
    assert answer["field"] in {"stop_loss", "take_profit"}
    assert "lies at or below zero" in answer["error"]
    assert "at most 83,999 ticks" in answer["expected"]
    assert await hook.rows() == []


async def test_webhook_stop_one_tick_above_zero_is_accepted(hook: Hook) -> None:
    response = await hook.post(alert(reference_price=21000, stop_loss={"ticks": 83_999}))

    assert response.status_code == 200, response.text
    [row] = await hook.rows()
    assert row["stop_loss_ticks"] == 83_999


# --- error answers --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "field", "needle"),
    [
        (alert(stoploss={"ticks": 8}), "stoploss", "did you mean stop_loss"),
        (alert(quantity="1.5"), "quantity", "whole"),
        (alert(quantity=0), "quantity", "above 0"),
        (alert(quantity="abc"), "quantity", "number"),
        (alert(symbol="ZZZ1!"), "symbol", "unknown product root"),
        (alert(symbol="MNQH2020"), "symbol", "expired"),
        (alert(action="hold"), "action", "hold"),
        (alert(action=None), "action", "missing"),
        (alert(order_type="limit"), "price", "needs price"),
        (alert(price="21000"), "price", "reference_price"),
        (alert(stop_loss={"ticks": "1.5"}), "stop_loss.ticks", "whole"),
        (alert(stop_loss={"ticks": 4, "points": 1}), "stop_loss", "2 units"),
        (alert(stop_loss={"dollars": "0.1"}), "stop_loss", "less than one tick"),
        (alert(action="exit", stop_loss={"ticks": 4}), "stop_loss", "does not apply"),
        (
            alert(order_type="limit", price="21000", stop_loss={"price": "21001"}),
            "stop_loss",
            "below",
        ),
        (alert(account="NOPE"), "account", "not configured"),
        (alert(accounts="group:none"), "accounts", "not configured"),
        (alert(accounts=["ACC1", "group:team"]), "accounts", "twice"),
        (alert(accounts=[{"account": "ACC1", "multiplier": "1.5"}]), "accounts", "whole"),
        (alert(time=now_iso(3600)), "time", "future"),
        (alert(time="yesterday"), "time", "ISO-8601"),
        (alert(target_position="1", market_position="short"), "market_position", "contradicts"),
        (
            {
                "ticker": "MNQ1!",
                "action": "buy",
                "quantity": 1,
                "orderType": "trailing_stop",
                "secret": SECRET,
            },
            "orderType",
            "does not support",
        ),
        (
            {
                "ticker": "MNQ1!",
                "action": "buy",
                "quantity": 1,
                "stopLoss": {"trailPercent": 1},
                "secret": SECRET,
            },
            "stopLoss.trailPercent",
            "does not support",
        ),
        (
            {"ticker": "MNQ1!", "action": "buy", "quantity": 1, "foo": 1, "secret": SECRET},
            "foo",
            "unknown field",
        ),
        (
            {"symbol": "MNQ1!", "data": "buy", "quantity": 1, "token": SECRET, "trail": "1"},
            "trail_stop",
            "without a trail_stop",
        ),
        (
            {
                "symbol": "MNQ1!",
                "data": "buy",
                "quantity": 0,
                "token": SECRET,
                "risk_percentage": "2",
            },
            "risk_percentage",
            "does not support",
        ),
        (b"not json at all", None, "not valid JSON"),
        (b'{"secret": "x", "quantity": NaN}', None, "not a number"),
        (b"[1, 2]", None, "one alert per request"),
        (b"\xff\xfe", None, "UTF-8"),
    ],
)
async def test_webhook_invalid_alert_is_400_naming_the_field(
    hook: Hook, body: Any, field: str | None, needle: str
) -> None:
    response = await hook.post(body)
    assert response.status_code == 400, response.text
    answer = response.json()
    assert answer["status"] == "invalid"
    assert answer.get("field") == field
    assert needle in answer["error"] + answer.get("expected", "")
    assert await hook.rows() == []


async def test_webhook_authenticated_invalid_alert_is_recorded_for_audit(hook: Hook) -> None:
    await hook.post(alert(stoploss={"ticks": 8}))
    (record,) = await hook.alerts()
    assert record["outcome"] == "invalid"
    assert "stoploss" in record["error"]
    assert SECRET not in record["payload"]


@pytest.mark.parametrize(
    ("body", "path"),
    [
        (alert(secret="wrong-secret-000000000"), "/webhook"),
        (alert(secret=None), "/webhook"),
        (alert(secret=None), "/webhook/wrong"),
        (alert(), "/webhook/wrong"),  # every secret given must match
        (alert(secret=12345), "/webhook"),
    ],
)
async def test_webhook_bad_secret_is_401_and_stores_nothing(
    hook: Hook, body: dict[str, Any], path: str
) -> None:
    response = await hook.post(body, path=path)
    assert response.status_code == 401
    assert SECRET not in response.text
    assert await hook.rows() == []
    assert await hook.alerts() == []


async def test_webhook_refusals_are_logged_without_the_secret(hook: Hook) -> None:
    with logs_to("INFO") as out:
        await hook.post(alert(secret="wrong-secret-000000000"))
        await hook.post(alert(action="levitate"))
    refused = [r for r in log_records(out) if r["event"] == "webhook alert refused"]

    assert [(r["level"], r["http_status"], r["outcome"]) for r in refused] == [
        ("warning", 401, "unauthorized"), ("info", 400, "invalid"),
    ]  # fmt: skip
    assert refused[0]["address"] == "127.0.0.1"
    assert "levitate" in refused[1]["error"]
    assert "wrong-secret-000000000" not in out.getvalue()
    assert SECRET not in out.getvalue()


async def test_webhook_duplicate_check_comes_after_the_secret(hook: Hook) -> None:
    body = alert(id="a", time=now_iso())
    assert (await hook.post(body)).status_code == 200
    response = await hook.post({**body, "secret": "wrong-secret-000000000"})
    assert response.status_code == 401
    assert "signal_ids" not in response.json()


async def test_webhook_ip_allowlist_refuses_others_with_403(make_hook: HookFactory) -> None:
    hook = await make_hook(ip_allowlist=True)  # TradingView's four addresses
    response = await hook.post(alert())
    assert response.status_code == 403
    assert await hook.rows() == []


@pytest.mark.parametrize(
    ("proxies", "forwarded", "status"),
    [
        (["127.0.0.1"], "52.89.214.238", 200),  # from our proxy: believed
        (["127.0.0.1"], "52.89.214.238, 10.0.0.9", 403),  # rightmost untrusted hop decides
        ([], "52.89.214.238", 403),  # not from a trusted proxy: ignored
    ],
)
async def test_webhook_forwarded_for_is_believed_only_from_trusted_proxies(
    make_hook: HookFactory, proxies: list[str], forwarded: str, status: int
) -> None:
    hook = await make_hook(ip_allowlist=True, trusted_proxies=proxies)
    response = await hook.post(alert(), headers={"x-forwarded-for": forwarded})
    assert response.status_code == status, response.text


@pytest.mark.parametrize(
    ("headers", "status"),
    [
        (
            {
                "x-client-cert-verify": "SUCCESS",
                "x-client-cert-subject": RFC4514_SUBJECT,
            },
            200,
        ),
        (
            {
                "x-client-cert-verify": "SUCCESS",
                "x-client-cert-subject": OPENSSL_SUBJECT,
            },
            200,
        ),
        (
            {
                "x-client-cert-verify": "FAILED:unable to verify",
                "x-client-cert-subject": "CN=TradingView Webhooks,O=TradingView\\, Inc.",
            },
            403,
        ),
        ({"x-client-cert-verify": "SUCCESS", "x-client-cert-subject": "CN=Mallory,O=Evil"}, 403),
        ({}, 403),
    ],
)
async def test_webhook_client_certificate_subject_is_checked(
    make_hook: HookFactory, headers: dict[str, str], status: int
) -> None:
    hook = await make_hook(client_cert=True, trusted_proxies=["127.0.0.1"])
    response = await hook.post(alert(), headers=headers)
    assert response.status_code == status, response.text


async def test_webhook_body_over_the_cap_is_413(make_hook: HookFactory) -> None:
    hook = await make_hook(max_body_bytes=1024)
    big = alert(comment="x" * 2000)
    assert (await hook.post(big)).status_code == 413

    async def chunks():  # no Content-Length: the cap holds while reading
        for _ in range(10):
            yield b" " * 512

    streamed = await hook.client.post(hook.url + "/webhook", content=chunks())
    assert streamed.status_code == 413
    assert await hook.rows() == []


async def test_webhook_rate_limit_per_address_is_429(make_hook: HookFactory) -> None:
    hook = await make_hook(rate_limit_per_minute=60, rate_limit_burst=3)
    codes = [(await hook.post(alert(id=str(i)))).status_code for i in range(5)]
    assert codes == [200, 200, 200, 429, 429]


@pytest.mark.parametrize("allowlist", [False, True])
async def test_webhook_tradingview_addresses_are_never_rate_limited(
    make_hook: HookFactory, allowlist: bool
) -> None:
    # TradingView does not resend a 429: a burst from its own addresses must all be stored.
    hook = await make_hook(
        rate_limit_per_minute=60,
        rate_limit_burst=3,
        trusted_proxies=["127.0.0.1"],
        ip_allowlist=allowlist,
    )
    tradingview = {"x-forwarded-for": "52.89.214.238"}
    codes = [
        (await hook.post(alert(id=f"tv{i}", time=now_iso()), headers=tradingview)).status_code
        for i in range(12)
    ]
    assert codes == [200] * 12
    assert len(await hook.rows()) == 12


async def test_webhook_other_addresses_are_rate_limited_beside_tradingview(
    make_hook: HookFactory,
) -> None:
    hook = await make_hook(
        rate_limit_per_minute=60, rate_limit_burst=3, trusted_proxies=["127.0.0.1"]
    )
    other = {"x-forwarded-for": "203.0.113.9"}
    tradingview = {"x-forwarded-for": "34.212.75.30"}
    codes = []
    for i in range(5):
        codes.append((await hook.post(alert(id=f"o{i}"), headers=other)).status_code)
        codes.append((await hook.post(alert(id=f"t{i}"), headers=tradingview)).status_code)
    assert codes[0::2] == [200, 200, 200, 429, 429]
    assert codes[1::2] == [200] * 5


# --- database outage ------------------------------------------------------------------------


async def test_webhook_database_down_is_503_and_stores_nothing(make_hook: HookFactory) -> None:
    dead_pool = await asyncpg.create_pool("postgresql://u@127.0.0.1:9/none", min_size=0)
    hook = await make_hook(use_ledger=Ledger(dead_pool, "postgresql://u@127.0.0.1:9/none"))
    try:
        response = await hook.post(alert(time=now_iso()))
    finally:
        await dead_pool.close()
    assert response.status_code == 503
    assert response.json()["status"] == "unavailable"


@pytest.mark.parametrize("stage", ["find_alert", "insert_alert"])
async def test_webhook_pooled_connection_broken_by_an_outage_is_503_not_400(
    hook: Hook, monkeypatch: pytest.MonkeyPatch, stage: str
) -> None:
    # A rare branch, forced: after PostgreSQL restarted, a pooled connection it had dropped
    # fails its next statement with asyncpg's InternalClientError ("cannot switch to state").
    # The chaos suite met it as a 400 "internal error": TradingView never resends a 400.
    async def broken(*_args: object, **_kwargs: object) -> None:
        raise asyncpg.InternalClientError("cannot switch to state 12; another operation (2)")

    body = alert(time=now_iso())
    if stage == "find_alert":
        # Looked for only before refusing an alert: is it a repeat of one stored before?
        # (the kill switches' read, a fetch, still works)
        stateless = SimpleNamespace(fetchrow=broken, fetch=hook.ledger._db.fetch)
        monkeypatch.setattr(hook.ledger, "_db", stateless)
        body = alert(time=now_iso(), quantity="1.5")
    else:
        monkeypatch.setattr(hook.ledger, "_insert_alert", broken)

    response = await hook.post(body)

    assert response.status_code == 503, response.text
    assert response.json()["status"] == "unavailable"


async def test_webhook_failure_inside_the_transaction_leaves_nothing_half_stored(
    hook: Hook,
) -> None:
    # The second account's row fails inside the one statement: no row, no alert survives.
    await hook.db.execute(
        "alter table trading_signals add constraint t_no_acc2 check (account_name <> 'ACC2')"
    )
    response = await hook.post(alert(accounts="group:team", time=now_iso()))
    assert response.status_code == 503
    assert await hook.rows() == []
    assert await hook.alerts() == []
    await hook.db.execute("alter table trading_signals drop constraint t_no_acc2")
    retry = await hook.post(alert(accounts="group:team", time=now_iso()))
    assert retry.json()["status"] in {"accepted", "duplicate"}
    assert len(await hook.rows()) == 2


# --- documentation agrees with the parsers --------------------------------------------------


@pytest.mark.parametrize(
    ("model", "fields"),
    [
        (TradebridgeAlert, TRADEBRIDGE_FIELDS),
        (TradersPostAlert, TRADERSPOST_FIELDS),
        (PickMyTradeAlert, PICKMYTRADE_FIELDS),
    ],
)
def test_schema_models_list_the_fields_the_parsers_know(model: Any, fields: frozenset[str]) -> None:
    assert set(model.model_fields) == set(fields)


def test_alert_intents_are_the_intents_a_worker_knows() -> None:
    # A parsed alert's intent goes to its rows' intent column as it is; validate reads it.
    assert set(get_args(AlertIntent)) == {intent.value for intent in Intent}


async def test_webhook_openapi_documents_both_routes(hook: Hook) -> None:
    spec = (await hook.client.get(hook.url + "/openapi.json")).json()
    assert {"/webhook", "/webhook/{secret}"} <= set(spec["paths"])
    body = spec["paths"]["/webhook"]["post"]["requestBody"]["content"]
    assert {"application/json", "text/plain"} <= set(body)
    assert "$defs" not in json.dumps(body)


# --- the front door (intake/webhook.py _WebhookFront) -----------------------------------------


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [
        ("GET", "/webhook", 405),
        ("PUT", f"/webhook/{SECRET}", 405),
        ("POST", f"/webhook/{SECRET}/more", 404),
        ("POST", "/webhooks", 404),
        ("POST", "/webhook/", 307),  # the app's slash redirect, as before the front
    ],
)
async def test_webhook_front_leaves_other_requests_to_the_app(
    hook: Hook, method: str, path: str, status: int
) -> None:
    response = await hook.client.request(method, hook.url + path, json=alert())
    assert response.status_code == status
    assert await hook.rows() == []


async def test_webhook_front_takes_both_routes_with_the_same_handler(hook: Hook) -> None:
    in_body = await hook.post(alert(id="front-body"))
    in_path = await hook.post(alert(id="front-path", secret=None), path=f"/webhook/{SECRET}")
    wrong = await hook.post(alert(id="front-wrong", secret=None), path="/webhook/not-the-secret")
    assert (in_body.status_code, in_path.status_code, wrong.status_code) == (200, 200, 401)
    assert len(await hook.rows()) == 2

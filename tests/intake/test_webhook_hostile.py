"""Hostile bodies that once got a 5xx (issue 10): each is a 400 naming what was wrong.

Every case here was measured against the running webhook: a RecursionError on deep nesting,
a UnicodeEncodeError in the secret comparison, an AssertionError on a PickMyTrade close
with a dollar stop, NUL and lone surrogates answered 503 (and counted as database outages),
and huge numbers accepted as rows that later failed in Decimal arithmetic.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import asyncpg
import pytest

from _support.fixtures import log_records, logs_to
from intake.conftest import SECRET, Hook, HookFactory
from tradebridge.intake.formats import detect
from tradebridge.intake.security import secret_matches
from tradebridge.obs import metrics
from tradebridge.store.ledger import Ledger


def now_iso() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def tb(**fields: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"secret": SECRET, "symbol": "MNQ1!", "action": "buy", "quantity": 1}
    body.update(fields)
    return {k: v for k, v in body.items() if v is not None}


def raw(text: str) -> bytes:
    """Encode a body written with JSON escapes as the wire bytes (escapes kept as text)."""
    return text.encode("ascii")


def unavailable_count() -> float:
    return metrics.WEBHOOK_REQUESTS.labels(outcome="unavailable")._value.get()


async def assert_refused(
    hook: Hook, body: Any, *, status: int = 400, field: str | None = None, needle: str = ""
) -> dict[str, Any]:
    """POST ``body``; assert the status, the field named, and that nothing was stored."""
    outages = unavailable_count()
    response = await hook.post(body)
    assert response.status_code == status, response.text
    answer: dict[str, Any] = response.json()
    if field is not None:
        assert answer.get("field") == field, answer
    assert needle in answer["error"], answer
    assert await hook.rows() == []
    assert unavailable_count() == outages, "a refused body was counted as a database outage"
    return answer


# --- nesting: limits before any recursion ---------------------------------------------------


@pytest.mark.parametrize("depth", [17, 500, 900, 5_000, 30_000])
async def test_webhook_deeply_nested_body_is_400_before_parsing(hook: Hook, depth: int) -> None:
    nested = "[" * depth + "]" * depth
    body = raw(f'{{"secret": "{SECRET}", "symbol": "MNQ1!", "action": "buy", "quantity": 1, '
               f'"comment": {nested}}}')  # fmt: skip
    answer = await assert_refused(hook, body, needle="nests")
    assert "16" in answer["expected"]
    assert await hook.alerts() == []


async def test_webhook_deeply_nested_objects_in_a_compat_extras_are_400(hook: Hook) -> None:
    extras = '{"a":' * 600 + "1" + "}" * 600
    body = raw(f'{{"ticker": "MNQ1!", "action": "buy", "quantity": 1, "secret": "{SECRET}", '
               f'"extras": {extras}}}')  # fmt: skip
    await assert_refused(hook, body, needle="nests")


async def test_webhook_nesting_within_the_limit_is_still_read(hook: Hook) -> None:
    # TradersPost's free-form extras may nest; 10 levels are fine (ignored, listed).
    extras = '{"a":' * 10 + "1" + "}" * 10
    body = raw(f'{{"ticker": "MNQ1!", "action": "buy", "quantity": 1, "secret": "{SECRET}", '
               f'"extras": {extras}}}')  # fmt: skip
    response = await hook.post(body)
    assert response.status_code == 200, response.text
    assert response.json()["ignored_fields"] == ["extras"]


async def test_webhook_brackets_inside_strings_do_not_count_as_nesting(hook: Hook) -> None:
    response = await hook.post(tb(comment="[" * 100 + "{" * 100, time=now_iso()))
    assert response.status_code == 200, response.text


# --- text the database cannot hold: NUL, lone surrogates --------------------------------------


@pytest.mark.parametrize(
    ("text", "field"),
    [
        (r'{"secret": "\ud800", "symbol": "MNQ1!", "action": "buy", "quantity": 1}', "secret"),
        (rf'{{"secret": "{SECRET}\udfff", "symbol": "MNQ1!", "action": "buy", "quantity": 1}}',
         "secret"),
        (r'{"token": "\udc80", "data": "buy", "symbol": "MNQ1!", "quantity": 1}', "token"),
    ],
)  # fmt: skip
async def test_webhook_lone_surrogate_secret_is_400_without_knowing_the_secret(
    hook: Hook, text: str, field: str
) -> None:
    answer = await assert_refused(hook, raw(text), field=field, needle="surrogate")
    assert SECRET not in json.dumps(answer)


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"comment": "a\u0000b"}, "comment"),
        ({"strategy": "\u0000"}, "strategy"),
        ({"account": "ACC1\u0000"}, "account"),
        ({"accounts": ["ACC1", {"account": "ACC2", "multiplier": "\u0000"}]},
         "accounts[1].multiplier"),
        ({"id": "x\ud800y"}, "id"),
        ({"comment": {"deep": ["ok", "\udfff"]}}, "comment.deep[1]"),
    ],
)  # fmt: skip
async def test_webhook_nul_or_lone_surrogate_in_a_value_is_400_naming_it(
    hook: Hook, fields: dict[str, Any], field: str
) -> None:
    # json.dumps writes \u0000 and \ud800 as escapes: exactly what a hostile sender sends.
    await assert_refused(hook, json.dumps(tb(time=now_iso(), **fields)), field=field)


async def test_webhook_nul_in_a_field_name_is_400(hook: Hook) -> None:
    body = raw(f'{{"secret": "{SECRET}", "symbol": "MNQ1!", "action": "buy", "quantity": 1, '
               r'"ext\u0000ra": 1}')  # fmt: skip
    answer = await assert_refused(hook, body, needle="NUL")
    assert "\x00" not in answer["error"]


async def test_webhook_nul_in_traderspost_extras_is_400(hook: Hook) -> None:
    body = {"ticker": "MNQ1!", "action": "buy", "quantity": 1, "secret": SECRET,
            "extras": {"note": "\u0000"}}  # fmt: skip
    await assert_refused(hook, json.dumps(body), field="extras.note")


# --- PickMyTrade close with a dollar stop -----------------------------------------------------


@pytest.mark.parametrize(
    ("extra", "field"),
    [({"dollar_sl": 50}, "sl"), ({"dollar_tp": "25"}, "tp"), ({"dollar_sl": 1e30}, "dollar_sl")],
)
async def test_webhook_pickmytrade_close_with_dollar_bracket_is_400(
    hook: Hook, extra: dict[str, Any], field: str
) -> None:
    body = {"symbol": "MNQ1!", "data": "close", "date": now_iso(), "token": SECRET, **extra}
    await assert_refused(hook, body, field=field)


# --- numbers bounded before any Decimal arithmetic --------------------------------------------


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (tb(quantity=1e30), "quantity"),
        (tb(quantity="1000000"), "quantity"),
        (tb(target_position="-1e20", quantity=None, action=None), "target_position"),
        (tb(order_type="limit", price="1e29"), "price"),
        (tb(order_type="stop", stop_price=10**12), "stop_price"),
        (tb(reference_price="9e15"), "reference_price"),
        (tb(stop_loss={"points": "1e25"}), "stop_loss.points"),
        (tb(take_profit={"price": 1e27}), "take_profit.price"),
        (tb(take_profit={"dollars": "1e-31"}), "take_profit.dollars"),
        (tb(accounts=[{"account": "ACC2", "multiplier": "1e20"}]), "accounts[0].multiplier"),
        (tb(accounts=[{"account": "ACC2", "multiplier": 1000}], quantity=1000), "accounts"),
        ({"ticker": "MNQ1!", "action": "buy", "quantity": 1, "secret": SECRET,
          "signalPrice": "1e28"}, "signalPrice"),
        ({"ticker": "MNQ1!", "action": "buy", "quantity": 1, "secret": SECRET,
          "signalPrice": "21000", "stopLoss": {"percent": "1e20"}}, "stopLoss.percent"),
        ({"symbol": "MNQ1!", "data": "buy", "quantity": 1, "token": SECRET, "sl": "1e29"}, "sl"),
        ({"symbol": "MNQ1!", "data": "buy", "quantity": 1, "token": SECRET,
          "multiple_accounts": [{"account_id": "ACC2", "token": SECRET,
                                 "quantity_multiplier": "1e25"}]},
         "multiple_accounts[0].quantity_multiplier"),
    ],
)  # fmt: skip
async def test_webhook_number_out_of_bounds_is_400_naming_the_field(
    hook: Hook, body: dict[str, Any], field: str
) -> None:
    await assert_refused(hook, body, field=field)


async def test_webhook_largest_sane_numbers_are_accepted(make_hook: HookFactory) -> None:
    # The bounds of intake, not a risk rule's: contracts per order is off here.
    hook = await make_hook(sections={"risk": {"max_order_qty": "off"}})
    body = tb(quantity=100_000, order_type="limit", price="999999999.75", time=now_iso())
    response = await hook.post(body)
    assert response.status_code == 200, response.text


# --- times that overflow, digits that are not ASCII -------------------------------------------


@pytest.mark.parametrize(
    "value", ["0001-01-01T00:00:00+14:00", "9999-12-31T23:59:59-14:00", "\u00b2", "\u0663" * 30]
)
async def test_webhook_unreadable_time_is_400(hook: Hook, value: str) -> None:
    await assert_refused(hook, tb(time=value), field="time")


# --- text fields are bounded ------------------------------------------------------------------


@pytest.mark.parametrize("field", ["symbol", "account", "strategy", "id", "comment"])
async def test_webhook_overlong_text_is_400_naming_the_field(hook: Hook, field: str) -> None:
    await assert_refused(hook, tb(**{field: "A" * 5000}), field=field, needle="long")


# --- content types: the body is read the same way whatever the header says --------------------


@pytest.mark.parametrize(
    "content_type",
    ["application/json", "text/plain", "text/plain; charset=utf-8",
     "application/x-www-form-urlencoded", "multipart/form-data; boundary=x",
     "application/octet-stream", "image/png", "", b"\xe9/\xe9"],
)  # fmt: skip
async def test_webhook_any_content_type_is_read_as_the_body(
    hook: Hook, content_type: str | bytes
) -> None:
    body = json.dumps(tb(time=now_iso(), id=repr(content_type))).encode()
    response = await hook.post(body, headers={"content-type": content_type})
    assert response.status_code == 200, response.text


# --- the last lines of defence: forced with a mock, as they should never be reached -----------


async def test_webhook_unforeseen_error_before_storing_is_400_and_logged(
    hook: Hook, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(_body: Any) -> Any:
        raise ZeroDivisionError("a parser bug")

    monkeypatch.setitem(detect.PARSERS, "tradebridge", broken)
    with logs_to("INFO") as out:
        answer = await assert_refused(hook, tb(time=now_iso()), needle="internal error")
    assert answer["status"] == "invalid"
    (record,) = [r for r in log_records(out) if r["event"].startswith("webhook alert not read")]
    assert "ZeroDivisionError" in record["exception"]


class _RefusingLedger(Ledger):
    """A ledger whose database refuses the contents of every alert (PostgreSQL class 22).

    The driver's error is raised under the ledger's translation (``insert_alert`` wraps
    ``_insert_alert``), as a real refusal would be.
    """

    async def _insert_alert(self, alert: Any, rows: Any) -> Any:
        raise asyncpg.exceptions.UntranslatableCharacterError("unsupported Unicode escape")


async def test_webhook_contents_the_database_refuses_are_400_not_an_outage(
    make_hook: HookFactory, ledger: Ledger
) -> None:
    refusing = _RefusingLedger(ledger.pool, "postgresql://unused")
    hook = await make_hook(use_ledger=refusing)
    answer = await assert_refused(hook, tb(time=now_iso()), needle="cannot store")
    assert "UntranslatableCharacterError" in answer["error"]


@pytest.mark.parametrize("given", ["\ud800", "\udfff" * 30, SECRET + "\ud800", "\x00", ""])
def test_secret_matches_any_string_without_raising(given: str) -> None:
    assert secret_matches(given, SECRET) is False
    assert secret_matches(SECRET, SECRET) is True

"""The operator endpoints (``GET/POST /kill``, ``POST /resume``): authenticated by the
operator token, over a real socket and a real ledger; the token never reaches the logs."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from _support.fixtures import logs_to
from intake.conftest import make_settings, serving
from tradebridge.intake.operator import build_operator_router
from tradebridge.store.kill import KillSwitchWatch
from tradebridge.store.ledger import Ledger

TOKEN = "operator-token-for-the-tests-0123456789"


@contextlib.asynccontextmanager
async def _operator(ledger: Ledger, token: str | None = TOKEN) -> AsyncIterator[str]:
    settings = make_settings({"operator_token": token} if token else None)
    app = FastAPI()
    app.include_router(build_operator_router(settings, ledger, KillSwitchWatch(ledger)))
    async with serving(app, settings) as url:
        yield url


def _auth(token: str = TOKEN) -> dict[str, str]:
    return {"authorization": f"Bearer {token}"}


async def _post(url: str, path: str, body: Any = None, **kwargs: Any) -> httpx.Response:
    async with httpx.AsyncClient(timeout=10) as client:
        return await client.post(url + path, json=body, **kwargs)


@pytest.mark.parametrize("path", ["/kill", "/resume"])
@pytest.mark.parametrize(
    "headers",
    [{}, {"authorization": "Bearer wrong-token-wrong-token-wrong"}, {"authorization": TOKEN}],
    ids=["missing", "wrong", "no-scheme"],
)
async def test_operator_endpoint_unauthenticated_is_401_and_changes_nothing(
    ledger: Ledger, path: str, headers: dict[str, str]
) -> None:
    async with _operator(ledger) as url:
        response = await _post(url, path, {}, headers=headers)

    assert response.status_code == 401, response.text
    assert response.headers["www-authenticate"] == "Bearer"
    assert TOKEN not in response.text
    assert (await ledger.kill_switches()).switches == {}


async def test_operator_endpoint_without_a_configured_token_is_403(ledger: Ledger) -> None:
    async with _operator(ledger, token=None) as url:
        response = await _post(url, "/kill", {}, headers=_auth())

    assert response.status_code == 403, response.text
    assert "serve.operator_token" in response.json()["error"]
    assert (await ledger.kill_switches()).switches == {}


async def test_operator_kill_then_resume_with_the_token(ledger: Ledger) -> None:
    with logs_to("INFO") as logs:
        async with _operator(ledger) as url, httpx.AsyncClient(timeout=10) as client:
            killed = await client.post(url + "/kill", json={"reason": "news", "by": "ana"},
                                       headers=_auth())  # fmt: skip
            shown = await client.get(url + "/kill", headers=_auth())
            resumed = await client.post(url + "/resume", json={}, headers=_auth())
            again = await client.post(url + "/resume", json={}, headers=_auth())

    assert killed.status_code == 200, killed.text
    assert killed.json()["kill_switch"]["global"] is True
    switch = shown.json()["kill_switch"]["global_switch"]
    assert (switch["engaged"], switch["via"], switch["reason"]) == (True, "http", "news")
    assert switch["changed_by"] == "http 127.0.0.1 (ana)"
    assert resumed.json()["status"] == "resumed"
    assert resumed.json()["kill_switch"]["global"] is False
    assert again.json()["status"] == "unchanged"
    assert again.json()["not_on"] == ["global"]
    assert TOKEN not in logs.getvalue()
    assert "kill_switch_thrown" in logs.getvalue()


async def test_operator_kill_account_with_flatten_queues_its_flatten_row(ledger: Ledger) -> None:
    async with _operator(ledger) as url:
        response = await _post(url, "/kill", {"account": "ACC1", "flatten": True},
                               headers=_auth())  # fmt: skip

    assert response.status_code == 200, response.text
    (signal_id,) = response.json()["signal_ids"]
    row = await ledger.get(signal_id)
    assert row is not None
    assert (row.account_name, row.intent) == ("ACC1", "flatten")
    assert response.json()["kill_switch"]["accounts"]["ACC1"]["engaged"] is True


async def test_operator_resume_of_an_account_under_a_global_kill_says_it_stays_stopped(
    ledger: Ledger,
) -> None:
    await ledger.engage_kill_switch(None, changed_by="ops", via="cli")
    await ledger.engage_kill_switch("ACC1", changed_by="ops", via="cli")
    async with _operator(ledger) as url:
        response = await _post(url, "/resume", {"account": "ACC1"}, headers=_auth())

    assert response.status_code == 200, response.text
    assert response.json()["released"] == ["account:ACC1"]
    assert "kill_switch global" in response.json()["still_stopped"]["ACC1"]


@pytest.mark.parametrize(
    ("body", "words"),
    [
        ({"account": "NOPE"}, "not configured"),
        ({"acount": "ACC1"}, "acount"),
        ({"flatten": "sometimes"}, "flatten"),
        ([1, 2], "JSON object"),
    ],
)
async def test_operator_kill_bad_body_is_400_naming_what_is_wrong(
    ledger: Ledger, body: Any, words: str
) -> None:
    async with _operator(ledger) as url:
        response = await _post(url, "/kill", body, headers=_auth())

    assert response.status_code == 400, response.text
    assert words in response.json()["error"]
    assert (await ledger.kill_switches()).switches == {}


async def test_operator_deeply_nested_body_is_400_and_the_endpoint_keeps_serving(
    ledger: Ledger,
) -> None:
    body = b"[" * 5000 + b"]" * 5000  # 10 kB: under the 16 kB cap, over json's recursion limit
    async with _operator(ledger) as url, httpx.AsyncClient(timeout=10) as client:
        headers = {**_auth(), "content-type": "application/json"}
        answer = await client.post(url + "/kill", content=body, headers=headers)
        still = await client.get(url + "/kill", headers=_auth())

    assert answer.status_code == 400, (answer.status_code, answer.text[:200])
    assert "nested too deeply" in answer.json()["error"]
    assert still.status_code == 200
    assert (await ledger.kill_switches()).switches == {}


@pytest.mark.parametrize("path", ["/kill", "/resume"])
async def test_operator_nul_in_reason_is_400_not_a_database_outage(
    ledger: Ledger, path: str
) -> None:
    """A 503 would say "the database failed, try again later": the same text fails again."""
    async with _operator(ledger) as url:
        response = await _post(url, path, {"reason": "oops\u0000"}, headers=_auth())

    assert response.status_code == 400, (response.status_code, response.text[:200])
    assert response.json()["status"] == "invalid"
    assert "without NUL characters" in response.json()["error"]
    assert (await ledger.kill_switches()).switches == {}

"""The TradingView bridge dialect: login, tokens, accounts, reference data, 401 and 404."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from _bridge_support import (
    APEX_ACCOUNT,
    DEMO_ACCOUNT,
    DEMO_OTHER_ACCOUNT,
    Bridge,
    login,
    running_bridge,
)


@pytest.fixture
def bridge() -> Iterator[Bridge]:
    with running_bridge() as running:
        yield running


# --- /authorize and tokens ------------------------------------------------------------------


def test_authorize_good_credentials_returns_token_and_expiry(bridge: Bridge) -> None:
    answer = bridge.http.post("/authorize?locale=en", data={"login": "apex", "password": "apex"})
    assert answer.status_code == 200
    payload = answer.json()
    assert payload["s"] == "ok"
    assert payload["d"]["access_token"].count(".") == 2
    lifetime = payload["d"]["expiration"] - bridge.clock.now().timestamp()
    assert 60 * 60 < lifetime <= 80 * 60


@pytest.mark.parametrize(
    ("form", "expected"),
    [
        ({"login": "demo", "password": "wrong"}, "Invalid login or password"),
        ({"login": "nobody", "password": "demo"}, "Invalid login or password"),
        ({"login": "demo"}, "password"),
        ({"password": "demo"}, "login"),
    ],
)
def test_authorize_bad_or_missing_credentials_answers_200_error(
    bridge: Bridge, form: dict[str, str], expected: str
) -> None:
    answer = bridge.http.post("/authorize", data=form)
    assert answer.status_code == 200
    payload = answer.json()
    assert payload["s"] == "error"
    assert expected in payload["errmsg"]


@pytest.mark.parametrize(
    "path",
    ["/accounts", "/config", f"/accounts/{DEMO_ACCOUNT}/state", "/quotes?symbols=MNQZ6"],
)
@pytest.mark.parametrize("header", [None, "Bearer", "Bearer not.a.token", "Basic abc"])
def test_bridge_missing_or_bad_token_answers_401(
    bridge: Bridge, path: str, header: str | None
) -> None:
    headers = {"Authorization": header} if header else {}
    answer = bridge.http.get(path, headers=headers)
    assert answer.status_code == 401
    assert answer.json()["s"] == "error"


def test_bridge_expired_token_answers_401(bridge: Bridge) -> None:
    bridge.http.patch("/_sim/faults", json={"token_lifetime_s": 5}).raise_for_status()
    token = login(bridge.http)
    assert bridge.http.get("/accounts", headers=bridge.headers(token)).status_code == 200
    bridge.clock.advance(6)
    assert bridge.http.get("/accounts", headers=bridge.headers(token)).status_code == 401


def test_bridge_native_token_is_accepted_as_bearer(bridge: Bridge) -> None:
    user = bridge.server.config.users[0]
    native = bridge.server.call(lambda: bridge.server.ctx.auth.issue(user, "native"))
    answer = bridge.http.get("/accounts", headers=bridge.headers(native.token))
    assert answer.status_code == 200
    assert answer.json()["s"] == "ok"


def test_mapping_without_token_lists_front_month_with_tradingview_name(bridge: Bridge) -> None:
    answer = bridge.http.get("/mapping")
    assert answer.status_code == 200
    symbols = answer.json()["d"]["symbols"]
    assert {"s": "CME_MINI:MNQZ2026", "f": ["MNQZ6"]} in symbols
    assert answer.json()["d"]["fields"] == ["brokerSymbol"]


# --- accounts and configuration -----------------------------------------------------------


def test_accounts_lists_only_the_token_users_accounts_by_bridge_id(bridge: Bridge) -> None:
    accounts = bridge.d("/accounts", locale="en")
    assert [(a["id"], a["name"]) for a in accounts] == [
        (DEMO_ACCOUNT, "DEMO0000001"),
        (DEMO_OTHER_ACCOUNT, "DEMO0000002"),
    ]
    assert accounts[0]["currency"] == "USD"
    assert accounts[0]["currencySign"] == "$"
    assert accounts[0]["config"]["supportOrderBrackets"] is True


def test_config_advertises_the_configured_durations(bridge: Bridge) -> None:
    config = bridge.d("/config", locale="en")
    assert [d["id"] for d in config["durations"]] == ["Day", "GTC"]
    assert config["accountManager"][0]["columns"]


def test_state_reports_balance_equity_and_open_pl(bridge: Bridge) -> None:
    state = bridge.d(f"/accounts/{DEMO_ACCOUNT}/state")
    assert state["balance"] == 50_000.0
    assert state["unrealizedPl"] == 0.0
    assert state["equity"] == 50_000.0


def test_instruments_list_front_month_with_tick_and_pip_value(bridge: Bridge) -> None:
    instruments = {i["name"]: i for i in bridge.d(f"/accounts/{DEMO_ACCOUNT}/instruments")}
    mnq = instruments[bridge.front]
    assert mnq["pipSize"] == 0.25
    assert mnq["minTick"] == 0.25
    assert mnq["pipValue"] == 0.5
    assert (mnq["minQty"], mnq["qtyStep"], mnq["type"]) == (1, 1, "futures")
    assert "MNQZ5" not in instruments


def test_quotes_known_and_unknown_symbols_answer_per_item(bridge: Bridge) -> None:
    quotes = bridge.d("/quotes", symbols=f"{bridge.front},FOOZ6,MNQZ5")
    assert [q["s"] for q in quotes] == ["ok", "error", "error"]
    value = quotes[0]["v"]
    assert value["bid"] < value["ask"]
    assert value["spread"] == value["ask"] - value["bid"]
    assert {"lp", "open_price", "high_price", "low_price", "volume"} <= set(value)


def test_quotes_follow_admin_price(bridge: Bridge) -> None:
    bridge.set_price(bridge.front, "20000.25")
    assert bridge.quote_last(bridge.front) == 20000.25


# --- 404: account ids and routes --------------------------------------------------------

ACCOUNT_PATHS = ["state", "orders", "ordersHistory", "positions", "executions", "instruments"]
WRONG_IDS = {
    "name": "DEMO0000001",
    "numeric": "100001",
    "other user": APEX_ACCOUNT,
    "unknown": "D999999",
    "placeholder": "{account_id}",
    "lowercase": DEMO_ACCOUNT.lower(),
}


@pytest.mark.parametrize("path", ACCOUNT_PATHS)
@pytest.mark.parametrize("wrong", WRONG_IDS.values(), ids=WRONG_IDS.keys())
def test_account_routes_wrong_account_id_answer_404(bridge: Bridge, path: str, wrong: str) -> None:
    answer = bridge.get(f"/accounts/{wrong}/{path}")
    assert answer.status_code == 404
    assert answer.json() == {"s": "error", "errmsg": "Not Found"}


@pytest.mark.parametrize("wrong", WRONG_IDS.values(), ids=WRONG_IDS.keys())
def test_place_order_wrong_account_id_answers_404(bridge: Bridge, wrong: str) -> None:
    assert bridge.place(wrong).status_code == 404


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/nope"),
        ("GET", "/accounts/"),
        ("GET", f"/accounts/{DEMO_ACCOUNT}/nope"),
        ("GET", f"/v1/accounts/{DEMO_ACCOUNT}/orders"),
        ("PATCH", "/accounts"),
        ("PATCH", f"/accounts/{DEMO_ACCOUNT}/orders"),
        ("GET", f"/accounts/{DEMO_ACCOUNT}/orders/123456789"),
        ("DELETE", f"/accounts/{DEMO_ACCOUNT}/orders/not-a-number"),
        ("GET", f"/accounts/{DEMO_ACCOUNT}/positions/123456789"),
    ],
)
def test_bridge_unknown_route_or_resource_answers_404(
    bridge: Bridge, method: str, path: str
) -> None:
    answer = bridge.http.request(method, path, headers=bridge.headers())
    assert answer.status_code == 404


def test_bridge_locale_and_request_id_in_query_of_a_get_are_ignored(bridge: Bridge) -> None:
    answer = bridge.get(f"/accounts/{DEMO_ACCOUNT}/orders", locale="en", requestId="abc123")
    assert answer.status_code == 200
    assert answer.json() == {"s": "ok", "d": []}


def test_bridge_other_users_token_cannot_see_demo_orders(bridge: Bridge) -> None:
    order_id = bridge.place_ok()
    apex = login(bridge.http, "apex", "apex")
    answer = bridge.http.get(
        f"/accounts/{DEMO_ACCOUNT}/orders/{order_id}", headers=bridge.headers(apex)
    )
    assert answer.status_code == 404
    other = bridge.get(f"/accounts/{DEMO_OTHER_ACCOUNT}/orders/{order_id}")
    assert other.status_code == 404

"""Native order commands of the simulator (reference §5, §11, checklist §12), over sockets."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tradebridge.sim.server import SimServer

DEMO_ACCOUNT, APEX_ACCOUNT = 100001, 200010
FAILURE_KEYS = {"failureReason", "failureText"}


async def orders(client: httpx.AsyncClient) -> list[dict[str, Any]]:
    response = await client.get("/v1/order/list")
    assert response.status_code == 200
    result: list[dict[str, Any]] = response.json()
    return result


async def commands(client: httpx.AsyncClient) -> list[dict[str, Any]]:
    result: list[dict[str, Any]] = (await client.get("/v1/command/list")).json()
    return result


@pytest.fixture
async def client_for(sim_server: SimServer, native_login: Any) -> Any:
    """Return ``await client_for(**SimConfig changes)``: set switches, return a demo client."""
    clients: list[httpx.AsyncClient] = []

    async def make(**switches: Any) -> httpx.AsyncClient:
        for key, value in switches.items():
            setattr(sim_server.config, key, value)
        client = httpx.AsyncClient(base_url=sim_server.url, timeout=10)
        clients.append(client)
        client.headers["Authorization"] = f"Bearer {await native_login(client)}"
        return client

    yield make
    for client in clients:
        await client.aclose()


# --- placeorder -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "account_fields",
    [
        {"accountSpec": "DEMO0000001", "accountId": DEMO_ACCOUNT},
        {"accountSpec": "DEMO0000001", "accountId": None},
        {"accountSpec": None, "accountId": DEMO_ACCOUNT},
    ],
)
async def test_place_order_valid_market_returns_only_order_id(
    native_client: httpx.AsyncClient, native_place: Any, account_fields: dict[str, Any]
) -> None:
    response = await native_place(native_client, **account_fields)

    assert response.status_code == 200
    body = response.json()
    assert set(body) == {"orderId"}
    assert isinstance(body["orderId"], int)
    assert [o["id"] for o in await orders(native_client)] == [body["orderId"]]
    assert (await orders(native_client))[0]["accountId"] == DEMO_ACCOUNT


@pytest.mark.parametrize(
    ("account_fields", "text"),
    [
        ({"accountSpec": "DEMO0000002", "accountId": DEMO_ACCOUNT}, "different accounts"),
        ({"accountSpec": "PAAPEX1361890000010", "accountId": None}, "Access is denied"),
        ({"accountSpec": None, "accountId": APEX_ACCOUNT}, "Access is denied"),
        ({"accountSpec": None, "accountId": 999}, "Access is denied"),
        ({"accountSpec": "NOPE", "accountId": DEMO_ACCOUNT}, "Access is denied"),
    ],
)
async def test_place_order_bad_account_returns_failure_without_order(
    native_client: httpx.AsyncClient,
    native_place: Any,
    account_fields: dict[str, Any],
    text: str,
) -> None:
    response = await native_place(native_client, **account_fields)

    assert response.status_code == 200
    body = response.json()
    assert set(body) == FAILURE_KEYS
    assert body["failureReason"] == "UnknownReason"
    assert text in body["failureText"]
    assert await orders(native_client) == []


@pytest.mark.parametrize(
    "fields",
    [
        pytest.param({"action": None}, id="missing-action"),
        pytest.param({"symbol": None}, id="missing-symbol"),
        pytest.param({"orderQty": None}, id="missing-qty"),
        pytest.param({"orderType": None}, id="missing-type"),
        pytest.param({"accountSpec": None, "accountId": None}, id="no-account"),
        pytest.param({"orderQty": "1"}, id="qty-string"),
        pytest.param({"orderQty": 1.5}, id="qty-fraction"),
        pytest.param({"orderQty": 0}, id="qty-zero"),
        pytest.param({"orderQty": True}, id="qty-bool"),
        pytest.param({"accountId": "100001"}, id="account-id-string"),
        pytest.param({"orderType": "Limit", "price": "21000"}, id="price-string"),
        pytest.param({"action": "BUY"}, id="action-upper"),
        pytest.param({"action": "Purchase"}, id="action-unknown"),
        pytest.param({"orderType": "Bogus"}, id="type-unknown"),
        pytest.param({"timeInForce": "Forever"}, id="tif-unknown"),
        pytest.param({"isAutomated": "yes"}, id="automated-string"),
        pytest.param({"expireTime": "tomorrow"}, id="expire-not-iso"),
    ],
)
async def test_place_order_malformed_body_returns_400_without_order(
    native_client: httpx.AsyncClient, native_place: Any, fields: dict[str, Any]
) -> None:
    response = await native_place(native_client, **fields)

    assert response.status_code == 400
    assert response.text
    assert await orders(native_client) == []


@pytest.mark.parametrize("content", [b"[]", b"not json", b"", b'"text"'])
async def test_place_order_body_not_object_returns_400(
    native_client: httpx.AsyncClient, content: bytes
) -> None:
    response = await native_client.post(
        "/v1/order/placeorder", content=content, headers={"content-type": "application/json"}
    )

    assert response.status_code == 400


@pytest.mark.parametrize(
    ("mode", "fields", "accepted"),
    [
        ("reject", {"action": "buy"}, False),
        ("reject", {"orderType": "market"}, False),
        ("reject", {"orderType": "Limit", "price": 1000, "timeInForce": "gtc"}, False),
        ("accept", {"action": "buy"}, True),
        ("accept", {"orderType": "market"}, True),
        ("accept", {"orderType": "limit", "price": 1000, "timeInForce": "gtc"}, True),
        ("reject", {"action": "Buy"}, True),
    ],
)
async def test_place_order_lowercase_enums_follow_switch(
    client_for: Any, native_place: Any, mode: str, fields: dict[str, Any], accepted: bool
) -> None:
    client = await client_for(lowercase_enums=mode)

    response = await native_place(client, **fields)

    if accepted:
        assert response.status_code == 200
        assert set(response.json()) == {"orderId"}
    else:
        assert response.status_code == 400
        assert await orders(client) == []


@pytest.mark.parametrize(
    "order_type", ["TralingStop", "TrailingStop", "TrailingStopLimit", "MIT", "QTS"]
)
async def test_place_order_unsupported_type_returns_unsupported_failure(
    native_client: httpx.AsyncClient, native_place: Any, order_type: str
) -> None:
    response = await native_place(native_client, orderType=order_type, stopPrice=1000)

    assert response.status_code == 200
    body = response.json()
    assert set(body) == FAILURE_KEYS
    assert body["failureReason"] == "Unsupported"
    assert order_type in body["failureText"]
    assert await orders(native_client) == []


@pytest.mark.parametrize(
    ("symbol", "reason"), [("MNQZ5", "InvalidContract"), ("XXXZ6", "UnknownReason")]
)
async def test_place_order_bad_contract_is_refused(
    native_client: httpx.AsyncClient, native_place: Any, symbol: str, reason: str
) -> None:
    response = await native_place(native_client, symbol=symbol)

    assert response.status_code == 200
    assert response.json()["failureReason"] == reason


@pytest.mark.parametrize("automated", [True, False, None])
async def test_place_order_is_automated_recorded_on_command(
    native_client: httpx.AsyncClient, native_place: Any, automated: bool | None
) -> None:
    await native_place(native_client, isAutomated=automated)

    assert [c["isAutomated"] for c in await commands(native_client)] == [bool(automated)]


async def test_place_order_require_automated_refuses_manual_order(
    client_for: Any, native_place: Any
) -> None:
    client = await client_for(require_automated=True)

    manual = await native_place(client, isAutomated=False)
    automated = await native_place(client, isAutomated=True)

    assert "failureReason" in manual.json()
    assert set(automated.json()) == {"orderId"}


async def test_place_order_cl_ord_id_findable_through_command_list(
    native_client: httpx.AsyncClient, native_place: Any
) -> None:
    placed = (await native_place(native_client, clOrdId="tb-42")).json()
    await native_place(native_client, clOrdId="tb-43")

    matches = [c for c in await commands(native_client) if c["clOrdId"] == "tb-42"]

    assert [c["orderId"] for c in matches] == [placed["orderId"]]


@pytest.mark.parametrize(("policy", "second_accepted"), [("accept", True), ("reject", False)])
async def test_place_order_duplicate_cl_ord_id_follows_policy(
    client_for: Any, native_place: Any, policy: str, second_accepted: bool
) -> None:
    client = await client_for(duplicate_cl_ord_id=policy)

    first = await native_place(client, clOrdId="tb-dup")
    second = await native_place(client, clOrdId="tb-dup")

    assert set(first.json()) == {"orderId"}
    assert ("orderId" in second.json()) is second_accepted
    assert ("failureReason" in second.json()) is not second_accepted
    assert len(await orders(client)) == (2 if second_accepted else 1)


async def test_place_order_injected_failure_returns_reason_once(
    sim_server: SimServer, native_client: httpx.AsyncClient, native_place: Any
) -> None:
    faults = sim_server.ctx.faults
    faults.inject_failure_text = "Daily loss limit"
    faults.inject_failure_reason = "TradingLocked"
    faults.inject_failure_count = 1

    refused = await native_place(native_client)
    accepted = await native_place(native_client)

    assert refused.json() == {"failureReason": "TradingLocked", "failureText": "Daily loss limit"}
    assert set(accepted.json()) == {"orderId"}


async def test_place_order_risk_rejection_returns_failure_with_rejected_order(
    client_for: Any, native_place: Any
) -> None:
    client = await client_for(max_order_qty=1)

    response = await native_place(client, orderQty=2)

    body = response.json()
    assert body["failureReason"] == "MaxOrderQtyLimitReached"
    assert [(o["id"], o["ordStatus"]) for o in await orders(client)] == [
        (body["orderId"], "Rejected")
    ]


# --- brackets -------------------------------------------------------------------------------


async def test_place_oso_two_brackets_returns_order_and_both_leg_ids(
    native_client: httpx.AsyncClient, native_place: Any
) -> None:
    response = await native_place(
        native_client,
        "placeoso",
        orderType="Limit",
        price=1000,
        bracket1={"action": "Sell", "orderType": "Limit", "price": 30000},
        bracket2={"action": "Sell", "orderType": "Stop", "stopPrice": 500},
    )

    body = response.json()
    assert set(body) == {"orderId", "oso1Id", "oso2Id"}
    listed = {o["id"]: o for o in await orders(native_client)}
    assert listed[body["oso1Id"]]["ordStatus"] == "Suspended"
    assert listed[body["oso1Id"]]["ocoId"] == listed[body["oso2Id"]]["ocoId"]


async def test_place_oso_one_bracket_returns_order_and_one_leg_id(
    native_client: httpx.AsyncClient, native_place: Any
) -> None:
    response = await native_place(
        native_client,
        "placeOSO",
        orderType="Limit",
        price=1000,
        bracket1={"action": "Sell", "orderType": "Limit", "price": 30000},
    )

    assert set(response.json()) == {"orderId", "oso1Id"}


@pytest.mark.parametrize(
    "fields",
    [
        pytest.param({}, id="no-bracket1"),
        pytest.param({"bracket1": "Sell"}, id="bracket1-not-object"),
        pytest.param({"bracket1": {"orderType": "Limit", "price": 30000}}, id="leg-no-action"),
        pytest.param(
            {"bracket1": {"action": "sell", "orderType": "Limit", "price": 30000}},
            id="leg-lowercase",
        ),
    ],
)
async def test_place_oso_malformed_bracket_returns_400(
    native_client: httpx.AsyncClient, native_place: Any, fields: dict[str, Any]
) -> None:
    response = await native_place(
        native_client, "placeoso", orderType="Limit", price=1000, **fields
    )

    assert response.status_code == 400
    assert await orders(native_client) == []


async def test_place_oco_returns_order_and_oco_id(
    native_client: httpx.AsyncClient, native_place: Any
) -> None:
    response = await native_place(
        native_client,
        "placeoco",
        action="Sell",
        orderType="Limit",
        price=30000,
        other={"action": "Sell", "orderType": "Stop", "stopPrice": 500},
    )

    body = response.json()
    assert set(body) == {"orderId", "ocoId"}
    assert len(await orders(native_client)) == 2


async def test_place_oco_without_other_returns_400(
    native_client: httpx.AsyncClient, native_place: Any
) -> None:
    response = await native_place(native_client, "placeoco", orderType="Limit", price=1000)

    assert response.status_code == 400


# --- modify, cancel, liquidate --------------------------------------------------------------


@pytest.fixture
async def resting_order(native_client: httpx.AsyncClient, native_place: Any) -> int:
    """Place a buy limit far below the market and return its id."""
    response = await native_place(native_client, orderType="Limit", price=1000)
    return int(response.json()["orderId"])


async def test_modify_order_working_order_returns_command_and_new_version(
    native_client: httpx.AsyncClient, resting_order: int
) -> None:
    response = await native_client.post(
        "/v1/order/modifyorder",
        json={
            "orderId": resting_order,
            "orderQty": 3,
            "orderType": "Limit",
            "price": 1001,
            "clOrdId": "tb-mod",
            "isAutomated": True,
        },
    )

    body = response.json()
    assert set(body) == {"commandId"}
    versions = (await native_client.get(f"/v1/orderVersion/deps?masterid={resting_order}")).json()
    assert (versions[-1]["orderQty"], versions[-1]["price"]) == (3, 1001)
    command = (await native_client.get(f"/v1/command/item?id={body['commandId']}")).json()
    assert (command["commandType"], command["clOrdId"]) == ("Modify", "tb-mod")


@pytest.mark.parametrize(
    ("fields", "status"),
    [
        ({"orderId": None, "orderQty": 1, "orderType": "Limit"}, 400),
        ({"orderId": "x", "orderQty": 1, "orderType": "Limit"}, 400),
        ({"orderQty": None, "orderType": "Limit"}, 400),
        ({"orderQty": 1}, 400),  # no orderType
        ({"orderQty": 1, "orderType": "Limit", "price": "x"}, 400),
        ({"orderQty": 1, "orderType": "limit"}, 400),
    ],
)
async def test_modify_order_malformed_body_returns_400(
    native_client: httpx.AsyncClient, resting_order: int, fields: dict[str, Any], status: int
) -> None:
    body = {"orderId": resting_order, **fields}
    response = await native_client.post(
        "/v1/order/modifyorder", json={k: v for k, v in body.items() if v is not None}
    )

    assert response.status_code == status


async def test_cancel_order_working_then_final_returns_command_then_too_late(
    native_client: httpx.AsyncClient, resting_order: int
) -> None:
    first = await native_client.post("/v1/order/cancelorder", json={"orderId": resting_order})
    second = await native_client.post("/v1/order/cancelOrder", json={"orderId": resting_order})

    assert set(first.json()) == {"commandId"}
    assert second.status_code == 200
    assert second.json()["failureReason"] == "TooLate"
    assert (await orders(native_client))[0]["ordStatus"] == "Canceled"


@pytest.mark.parametrize("endpoint", ["cancelorder", "modifyorder"])
@pytest.mark.parametrize("order_id", [1, None])
async def test_order_command_unknown_or_foreign_order_returns_access_denied(
    native_client: httpx.AsyncClient,
    sim_server: SimServer,
    native_login: Any,
    native_place: Any,
    endpoint: str,
    order_id: int | None,
) -> None:
    async with httpx.AsyncClient(base_url=sim_server.url) as apex:
        apex.headers["Authorization"] = f"Bearer {await native_login(apex, 'apex', 'apex')}"
        if order_id is None:  # an order of demo, commanded by apex
            order_id = (await native_place(native_client, orderType="Limit", price=1000)).json()[
                "orderId"
            ]
        response = await apex.post(
            f"/v1/order/{endpoint}",
            json={"orderId": order_id, "orderQty": 1, "orderType": "Limit", "price": 999},
        )

    assert response.status_code == 200
    assert response.json() == {"failureReason": "UnknownReason", "failureText": "Access is denied"}


async def test_liquidate_position_open_position_returns_order_and_flattens(
    native_client: httpx.AsyncClient, native_place: Any
) -> None:
    await native_place(native_client, orderQty=2)
    position = (await native_client.get("/v1/position/list")).json()[0]

    response = await native_client.post(
        "/v1/order/liquidatePosition",
        json={"accountId": DEMO_ACCOUNT, "contractId": position["contractId"], "admin": False},
    )

    assert set(response.json()) == {"orderId"}
    assert (await native_client.get("/v1/position/list")).json()[0]["netPos"] == 0


@pytest.mark.parametrize(
    ("body", "status"),
    [
        ({"accountId": DEMO_ACCOUNT, "contractId": 2}, 400),  # admin is required
        ({"accountId": DEMO_ACCOUNT, "admin": False}, 400),
        ({"accountId": APEX_ACCOUNT, "contractId": 2030323, "admin": False}, 200),
    ],
)
async def test_liquidate_position_bad_body_or_account_is_refused(
    native_client: httpx.AsyncClient, body: dict[str, Any], status: int
) -> None:
    response = await native_client.post("/v1/order/liquidateposition", json=body)

    assert response.status_code == status
    if status == 200:
        assert response.json()["failureReason"] == "UnknownReason"


async def test_liquidate_positions_own_positions_returns_ok(
    native_client: httpx.AsyncClient, native_place: Any
) -> None:
    await native_place(native_client, orderQty=1)
    position = (await native_client.get("/v1/position/list")).json()[0]

    response = await native_client.post(
        "/v1/order/liquidatepositions", json={"positions": [position["id"]], "admin": False}
    )
    unknown = await native_client.post(
        "/v1/order/liquidatepositions", json={"positions": [424242], "admin": False}
    )

    assert response.json() == {"ok": True}
    assert unknown.json()["ok"] is False
    assert "errorText" in unknown.json()
    assert (await native_client.get("/v1/position/list")).json()[0]["netPos"] == 0


@pytest.mark.parametrize(
    "endpoint",
    [
        "placeorder",
        "placeoso",
        "placeoco",
        "modifyorder",
        "cancelorder",
        "liquidateposition",
        "liquidatepositions",
    ],
)
async def test_order_command_get_method_returns_405(
    native_client: httpx.AsyncClient, endpoint: str
) -> None:
    response = await native_client.get(f"/v1/order/{endpoint}")

    assert response.status_code == 405


async def test_place_order_unknown_contract_default_answers_access_denied(
    native_client: httpx.AsyncClient, native_place: Any
) -> None:
    # Reference §5.1: {"failureReason":"UnknownReason","failureText":"Access is denied"}
    # "This exact body was returned for a contract that did not exist. [official] TI#45";
    # checklist §12: "UnknownReason + "Access is denied" for unknown contracts".
    response = await native_place(native_client, symbol="XXXZ6")

    assert response.json() == {"failureReason": "UnknownReason", "failureText": "Access is denied"}

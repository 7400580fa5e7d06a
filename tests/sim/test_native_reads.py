"""Native entity reads of the simulator (reference §3, §4), over sockets."""

from __future__ import annotations

import re
from typing import Any

import httpx
import pytest

from tradebridge.sim.server import SimServer

ISO_MS_Z = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
ACCOUNT_KEYS = {
    "id",
    "name",
    "userId",
    "accountType",
    "active",
    "clearingHouseId",
    "riskCategoryId",
    "autoLiqProfileId",
    "marginAccountType",
    "legalStatus",
    "archived",
    "readonly",
}
DEMO_ACCOUNT, DEMO_ACCOUNT_2, APEX_ACCOUNT = 100001, 100002, 200010


@pytest.fixture
async def apex_client(sim_server: SimServer, native_login: Any) -> Any:
    """Return a client with the token of the other user, ``apex``."""
    async with httpx.AsyncClient(base_url=sim_server.url) as client:
        token = await native_login(client, "apex", "apex")
        client.headers["Authorization"] = f"Bearer {token}"
        yield client


@pytest.fixture
async def filled_order(native_client: httpx.AsyncClient, native_place: Any) -> int:
    """Place a market buy of 2 on DEMO0000001 (it fills at once) and return its id."""
    response = await native_place(native_client, orderQty=2, clOrdId="tb-filled-1")
    return int(response.json()["orderId"])


async def get(client: httpx.AsyncClient, path: str) -> httpx.Response:
    return await client.get(f"/v1/{path}")


# --- accounts -------------------------------------------------------------------------------


async def test_account_list_returns_only_own_accounts(native_client: httpx.AsyncClient) -> None:
    response = await get(native_client, "account/list")

    assert response.status_code == 200
    accounts = response.json()
    assert [a["id"] for a in accounts] == [DEMO_ACCOUNT, DEMO_ACCOUNT_2]
    assert all(set(a) == ACCOUNT_KEYS for a in accounts)
    first = accounts[0]
    assert (first["name"], first["userId"], first["accountType"]) == ("DEMO0000001", 1, "Customer")
    assert (first["marginAccountType"], first["legalStatus"]) == ("Speculator", "Individual")
    assert (first["active"], first["readonly"]) == (True, False)


@pytest.mark.parametrize(
    ("path", "status", "account_id"),
    [
        ("account/find?name=DEMO0000001", 200, DEMO_ACCOUNT),
        ("account/find?name=PAAPEX1361890000010", 404, None),  # another user's
        ("account/find?name=NOPE", 404, None),
        ("account/find", 400, None),
        (f"account/item?id={DEMO_ACCOUNT_2}", 200, DEMO_ACCOUNT_2),
        (f"account/item?id={APEX_ACCOUNT}", 404, None),
        ("account/item?id=999", 404, None),
        ("account/item?id=abc", 400, None),
        ("account/item", 400, None),
    ],
)
async def test_account_lookup_returns_status_by_visibility(
    native_client: httpx.AsyncClient, path: str, status: int, account_id: int | None
) -> None:
    response = await get(native_client, path)

    assert response.status_code == status
    if account_id is not None:
        assert response.json()["id"] == account_id


async def test_account_items_leaves_out_unknown_and_foreign_ids(
    native_client: httpx.AsyncClient,
) -> None:
    response = await get(native_client, f"account/items?ids={DEMO_ACCOUNT},{APEX_ACCOUNT},999")

    assert response.status_code == 200
    assert [a["id"] for a in response.json()] == [DEMO_ACCOUNT]


# --- contracts and products -----------------------------------------------------------------


async def test_contract_find_front_month_returns_contract(
    native_client: httpx.AsyncClient, front_month: str
) -> None:
    response = await get(native_client, f"contract/find?name={front_month}")

    assert response.status_code == 200
    contract = response.json()
    assert contract["name"] == front_month
    assert {"id", "name", "contractMaturityId"} <= set(contract)
    by_id = await get(native_client, f"contract/item?id={contract['id']}")
    assert by_id.json() == contract


async def test_contract_find_expired_contract_returns_it(native_client: httpx.AsyncClient) -> None:
    response = await get(native_client, "contract/find?name=MNQZ5")

    assert response.status_code == 200
    assert response.json()["name"] == "MNQZ5"


@pytest.mark.parametrize(
    "path", ["contract/find?name=XXXZ6", "contract/find?name=MNQF7", "contract/item?id=1"]
)
async def test_contract_lookup_unknown_returns_404(
    native_client: httpx.AsyncClient, path: str
) -> None:
    response = await get(native_client, path)

    assert response.status_code == 404


async def test_contract_suggest_returns_front_month_first_up_to_limit(
    native_client: httpx.AsyncClient, front_month: str
) -> None:
    response = await get(native_client, "contract/suggest?t=MNQ&l=3")

    assert response.status_code == 200
    names = [c["name"] for c in response.json()]
    assert len(names) == 3
    assert names[0] == front_month
    assert all(name.startswith("MNQ") for name in names)


async def test_contract_maturity_item_returns_expiration_date(
    native_client: httpx.AsyncClient, front_month: str
) -> None:
    contract = (await get(native_client, f"contract/find?name={front_month}")).json()
    response = await get(
        native_client, f"contractMaturity/item?id={contract['contractMaturityId']}"
    )

    assert response.status_code == 200
    maturity = response.json()
    assert maturity["id"] == contract["contractMaturityId"]
    assert ISO_MS_Z.match(maturity["expirationDate"])
    assert maturity["isFront"] is True
    product = await get(native_client, f"product/item?id={maturity['productId']}")
    assert product.json()["name"] == "MNQ"


async def test_contract_maturity_item_unknown_returns_404(native_client: httpx.AsyncClient) -> None:
    response = await get(native_client, "contractMaturity/item?id=42")

    assert response.status_code == 404


@pytest.mark.parametrize(
    ("root", "tick_size", "value_per_point"),
    [("MNQ", 0.25, 2), ("ES", 0.25, 50), ("CL", 0.01, 1000), ("MGC", 0.1, 10)],
)
async def test_product_find_known_root_returns_specification(
    native_client: httpx.AsyncClient, root: str, tick_size: float, value_per_point: float
) -> None:
    response = await get(native_client, f"product/find?name={root}")

    assert response.status_code == 200
    product = response.json()
    assert (product["name"], product["tickSize"], product["valuePerPoint"]) == (
        root,
        tick_size,
        value_per_point,
    )
    assert product["productType"] == "Futures"
    assert {"description", "status", "currencyId", "exchangeId", "months"} <= set(product)


async def test_product_find_unknown_root_returns_404(native_client: httpx.AsyncClient) -> None:
    response = await get(native_client, "product/find?name=ZZZ")

    assert response.status_code == 404


# --- orders and their children --------------------------------------------------------------


async def test_order_reads_filled_order_return_native_shapes(
    native_client: httpx.AsyncClient, filled_order: int
) -> None:
    order = (await get(native_client, f"order/item?id={filled_order}")).json()
    listed = (await get(native_client, "order/list")).json()
    deps = (await get(native_client, f"order/deps?masterid={DEMO_ACCOUNT}")).json()

    assert listed == deps == [order]
    assert {"id", "accountId", "contractId", "timestamp", "action", "ordStatus", "admin"} == set(
        order
    )
    assert (order["accountId"], order["action"], order["ordStatus"]) == (
        DEMO_ACCOUNT,
        "Buy",
        "Filled",
    )
    assert ISO_MS_Z.match(order["timestamp"])


async def test_order_version_deps_returns_quantity_and_type(
    native_client: httpx.AsyncClient, filled_order: int
) -> None:
    versions = (await get(native_client, f"orderVersion/deps?masterid={filled_order}")).json()

    assert len(versions) == 1
    assert versions[0]["orderId"] == filled_order
    assert (versions[0]["orderQty"], versions[0]["orderType"], versions[0]["timeInForce"]) == (
        2,
        "Market",
        "Day",
    )


async def test_execution_report_deps_returns_new_then_trade(
    native_client: httpx.AsyncClient, filled_order: int
) -> None:
    reports = (await get(native_client, f"executionReport/deps?masterid={filled_order}")).json()
    everything = (await get(native_client, "executionReport/list")).json()

    assert [r["execType"] for r in reports] == ["New", "Trade"]
    trade = reports[-1]
    assert (trade["ordStatus"], trade["cumQty"], trade["lastQty"]) == ("Filled", 2, 2)
    assert isinstance(trade["lastPx"], int | float)
    assert set(trade["tradeDate"]) == {"year", "month", "day"}
    assert everything == reports


async def test_fill_deps_returns_fill_with_price(
    native_client: httpx.AsyncClient, filled_order: int
) -> None:
    fills = (await get(native_client, f"fill/deps?masterid={filled_order}")).json()

    assert len(fills) == 1
    fill = fills[0]
    assert (fill["orderId"], fill["action"], fill["qty"], fill["active"]) == (
        filled_order,
        "Buy",
        2,
        True,
    )
    assert isinstance(fill["price"], int | float)
    assert (await get(native_client, "fill/list")).json() == fills


async def test_position_deps_after_fill_returns_net_position(
    native_client: httpx.AsyncClient, filled_order: int
) -> None:
    positions = (await get(native_client, f"position/deps?masterid={DEMO_ACCOUNT}")).json()

    assert len(positions) == 1
    position = positions[0]
    assert (position["netPos"], position["bought"], position["sold"], position["prevPos"]) == (
        2,
        2,
        0,
        0,
    )
    assert position["boughtValue"] == position["netPrice"] * 2
    assert set(position["tradeDate"]) == {"year", "month", "day"}
    assert (await get(native_client, f"position/deps?masterid={DEMO_ACCOUNT_2}")).json() == []


async def test_command_list_finds_cl_ord_id(
    native_client: httpx.AsyncClient, filled_order: int
) -> None:
    commands = (await get(native_client, "command/list")).json()
    deps = (await get(native_client, f"command/deps?masterid={filled_order}")).json()

    assert deps == commands
    assert [(c["clOrdId"], c["orderId"], c["commandType"]) for c in commands] == [
        ("tb-filled-1", filled_order, "New")
    ]
    assert commands[0]["isAutomated"] is True
    item = await get(native_client, f"command/item?id={commands[0]['id']}")
    assert item.json() == commands[0]


async def test_cash_balance_snapshot_returns_balance_fields(
    native_client: httpx.AsyncClient, filled_order: int
) -> None:
    response = await native_client.post(
        "/v1/cashBalance/getCashBalanceSnapshot", json={"accountId": DEMO_ACCOUNT}
    )

    assert response.status_code == 200
    snapshot = response.json()
    assert set(snapshot) == {
        "totalCashValue",
        "totalPnL",
        "netLiq",
        "openPnL",
        "realizedPnL",
        "initialMargin",
        "maintenanceMargin",
        "weekRealizedPnL",
    }
    assert snapshot["totalCashValue"] == 50_000
    assert snapshot["netLiq"] == snapshot["totalCashValue"] + snapshot["openPnL"]
    assert snapshot["initialMargin"] > snapshot["maintenanceMargin"] > 0


@pytest.mark.parametrize(
    ("body", "status", "error"),
    [
        ({"accountId": APEX_ACCOUNT}, 200, "Access is denied"),
        ({"accountId": 999}, 200, "Access is denied"),
        ({}, 400, None),
        ({"accountId": "x"}, 400, None),
    ],
)
async def test_cash_balance_snapshot_bad_account_returns_error(
    native_client: httpx.AsyncClient, body: dict[str, Any], status: int, error: str | None
) -> None:
    response = await native_client.post("/v1/cashBalance/getcashbalancesnapshot", json=body)

    assert response.status_code == status
    if error is not None:
        assert response.json() == {"errorText": error}


async def test_cash_balance_list_returns_one_per_own_account(
    native_client: httpx.AsyncClient,
) -> None:
    balances = (await get(native_client, "cashBalance/list")).json()
    deps = (await get(native_client, f"cashBalance/deps?masterid={DEMO_ACCOUNT}")).json()

    assert [b["accountId"] for b in balances] == [DEMO_ACCOUNT, DEMO_ACCOUNT_2]
    assert deps == balances[:1]
    assert balances[0]["amount"] == 50_000


@pytest.mark.parametrize(
    "path",
    [
        "order/item?id={order}",
        "orderVersion/item?id={version}",
        "command/item?id={command}",
        "fill/item?id={fill}",
    ],
)
async def test_entity_item_of_other_user_returns_404(
    native_client: httpx.AsyncClient, apex_client: httpx.AsyncClient, filled_order: int, path: str
) -> None:
    ids = {
        "order": filled_order,
        "version": (await get(native_client, f"orderVersion/deps?masterid={filled_order}")).json()[
            0
        ]["id"],
        "command": (await get(native_client, "command/list")).json()[0]["id"],
        "fill": (await get(native_client, "fill/list")).json()[0]["id"],
    }
    own = await get(native_client, path.format(**ids))
    foreign = await get(apex_client, path.format(**ids))

    assert own.status_code == 200
    assert foreign.status_code == 404


@pytest.mark.parametrize(
    "path",
    [
        "order/list",
        "orderVersion/list",
        "executionReport/list",
        "command/list",
        "fill/list",
        "position/list",
        f"order/deps?masterid={DEMO_ACCOUNT}",
        f"position/deps?masterid={DEMO_ACCOUNT}",
        "executionReport/deps?masterid={order}",
        "fill/deps?masterid={order}",
        "command/deps?masterid={order}",
        "orderVersion/deps?masterid={order}",
    ],
)
async def test_entity_lists_of_other_user_leave_out_foreign_data(
    native_client: httpx.AsyncClient, apex_client: httpx.AsyncClient, filled_order: int, path: str
) -> None:
    own = await get(native_client, path.format(order=filled_order))
    foreign = await get(apex_client, path.format(order=filled_order))

    assert own.status_code == foreign.status_code == 200
    assert own.json() != []
    assert foreign.json() == []


@pytest.mark.parametrize(
    "path",
    [
        "order/item?id=1",
        "fill/item?id=1",
        "position/item?id=1",
        "executionReport/item?id=1",
        "cashBalance/item?id=1",
        "command/item?id=1",
    ],
)
async def test_entity_item_unknown_id_returns_404(
    native_client: httpx.AsyncClient, path: str
) -> None:
    response = await get(native_client, path)

    assert response.status_code == 404


async def test_entity_ldeps_returns_children_of_several_masters(
    native_client: httpx.AsyncClient, filled_order: int
) -> None:
    response = await get(
        native_client, f"position/ldeps?masterids={DEMO_ACCOUNT},{DEMO_ACCOUNT_2},{APEX_ACCOUNT}"
    )

    assert response.status_code == 200
    assert [p["accountId"] for p in response.json()] == [DEMO_ACCOUNT]


@pytest.mark.parametrize("path", ["order/find?name=x", "position/suggest?t=x", "fill/explode"])
async def test_entity_unsupported_operation_returns_404(
    native_client: httpx.AsyncClient, path: str
) -> None:
    response = await get(native_client, path)

    assert response.status_code == 404


async def test_entity_read_with_post_returns_405(native_client: httpx.AsyncClient) -> None:
    response = await native_client.post("/v1/order/list", json={})

    assert response.status_code == 405

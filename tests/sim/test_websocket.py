"""The simulator's native WebSocket (reference §8 and checklist §12), over real sockets."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from tradebridge.sim.clock import ManualClock
from tradebridge.sim.config import SimConfig
from tradebridge.sim.server import SimServer
from tradebridge.sim.websocket import socket_registry

# Every snapshot key of reference §8.7, written out again here on purpose.
SNAPSHOT_KEYS = {
    "accountRiskStatuses", "accounts", "cashBalances", "commandReports", "commands",
    "contractGroups", "contractMaturities", "contracts", "currencies", "exchanges",
    "executionReports", "fillPairs", "fills", "marginSnapshots", "orderStrategies",
    "orderStrategyLinks", "orderStrategyTypes", "orderVersions", "orders", "positions",
    "products", "properties", "spreadDefinitions", "userAccountAutoLiqs", "userPlugins",
    "userProperties", "userReadStatuses", "users",
}  # fmt: skip
TRADE_ENTITY_TYPES = {
    "order", "orderVersion", "executionReport", "fill", "position", "cashBalance", "command"
}  # fmt: skip
DEMO_USER_ID = 1
APEX_USER_ID = 2
DEMO_ACCOUNT = 100001
DEMO_OTHER_ACCOUNT = 100002
APEX_ACCOUNT = 200010
FAST = {"server_heartbeat_s": 0.2, "authorize_deadline_s": 5.0, "heartbeat_timeout_s": 5.0}
LOGIN = {"appId": "tests", "appVersion": "1.0", "deviceId": "tests", "cid": 0, "sec": ""}


@pytest.fixture
def sim_config() -> SimConfig:
    return SimConfig.model_validate({"port": 0, **FAST})


class Socket:
    """A test client: sends requests, buffers replies and events as they arrive."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.frames: list[str] = []  # every frame received, raw
        self.replies: dict[int, dict[str, Any]] = {}
        self.events: list[dict[str, Any]] = []

    async def send(self, endpoint: str, request_id: int, query: str = "", body: Any = None) -> None:
        text = "" if body is None else json.dumps(body)
        await self.ws.send(f"{endpoint}\n{request_id}\n{query}\n{text}")

    async def read(self, timeout: float = 3.0) -> str:
        frame = await asyncio.wait_for(self.ws.recv(), timeout)
        assert isinstance(frame, str)
        self.frames.append(frame)
        if frame.startswith("a"):
            for message in json.loads(frame[1:]):
                if "i" in message:
                    self.replies[message["i"]] = message
                else:
                    self.events.append(message)
        return frame

    async def reply(self, request_id: int, timeout: float = 3.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while request_id not in self.replies:
            await self.read(max(0.01, deadline - time.monotonic()))
        return self.replies.pop(request_id)

    async def call(
        self, endpoint: str, request_id: int, query: str = "", body: Any = None
    ) -> dict[str, Any]:
        await self.send(endpoint, request_id, query, body)
        return await self.reply(request_id)

    async def events_until(
        self, done: Callable[[list[dict[str, Any]]], bool], timeout: float = 3.0
    ) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        while not done(self.events):
            await self.read(max(0.01, deadline - time.monotonic()))
        return self.events

    async def read_until_closed(self, timeout: float = 5.0) -> float:
        """Read until the server closes; return the seconds that took."""
        started = time.monotonic()
        try:
            while True:  # a TimeoutError here fails the test: the socket stayed open
                await self.read(max(0.01, timeout - (time.monotonic() - started)))
        except ConnectionClosed:
            return time.monotonic() - started


@contextlib.asynccontextmanager
async def open_socket(server: SimServer) -> AsyncIterator[Socket]:
    """Connect and check that the first frame is ``o``."""
    async with connect(server.ws_url, open_timeout=5, close_timeout=1) as ws:
        socket = Socket(ws)
        assert await socket.read() == "o"
        yield socket


@contextlib.asynccontextmanager
async def authorized(server: SimServer, token: str) -> AsyncIterator[Socket]:
    """Connect and authorize with a raw token."""
    async with open_socket(server) as socket:
        await socket.ws.send(f"authorize\n0\n\n{token}")
        assert await socket.reply(0) == {"s": 200, "i": 0}
        yield socket


async def login(server: SimServer, name: str = "demo") -> str:
    async with httpx.AsyncClient(base_url=server.url, timeout=10) as client:
        answer = await client.post(
            "/v1/auth/accesstokenrequest", json={"name": name, "password": name, **LOGIN}
        )
    return str(answer.json()["accessToken"])


async def rest(server: SimServer, token: str, path: str, body: Any = None) -> Any:
    headers = {"Authorization": f"Bearer {token}"}
    async with httpx.AsyncClient(base_url=server.url, headers=headers, timeout=10) as client:
        if body is None:
            answer = await client.get(f"/v1/{path}")
        else:
            answer = await client.post(f"/v1/{path}", json=body)
    answer.raise_for_status()
    return answer.json()


async def place_market(
    server: SimServer, token: str, account_id: int = DEMO_ACCOUNT, action: str = "Buy"
) -> int:
    """Place a market order of one front-month MNQ over REST and return its id."""
    front = (await rest(server, token, "contract/suggest?t=MNQ&l=1"))[0]["name"]
    account = (await rest(server, token, f"account/item?id={account_id}"))["name"]
    answer = await rest(
        server,
        token,
        "order/placeorder",
        {
            "accountSpec": account,
            "accountId": account_id,
            "action": action,
            "symbol": front,
            "orderQty": 1,
            "orderType": "Market",
            "isAutomated": True,
        },
    )
    assert "orderId" in answer, answer
    return int(answer["orderId"])


def props(events: list[dict[str, Any]], entity_type: str) -> list[dict[str, Any]]:
    return [e["d"] for e in events if e["e"] == "props" and e["d"]["entityType"] == entity_type]


def has_types(*types: str) -> Callable[[list[dict[str, Any]]], bool]:
    def done(events: list[dict[str, Any]]) -> bool:
        return {e["d"]["entityType"] for e in events if e.get("e") == "props"} >= set(types)

    return done


# --- connect and authorize ---------------------------------------------------------------


async def test_connect_first_frame_is_open(sim_server: SimServer) -> None:
    async with connect(sim_server.ws_url) as ws:
        assert await asyncio.wait_for(ws.recv(), 3) == "o"


@pytest.mark.parametrize("encode", [str, json.dumps], ids=["raw", "quoted"])
async def test_authorize_token_raw_or_quoted_answers_200(
    sim_server: SimServer, native_token: str, encode: Callable[[str], str]
) -> None:
    async with open_socket(sim_server) as socket:
        await socket.ws.send(f"authorize\n7\n\n{encode(native_token)}")
        assert await socket.reply(7) == {"s": 200, "i": 7}


@pytest.mark.parametrize(
    "token",
    ["", "garbage", "a.b.c", '"a.b.c"'],
    ids=["empty", "garbage", "forged", "forged-quoted"],
)
async def test_authorize_bad_token_answers_401_and_keeps_socket(
    sim_server: SimServer, native_token: str, token: str
) -> None:
    async with open_socket(sim_server) as socket:
        await socket.ws.send(f"authorize\n1\n\n{token}")
        answer = await socket.reply(1)
        assert answer["s"] == 401
        assert answer["d"]
        await socket.ws.send(f"authorize\n2\n\n{native_token}")
        assert await socket.reply(2) == {"s": 200, "i": 2}


async def test_authorize_expired_token_answers_401(make_sim: Callable[..., SimServer]) -> None:
    clock = ManualClock()
    server = make_sim(clock=clock, **FAST)
    token = await login(server)
    clock.advance(server.config.token_lifetime_s + 1)
    async with open_socket(server) as socket:
        await socket.ws.send(f"authorize\n1\n\n{token}")
        assert (await socket.reply(1))["s"] == 401


async def test_authorize_token_of_another_user_on_authorized_socket_answers_401(
    sim_server: SimServer, native_token: str
) -> None:
    apex = await login(sim_server, "apex")
    async with authorized(sim_server, native_token) as socket:
        await socket.ws.send(f"authorize\n1\n\n{apex}")
        assert (await socket.reply(1))["s"] == 401


async def test_request_before_authorize_answers_401(sim_server: SimServer) -> None:
    async with open_socket(sim_server) as socket:
        answer = await socket.call("account/list", 3)
        assert answer["s"] == 401


async def test_no_authorize_within_deadline_closes_socket(
    make_sim: Callable[..., SimServer],
) -> None:
    server = make_sim(**{**FAST, "authorize_deadline_s": 0.3})
    async with open_socket(server) as socket:
        await socket.ws.send("[]")
        elapsed = await socket.read_until_closed()
        assert 0.1 <= elapsed < 2.0
        assert socket.frames[-1] == 'c[1000,"Authorization timeout"]'


# --- heartbeats ----------------------------------------------------------------------------


async def test_server_heartbeats_arrive_every_interval(sim_server: SimServer) -> None:
    async with open_socket(sim_server) as socket:
        started = time.monotonic()
        while time.monotonic() - started < 1.0:
            await socket.read()
        assert 3 <= socket.frames.count("h") <= 6


async def test_silent_client_is_dropped_after_heartbeat_timeout(
    make_sim: Callable[..., SimServer],
) -> None:
    server = make_sim(**{**FAST, "heartbeat_timeout_s": 0.5})
    token = await login(server)
    async with authorized(server, token) as socket:
        elapsed = await socket.read_until_closed()
        assert elapsed < 2.0
        assert socket.frames[-1] == 'c[1000,"Heartbeat timeout"]'


async def test_client_sending_heartbeats_stays_past_timeout(
    make_sim: Callable[..., SimServer],
) -> None:
    server = make_sim(**{**FAST, "heartbeat_timeout_s": 0.5})
    token = await login(server)
    async with authorized(server, token) as socket:
        for _ in range(8):  # 1.2 s, more than twice the timeout
            await socket.ws.send("[]")
            await asyncio.sleep(0.15)
        answer = await socket.call("account/list", 5)
        assert answer["s"] == 200
        assert not any(frame.startswith("c") for frame in socket.frames)


async def requests_without_heartbeats(socket: Socket, seconds: float) -> None:
    """Send a request every 0.15 s for ``seconds``, reading what arrives, never ``[]``."""
    request_id = 10
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        await socket.send("account/list", request_id)
        request_id += 1
        step = time.monotonic() + 0.15
        with contextlib.suppress(TimeoutError):
            while time.monotonic() < step:
                await socket.read(max(0.01, step - time.monotonic()))


async def test_requests_without_heartbeats_do_not_keep_the_socket_alive(
    make_sim: Callable[..., SimServer],
) -> None:
    # Reference §8.6: "The client must send the literal text [] about every 2.5 s, or the
    # server drops the connection"; checklist §12: "Drop the client if no [] arrives for a
    # few seconds." Requests are not heartbeats.
    server = make_sim(**{**FAST, "heartbeat_timeout_s": 0.5})
    token = await login(server)
    async with authorized(server, token) as socket:
        started = time.monotonic()
        with pytest.raises(ConnectionClosed):
            await requests_without_heartbeats(socket, seconds=3.0)  # six times the timeout
        assert time.monotonic() - started < 2.0
        assert 'c[1000,"Heartbeat timeout"]' in socket.frames


# --- requests ------------------------------------------------------------------------------


async def test_request_account_list_reply_carries_request_id(
    sim_server: SimServer, native_token: str
) -> None:
    async with authorized(sim_server, native_token) as socket:
        await socket.send("account/list", 42)
        await socket.send("account/item", 43, query=f"id={DEMO_OTHER_ACCOUNT}")
        listed = await socket.reply(42)
        item = await socket.reply(43)
    assert listed["s"] == 200
    assert [a["id"] for a in listed["d"]] == [DEMO_ACCOUNT, DEMO_OTHER_ACCOUNT]
    assert item["s"] == 200
    assert item["d"]["id"] == DEMO_OTHER_ACCOUNT


@pytest.mark.parametrize(
    ("endpoint", "query", "body", "status"),
    [
        ("no/such", "", None, 404),
        ("account/item", "id=999", None, 404),
        ("product/find", "name=MNQ", None, 200),
        ("product/find", "name=MNQ", {}, 200),  # a body does not turn a read into a 405
        ("cashBalance/getcashbalancesnapshot", "", {"accountId": DEMO_ACCOUNT}, 200),
        ("auth/me", "", None, 200),
    ],
)
async def test_request_dispatch_answers_native_status(
    sim_server: SimServer,
    native_token: str,
    endpoint: str,
    query: str,
    body: Any,
    status: int,
) -> None:
    async with authorized(sim_server, native_token) as socket:
        answer = await socket.call(endpoint, 9, query, body)
    assert answer["s"] == status, answer


async def test_request_placeorder_over_socket_answers_order_id(
    sim_server: SimServer, native_token: str, front_month: str
) -> None:
    body = {
        "accountSpec": "DEMO0000001",
        "accountId": DEMO_ACCOUNT,
        "action": "Buy",
        "symbol": front_month,
        "orderQty": 1,
        "orderType": "Limit",
        "price": 100,
        "isAutomated": True,
    }
    async with authorized(sim_server, native_token) as socket:
        answer = await socket.call("order/placeorder", 11, body=body)
    assert answer["s"] == 200
    order = await rest(sim_server, native_token, f"order/item?id={answer['d']['orderId']}")
    assert order["ordStatus"] == "Working"


@pytest.mark.parametrize(
    ("frame", "status"),
    [
        ("account/list\n7", 400),  # id readable, lines missing
        ("\n7\n\n", 400),  # empty endpoint
        ("cashBalance/getcashbalancesnapshot\n7\n\n{not json", 400),
        ("account/list\nseven\n\n", None),  # no integer id: ignored
        ("account/list", None),
    ],
)
async def test_request_malformed_answers_400_or_is_ignored(
    sim_server: SimServer, native_token: str, frame: str, status: int | None
) -> None:
    async with authorized(sim_server, native_token) as socket:
        await socket.ws.send(frame)
        assert (await socket.call("account/list", 8))["s"] == 200  # the socket still works
        if status is None:
            assert socket.replies == {}
        else:
            assert (await socket.reply(7))["s"] == status


async def test_request_of_locked_out_user_answers_429_without_body(
    sim_server: SimServer, native_token: str
) -> None:
    apex = await login(sim_server, "apex")
    async with authorized(sim_server, native_token) as demo, authorized(sim_server, apex) as other:
        sim_server.ctx.faults.lockout_429_users = ["demo"]
        assert await demo.call("account/list", 4) == {"s": 429, "i": 4}
        assert await demo.call("user/syncrequest", 5, body={"users": [DEMO_USER_ID]}) == {
            "s": 429,
            "i": 5,
        }
        assert (await other.call("account/list", 4))["s"] == 200


async def test_request_of_missing_route_answers_404_like_rest(
    sim_server: SimServer, native_token: str
) -> None:
    sim_server.ctx.faults.missing_routes = ["*/ldeps"]
    async with authorized(sim_server, native_token) as socket:
        missing = await socket.call("fill/ldeps", 4, f"masterids={DEMO_ACCOUNT}")
        served = await socket.call("fill/deps", 5, f"masterid={DEMO_ACCOUNT}")
        undefined = await socket.call("nosuch/list", 6)

    assert (missing["s"], served["s"]) == (404, 200)
    assert missing.get("d") == undefined.get("d")


@pytest.mark.parametrize(
    ("mode", "expected"),
    [("http_500", "s500"), ("http_401", "s401"), ("reset", "closed"), ("hang", "silent")],
)
async def test_request_answer_dropped_after_accept_follows_drop_mode(
    sim_server: SimServer, native_token: str, front_month: str, mode: str, expected: str
) -> None:
    body = {
        "accountSpec": "DEMO0000001",
        "accountId": DEMO_ACCOUNT,
        "action": "Buy",
        "symbol": front_month,
        "orderQty": 1,
        "orderType": "Limit",
        "price": 100,
        "isAutomated": True,
    }
    async with authorized(sim_server, native_token) as socket:
        sim_server.ctx.faults.drop_mode = mode  # type: ignore[assignment]
        sim_server.ctx.faults.drop_after_accept_rate = 1.0
        await socket.send("order/placeorder", 12, body=body)
        if expected in ("s500", "s401"):
            assert (await socket.reply(12))["s"] == int(expected[1:])
        elif expected == "closed":
            await socket.read_until_closed()
            assert 12 not in socket.replies
        else:
            with pytest.raises(TimeoutError):
                await socket.reply(12, timeout=0.6)
    sim_server.ctx.faults.drop_after_accept_rate = 0.0
    assert len(await rest(sim_server, native_token, "order/list")) == 1  # accepted regardless


# --- user sync -----------------------------------------------------------------------------


async def test_sync_snapshot_has_every_key_and_the_users_data(
    sim_server: SimServer, native_token: str
) -> None:
    order_id = await place_market(sim_server, native_token)
    async with authorized(sim_server, native_token) as socket:
        answer = await socket.call("user/syncrequest", 2, body={"users": [DEMO_USER_ID]})
    assert answer["s"] == 200
    snapshot = answer["d"]
    assert set(snapshot) == SNAPSHOT_KEYS
    assert all(isinstance(value, list) for value in snapshot.values())
    assert [a["id"] for a in snapshot["accounts"]] == [DEMO_ACCOUNT, DEMO_OTHER_ACCOUNT]
    assert [u["id"] for u in snapshot["users"]] == [DEMO_USER_ID]
    assert [o["id"] for o in snapshot["orders"]] == [order_id]
    assert snapshot["orders"][0]["ordStatus"] == "Filled"
    assert [v["orderId"] for v in snapshot["orderVersions"]] == [order_id]
    assert {r["execType"] for r in snapshot["executionReports"]} >= {"New", "Trade"}
    assert [f["orderId"] for f in snapshot["fills"]] == [order_id]
    assert [c["orderId"] for c in snapshot["commands"]] == [order_id]
    assert [p["netPos"] for p in snapshot["positions"]] == [1]
    assert {b["accountId"] for b in snapshot["cashBalances"]} == {DEMO_ACCOUNT, DEMO_OTHER_ACCOUNT}
    contract_id = snapshot["orders"][0]["contractId"]
    assert [c["id"] for c in snapshot["contracts"]] == [contract_id]
    assert [p["name"] for p in snapshot["products"]] == ["MNQ"]
    maturity = snapshot["contracts"][0]["contractMaturityId"]
    assert [m["id"] for m in snapshot["contractMaturities"]] == [maturity]


async def test_sync_snapshot_shapes_match_rest(sim_server: SimServer, native_token: str) -> None:
    await place_market(sim_server, native_token)
    async with authorized(sim_server, native_token) as socket:
        snapshot = (await socket.call("user/syncrequest", 2, body={"users": [DEMO_USER_ID]}))["d"]
    assert snapshot["orders"] == await rest(sim_server, native_token, "order/list")
    assert snapshot["fills"] == await rest(sim_server, native_token, "fill/list")
    assert snapshot["positions"] == await rest(sim_server, native_token, "position/list")


@pytest.mark.parametrize(
    ("body", "status"),
    [
        ({"users": [APEX_USER_ID]}, 401),
        ({"users": [DEMO_USER_ID, APEX_USER_ID]}, 401),
        ({"accounts": [APEX_ACCOUNT]}, 401),
        ({"users": []}, 400),
        ({}, 400),
        (None, 400),
        ({"users": ["1"]}, 400),
    ],
)
async def test_sync_of_foreign_or_missing_ids_is_refused(
    sim_server: SimServer, native_token: str, body: Any, status: int
) -> None:
    async with authorized(sim_server, native_token) as socket:
        answer = await socket.call("user/syncrequest", 3, body=body)
    assert answer["s"] == status
    assert not isinstance(answer.get("d"), dict)  # no snapshot


async def test_sync_by_accounts_covers_only_those_accounts(
    sim_server: SimServer, native_token: str
) -> None:
    async with authorized(sim_server, native_token) as socket:
        answer = await socket.call("user/syncrequest", 3, body={"accounts": [DEMO_OTHER_ACCOUNT]})
        assert [a["id"] for a in answer["d"]["accounts"]] == [DEMO_OTHER_ACCOUNT]
        await place_market(sim_server, native_token, DEMO_ACCOUNT)
        other_id = await place_market(sim_server, native_token, DEMO_OTHER_ACCOUNT)
        events = await socket.events_until(has_types("order", "fill", "position"))
    assert {d["entity"]["id"] for d in props(events, "order")} == {other_id}
    assert {d["entity"]["accountId"] for d in props(events, "position")} == {DEMO_OTHER_ACCOUNT}


async def test_sync_events_of_placement_and_fill_carry_configured_names(
    sim_server: SimServer, native_token: str
) -> None:
    async with authorized(sim_server, native_token) as socket:
        await socket.call("user/syncrequest", 1, body={"users": [DEMO_USER_ID]})
        buy = await place_market(sim_server, native_token, action="Buy")
        sell = await place_market(sim_server, native_token, action="Sell")  # realizes P&L
        events = await socket.events_until(has_types(*TRADE_ENTITY_TYPES))
    assert {d["eventType"] for e in events for d in [e["d"]]} <= {"Created", "Updated"}
    assert {d["entity"]["id"] for d in props(events, "order")} == {buy, sell}
    order_states = [d["entity"]["ordStatus"] for d in props(events, "order")]
    assert "Filled" in order_states
    assert {d["entity"]["orderId"] for d in props(events, "fill")} == {buy, sell}
    assert {d["entity"]["orderId"] for d in props(events, "command")} == {buy, sell}
    assert props(events, "order")[0]["eventType"] == "Created"
    assert props(events, "position")[-1]["entity"]["netPos"] == 0
    assert props(events, "cashBalance")[-1]["entity"]["accountId"] == DEMO_ACCOUNT


async def test_sync_events_use_custom_event_names_table(
    make_sim: Callable[..., SimServer],
) -> None:
    entity_types = {name: name.upper() for name in TRADE_ENTITY_TYPES}
    names = {"entity_types": entity_types, "created": "Add", "updated": "Change"}
    server = make_sim(**FAST, event_names=names)
    token = await login(server)
    async with authorized(server, token) as socket:
        await socket.call("user/syncrequest", 1, body={"users": [DEMO_USER_ID]})
        await place_market(server, token)
        events = await socket.events_until(has_types("ORDER", "FILL", "POSITION"))
    assert {e["d"]["entityType"] for e in events} <= set(entity_types.values())
    assert {e["d"]["eventType"] for e in events} == {"Add", "Change"}


async def test_sync_events_of_another_user_are_not_delivered(
    sim_server: SimServer, native_token: str
) -> None:
    apex = await login(sim_server, "apex")
    async with authorized(sim_server, native_token) as demo, authorized(sim_server, apex) as other:
        await demo.call("user/syncrequest", 1, body={"users": [DEMO_USER_ID]})
        await other.call("user/syncrequest", 1, body={"users": [APEX_USER_ID]})
        apex_order = await place_market(sim_server, apex, APEX_ACCOUNT)
        await other.events_until(has_types("order", "fill", "position"))
        await demo.call("account/list", 2)  # anything sent to demo before now has arrived
    assert {d["entity"]["id"] for d in props(other.events, "order")} == {apex_order}
    assert demo.events == []


async def test_sync_repeated_on_one_socket_does_not_duplicate_events(
    sim_server: SimServer, native_token: str
) -> None:
    async with authorized(sim_server, native_token) as socket:
        await socket.call("user/syncrequest", 1, body={"users": [DEMO_USER_ID]})
        await socket.call("user/syncrequest", 2, body={"users": [DEMO_USER_ID]})
        await place_market(sim_server, native_token)
        events = await socket.events_until(has_types("order", "fill", "position"))
        await socket.call("account/list", 3)  # flush anything still in flight
    fills = props(events, "fill")
    assert len(fills) == 1


async def test_sync_events_batch_one_engine_call_in_one_frame(
    sim_server: SimServer, native_token: str
) -> None:
    async with authorized(sim_server, native_token) as socket:
        await socket.call("user/syncrequest", 1, body={"users": [DEMO_USER_ID]})
        await place_market(sim_server, native_token)
        await socket.events_until(has_types("order", "fill", "position"))
    event_frames = [f for f in socket.frames if f.startswith("a") and '"e":"props"' in f]
    assert len(event_frames) == 1


async def test_sync_after_reconnect_shows_changes_made_while_disconnected(
    sim_server: SimServer, native_token: str
) -> None:
    async with authorized(sim_server, native_token) as socket:
        first = await socket.call("user/syncrequest", 1, body={"users": [DEMO_USER_ID]})
    assert first["d"]["orders"] == []
    order_id = await place_market(sim_server, native_token)
    async with authorized(sim_server, native_token) as socket:
        second = await socket.call("user/syncrequest", 1, body={"users": [DEMO_USER_ID]})
    assert [o["id"] for o in second["d"]["orders"]] == [order_id]
    assert [p["netPos"] for p in second["d"]["positions"]] == [1]


# --- lifecycle and faults --------------------------------------------------------------------


async def wait_for(condition: Callable[[], bool], timeout: float = 3.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)


async def test_closed_socket_leaves_no_connection_or_subscriber(
    sim_server: SimServer, native_token: str
) -> None:
    engine = sim_server.ctx.engine
    registry = socket_registry(sim_server.ctx)
    async with authorized(sim_server, native_token) as socket:
        await socket.call("user/syncrequest", 1, body={"users": [DEMO_USER_ID]})
        assert registry.count == 1
        assert len(engine._subscribers) == 1
    await wait_for(lambda: registry.count == 0 and not engine._subscribers)
    await place_market(sim_server, native_token)  # publishing to nobody must not fail


async def test_fault_ws_drop_after_closes_socket_without_close_frame(
    make_sim: Callable[..., SimServer],
) -> None:
    server = make_sim(**FAST, faults={"ws_drop_after_s": 0.4})
    token = await login(server)
    async with authorized(server, token) as socket:
        await socket.read_until_closed()
        assert socket.ws.close_code == 1001
    assert not any(frame.startswith("c") for frame in socket.frames)


async def test_drop_all_closes_every_socket(sim_server: SimServer, native_token: str) -> None:
    async with (
        authorized(sim_server, native_token) as first,
        authorized(sim_server, native_token) as second,
    ):
        async with httpx.AsyncClient(base_url=sim_server.url, timeout=10) as client:
            answer = await client.post("/_sim/ws/drop")
        assert answer.json() == {"dropped": 2}
        await first.read_until_closed(timeout=2)
        await second.read_until_closed(timeout=2)
    await wait_for(lambda: socket_registry(sim_server.ctx).count == 0)
    async with authorized(sim_server, native_token) as again:  # new sockets are welcome
        assert (await again.call("account/list", 1))["s"] == 200

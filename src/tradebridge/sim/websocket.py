"""The simulator's native WebSocket at ``/v1/websocket`` (reference §8, checklist §12).

Tradovate's SockJS-like framing: the server sends ``o`` on connect, ``h`` heartbeats,
``a[...]`` arrays of replies and events, and ``c[code,"reason"]`` before it closes. The
client sends text requests ``endpoint\\nid\\nquery\\nbody`` and the literal ``[]`` as its
heartbeat.

Choices where the reference is silent (all visible to a client, so written down here):

- A bad or expired token on ``authorize`` is answered ``s:401`` and the socket stays open;
  the authorize deadline still applies, so a client that never succeeds is closed.
- Re-authorizing replaces the socket's token; a token of another user is refused (401).
- A request before authorization is answered ``s:401``.
- A frame without a readable integer id is ignored (and logged); a frame with an id but
  fewer than four lines, an empty endpoint or a body that is not JSON is answered ``s:400``.
- Every endpoint but ``authorize`` and ``user/syncrequest`` goes to ``NativeApi.handle``
  with the socket's token, as GET when the body is empty and POST otherwise, and once more
  with the other method if that one is answered 405 (a socket request has no method).
  An answer without a body (a 429 above all, §8.8) is sent without ``d``.
- Faults: ``lockout_429_users`` answers every request of that user ``{"s":429,"i":id}``
  (authorize included); ``latency_ms`` delays dispatched requests; an order answer lost by
  ``drop_after_accept_rate`` follows ``drop_mode``: ``reset`` drops the socket, ``hang``
  never answers, ``http_500`` answers ``s:500``, ``http_401`` answers ``s:401``,
  ``http_4xx`` answers ``s:<drop_status>``.
  ``error_5xx_rate`` is REST only.
- ``user/syncrequest`` with ``{"users":[...]}`` must name only the authorized user, and with
  ``{"accounts":[...]}`` only that user's accounts (then the sync covers those accounts);
  anything else is refused with 401. A second sync on one socket replaces the first.
- Only the literal ``[]`` counts as the client's heartbeat; requests do not keep a socket
  alive (§8.6, checklist §12: "Drop the client if no ``[]`` arrives").
- Timeouts (authorize deadline, client heartbeat) send ``c[1000,"<reason>"]``, then close
  with code 1000. Drops (``faults.ws_drop_after_s`` and ``drop_all``) look like a server
  going away: no ``c`` frame, close code 1001.
- Time on the socket is the event loop's monotonic time, not the simulator's clock, so a
  frozen ``ManualClock`` does not stop heartbeats or timeouts.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import threading
import weakref
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal
from enum import Enum
from typing import Any
from urllib.parse import parse_qsl

from fastapi import APIRouter, WebSocket
from starlette.websockets import WebSocketDisconnect, WebSocketState

from tradebridge.sim._native_wire import contract_maturity_wire, product_wire
from tradebridge.sim.auth import Session
from tradebridge.sim.context import SimContext
from tradebridge.sim.engine import (
    Entity,
    EntityChange,
    SimAccount,
    SimCommand,
    SimOrderStrategyLink,
    SimOrderVersion,
)
from tradebridge.sim.faults import DropAnswer
from tradebridge.sim.model import ACCESS_DENIED
from tradebridge.sim.native import NativeAnswer, NativeApi, to_wire

_log = logging.getLogger(__name__)

PATH = "/v1/websocket"
CLOSE_NORMAL = 1000
CLOSE_GOING_AWAY = 1001
# How long a socket asked to close may take to flush its queue before it is cut off.
CLOSE_GRACE_S = 1.0
# Upper bound on the watchdog's sleep, so faults changed at run time take effect quickly.
WATCH_TICK_S = 0.1

# Every key of the sync snapshot (reference §8.7); those the simulator has no data for stay [].
SNAPSHOT_KEYS = (
    "accountRiskStatuses",
    "accounts",
    "cashBalances",
    "commandReports",
    "commands",
    "contractGroups",
    "contractMaturities",
    "contracts",
    "currencies",
    "exchanges",
    "executionReports",
    "fillPairs",
    "fills",
    "marginSnapshots",
    "orderStrategies",
    "orderStrategyLinks",
    "orderStrategyTypes",
    "orderVersions",
    "orders",
    "positions",
    "products",
    "properties",
    "spreadDefinitions",
    "userAccountAutoLiqs",
    "userPlugins",
    "userProperties",
    "userReadStatuses",
    "users",
)


class _Close:
    """A request, queued behind pending frames, to close the socket."""

    __slots__ = ("code", "frame", "reason")

    def __init__(self, code: int, reason: str, *, frame: bool) -> None:
        self.code = code
        self.reason = reason
        self.frame = frame  # whether to send ``c[code,"reason"]`` first


@dataclass
class SocketRegistry:
    """The open sockets of one simulator, so that an admin hook can drop them all."""

    connections: set[_Connection] = field(default_factory=set)

    @property
    def count(self) -> int:
        """Return how many sockets are open."""
        return len(self.connections)

    async def drop_all(self, timeout_s: float = 2.0) -> int:
        """Close every open socket now and return how many there were."""
        connections = list(self.connections)
        for connection in connections:
            connection.request_close(CLOSE_GOING_AWAY, "Dropped by simulator", frame=False)
        waits = [asyncio.ensure_future(c.closed.wait()) for c in connections]
        if waits:
            _, pending = await asyncio.wait(waits, timeout=timeout_s)
            for task in pending:
                task.cancel()
        return len(connections)


_REGISTRIES: dict[int, SocketRegistry] = {}


def socket_registry(ctx: SimContext) -> SocketRegistry:
    """Return the socket registry of ``ctx``, creating it on first use."""
    key = id(ctx)
    registry = _REGISTRIES.get(key)
    if registry is None:
        registry = _REGISTRIES[key] = SocketRegistry()
        # SimContext is an unhashable dataclass, so key by id and forget it with the context.
        weakref.finalize(ctx, _REGISTRIES.pop, key, None)
    return registry


async def drop_all(ctx: SimContext) -> int:
    """Close every open WebSocket of this simulator now; return how many were closed."""
    return await socket_registry(ctx).drop_all()


def build_router(ctx: SimContext) -> APIRouter:
    """Build the router serving the native WebSocket at ``/v1/websocket``."""
    router = APIRouter()
    native = NativeApi(ctx)
    registry = socket_registry(ctx)

    @router.websocket(PATH)
    async def websocket_endpoint(websocket: WebSocket) -> None:
        connection = _Connection(ctx, native, websocket)
        registry.connections.add(connection)
        try:
            await connection.run()
        finally:
            registry.connections.discard(connection)

    return router


def _json_default(value: object) -> Any:
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, Enum):
        return value.value
    raise TypeError(f"not JSON serializable: {type(value).__name__}")


def _dumps(value: object) -> str:
    return json.dumps(value, separators=(",", ":"), default=_json_default)


def _reply(request_id: int, status: int, body: Any = None) -> dict[str, Any]:
    message: dict[str, Any] = {"s": status, "i": request_id}
    if body is not None and body != "":
        message["d"] = body
    return message


def _parse_id(text: str) -> int | None:
    try:
        return int(text.strip())
    except ValueError:
        return None


def _parse_token(text: str) -> str:
    token = text.strip()
    if token.startswith('"'):
        # The official FAQ sample JSON-encodes the token, the tutorial sends it raw (§8.4).
        try:
            decoded = json.loads(token)
        except ValueError:
            return token
        return decoded if isinstance(decoded, str) else token
    return token


def _int_list(value: object) -> list[int] | None:
    if not isinstance(value, list) or not value:
        return None
    if not all(isinstance(item, int) and not isinstance(item, bool) for item in value):
        return None
    return list(value)


@dataclass
class _Sync:
    """What one ``user/syncrequest`` covers, and how to stop it."""

    user_id: int
    account_ids: frozenset[int]
    unsubscribe: Callable[[], None]


class _Connection:
    """One client socket: a reader, a writer fed by a queue, and a watchdog."""

    def __init__(self, ctx: SimContext, native: NativeApi, websocket: WebSocket) -> None:
        self.ctx = ctx
        self.native = native
        self.websocket = websocket
        self.outbox: asyncio.Queue[str | _Close] = asyncio.Queue()
        self.closed = asyncio.Event()
        self.session: Session | None = None
        self.token: str | None = None
        self.sync: _Sync | None = None
        self._loop = asyncio.get_running_loop()
        self._thread = threading.get_ident()
        self._connected_at = self._loop.time()
        self._last_seen = self._connected_at
        self._close_requested_at: float | None = None
        self._pending_events: list[dict[str, Any]] = []
        self._flush_scheduled = False
        self._requests: set[asyncio.Task[None]] = set()

    # --- lifecycle ---------------------------------------------------------------------
    async def run(self) -> None:
        """Serve the socket until either side closes it."""
        await self.websocket.accept()
        self.send("o")
        tasks = {
            asyncio.create_task(self._read(), name="ws-read"),
            asyncio.create_task(self._write(), name="ws-write"),
            asyncio.create_task(self._watch(), name="ws-watch"),
        }
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            self._stop_sync()
            for task in tasks | self._requests:
                task.cancel()
            results = await asyncio.gather(*tasks, *self._requests, return_exceptions=True)
            for result in results:
                if isinstance(result, Exception):
                    _log.error("websocket task failed: %r", result)
            await self._close_socket(CLOSE_NORMAL)
            self.closed.set()

    def request_close(self, code: int, reason: str, *, frame: bool) -> None:
        """Close the socket once the frames queued so far are sent."""
        if self._close_requested_at is None:
            self._close_requested_at = self._loop.time()
            self.outbox.put_nowait(_Close(code, reason, frame=frame))

    async def _close_socket(self, code: int) -> None:
        if self.websocket.application_state != WebSocketState.CONNECTED:
            return
        # The client may already be gone; there is nothing left to tell it then.
        with contextlib.suppress(RuntimeError, OSError, WebSocketDisconnect):
            await self.websocket.close(code)

    def send(self, frame: str) -> None:
        """Queue one raw frame (``o``, ``h``, ``a[...]``)."""
        self.outbox.put_nowait(frame)

    def send_messages(self, messages: list[dict[str, Any]]) -> None:
        """Queue one ``a[...]`` frame carrying ``messages`` in order."""
        self.send("a" + _dumps(messages))

    async def _write(self) -> None:
        while True:
            item = await self.outbox.get()
            try:
                if isinstance(item, _Close):
                    if item.frame:
                        await self.websocket.send_text("c" + _dumps([item.code, item.reason]))
                    await self._close_socket(item.code)
                    return
                await self.websocket.send_text(item)
            except (RuntimeError, OSError, WebSocketDisconnect):
                return  # the client went away mid-send

    async def _read(self) -> None:
        while True:
            try:
                message = await self.websocket.receive()
            except (RuntimeError, OSError, WebSocketDisconnect):
                return
            if message["type"] == "websocket.disconnect":
                return
            text = message.get("text")
            if text is None:
                raw = message.get("bytes") or b""
                text = raw.decode("utf-8", errors="replace")
            if text.strip() == "[]":
                # Only the literal ``[]`` is a heartbeat (§8.6, checklist §12): a client that
                # sends requests but no heartbeats is dropped, as Tradovate drops it.
                self._last_seen = self._loop.time()
            self._on_frame(text)

    async def _watch(self) -> None:
        config = self.ctx.config
        next_heartbeat = self._connected_at + config.server_heartbeat_s
        while True:
            now = self._loop.time()
            if self._close_requested_at is not None:
                if now - self._close_requested_at >= CLOSE_GRACE_S:
                    return  # the writer is stuck on a client that does not read; cut it off
            elif self.session is None and now - self._connected_at >= config.authorize_deadline_s:
                self.request_close(CLOSE_NORMAL, "Authorization timeout", frame=True)
            elif now - self._last_seen >= config.heartbeat_timeout_s:
                self.request_close(CLOSE_NORMAL, "Heartbeat timeout", frame=True)
            elif (drop_s := self.ctx.faults.ws_drop_after_s) and now - self._connected_at >= drop_s:
                self.request_close(CLOSE_GOING_AWAY, "Dropped by simulator", frame=False)
            elif now >= next_heartbeat:
                self.send("h")
                next_heartbeat = now + config.server_heartbeat_s
            await asyncio.sleep(min(WATCH_TICK_S, max(0.005, next_heartbeat - now)))

    # --- requests ----------------------------------------------------------------------
    def _on_frame(self, text: str) -> None:
        if text.strip() == "[]":
            return  # client heartbeat; being seen is all it does
        lines = text.split("\n", 3)
        request_id = _parse_id(lines[1]) if len(lines) > 1 else None
        if request_id is None:
            _log.warning(
                "websocket frame without an integer request id ignored (%d chars)", len(text)
            )
            return
        endpoint = lines[0].strip()
        if len(lines) < 4 or not endpoint:
            self.send_messages([_reply(request_id, 400, "Malformed request")])
            return
        query, body_text = lines[2], lines[3]
        if endpoint == "authorize":
            self._authorize(request_id, body_text)
            return
        if self.session is None or self.token is None:
            self.send_messages([_reply(request_id, 401, "Not authorized")])
            return
        if self._locked_out(self.session):
            self.send_messages([_reply(request_id, 429)])
            return
        body: Any = None
        if body_text.strip():
            try:
                body = json.loads(body_text)
            except ValueError:
                self.send_messages([_reply(request_id, 400, "Body is not JSON")])
                return
        if endpoint == "user/syncrequest":
            self._sync_request(request_id, body)
            return
        task = asyncio.create_task(self._dispatch(request_id, endpoint, query, body, self.token))
        self._requests.add(task)
        task.add_done_callback(self._requests.discard)

    def _locked_out(self, session: Session) -> bool:
        names = self.ctx.faults.lockout_429_users
        return "*" in names or session.user.name in names

    def _authorize(self, request_id: int, body_text: str) -> None:
        token = _parse_token(body_text)
        session = self.ctx.auth.verify(token) if token else None
        if session is None:
            self.send_messages([_reply(request_id, 401, "Invalid or expired access token")])
            return
        if self.session is not None and self.session.user.id != session.user.id:
            self.send_messages([_reply(request_id, 401, "Socket authorized as another user")])
            return
        if self._locked_out(session):
            self.send_messages([_reply(request_id, 429)])
            return
        self.session, self.token = session, token
        self.send_messages([_reply(request_id, 200)])

    async def _dispatch(
        self, request_id: int, endpoint: str, query: str, body: Any, token: str
    ) -> None:
        params: Mapping[str, str] = dict(parse_qsl(query.strip(), keep_blank_values=True))
        if latency_ms := self.ctx.faults.latency_ms:
            await asyncio.sleep(latency_ms / 1000)
        try:
            answer = await self._handle(endpoint, params, body, token)
        except DropAnswer:
            self._drop_answer(request_id)
            return
        except Exception:  # noqa: BLE001 - one broken request must not take the socket down
            _log.exception("websocket request %s (id %d) failed", endpoint, request_id)
            self.send_messages([_reply(request_id, 500, "Internal error")])
            return
        if answer.status == 429:
            self.send_messages([_reply(request_id, 429)])  # §8.8: no body, like REST's empty 429
            return
        self.send_messages([_reply(request_id, answer.status, answer.body)])

    async def _handle(
        self, endpoint: str, params: Mapping[str, str], body: Any, token: str
    ) -> NativeAnswer:
        # A socket request has no HTTP method. Ask as GET without a body and as POST with
        # one; if the endpoint wants the other method, ask again: a 405 runs no handler.
        first, second = ("GET", "POST") if body is None else ("POST", "GET")
        answer = await self.native.handle(first, endpoint, params, body, token)
        if answer.status == 405:
            answer = await self.native.handle(second, endpoint, params, body, token)
        return answer

    def _drop_answer(self, request_id: int) -> None:
        # The order was accepted but its answer is lost (reference §6.3, the ambiguous case).
        mode = self.ctx.faults.drop_mode
        _log.info("websocket answer to request %d dropped (%s)", request_id, mode)
        if mode == "http_500":
            self.send_messages([_reply(request_id, 500, "Internal Server Error")])
        elif mode == "http_401":
            self.send_messages([_reply(request_id, 401, ACCESS_DENIED)])
        elif mode == "http_4xx":
            status = self.ctx.faults.drop_status
            self.send_messages([_reply(request_id, status, "answer lost (simulated)")])
        elif mode == "reset":
            self.request_close(CLOSE_GOING_AWAY, "Dropped by simulator", frame=False)
        # "hang": no answer ever comes; the client's own timeout has to notice.

    # --- user sync -------------------------------------------------------------------------
    def _sync_request(self, request_id: int, body: Any) -> None:
        assert self.session is not None
        user = self.session.user
        engine = self.ctx.engine
        own = {account.id: account for account in engine.accounts(user.id)}
        users = _int_list(body.get("users")) if isinstance(body, dict) else None
        account_ids = _int_list(body.get("accounts")) if isinstance(body, dict) else None
        if users is None and account_ids is None:
            self.send_messages([_reply(request_id, 400, "users or accounts required")])
            return
        if users is not None and any(user_id != user.id for user_id in users):
            self.send_messages([_reply(request_id, 401, "Access is denied")])
            return
        if account_ids is not None and any(a not in own for a in account_ids):
            self.send_messages([_reply(request_id, 401, "Access is denied")])
            return
        selected = frozenset(own if account_ids is None else account_ids)
        # The snapshot is built and the subscription made without awaiting in between, so
        # no change can fall between them (the engine runs on this loop, one call at a time).
        snapshot = self._snapshot([own[a] for a in sorted(selected)])
        self._stop_sync()
        self.send_messages([_reply(request_id, 200, snapshot)])
        self.sync = _Sync(user.id, selected, engine.subscribe(self._on_change))

    def _stop_sync(self) -> None:
        if self.sync is not None:
            self.sync.unsubscribe()
            self.sync = None

    def _snapshot(self, accounts: list[SimAccount]) -> dict[str, list[Any]]:
        assert self.session is not None
        engine = self.ctx.engine
        snapshot: dict[str, list[Any]] = {key: [] for key in SNAPSHOT_KEYS}
        contract_ids: set[int] = set()
        for account in accounts:
            snapshot["accounts"].append(to_wire(account))
            snapshot["cashBalances"].append(to_wire(engine.cash_balance(account.id)))
            for order in engine.orders(account.id):
                contract_ids.add(order.contract_id)
                snapshot["orders"].append(to_wire(order))
                snapshot["orderVersions"] += map(to_wire, engine.order_versions(order.id))
                snapshot["executionReports"] += map(to_wire, engine.execution_reports(order.id))
                snapshot["commands"] += map(to_wire, engine.commands(order.id))
            for fill in engine.fills(account_id=account.id):
                contract_ids.add(fill.contract_id)
                snapshot["fills"].append(to_wire(fill))
            for position in engine.positions(account.id):
                contract_ids.add(position.contract_id)
                snapshot["positions"].append(to_wire(position))
            for strategy in engine.order_strategies(account.id):
                snapshot["orderStrategies"].append(to_wire(strategy))
                snapshot["orderStrategyLinks"] += map(
                    to_wire, engine.order_strategy_links(strategy.id)
                )
        products: dict[str, Any] = {}
        for contract_id in sorted(contract_ids):
            contract = engine.contract(contract_id)
            if contract is None:
                continue
            front = engine.suggest_contracts(contract.symbol.root, 1)
            is_front = bool(front) and front[0].id == contract.id
            snapshot["contracts"].append(to_wire(contract))
            snapshot["contractMaturities"].append(
                contract_maturity_wire(contract, is_front=is_front)
            )
            products.setdefault(contract.product.root, product_wire(contract.product))
        snapshot["products"] = list(products.values())
        user = self.session.user
        snapshot["users"] = [
            {
                "id": user.id,
                "name": user.name,
                "email": f"{user.name}@sim.tradebridge.invalid",
                "status": "Active",
                "professional": False,
            }
        ]
        return snapshot

    def _account_of(self, entity: Entity) -> int | None:
        if isinstance(entity, SimOrderStrategyLink):
            strategy = self.ctx.engine.order_strategy(entity.order_strategy_id)
            return None if strategy is None else strategy.account_id
        if isinstance(entity, SimOrderVersion | SimCommand):
            order = self.ctx.engine.order(entity.order_id)
            return None if order is None else order.account_id
        return entity.account_id

    def _on_change(self, change: EntityChange) -> None:
        # Called by the engine, synchronously, possibly from another thread (a test driving
        # the engine directly): serialize now, while the entity still has this state.
        sync = self.sync
        if sync is None or change.user_id != sync.user_id:
            return
        if self._account_of(change.entity) not in sync.account_ids:
            return
        names = self.ctx.config.event_names
        event_types = {"created": names.created, "updated": names.updated}
        event_types["deleted"] = names.deleted
        event = {
            "e": "props",
            "d": {
                "entityType": names.entity_types.get(change.entity_type, change.entity_type),
                "entity": to_wire(change.entity),
                "eventType": event_types.get(change.event_type.lower(), change.event_type),
            },
        }
        if threading.get_ident() == self._thread:
            self._queue_event(event)
        else:
            self._loop.call_soon_threadsafe(self._queue_event, event)

    def _queue_event(self, event: dict[str, Any]) -> None:
        # Events of one engine call arrive back to back; flushing on the next loop turn
        # sends them as one ``a[...]`` frame, in order.
        self._pending_events.append(event)
        if not self._flush_scheduled:
            self._flush_scheduled = True
            self._loop.call_soon(self._flush_events)

    def _flush_events(self) -> None:
        self._flush_scheduled = False
        events, self._pending_events = self._pending_events, []
        if events and self.sync is not None:
            self.send_messages(events)

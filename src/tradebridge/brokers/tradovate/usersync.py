"""The native user-sync WebSocket: one socket per Tradovate user, order events out.

Protocol (reference §8): the server opens with ``o``; we send ``authorize\\n<id>\\n\\n<token>``
with the CURRENT token from the token store, then ``user/syncrequest`` with
``{"users":[userId]}``. The reply's ``d`` is a snapshot; changes follow as
``{"e":"props","d":{"entityType","entity","eventType"}}``. We send ``[]`` every 2.5 s and
treat a silent socket as dead. Reconnects back off exponentially with jitter.

``SyncMirror`` keeps what the socket told us and turns changes into ``BrokerOrderEvent``s.
It also keeps the order strategies and their links: an order a Bracket strategy placed
carries the strategy's ``uuid`` (our client id) as its client id, its legs that id plus
``-leg``, so the entry's events find their row before the submit's answer has landed.
The first snapshot seeds it: what it shows of orders created before ``first_since`` (the
worker's start, less a margin for the clocks) is reconcile's business and emits nothing;
what it shows of later orders (those the worker may have placed before its socket synced: a
market order filled in that moment) is emitted as if the socket had seen it happen. Every
later snapshot is authoritative and emits what changed while the socket was down. The fills
the first snapshot kept quiet of an order still open go out just before that order's next
event: they may be fills made while no process ran, and a cancel applied first would end
the row short, out of reconcile's sight (it compares open rows). The tracker applies a fill
id once per row, so one recorded already costs a read.

It also keeps every account's positions (``position`` entities), so that a worker can read a
position from the socket instead of a budgeted REST read (reference §7: "read state from the
sync stream instead of polling"). ``positions_of`` answers only when the mirror is known to be
current for the account: no fill seen after the account's last position update, no fill
waiting for its order, and every order the caller placed there already final.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import random
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pydantic import ValidationError
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import WebSocketException

from tradebridge._aio import cancel_and_wait, reraise_if_cancelling
from tradebridge.brokers.base import BrokerOrderEvent
from tradebridge.brokers.tradovate import wire
from tradebridge.config import EventNamesConfig, TradovateConfig
from tradebridge.domain.clock import utcnow
from tradebridge.domain.ids import AccountName, BrokerOrderId, ClientOrderId
from tradebridge.domain.orders import (
    OrderAccepted,
    OrderCancelled,
    OrderEvent,
    OrderExpired,
    OrderFilled,
    OrderRejected,
)
from tradebridge.errors import AuthError, BrokerError, ConnectionLost, Lockout
from tradebridge.obs import metrics
from tradebridge.obs.logging import get_logger, redact_text
from tradebridge.store.tokens import TokenProvider

_log = get_logger("tradebridge.brokers.tradovate.usersync")

EventSink = Callable[[BrokerOrderEvent], None]

# Order statuses after which an order no longer moves a position.
_FINAL_STATUSES = frozenset({"Filled", "Canceled", "Rejected", "Expired"})


class SyncMirror:
    """The user's orders and fills as the socket reported them; diffs become events."""

    def __init__(
        self,
        names: EventNamesConfig,
        account_names: Mapping[int, str],
        *,
        entry_label: str = "Entry",
        first_since: datetime | None = None,
    ) -> None:
        self.names = names
        self.first_since = first_since
        self.account_names = dict(account_names)
        self.entry_label = entry_label
        self.orders: dict[int, wire.WireOrder] = {}
        self.fill_ids: set[int] = set()
        # Each order's latest version (its quantity, type, prices) and what its fills traded.
        self.versions: dict[int, wire.WireOrderVersion] = {}
        self.filled: dict[int, int] = {}
        self.cl_ord_ids: dict[int, str] = {}
        self.strategy_uuids: dict[int, str] = {}  # strategy id -> uuid (our client id)
        self.strategy_of: dict[int, int] = {}  # order id -> strategy id
        self.strategy_entry: dict[int, tuple[bool, int]] = {}  # id -> (labelled, entry order)
        self.reject_reasons: dict[int, str] = {}
        # The snapshot's contracts (those of its orders and positions): id -> contract. An
        # id names one contract for good, so a restart's first orders need no look-ups.
        self.contracts: dict[int, wire.WireContract] = {}
        self.seeded = False
        self._pending_fills: dict[int, list[wire.WireFill]] = {}
        # Fills the first snapshot kept quiet, of orders still open then: by order id.
        self._quiet_fills: dict[int, list[BrokerOrderEvent]] = {}
        # Positions by (account id, contract id), and when (in arrival order) each key last
        # had a fill and a position update: a fill newer than its position means stale.
        self.positions: dict[tuple[int, int], wire.WirePosition] = {}
        self._arrivals = itertools.count(1)
        self._filled_at: dict[tuple[int, int], int] = {}
        self._positioned_at: dict[tuple[int, int], int] = {}
        self._positions_known = False

    def apply_snapshot(self, snapshot: Any) -> list[BrokerOrderEvent]:
        """Apply a ``user/syncrequest`` snapshot; return events (for the first one, only those
        of orders created since ``first_since``)."""
        if not isinstance(snapshot, dict):
            raise BrokerError("user/syncrequest: the snapshot is not a JSON object")
        emit = self.seeded
        for account in _entities(wire.WireAccount, snapshot.get("accounts")):
            self.account_names[account.id] = account.name
        for contract in _entities(wire.WireContract, snapshot.get("contracts")):
            self.contracts[contract.id] = contract
        for command in _entities(wire.WireCommand, snapshot.get("commands")):
            self._command(command)
        for strategy in _entities(wire.WireOrderStrategy, snapshot.get("orderStrategies")):
            self._strategy(strategy)
        for link in _entities(wire.WireOrderStrategyLink, snapshot.get("orderStrategyLinks")):
            self._link(link)
        for report in _entities(wire.WireExecutionReport, snapshot.get("executionReports")):
            self._execution_report(report)
        for version in _entities(wire.WireOrderVersion, snapshot.get("orderVersions")):
            self._version(version)
        # An order's fills before its end: a reconnect's snapshot may hold both a fill the
        # socket missed and the cancel that followed it, and a row ended first takes no fill.
        events: list[BrokerOrderEvent] = []
        ends: list[BrokerOrderEvent] = []
        for order in _entities(wire.WireOrder, snapshot.get("orders")):
            for event in self._order(order):
                (ends if isinstance(event.event, _ENDS) else events).append(event)
        for fill in _entities(wire.WireFill, snapshot.get("fills")):
            events.extend(self._fill(fill))
        events.extend(ends)
        # The snapshot is one consistent picture: its positions include its fills.
        self.positions = {
            (p.account_id, p.contract_id): p
            for p in _entities(wire.WirePosition, snapshot.get("positions"))
        }
        self._filled_at.clear()
        self._positioned_at.clear()
        self._positions_known = "positions" in snapshot
        self.seeded = True
        if emit:
            return self._with_quiet_fills(events)
        recent = self._recent(events)
        self._keep_quiet_fills(events, recent)
        return recent

    def _keep_quiet_fills(
        self, events: list[BrokerOrderEvent], emitted: list[BrokerOrderEvent]
    ) -> None:
        """Keep the fills of open orders that ``events`` had and ``emitted`` leaves out."""
        sent = {id(e) for e in emitted}
        for event in events:
            if id(event) in sent or not isinstance(event.event, OrderFilled):
                continue
            order = self.orders.get(int(event.broker_order_id))
            if order is not None and order.ord_status not in _FINAL_STATUSES:
                self._quiet_fills.setdefault(order.id, []).append(event)

    def _with_quiet_fills(self, events: list[BrokerOrderEvent]) -> list[BrokerOrderEvent]:
        """Return ``events`` with each order's quiet fills (if any) just before its first."""
        if not self._quiet_fills or not events:
            return events
        out: list[BrokerOrderEvent] = []
        for event in events:
            out.extend(self._quiet_fills.pop(int(event.broker_order_id), ()))
            out.append(event)
        return out

    def _recent(self, events: list[BrokerOrderEvent]) -> list[BrokerOrderEvent]:
        """Return the events of orders created at or after ``first_since`` (none without)."""
        since = self.first_since
        if since is None:
            return []
        recent = []
        for event in events:
            order = self.orders.get(int(event.broker_order_id))
            if order is not None and order.timestamp is not None and order.timestamp >= since:
                recent.append(event)
        return recent

    def positions_of(
        self, account_id: int, placed: Iterable[int] = ()
    ) -> list[wire.WirePosition] | None:
        """Return the account's positions (flat ones included) if the mirror is current for
        it, else None (read them from REST).

        Current means: a snapshot listed positions (and no position since was unreadable), no
        fill waits for its order, every order in ``placed`` (what the caller sent there) is
        known and final, and no fill on the account arrived after its contract's position.
        """
        if not self._positions_known or self._pending_fills:
            return None
        for order_id in placed:
            order = self.orders.get(order_id)
            if order is None or order.ord_status not in _FINAL_STATUSES:
                return None
        for key, at in self._filled_at.items():
            if key[0] == account_id and self._positioned_at.get(key, 0) < at:
                return None
        return [p for (account, _), p in self.positions.items() if account == account_id]

    def working_of(
        self, account_id: int
    ) -> list[tuple[wire.WireOrder, wire.WireOrderVersion, int, int | None]] | None:
        """Return the account's orders not final, each with its latest version, what it has
        filled and its entry (a bracket leg's parent, or its order strategy's entry), or None
        when the mirror cannot tell (not synced yet, a fill waits for its order, an order's
        version has not arrived): read them from REST."""
        if not self.seeded or self._pending_fills:
            return None
        working = []
        for order in self.orders.values():
            if order.account_id != account_id or order.ord_status in _FINAL_STATUSES:
                continue
            version = self.versions.get(order.id)
            if version is None:
                return None
            working.append((order, version, self.filled.get(order.id, 0), self._entry(order)))
        return working

    def client_id(self, order_id: int) -> str | None:
        """Return the client id the socket told for an order (ours: ``tb-...``), if any."""
        return self._client_id(order_id)

    def _entry(self, order: wire.WireOrder) -> int | None:
        """Return the entry a leg belongs to: its parent, else its order strategy's entry."""
        if order.parent_id is not None:
            return order.parent_id
        strategy = self.strategy_of.get(order.id)
        entry = self.strategy_entry.get(strategy) if strategy is not None else None
        if entry is None or entry[1] == order.id:
            return None
        return entry[1]

    def apply_props(self, data: Any) -> list[BrokerOrderEvent]:
        """Apply one ``props`` event; return the order events it implies."""
        if not isinstance(data, dict):
            return []
        entity_type, entity = data.get("entityType"), data.get("entity")
        if not isinstance(entity, dict):
            return []
        if entity_type == self.names.position:
            self._position(entity, deleted=data.get("eventType") == self.names.deleted)
            return []
        if data.get("eventType") == self.names.deleted:
            return []
        try:
            if entity_type == self.names.order:
                return self._with_quiet_fills(self._order(wire.WireOrder.model_validate(entity)))
            if entity_type == self.names.fill:
                return self._with_quiet_fills(self._fill(wire.WireFill.model_validate(entity)))
            if entity_type == self.names.order_strategy:
                self._strategy(wire.WireOrderStrategy.model_validate(entity))
            elif entity_type == self.names.order_strategy_link:
                self._link(wire.WireOrderStrategyLink.model_validate(entity))
            elif entity_type == self.names.command:
                self._command(wire.WireCommand.model_validate(entity))
            elif entity_type == self.names.execution_report:
                self._execution_report(wire.WireExecutionReport.model_validate(entity))
            elif entity_type == self.names.order_version:
                self._version(wire.WireOrderVersion.model_validate(entity))
        except ValidationError:
            _log.warning("usersync_entity_unreadable", entity_type=str(entity_type))
        return []

    def _position(self, entity: dict[str, Any], *, deleted: bool) -> None:
        try:
            position = wire.WirePosition.model_validate(entity)
        except ValidationError:
            _log.warning("usersync_entity_unreadable", entity_type=self.names.position)
            # Unreadable: no position is trusted from here until the next snapshot.
            self._positions_known = False
            return
        key = (position.account_id, position.contract_id)
        if deleted:
            self.positions.pop(key, None)
        else:
            self.positions[key] = position
        self._positioned_at[key] = next(self._arrivals)

    def _command(self, command: wire.WireCommand) -> None:
        if command.cl_ord_id and command.order_id not in self.cl_ord_ids:
            self.cl_ord_ids[command.order_id] = command.cl_ord_id

    def _strategy(self, strategy: wire.WireOrderStrategy) -> None:
        if strategy.uuid:
            self.strategy_uuids[strategy.id] = strategy.uuid

    def _link(self, link: wire.WireOrderStrategyLink) -> None:
        self.strategy_of[link.order_id] = link.order_strategy_id
        labelled = link.label == self.entry_label
        known = self.strategy_entry.get(link.order_strategy_id)
        # The labelled entry wins; otherwise the strategy's first order is its entry.
        if (
            known is None
            or (labelled and not known[0])
            or (labelled == known[0] and link.order_id < known[1])
        ):
            self.strategy_entry[link.order_strategy_id] = (labelled, link.order_id)

    def _client_id(self, order_id: int) -> str | None:
        cid = self.cl_ord_ids.get(order_id)
        strategy = self.strategy_of.get(order_id)
        if cid is not None or strategy is None or strategy not in self.strategy_uuids:
            return cid
        uuid = self.strategy_uuids[strategy]
        entry = self.strategy_entry.get(strategy)
        if entry is not None and entry[1] == order_id:
            return uuid
        return uuid + wire.STRATEGY_LEG_SUFFIX

    def _version(self, version: wire.WireOrderVersion) -> None:
        known = self.versions.get(version.order_id)
        if known is None or version.id > known.id:
            self.versions[version.order_id] = version

    def _execution_report(self, report: wire.WireExecutionReport) -> None:
        reason = " ".join(x for x in (report.reject_reason, report.text) if x)
        if reason and (report.exec_type == "Rejected" or report.ord_status == "Rejected"):
            self.reject_reasons[report.order_id] = reason

    def _event(self, order: wire.WireOrder, event: OrderEvent) -> BrokerOrderEvent:
        cid = self._client_id(order.id)
        return BrokerOrderEvent(
            account=AccountName(self.account_names.get(order.account_id, str(order.account_id))),
            broker_order_id=BrokerOrderId(str(order.id)),
            client_order_id=ClientOrderId(cid) if cid else None,
            event=event,
            parent_order_id=(
                None if order.parent_id is None else BrokerOrderId(str(order.parent_id))
            ),
        )

    def _order(self, order: wire.WireOrder) -> list[BrokerOrderEvent]:
        previous = self.orders.get(order.id)
        self.orders[order.id] = order
        ts = order.timestamp or utcnow()
        events: list[BrokerOrderEvent] = []
        ends: list[BrokerOrderEvent] = []
        status = order.ord_status
        if previous is None and status != "Rejected":
            events.append(self._event(order, OrderAccepted(BrokerOrderId(str(order.id)), ts)))
        changed = previous is None or previous.ord_status != status
        if changed:
            now = utcnow()
            if status == "Rejected":
                reason = self.reject_reasons.get(order.id, "")
                ends.append(self._event(order, OrderRejected("Rejected", reason, now)))
            elif status == "Canceled":
                ends.append(self._event(order, OrderCancelled(now)))
            elif status == "Expired":
                ends.append(self._event(order, OrderExpired(now)))
        # Fills that waited for their order go before its end (a row ended takes no fill).
        for fill in self._pending_fills.pop(order.id, []):
            events.extend(self._fill(fill))
        return events + ends

    def _fill(self, fill: wire.WireFill) -> list[BrokerOrderEvent]:
        if fill.id in self.fill_ids or not fill.active:
            return []
        order = self.orders.get(fill.order_id)
        if order is None:  # the fill overtook its order: hold it until the order arrives
            self._pending_fills.setdefault(fill.order_id, []).append(fill)
            return []
        self.fill_ids.add(fill.id)
        self.filled[order.id] = self.filled.get(order.id, 0) + fill.qty
        self._filled_at[(order.account_id, fill.contract_id)] = next(self._arrivals)
        event = OrderFilled(fill.qty, fill.price, fill.timestamp, str(fill.id))
        return [self._event(order, event)]


# The events that end an order: reported after every fill known of it.
_ENDS = (OrderCancelled, OrderExpired, OrderRejected)


def _entities(model: type[wire.M], items: Any) -> list[wire.M]:
    out: list[wire.M] = []
    for item in items or []:
        try:
            out.append(model.model_validate(item))
        except ValidationError:
            _log.warning("usersync_entity_unreadable", entity=model.__name__)
    return out


@dataclass
class _Reply:
    status: int
    data: Any


class UserSync:
    """One user-sync socket: connect, authorize, sync, heartbeat, reconnect."""

    def __init__(
        self,
        config: TradovateConfig,
        *,
        user_id: int,
        account_name: str,
        tokens: TokenProvider,
        on_event: EventSink,
        account_names: Mapping[int, str] | None = None,
        first_since: datetime | None = None,
    ) -> None:
        self.config = config
        self.url = config.ws_url
        self.user_id = user_id
        self.account_name = account_name  # whose token key authorizes the socket
        self.tokens = tokens
        self.on_event = on_event
        self.mirror = SyncMirror(
            config.event_names,
            account_names or {},
            entry_label=config.strategies.entry_label,
            first_since=first_since,
        )
        self.synced = asyncio.Event()
        self.ever_synced = False  # synced at least once since it started
        self.connects = 0
        self._ids = itertools.count(1)
        self._replies: dict[int, asyncio.Future[_Reply]] = {}
        self._task: asyncio.Task[None] | None = None
        self._ws: ClientConnection | None = None
        self._last_frame = time.monotonic()

    def __repr__(self) -> str:
        return f"UserSync(url={self.url!r}, user_id={self.user_id}, synced={self.synced.is_set()})"

    async def start(self) -> None:
        """Start the connection loop in the background."""
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name=f"usersync-{self.user_id}")

    async def stop(self) -> None:
        """Close the socket and end the loop."""
        task, self._task = self._task, None
        await cancel_and_wait(task)

    def current(self) -> bool:
        """Whether the socket is synced and a frame came within ``ws_dead_after_s``."""
        quiet = time.monotonic() - self._last_frame
        return self.synced.is_set() and quiet < self.config.ws_dead_after_s

    async def wait_synced(self, within_s: float) -> None:
        """Wait until the socket is synced; ``ConnectionLost`` after ``within_s`` seconds."""
        try:
            await asyncio.wait_for(self.synced.wait(), within_s)
        except TimeoutError as e:
            raise ConnectionLost(f"user sync for {self.user_id} not ready in {within_s} s") from e

    async def drop(self) -> None:
        """Close the current socket (the loop reconnects); a test and operator hook."""
        if self._ws is not None:
            await self._ws.close()

    async def _run(self) -> None:
        failures = 0
        user = str(self.user_id)
        up = metrics.WEBSOCKET_UP.labels(user=user)
        up.set(0)
        while True:
            connects = self.connects
            try:
                await self._session()
                failures = 0 if self.synced.is_set() else failures + 1
            except Lockout as e:
                _log.error("usersync_locked_out", user_id=self.user_id, until=e.until.isoformat())
                await asyncio.sleep(max((e.until - utcnow()).total_seconds(), 1.0))
                continue
            except (BrokerError, OSError, WebSocketException, TimeoutError) as e:
                failures += 1
                _log.warning(
                    "usersync_disconnected",
                    user_id=self.user_id,
                    error=redact_text(f"{type(e).__name__}: {e}"),
                )
            finally:
                up.set(0)
                if self.connects != connects:
                    metrics.WEBSOCKET_DISCONNECTS.labels(user=user).inc()
                self.synced.clear()
                self._ws = None
                for future in self._replies.values():
                    future.cancel()
                self._replies.clear()
            reraise_if_cancelling()  # a cancel lost inside the session (see _aio)
            delay = min(self.config.ws_reconnect_max_s, 0.25 * 2 ** min(failures, 10))
            await asyncio.sleep(delay * (0.5 + random.random() / 2))  # noqa: S311 - jitter

    async def _session(self) -> None:
        # Always the CURRENT token: a reconnect with a cached, since-renewed token is a
        # classic bug (reference §8.10).
        token = await self.tokens.token(self.account_name)
        dead = self.config.ws_dead_after_s
        async with connect(self.url, open_timeout=dead, ping_interval=None, max_size=None) as ws:
            self._ws = ws
            self.connects += 1
            metrics.WEBSOCKET_CONNECTS.labels(user=str(self.user_id)).inc()
            self._last_frame = time.monotonic()
            opening = await asyncio.wait_for(ws.recv(), dead)
            if opening != "o":
                raise ConnectionLost(
                    f"user sync: expected the open frame 'o', got {opening[:10]!r}"
                )
            reader = asyncio.create_task(self._read(ws))
            beat = asyncio.create_task(self._heartbeat(ws))
            try:
                reply = await self._request(ws, "authorize", raw_body=token.access_token)
                if reply.status == 401:
                    metrics.AUTH_FAILURES.labels("native", "token_refused").inc()
                    await self.tokens.after_refused(self.account_name, token)
                    raise AuthError("user sync: the token was refused; reconnecting with a new one")
                if reply.status != 200:
                    raise BrokerError(f"user sync: authorize answered {reply.status}")
                reply = await self._request(ws, "user/syncrequest", body={"users": [self.user_id]})
                if reply.status != 200:
                    raise BrokerError(f"user sync: syncrequest answered {reply.status}")
                for event in self.mirror.apply_snapshot(reply.data):
                    self.on_event(event)
                self.synced.set()
                self.ever_synced = True
                metrics.WEBSOCKET_UP.labels(user=str(self.user_id)).set(1)
                _log.info("usersync_synced", user_id=self.user_id, connects=self.connects)
                await reader
            finally:
                await cancel_and_wait(reader, beat)

    async def _request(
        self, ws: ClientConnection, endpoint: str, *, body: Any = None, raw_body: str = ""
    ) -> _Reply:
        request_id = next(self._ids)
        future: asyncio.Future[_Reply] = asyncio.get_running_loop().create_future()
        self._replies[request_id] = future
        text = raw_body if body is None else json.dumps(body)
        await ws.send(f"{endpoint}\n{request_id}\n\n{text}")
        try:
            return await asyncio.wait_for(future, self.config.ws_dead_after_s)
        finally:
            self._replies.pop(request_id, None)

    async def _read(self, ws: ClientConnection) -> None:
        async for frame in ws:
            self._last_frame = time.monotonic()
            text = frame if isinstance(frame, str) else frame.decode("utf-8", "replace")
            if not text or text in ("o", "h"):
                continue
            if text[0] == "c":
                return  # the server closes: reconnect
            if text[0] != "a":
                continue
            try:
                items = json.loads(text[1:])
            except ValueError:
                _log.warning("usersync_frame_unreadable", size=len(text))
                continue
            for item in items if isinstance(items, list) else []:
                self._dispatch(item)

    def _dispatch(self, item: Any) -> None:
        if not isinstance(item, dict):
            return
        if "i" in item and item.get("e") is None:
            future = self._replies.get(item["i"]) if isinstance(item["i"], int) else None
            if future is not None and not future.done():
                future.set_result(_Reply(int(item.get("s", 0)), item.get("d")))
            return
        if item.get("e") == "props":
            for event in self.mirror.apply_props(item.get("d")):
                self.on_event(event)

    async def _heartbeat(self, ws: ClientConnection) -> None:
        while True:
            await asyncio.sleep(self.config.ws_heartbeat_s)
            if time.monotonic() - self._last_frame > self.config.ws_dead_after_s:
                _log.warning("usersync_silent", user_id=self.user_id)
                await ws.close()
                return
            await ws.send("[]")

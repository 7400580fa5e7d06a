"""``TvBridgeBroker``: the ``Broker`` protocol over Tradovate's TradingView bridge.

The bridge (``tv-demo``/``tv-live.tradovateapi.com``, reference §9) speaks TradingView's
Broker REST dialect. Everything about its wire format lives in ``wire``; this module does
the I/O and the rules:

* every call carries ``locale=en``; an order carries ``requestId`` (derived from the client
  order id, so the same on every attempt of one logical order);
* the path segment is the bridge ``id`` (``D...``), resolved from ``/accounts`` by name. A
  configured id that is really a name (``PAAPEX...``) is refused before anything is sent;
* contracts are confirmed against ``/accounts/{id}/instruments``, durations against the
  ids ``/config`` advertises, before anything is sent;
* a submit is sent once. ``s:"error"`` → ``BrokerRejected``; a timeout, a dropped socket, a
  5xx, a 429, a 401 or an unparseable answer after sending → ``OutcomeUnknown`` (then
  ``lookup``). A 401 to an order is not proof that nothing was executed (a token can expire
  or be rotated while the order is in flight; §6.3 "check whether the order exists before
  resubmitting", §11.2 rule 3): the token is renewed so the lookup can authenticate, and
  the order is never sent again here. Without a token nothing is sent (``AuthError``);
* other calls answered 401 renew the token once and are sent again (reads, cancels and
  modifies are idempotent);
* reads, cancels and modifies retry transient failures through ``RetryPolicy``;
* order events come from polling ``/orders`` (the bridge has no push channel).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
from collections.abc import AsyncIterator, Callable, Mapping
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any, Literal

from tradebridge.brokers.base import AccountInfo, BrokerCapabilities, BrokerOrderEvent
from tradebridge.brokers.budget import foreground
from tradebridge.brokers.http import (
    BrokerHttp,
    HttpAnswer,
    outcome_unknown_status,
    raise_for_status,
)
from tradebridge.brokers.lookup import (
    UNSURE,
    bracket_mismatch,
    decide_by_shape,
    legs_bracket,
    shape_mismatch,
)
from tradebridge.brokers.retry import RetryPolicy
from tradebridge.brokers.tvbridge import wire
from tradebridge.config import RetryConfig
from tradebridge.domain.commands import (
    Bracket,
    CancelOrder,
    FlattenPosition,
    InterruptStrategy,
    ModifyOrder,
    SubmitOrder,
)
from tradebridge.domain.enums import Dialect, OrderStatus, OrderType
from tradebridge.domain.ids import AccountName, BrokerOrderId, ClientOrderId
from tradebridge.domain.orders import (
    OrderAccepted,
    OrderCancelled,
    OrderEvent,
    OrderFilled,
    OrderModified,
    OrderRejected,
)
from tradebridge.domain.reports import (
    BalanceReport,
    FillReport,
    LookupBaseline,
    LookupResult,
    OrderStatusReport,
    PositionReport,
)
from tradebridge.errors import (
    AuthError,
    BridgeError,
    BrokerError,
    BrokerRejected,
    BrokerUnavailable,
    ConnectionLost,
    InvalidInput,
    InvalidOrder,
    InvalidSymbol,
    Lockout,
    NotFound,
    OutcomeUnknown,
    TransientError,
)
from tradebridge.obs.logging import get_logger
from tradebridge.store.tokens import StoredToken, TokenProvider, renew_after_sending

_log = get_logger("tradebridge.brokers.tvbridge")


FlattenMode = Literal["auto", "close_position", "market_order"]


@dataclass(frozen=True, slots=True)
class TvBridgeOptions:
    """How the adapter behaves where the reference is unverified."""

    # currentBid/currentAsk on every order (reference §9.7: "send them on every order"),
    # never, or on market orders only, where they are observed required ("when_required");
    # sending them reads /quotes first.
    bid_ask: Literal["always", "never", "when_required"] = "always"
    # Flatten by DELETE /positions/{id} when /accounts says supportClosePosition ("auto"),
    # always that way, or always by an opposite-side market order.
    flatten: FlattenMode = "auto"
    poll_interval_s: float = 1.0
    lookup_absent_after_s: float = 10.0  # reference §11.3: no candidate this long → absent
    lookup_poll_s: float = 0.5
    lookup_slack_s: float = 2.0  # clock skew allowed when comparing creation times
    # Read /orders before each submit so a lookup can prove an order new (match_lookup).
    lookup_baseline: bool = True
    cache_ttl_s: float = 300.0
    history_max_count: int = 200
    headers: Mapping[str, str] = field(default_factory=dict)


class _AnsweredUnavailable(BrokerUnavailable):
    """The bridge answered 5xx: a read may retry it; a submit's outcome is unknown."""


class _RefusedAfterSending(BrokerError):
    """An order was answered 401: sent, so its outcome is unknown (never "not sent")."""


class _LockedOutAfterSending(Lockout):
    """The bridge answered a request 423/429: it was sent, so a submit's outcome is unknown.

    A ``Lockout`` raised before sending (the token provider's, shared by another process
    through Redis, or this adapter's own) stays a plain ``Lockout``: nothing left.
    """


class TvBridgeBroker:
    """The TradingView-bridge dialect of Tradovate behind the ``Broker`` protocol."""

    dialect = Dialect.TVBRIDGE
    capabilities = BrokerCapabilities(
        brackets=True,
        modify=True,
        flatten=True,
        push_events=False,
        lookup_by_client_order_id=False,  # whether the bridge echoes requestId is unverified
        quotes=True,  # GET /quotes (reference §9.5)
        # stopLoss/takeProfit are prices only; the legs take the entry's duration (§9.10).
        leg_time_in_force=False,
    )

    def __init__(
        self,
        http: BrokerHttp,
        tokens: TokenProvider,
        *,
        token_account: AccountName,
        accounts: Mapping[AccountName, str | None] | None = None,
        user: str = "default",
        options: TvBridgeOptions | None = None,
        retry: RetryConfig | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._http = http
        self._tokens = tokens
        # A bridge token belongs to the user and covers all its accounts (§9.3); calls that
        # name no account (/accounts, /config, /quotes) use this account's token key.
        self._token_account = token_account
        # Configured accounts: name -> configured bridge id (None: resolve by name).
        self._configured: dict[AccountName, str | None] = dict(accounts or {})
        self._user = user
        self.options = options or TvBridgeOptions()
        self._retry = RetryPolicy(retry) if retry is not None else RetryPolicy(RetryConfig())
        self._now = clock
        self._accounts_cache: tuple[datetime, list[wire.WireAccount], list[dict[str, Any]]]
        self._accounts_cache = (datetime.min.replace(tzinfo=UTC), [], [])
        self._listing: asyncio.Future[list[wire.WireAccount]] | None = None  # in flight
        self._config_cache: wire.WireConfig | None = None
        self._instruments: dict[str, tuple[datetime, set[str]]] = {}
        self._request_ids: dict[str, ClientOrderId] = {}
        self._by_order_id: dict[str, ClientOrderId] = {}  # orders this process placed
        self._locked_until: datetime | None = None
        self._closed = asyncio.Event()
        self._polled = _Polled()  # the events poller's memory (a new one per poller)

    # --- plumbing ---------------------------------------------------------------------

    async def _call(
        self,
        method: str,
        path: str,
        *,
        request_id: str | None = None,
        params: Mapping[str, str] | None = None,
        form: Mapping[str, str] | None = None,
        client_order_id: str | None = None,
        account: str | None = None,
        places_order: bool = False,
    ) -> Any:
        """Send one request (refreshing the token once on 401) and return ``d``.

        With ``places_order`` (an order, or a close of a position) a 401 is not resent: the
        token is renewed for the lookup that must come first and ``_RefusedAfterSending`` is
        raised.
        """
        self._check_lockout()
        key_account = account or self._token_account
        stored = await self._tokens.token(key_account)
        answer = await self._send(method, path, stored.access_token, request_id, params, form,
                                  client_order_id, account)  # fmt: skip
        if answer.status == 401 and places_order:
            raise await self._refused_after_sending(method, path, key_account, stored)
        if answer.status == 401:
            stored = await self._tokens.after_refused(key_account, stored)
            answer = await self._send(method, path, stored.access_token, request_id, params,
                                      form, client_order_id, account)  # fmt: skip
            if answer.status == 401:
                raise AuthError(
                    f"{method} {path}: HTTP 401 twice, the bridge refuses the token even after "
                    "a refresh; store a fresh bridge token (see `tradebridge tokens`) and check "
                    "that it is for this environment"
                )
        return self._interpret(method, path, answer, places_order=places_order)

    async def _refused_after_sending(
        self, method: str, path: str, key_account: str, refused: StoredToken
    ) -> _RefusedAfterSending:
        """Renew a token refused after an order was sent; return the error to raise."""
        renewal = await renew_after_sending(self._tokens, key_account, refused)
        return _RefusedAfterSending(f"{method} {path}: HTTP 401 after sending; {renewal}")

    async def _send(
        self,
        method: str,
        path: str,
        token: str,
        request_id: str | None,
        params: Mapping[str, str] | None,
        form: Mapping[str, str] | None,
        client_order_id: str | None,
        account: str | None,
    ) -> HttpAnswer:
        headers = dict(self.options.headers)
        if form is not None:
            headers["Content-Type"] = wire.FORM_CONTENT_TYPE
        return await self._http.request(
            method,
            path,
            params=wire.query(request_id, **(params or {})),
            form=form,
            token=token,
            budget_key=self._user,
            client_order_id=client_order_id,
            account=account,
            headers=headers,
        )

    def _interpret(
        self, method: str, path: str, answer: HttpAnswer, *, places_order: bool = False
    ) -> Any:
        what = f"{method} {path}"
        if answer.status == 200:
            return wire.unwrap(answer.body)
        if answer.status == 404:
            detail = wire.error_text(answer.body)
            raise NotFound(
                f"{what}: HTTP 404{f' ({detail})' if detail else ''}: the bridge does not know "
                f"this route, account id or order; {wire.DOCTOR_HINT}"
            )
        if answer.status >= 500:
            raise _AnsweredUnavailable(f"{what}: HTTP {answer.status} from the bridge")
        try:
            raise_for_status(answer, what)
        except Lockout as e:
            self._locked_until = e.until
            raise _LockedOutAfterSending(str(e), until=e.until) from e
        except BrokerRejected:
            # A proxy's 408, a 409, an undocumented code: no proof that nothing executed.
            if places_order and outcome_unknown_status(answer.status):
                raise _AnsweredUnavailable(
                    f"{what}: HTTP {answer.status} after sending; the order may exist"
                ) from None
            raise
        raise BrokerUnavailable(f"{what}: unexpected HTTP {answer.status}")

    def _check_lockout(self) -> None:
        until = self._locked_until
        if until is not None and self._now() < until:
            raise Lockout(
                f"the bridge locked user {self._user} out; no calls until "
                f"{until.isoformat(timespec='seconds')}",
                until=until,
            )

    async def _read(self, path: str, params: Mapping[str, str] | None = None) -> Any:
        return await self._retry.run(lambda: self._call("GET", path, params=params))

    # --- connection -------------------------------------------------------------------

    async def connect(self) -> None:
        """Check the token by listing the accounts; idempotent."""
        self._closed.clear()
        await self._listed_accounts(force=True)

    async def close(self) -> None:
        """Close the HTTP client and stop ``events()``; idempotent."""
        self._closed.set()
        await self._http.aclose()

    # --- accounts, config, instruments --------------------------------------------------

    async def _listed_accounts(self, *, force: bool = False) -> list[wire.WireAccount]:
        """Return ``/accounts`` (cached); concurrent callers share one request."""
        fetched, listed, _raw = self._accounts_cache
        fresh = self._now() - fetched < timedelta(seconds=self.options.cache_ttl_s)
        if force or not listed or not fresh:
            flight = self._listing
            if flight is None or flight.done():
                flight = self._listing = asyncio.ensure_future(self._fetch_accounts())
                flight.add_done_callback(_retrieve)
            listed = await asyncio.shield(flight)
        return listed

    async def _fetch_accounts(self) -> list[wire.WireAccount]:
        with foreground():  # orders join this read: never in the background share
            raw = await self._read("/accounts")
        listed = wire.parse_accounts(raw)
        self._accounts_cache = (self._now(), listed, list(raw))
        return listed

    async def accounts(self) -> list[AccountInfo]:
        """Return the token user's accounts with their bridge ids."""
        listed = await self._listed_accounts(force=True)
        return [AccountInfo(name=AccountName(a.name), native_id=None, bridge_id=a.id)
                for a in listed]  # fmt: skip

    async def bridge_id(self, account: AccountName) -> str:
        """Return the ``D...`` id of ``account``; refuse a name configured where the id goes."""
        for force in (False, True):
            listed = await self._listed_accounts(force=force)
            found = resolve_account(account, self._configured.get(account), listed)
            if found is not None:
                return found
        listed = await self._listed_accounts()
        return _unresolved(account, self._configured.get(account), listed)

    async def _supports_close_position(self, account: AccountName) -> bool:
        await self._listed_accounts()
        for raw in self._accounts_cache[2]:
            if raw.get("name") == account or raw.get("id") == self._configured.get(account):
                flags = raw.get("config") or {}
                return bool(isinstance(flags, dict) and flags.get("supportClosePosition"))
        return False

    async def durations(self) -> list[str]:
        """Return the duration ids the server advertises in ``/config``."""
        if self._config_cache is None:
            self._config_cache = wire.parse_config(await self._read("/config"))
        return [d.id for d in self._config_cache.durations]

    async def instruments(self, bridge_id: str, *, force: bool = False) -> set[str]:
        """Return the instrument names an account may trade (cached)."""
        cached = self._instruments.get(bridge_id)
        now = self._now()
        if force or cached is None or now - cached[0] > timedelta(seconds=self.options.cache_ttl_s):
            raw = await self._read(f"/accounts/{bridge_id}/instruments")
            names = {i.name for i in wire.parse_instruments(raw)}
            self._instruments[bridge_id] = (now, names)
            return names
        return cached[1]

    async def _check_instrument(self, bridge_id: str, command: SubmitOrder) -> None:
        contract = command.contract
        today = self._now().date()
        if contract.is_expired(today):
            raise InvalidSymbol(
                f"{contract.name} expired on {contract.expiry().isoformat()}; trade the "
                "current front month instead",
                field="symbol",
            )
        for force in (False, True):
            if contract.name in await self.instruments(bridge_id, force=force):
                return
        raise InvalidSymbol(
            f"{contract.name} is not among the instruments account {command.account} may "
            "trade on the bridge (GET /accounts/{id}/instruments)",
            field="symbol",
        )

    async def quote(self, instrument: str) -> wire.WireQuote:
        """Return the current quote of ``instrument`` from ``/quotes``."""
        data = await self._read("/quotes", {"symbols": instrument})
        return wire.parse_quote(data, instrument)

    async def _bid_ask(self, command: SubmitOrder) -> tuple[Decimal, Decimal] | None:
        if self.options.bid_ask == "never" or (
            self.options.bid_ask == "when_required" and command.order_type is not OrderType.MARKET
        ):
            return None
        quote = await self.quote(command.contract.name)
        bid = quote.bid if quote.bid is not None else quote.lp
        ask = quote.ask if quote.ask is not None else quote.lp
        if bid is None or ask is None:
            raise BrokerUnavailable(
                f"no bid/ask for {command.contract.name} in /quotes; nothing was sent"
            )
        return bid, ask

    # --- orders -----------------------------------------------------------------------

    async def prepare(self, command: SubmitOrder) -> tuple[str, dict[str, str]]:
        """Resolve and validate everything a submit needs; return the path id and form."""
        if command.bracket is not None and command.bracket.relative:
            raise InvalidOrder(
                "the TradingView bridge cannot price bracket legs from the fill; route prices "
                "them from /quotes at submit time (brackets_from_fill is off here)",
                field="bracket",
            )
        bridge_id = await self.bridge_id(command.account)
        await self._check_instrument(bridge_id, command)
        duration = wire.duration_id(command.tif, await self.durations())
        if command.bracket and command.order_type is not OrderType.MARKET:
            _check_bracket_sides(command)
        if command.bracket and command.leg_tif is not command.tif:
            # The form has prices for the legs, no duration: they take the entry's (§9.10).
            raise InvalidOrder(
                f"the bridge gives bracket legs the entry's time in force "
                f"({command.tif.value}); legs {command.leg_tif.value} cannot be sent",
                field="tif",
            )
        bid_ask = await self._bid_ask(command)
        return bridge_id, wire.order_form(command, duration=duration, bid_ask=bid_ask)

    async def submit(self, command: SubmitOrder) -> BrokerOrderId:
        """Send one order exactly once; return the bridge's order id."""
        bridge_id, form = await self.prepare(command)
        request_id = wire.request_id_for(command.client_order_id)
        self._request_ids[request_id] = command.client_order_id
        path = f"/accounts/{bridge_id}/orders"
        # A lockout known before sending (here, or the token provider's) is a Lockout, not
        # an unknown outcome: only one the bridge answered is caught below.
        self._check_lockout()
        try:
            data = await self._call("POST", path, request_id=request_id, form=form,
                                    client_order_id=command.client_order_id,
                                    account=command.account, places_order=True)  # fmt: skip
            order_id = wire.parse_placed(data)
        except (
            ConnectionLost,
            _AnsweredUnavailable,
            _RefusedAfterSending,
            wire.UnparseableAnswer,
            _LockedOutAfterSending,
        ) as e:
            # Sent, and the answer is lost or not a verdict: the order may exist (§6.3).
            raise OutcomeUnknown(
                f"order {command.client_order_id} was sent to the bridge and its outcome is "
                f"unknown ({e}); look it up before sending anything again",
                client_order_id=command.client_order_id,
            ) from e
        self._by_order_id[order_id] = command.client_order_id
        return order_id

    async def lookup_baseline(self, command: SubmitOrder) -> LookupBaseline | None:
        """Return the account's order ids before a submit (None when switched off).

        The bridge has no client order id we can rely on (``requestId`` echo is unverified)
        and its orders may carry no creation time, so "appeared after this submit" is
        proven by this list: ``/orders`` and ``/ordersHistory`` read per submit
        (``lookup_baseline``). The history too: a finished order leaves ``/orders`` after a
        minute (§9.9) and the lookup reads both lists, so an older order found only in the
        history must be known as older, not taken for a new one.
        """
        if not self.options.lookup_baseline:
            return None
        bridge_id = await self.bridge_id(command.account)
        return LookupBaseline.of(o.id for o in await self._all_orders(bridge_id))

    async def lookup(
        self,
        command: SubmitOrder,
        ts_sent: datetime,
        *,
        baseline: LookupBaseline | None = None,
        exclude: frozenset[str] = frozenset(),
    ) -> LookupResult:
        """Find a submit whose outcome is unknown: found, probable, or absent (§11.3)."""
        bridge_id = await self.bridge_id(command.account)
        request_id = wire.request_id_for(command.client_order_id)
        deadline = ts_sent + timedelta(seconds=self.options.lookup_absent_after_s)
        while True:
            orders = await self._all_orders(bridge_id)
            known = {oid: cid for oid, cid in self._by_order_id.items()
                     if cid != command.client_order_id}  # fmt: skip
            result = match_lookup(
                command, request_id, ts_sent, orders,
                baseline=baseline, exclude=exclude | known.keys(),
                slack_s=self.options.lookup_slack_s,
            )  # fmt: skip
            if result.found is not None:
                if not result.probable:
                    # Proof (our requestId came back): this process may name the order ours.
                    # A match by shape is a guess the ledger may still refuse (a row in flight
                    # may own it); remembered here, the tracker would apply its events to this
                    # row as if by our id.
                    self._request_ids[request_id] = command.client_order_id
                    self._by_order_id[result.found.broker_order_id] = command.client_order_id
                return result
            remaining = (deadline - self._now()).total_seconds()
            if remaining <= 0:
                return result
            await asyncio.sleep(min(remaining, self.options.lookup_poll_s))

    async def _all_orders(self, bridge_id: str) -> list[wire.WireOrder]:
        """``/orders`` and ``/ordersHistory``, read side by side (one round trip's wait)."""

        async def read_history() -> Any:
            try:
                return await self._read(
                    f"/accounts/{bridge_id}/ordersHistory",
                    {"maxCount": str(self.options.history_max_count)},
                )
            except NotFound:  # ordersHistory is optional in TradingView's spec
                return []

        current_raw, history_raw = await asyncio.gather(
            self._read(f"/accounts/{bridge_id}/orders"), read_history()
        )
        current = wire.parse_orders(current_raw)
        seen = {o.id for o in current}
        history = [o for o in wire.parse_orders(history_raw) if o.id not in seen]
        return current + history

    async def cancel(self, command: CancelOrder) -> None:
        """Cancel a working order; a cancel that lost to a fill is ``BrokerRejected(TooLate)``."""
        bridge_id = await self.bridge_id(command.account)
        path = f"/accounts/{bridge_id}/orders/{command.broker_order_id}"
        await self._retry.run(lambda: self._call("DELETE", path, account=command.account))

    async def modify(self, command: ModifyOrder) -> None:
        """Change a working order's quantity or prices."""
        bridge_id = await self.bridge_id(command.account)
        path = f"/accounts/{bridge_id}/orders/{command.broker_order_id}"
        form = wire.modify_form(command)
        await self._retry.run(lambda: self._call("PUT", path, form=form, account=command.account))

    async def interrupt_strategy(self, command: InterruptStrategy) -> None:
        """Refuse: order strategies are native only (nothing is sent)."""
        raise InvalidInput(
            f"the TradingView bridge has no order strategies (strategy {command.strategy_id})",
            field="strategy",
        )

    async def flatten(self, command: FlattenPosition) -> None:
        """Cancel working orders on the contract, then close its position."""
        bridge_id = await self.bridge_id(command.account)
        instrument = command.contract.name
        orders = wire.parse_orders(await self._read(f"/accounts/{bridge_id}/orders"))
        for order in orders:
            if order.instrument != instrument or not wire.to_status(order).is_open:
                continue
            try:
                await self.cancel(CancelOrder(command.account, BrokerOrderId(order.id)))
            except BrokerRejected as e:
                if e.reason != wire.TOO_LATE:
                    raise
        positions = wire.parse_positions(await self._read(f"/accounts/{bridge_id}/positions"))
        for position in positions:
            if position.instrument != instrument or position.qty == 0:
                continue
            await self._close(command, bridge_id, position)

    async def _close(
        self, command: FlattenPosition, bridge_id: str, position: wire.WirePosition
    ) -> None:
        mode = self.options.flatten
        if mode == "auto":
            supported = await self._supports_close_position(command.account)
            mode = "close_position" if supported else "market_order"
        if mode == "close_position":
            path = f"/accounts/{bridge_id}/positions/{position.id}"
            # Closes whatever is open then: sent once, a 401 included (_RefusedAfterSending,
            # an unknown outcome; the flatten runs again from a fresh read of the position).
            await self._call("DELETE", path, account=command.account, places_order=True)
            return
        stamp = self._now().isoformat()
        digest = hashlib.sha256(f"{command.account}|{position.id}|{stamp}".encode()).hexdigest()
        closing = SubmitOrder(
            client_order_id=ClientOrderId(f"tbflat{digest[:16]}"),
            account=command.account,
            contract=command.contract,
            side=wire.to_side(position.side).opposite,
            order_type=OrderType.MARKET,
            quantity=int(position.qty),
        )
        await self.submit(closing)

    # --- reports ----------------------------------------------------------------------

    def _placed_here(self, order: wire.WireOrder) -> bool:
        """Return whether this adapter placed ``order`` (or the entry it is a leg of)."""
        placed = self._by_order_id
        return (
            order.id in placed
            or (order.parent_id is not None and order.parent_id in placed)
            or (order.request_id is not None and order.request_id in self._request_ids)
        )

    def _client_id(self, order: wire.WireOrder) -> ClientOrderId | None:
        if order.id in self._by_order_id:
            return self._by_order_id[order.id]
        if order.request_id is None:
            return None
        return self._request_ids.get(order.request_id, ClientOrderId(order.request_id))

    async def order_reports(self, account: AccountName) -> list[OrderStatusReport]:
        """Return the account's orders, current and finished."""
        bridge_id = await self.bridge_id(account)
        return [wire.to_order_report(o, account, self._client_id(o))
                for o in await self._all_orders(bridge_id)]  # fmt: skip

    async def working_orders(self, account: AccountName) -> list[OrderStatusReport]:
        """Return the account's orders not final, from ``/orders`` alone (one read)."""
        bridge_id = await self.bridge_id(account)
        current = wire.parse_orders(await self._read(f"/accounts/{bridge_id}/orders"))
        reports = (wire.to_order_report(o, account, self._client_id(o)) for o in current)
        return [r for r in reports if not r.status.is_terminal]

    async def order_report(
        self, account: AccountName, broker_order_id: BrokerOrderId
    ) -> OrderStatusReport:
        """Return one order; ``NotFound`` if the bridge has no such order."""
        bridge_id = await self.bridge_id(account)
        try:
            data = await self._read(f"/accounts/{bridge_id}/orders/{broker_order_id}")
            order = wire.parse_order(data)
        except NotFound:
            for candidate in await self._all_orders(bridge_id):
                if candidate.id == broker_order_id:
                    order = candidate
                    break
            else:
                raise
        return wire.to_order_report(order, account, self._client_id(order))

    async def fill_reports(self, account: AccountName) -> list[FillReport]:
        """Return the account's executions."""
        bridge_id = await self.bridge_id(account)
        data = await self._read(f"/accounts/{bridge_id}/executions")
        now = self._now()
        return [wire.to_fill_report(x, account, now) for x in wire.parse_executions(data)]

    async def position_reports(
        self,
        account: AccountName,
        *,
        fresh: bool = False,  # noqa: ARG002 - always read now: the bridge has no stream
    ) -> list[PositionReport]:
        """Return the account's open positions."""
        bridge_id = await self.bridge_id(account)
        data = await self._read(f"/accounts/{bridge_id}/positions")
        return [wire.to_position_report(p, account) for p in wire.parse_positions(data)]

    async def balance(self, account: AccountName) -> BalanceReport:
        """Return the account's balance and open P&L (``/accounts/{id}/state``)."""
        bridge_id = await self.bridge_id(account)
        state = wire.parse_state(await self._read(f"/accounts/{bridge_id}/state"))
        return BalanceReport(account, state.balance, state.unrealized_pl)

    # --- events -----------------------------------------------------------------------

    async def events(self) -> AsyncIterator[BrokerOrderEvent]:
        """Poll ``/orders`` of every configured account and yield what changed.

        The first poll is the baseline: what it shows of orders this adapter did not place
        is reconcile's business, not events (the bridge's orders carry no creation time to
        tell a recent one from an old one). Orders this adapter placed (or their legs) are
        reported in full, however far they went before the first poll (a market order filled
        before it): as soon as they are known to be ours, if that is only after the baseline
        saw them (the submit's answer landed after the poll).

        An account that cannot be polled (not listed by the bridge, 404, no token, an
        unreadable answer) is logged once per distinct failure and skipped; the others go on.
        A lockout pauses every account of the user until it ends.
        """
        polled = self._polled = _Polled()
        failing = _PollFailures()
        while not self._closed.is_set():
            for account in list(self._configured):
                try:
                    bridge_id = await self.bridge_id(account)
                    data = await self._read(f"/accounts/{bridge_id}/orders")
                    orders = wire.parse_orders(data)
                except Lockout as e:
                    # The whole user is stopped (§6.3: 423/429), not this account: no call
                    # for any of its accounts until the lockout ends.
                    _log.error("bridge_poll_locked_out", user=self._user, account=account,
                               until=e.until.isoformat(timespec="seconds"))  # fmt: skip
                    await self._pause_until(e.until)
                    break
                except BridgeError as e:
                    # One account's failure (unlisted, 404, unreadable, no token) must not
                    # stop the others' events: note it once, poll the rest.
                    failing.failed(account, e)
                    continue
                # An account's first good listing is its baseline, however late it comes.
                baseline = not polled.seen(account)
                found: list[tuple[wire.WireOrder, list[OrderEvent]]] = []
                unreadable: wire.UnparseableAnswer | None = None
                now = self._now()
                for before, order in polled.changes(account, orders, baseline, self._placed_here):
                    try:
                        found.append((order, order_events(before, order, now)))
                    except wire.UnparseableAnswer as e:
                        # One order we cannot read (an unknown status) waits, compared with
                        # what was last read of it, until it reads; the others go on.
                        polled.restore(account, order.id, before)
                        unreadable = unreadable or e
                if unreadable is None:
                    failing.recovered(account)
                else:
                    failing.failed(account, unreadable, reason=_UNREADABLE_ORDER)
                for order, events in found:
                    for event in events:
                        yield BrokerOrderEvent(
                            account, BrokerOrderId(order.id), self._client_id(order), event,
                            None if order.parent_id is None else BrokerOrderId(order.parent_id),
                        )  # fmt: skip
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._closed.wait(), self.options.poll_interval_s)

    async def _pause_until(self, until: datetime) -> None:
        """Wait until ``until`` (at least one poll interval) or until closed."""
        wait_s = max((until - self._now()).total_seconds(), self.options.poll_interval_s)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._closed.wait(), wait_s)


class _PollFailures:
    """The events poller's failing accounts: each distinct failure is logged once."""

    def __init__(self) -> None:
        self._last: dict[AccountName, str] = {}

    def failed(self, account: AccountName, error: BridgeError, reason: str | None = None) -> None:
        """Log ``error`` for ``account`` unless it is the one logged last time."""
        key = f"{type(error).__name__}: {error}"
        if self._last.get(account) == key:
            return
        self._last[account] = key
        _log.warning("bridge_poll_failed", account=account,
                     reason=reason or _poll_reason(error), error=str(error))  # fmt: skip

    def recovered(self, account: AccountName) -> None:
        """Note that ``account`` was polled again after failing."""
        if self._last.pop(account, None) is not None:
            _log.info("bridge_poll_recovered", account=account)


_UNREADABLE_ORDER = (
    "an order in this account's listing cannot be read (see error); its events wait until it "
    "reads, the account's other orders are followed"
)


def _poll_reason(error: BridgeError) -> str:
    """Return in plain words why an account's orders could not be polled."""
    if isinstance(error, InvalidInput):
        return (
            "the bridge does not list this account for the token's user (closed, blown, or "
            "configured with the wrong id); its orders are not followed until it is listed"
        )
    if isinstance(error, NotFound):
        return "the bridge answered 404 for this account's orders (see `tradebridge doctor`)"
    if isinstance(error, AuthError):
        return "the bridge refused the token or none is stored; polling resumes with a new one"
    if isinstance(error, wire.UnparseableAnswer):
        return "the bridge's answer for this account is not its JSON envelope; polling goes on"
    if isinstance(error, TransientError):
        return "the bridge did not answer in time or answered 5xx; polling goes on"
    return "the bridge's answer for this account could not be used; polling goes on"


class _Polled:
    """What the events poller last saw of each account's orders, and nothing older.

    An order is held while the account's ``/orders`` lists it (a finished one for at least a
    minute, §11.3), so the memory is the size of the listings, not of the process's history.
    One that came back after it was forgotten would be reported in full again: the tracker
    takes a fill's running total, not its sum, so that repeats nothing.
    """

    def __init__(self) -> None:
        self._orders: dict[AccountName, dict[str, wire.WireOrder]] = {}
        self._hidden: dict[AccountName, set[str]] = {}  # in the baseline, not known as ours

    def __len__(self) -> int:
        return sum(len(orders) for orders in self._orders.values())

    def seen(self, account: AccountName) -> bool:
        """Return whether ``account`` was listed once (its baseline is taken)."""
        return account in self._orders

    def restore(self, account: AccountName, order_id: str, before: wire.WireOrder | None) -> None:
        """Remember ``before`` again for an order whose latest listing could not be used
        (None: forget it, so that it is reported in full once it can be)."""
        orders = self._orders.setdefault(account, {})
        if before is None:
            orders.pop(order_id, None)
        else:
            orders[order_id] = before

    def changes(
        self,
        account: AccountName,
        orders: list[wire.WireOrder],
        baseline: bool,
        placed_here: Callable[[wire.WireOrder], bool],
    ) -> list[tuple[wire.WireOrder | None, wire.WireOrder]]:
        """Return (what was seen before or None, the order now) of each order to report.

        On the ``baseline`` poll an order not ``placed_here`` is remembered but not
        reported, until it is known as placed here (then it is reported in full).
        """
        known = self._orders.get(account, {})
        hidden = self._hidden.get(account, set())
        listed: dict[str, wire.WireOrder] = {}
        still_hidden: set[str] = set()
        out: list[tuple[wire.WireOrder | None, wire.WireOrder]] = []
        for order in orders:
            listed[order.id] = order
            before = known.get(order.id)
            if baseline or order.id in hidden:
                if not placed_here(order):
                    still_hidden.add(order.id)
                    continue
                before = None
            out.append((before, order))
        self._orders[account] = listed
        self._hidden[account] = still_hidden
        return out


def _retrieve(task: asyncio.Future[Any]) -> None:
    """Mark a shared read's error as seen: the callers still waiting get it raised."""
    if not task.cancelled():
        task.exception()


# --- pure helpers (unit-tested) ------------------------------------------------------


def resolve_account(
    account: AccountName, configured: str | None, listed: list[wire.WireAccount]
) -> str | None:
    """Return the bridge id for ``account``, None if not listed; refuse a name as id."""
    by_id = {a.id: a for a in listed}
    by_name = {a.name: a for a in listed}
    if configured:
        if configured in by_id:
            return configured
        if configured in by_name:
            right = by_name[configured].id
            raise InvalidInput(
                f"ACCOUNT_NAME_USED_AS_ID: account {account} is configured with bridge id "
                f"{configured!r}, which is an account name; use the id {right!r} instead",
                field="account",
            )
        return None
    if account in by_name:
        return by_name[account].id
    if account in by_id:
        return account
    return None


def _unresolved(
    account: AccountName, configured: str | None, listed: list[wire.WireAccount]
) -> str:
    valid = ", ".join(f"{a.id} ({a.name})" for a in listed) or "none"
    if configured:
        raise InvalidInput(
            f"ACCOUNT_ID_NOT_FOUND: bridge id {configured!r} of account {account} is not "
            f"among this token's accounts: {valid}; check the id and the environment",
            field="account",
        )
    raise InvalidInput(
        f"account {account!r} is not among this token's bridge accounts: {valid}",
        field="account",
    )


def _check_bracket_sides(command: SubmitOrder) -> None:
    bracket = command.bracket
    price = command.limit_price or command.stop_price
    if bracket is None or price is None:
        return
    sign = command.side.sign
    if bracket.stop_loss is not None and (bracket.stop_loss - price) * sign >= 0:
        raise InvalidOrder(f"stop loss {bracket.stop_loss} is on the wrong side of {price}",
                           field="stop_loss")  # fmt: skip
    if bracket.take_profit is not None and (bracket.take_profit - price) * sign <= 0:
        raise InvalidOrder(f"take profit {bracket.take_profit} is on the wrong side of {price}",
                           field="take_profit")  # fmt: skip


def match_lookup(
    command: SubmitOrder,
    request_id: str,
    ts_sent: datetime,
    orders: list[wire.WireOrder],
    *,
    baseline: LookupBaseline | None,
    exclude: AbstractSet[str] = frozenset(),
    slack_s: float = 2.0,
) -> LookupResult:
    """Return what became of a lost submit: found (our ``requestId``), probable, or absent.

    By shape (no echo) an order is ours only if nothing else can own it: not echoing another
    ``requestId``, not a bracket leg, not in ``exclude`` (other rows' and this process's
    orders), provably new (absent from ``baseline`` or created after the submit), and equal in
    instrument, side, type, quantity, prices and bracket (``brokers/lookup.py``). Raises
    ``LookupAmbiguous`` when it cannot tell.
    """
    cid = command.client_order_id
    account = command.account
    legs: dict[str, list[wire.WireOrder]] = {}
    for order in orders:
        if order.parent_id is not None:
            legs.setdefault(order.parent_id, []).append(order)
    matches: list[OrderStatusReport] = []
    unsure: list[str] = []
    evidence: list[str] = []
    for order in orders:
        if order.request_id is not None and order.request_id == request_id:
            return LookupResult(cid, wire.to_order_report(order, account, cid))
        if order.parent_id is not None:
            continue
        why = _not_ours(order, command, request_id, ts_sent, baseline, exclude, slack_s)
        report: OrderStatusReport | None = None
        if why is None:
            try:
                report = wire.to_order_report(order, account, None)
                leg_reports = [wire.to_order_report(leg, account, None)
                               for leg in legs.get(order.id, [])]  # fmt: skip
            except BrokerError as e:
                why = f"{UNSURE}: unreadable ({e})"
            else:
                why = shape_mismatch(report, command) or bracket_mismatch(
                    command, legs_bracket(leg_reports) or _parent_bracket(order)
                )
        if why is None and report is not None:
            matches.append(report)
        elif why is not None:
            if why.startswith(UNSURE):
                unsure.append(order.id)
            evidence.append(f"{order.id}: {why}")
    return decide_by_shape(cid, matches, unsure, tuple(evidence))


def _not_ours(
    order: wire.WireOrder,
    command: SubmitOrder,
    request_id: str,
    ts_sent: datetime,
    baseline: LookupBaseline | None,
    exclude: AbstractSet[str],
    slack_s: float,
) -> str | None:
    """Return why an entry order cannot be this submit's (``unsure: …`` if unprovable)."""
    if order.request_id is not None:
        return f"echoes another requestId ({order.request_id}, ours {request_id})"
    if order.instrument != command.contract.name:
        return f"instrument {order.instrument}, not {command.contract.name}"
    if order.id in exclude:
        return "owned by another ledger row or placed by this process"
    if baseline is not None and baseline.existed_before(order.id):
        return "existed before the submit"
    created = order.ts_created
    if created is not None and created < ts_sent - timedelta(seconds=slack_s):
        return f"created {created.isoformat()}, before the submit"
    if created is not None and created < ts_sent:
        return f"{UNSURE}: created {created.isoformat()}, just before the submit"
    if created is None and baseline is None:
        return f"{UNSURE}: no creation time and no baseline to prove it new"
    return None


def _parent_bracket(order: wire.WireOrder) -> Bracket | None:
    """Return the bracket the bridge reports on the entry itself, if any."""
    if order.stop_loss is None and order.take_profit is None:
        return None
    return Bracket(order.stop_loss, order.take_profit)


def order_events(
    before: wire.WireOrder | None, after: wire.WireOrder, now: datetime
) -> list[OrderEvent]:
    """Return the events that turn ``before`` (None: never seen) into ``after``."""
    events: list[OrderEvent] = []
    old = wire.to_status(before) if before is not None else None
    new = wire.to_status(after)
    if new is OrderStatus.REJECTED:
        if old is not OrderStatus.REJECTED:
            events.append(OrderRejected("rejected", after.message, now))
        return events
    if old in (None, OrderStatus.SUBMITTED) and new is not OrderStatus.SUBMITTED:
        events.append(OrderAccepted(BrokerOrderId(after.id), now))
    old_filled = before.filled_qty if before is not None else Decimal(0)
    if after.filled_qty > old_filled:
        delta = after.filled_qty - old_filled
        # The bridge names no fill: the order and the quantity filled so far name this one
        # (the same for every worker polling it).
        fill_id = f"{after.id}@{after.filled_qty}"
        events.append(
            OrderFilled(int(delta), _fill_price(before, after, delta), now, fill_id,
                        total_qty=int(after.filled_qty), total_avg=after.avg_price)
        )  # fmt: skip
    if (
        before is not None
        and new.is_open
        and (before.qty, before.limit_price, before.stop_price)
        != (after.qty, after.limit_price, after.stop_price)
    ):
        events.append(OrderModified(int(after.qty), after.limit_price, after.stop_price, now))
    if new is OrderStatus.CANCELLED and old is not OrderStatus.CANCELLED:
        events.append(OrderCancelled(now))
    return events


def _fill_price(before: wire.WireOrder | None, after: wire.WireOrder, delta: Decimal) -> Decimal:
    avg = after.avg_price or after.limit_price or after.stop_price or Decimal(0)
    if before is None or before.filled_qty == 0 or before.avg_price is None:
        return avg
    # The bridge reports an average; the price of the new part follows from the two averages.
    total = avg * after.filled_qty - before.avg_price * before.filled_qty
    return total / delta

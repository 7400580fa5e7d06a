"""The native Tradovate dialect (``/v1``): one dispatcher for REST and the WebSocket.

``NativeApi.handle`` answers a (method, endpoint, query, body, token) request with a
``NativeAnswer``; the REST router below and the WebSocket both call it, so the two
transports cannot disagree. Endpoints match case-insensitively, as Tradovate's do
(``accesstokenrequest`` = ``accessTokenRequest``). Wire shapes follow
reference/tradovate-api.md §2-§6; entity serializers live in ``_native_wire`` and are
re-exported here as ``to_wire``.

Choices where the reference is silent or unverified:

* Bodies: 401, 404, 405 and 423 carry a short text body (``Access is denied``,
  ``Not found``, ``Method not allowed``, ``Locked``); 400 carries a short text saying
  what is wrong. Over REST a text body is ``text/plain``.
* A wrong HTTP method on a known endpoint is 405 (``renewaccesstoken`` included: its
  methods come from ``SimConfig.renew_methods``).
* Logins: the app check (``SimConfig.app_secrets``, cid as number or string) comes before
  the password check and does not count as a failed login. After
  ``faults.failed_logins_before_423`` consecutive failed logins of one name, every login
  of that name is 423 until the counter is cleared (``ctx.auth.failed_logins``); a success
  before that resets the count.
* Login penalties: ``faults.login_penalty == "ticket"`` answers each fresh login with a
  p-ticket; a resend with that ticket after ``p-time`` (by the simulator's clock) is
  handled as a normal login, a resend too early gets a new ticket. Tickets are signed and
  stateless (any ``NativeApi`` of the process accepts them) and are not consumed.
  ``"captcha"`` answers every login with ``p-captcha: true`` and never accepts.
  ``faults.order_penalty`` does the same for order commands (place, OSO, OCO, modify,
  cancel, liquidate, strategies): a penalised command is not executed, and only the resend
  of that user's same command carrying the ticket, after ``p-time``, is.
* Tokens of both kinds (native and bridge ``/authorize``) are accepted on ``/v1``.
* ``find`` without a match is 404; ``items`` leaves out unknown and foreign ids; ``deps``
  of a foreign or unknown master is an empty list. Another user's entity is 404 on ``item``
  and left out of lists.
* Order commands on an unknown or foreign account or order answer HTTP 200
  ``{"failureReason": "UnknownReason", "failureText": "Access is denied"}`` (reference
  §5.1, TI#45); ``accountSpec`` and ``accountId`` naming different accounts answer the
  same with a text that says so.
* Order bodies: a missing required field, a wrong JSON type or an unknown enum value is
  400 with a text naming the field. Lowercase enums (``buy``, ``limit``) are 400 when
  ``SimConfig.lowercase_enums == "reject"`` (the default; the real answer is unverified)
  and accepted when ``"accept"``. Known but unmodelled order types (``TrailingStop``,
  ``MIT``, ``QTS`` ..., and the tutorial's typo ``TralingStop``) are ``Unsupported``.
* Order results are exactly ``{orderId}``, ``{orderId, oso1Id[, oso2Id]}``,
  ``{orderId, ocoId}``, ``{commandId}`` or ``{failureReason, failureText}``, except that a
  refusal which leaves an entity behind names it: a risk-rejected placement adds the
  ``orderId`` of its ``Rejected`` order, a refused modify or cancel (``TooLate``) the
  ``commandId`` of its rejected command (§5.1 lets ``orderId`` and ``failureReason`` meet).
* Drop faults (``faults.should_drop_answer``) apply to accepted placements (placeorder,
  placeoso, placeoco, liquidateposition, startorderstrategy), not to modify, cancel,
  liquidatepositions or interruptorderstrategy.
* ``orderStrategy/startorderstrategy`` (reference §5.8): ``params`` must be a JSON string
  ``{"entryVersion": {...}, "brackets": [{qty, profitTarget?, stopLoss?, trailingStop?,
  breakeven?}]}`` (a body that is not is 400; the ``breakeven`` key is
  ``SimConfig.strategy_breakeven_key``); ``profitTarget`` is positive, ``stopLoss``
  negative, both in ``SimConfig.strategy_units`` (price points by default, or ticks) from
  the entry's fill.
  The answer is ``{"orderStrategy": {...}}`` (also for a risk-rejected entry: its status is
  ``ExecutionFailed``) or ``{"errorText": "<reason>: <text>"}``; ``isAutomated`` is neither
  asked nor checked (the request has no such field). ``interruptorderstrategy``
  ``{orderStrategyId}`` answers the same shape. ``modifyorderstrategy`` is not modelled: it
  answers ``{"errorText": "Unsupported: ..."}``. Reads: ``orderStrategy`` (masters:
  accounts) and ``orderStrategyLink`` (masters: strategies).
* A trailing slash or an empty path segment is 404, like any mangled URL (§10.1 H5).
* An unknown route is 401 without a valid token, else 404. ``faults.missing_routes``
  (e.g. ``*/ldeps``) makes known routes answer the same way, to play a broker or proxy
  that lacks them.
* ``contractMaturity/item`` knows the maturities of listed (unexpired) contracts only.
* ``cashBalance/getcashbalancesnapshot`` for an unknown or foreign account answers HTTP
  200 ``{"errorText": "Access is denied"}`` (§6.1). Margins are the simulator's estimate
  (``_MARGIN_RATE`` of the notional value), not an exchange's schedule.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from decimal import Decimal
from typing import Any
from urllib.parse import parse_qsl

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse, PlainTextResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from tradebridge.domain.enums import TimeInForce
from tradebridge.domain.products import PRODUCTS
from tradebridge.sim._native_orders import (
    BadRequest,
    OrderBody,
    Unsupported,
    parse_bracket,
    parse_strategy_params,
)
from tradebridge.sim._native_wire import (
    PRODUCT_IDS,
    contract_maturity_wire,
    iso,
    number,
    product_wire,
    to_wire,
)
from tradebridge.sim.auth import IssuedToken, Session
from tradebridge.sim.config import SimUserConfig
from tradebridge.sim.context import SimContext
from tradebridge.sim.engine import (
    BracketRequest,
    CommandResult,
    OrderRequest,
    PlaceResult,
    SimAccount,
    SimContract,
    SimEngine,
)
from tradebridge.sim.faults import (
    NATIVE_PREFIX,
    DropAnswer,
    bearer_token,
    route_missing,
    should_drop_answer,
)

__all__ = ["NativeAnswer", "NativeApi", "build_router", "to_wire"]

BAD_CREDENTIALS = (
    "Incorrect username or password. Please try again. Note: passwords are case-sensitive."
)
APP_NOT_REGISTERED = "The app is not registered"
ACCESS_DENIED = "Access is denied"
_MARGIN_RATE = Decimal("0.05")
_MAINTENANCE_SHARE = Decimal("0.9")
_SUGGEST_DEFAULT = 10
# The commands ``faults.order_penalty`` answers with a p-ticket (reference §2.3, §5.5, §8.8).
_PENALISED_COMMANDS = frozenset(
    {
        "order/placeorder",
        "order/placeoso",
        "order/placeoco",
        "order/modifyorder",
        "order/cancelorder",
        "order/liquidateposition",
        "order/liquidatepositions",
        "orderstrategy/startorderstrategy",
        "orderstrategy/interruptorderstrategy",
    }
)
# Signs penalty tickets; per process, so a ticket never outlives the simulator that made it.
_TICKET_KEY = secrets.token_bytes(32)


@dataclass(frozen=True, slots=True)
class NativeAnswer:
    """An answer: HTTP status and a JSON-able body (a ``str`` is a short text, None empty)."""

    status: int
    body: Any = None


def _ok(body: Any) -> NativeAnswer:
    return NativeAnswer(200, body)


_UNAUTHORIZED = NativeAnswer(401, ACCESS_DENIED)
_NOT_FOUND = NativeAnswer(404, "Not found")
_METHOD_NOT_ALLOWED = NativeAnswer(405, "Method not allowed")
_LOCKED = NativeAnswer(423, "Locked")


class _NotFoundError(Exception):
    """Answer 404."""


@dataclass(frozen=True, slots=True)
class _Call:
    session: Session
    query: Mapping[str, str]
    body: Any

    @property
    def user(self) -> SimUserConfig:
        return self.session.user

    def query_int(self, key: str) -> int:
        raw = self.query.get(key)
        if raw is None:
            raise BadRequest(f"{key} is required")
        try:
            return int(raw)
        except ValueError:
            raise BadRequest(f"{key} must be an integer") from None

    def query_ints(self, key: str) -> list[int]:
        raw = self.query.get(key)
        if raw is None:
            raise BadRequest(f"{key} is required")
        try:
            return [int(part) for part in raw.split(",") if part.strip()]
        except ValueError:
            raise BadRequest(f"{key} must be integers separated by commas") from None

    def query_str(self, key: str) -> str:
        raw = self.query.get(key)
        if raw is None or not raw:
            raise BadRequest(f"{key} is required")
        return raw


@dataclass(frozen=True, slots=True)
class _Entity:
    """How the generic reads (list, item, items, deps, ldeps, find) see one entity type."""

    visible: Callable[[_Call], Sequence[Any]]  # every entity this user may see
    deps: Callable[[_Call, int], Sequence[Any]] | None = None  # children of a master
    by_id: Callable[[_Call, int], Any | None] | None = None  # beyond ``visible`` (expired)
    find: Callable[[_Call, str], Any | None] | None = None
    wire: Callable[[Any], dict[str, Any]] = to_wire


Handler = Callable[[_Call], NativeAnswer]


class NativeApi:
    """The native REST dialect's logic, shared by the REST router and the WebSocket."""

    def __init__(self, ctx: SimContext) -> None:
        self.ctx = ctx
        self._entities = self._entity_table()
        self._actions: dict[str, tuple[str, Handler]] = {
            "auth/me": ("GET", self._me),
            "contractmaturity/item": ("GET", self._contract_maturity),
            "product/find": ("GET", self._product_find),
            "product/item": ("GET", self._product_item),
            "product/list": ("GET", self._product_list),
            "cashbalance/getcashbalancesnapshot": ("POST", self._cash_snapshot),
            "order/placeorder": ("POST", self._place_order),
            "order/placeoso": ("POST", self._place_oso),
            "order/placeoco": ("POST", self._place_oco),
            "order/modifyorder": ("POST", self._modify_order),
            "order/cancelorder": ("POST", self._cancel_order),
            "order/liquidateposition": ("POST", self._liquidate_position),
            "order/liquidatepositions": ("POST", self._liquidate_positions),
            "orderstrategy/startorderstrategy": ("POST", self._start_strategy),
            "orderstrategy/interruptorderstrategy": ("POST", self._interrupt_strategy),
            "orderstrategy/modifyorderstrategy": ("POST", self._modify_strategy),
        }

    @property
    def engine(self) -> SimEngine:
        """Return the simulator's state."""
        return self.ctx.engine

    async def handle(
        self,
        method: str,
        endpoint: str,
        query: Mapping[str, str],
        body: Any,
        token: str | None,
    ) -> NativeAnswer:
        """Answer one native request (``endpoint`` without ``/v1``, e.g. ``order/list``).

        Raises ``DropAnswer`` after an order was accepted when the drop fault fires; the
        transport must then lose the answer.
        """
        method = method.upper()
        key = endpoint.lstrip("/").lower()
        if key.endswith("/") or "//" in key:
            return _NOT_FOUND  # a mangled URL is a route that does not exist (§10.1 H5)
        missing = route_missing(self.ctx, key)
        try:
            if key == "auth/accesstokenrequest" and not missing:
                return self._login(body) if method == "POST" else _METHOD_NOT_ALLOWED
            if key == "auth/renewaccesstoken" and not missing:
                if method not in self.ctx.config.renew_methods:
                    return _METHOD_NOT_ALLOWED
                return self._renew(token)
            session = self.ctx.auth.verify(token) if token else None
            if session is None:
                return _UNAUTHORIZED
            if missing:
                return _NOT_FOUND  # faults.missing_routes: answered as an undefined route
            call = _Call(session, query, body)
            action = self._actions.get(key)
            if action is not None:
                expected, handler = action
                if method != expected:
                    return _METHOD_NOT_ALLOWED
                return self._order_penalty(key, call) or handler(call)
            entity_name, _, operation = key.partition("/")
            entity = self._entities.get(entity_name)
            if entity is None or "/" in operation:
                return _NOT_FOUND
            if method != "GET":
                return _METHOD_NOT_ALLOWED
            return self._read(entity, operation, call)
        except BadRequest as exc:
            return NativeAnswer(400, str(exc))
        except _NotFoundError:
            return _NOT_FOUND

    # --- authentication -------------------------------------------------------------------
    def _login(self, raw: Any) -> NativeAnswer:
        body = OrderBody(raw, lowercase_enums="reject")
        name = body.string("name", required=True) or ""
        password = body.string("password", required=True) or ""
        faults = self.ctx.faults
        auth = self.ctx.auth
        if auth.failed_logins.get(name, 0) >= faults.failed_logins_before_423:
            return _LOCKED
        if faults.login_penalty == "captcha":
            return _ok(self._penalty(name, captcha=True))
        if faults.login_penalty == "ticket" and not self._ticket_ripe(name, body.body):
            return _ok(self._penalty(name, captcha=False))
        if not self._app_registered(body.body):
            return _ok({"errorText": APP_NOT_REGISTERED})
        user = auth.user_by_credentials(name, password)
        if user is None:
            auth.failed_logins[name] = auth.failed_logins.get(name, 0) + 1
            return _ok({"errorText": BAD_CREDENTIALS})
        auth.failed_logins.pop(name, None)
        return _ok(self._token_body(auth.issue(user, "native"), user))

    def _app_registered(self, body: Mapping[str, Any]) -> bool:
        apps = self.ctx.config.app_secrets
        if not apps:
            return True
        raw_cid = body.get("cid")
        if isinstance(raw_cid, bool):
            return False
        try:
            cid = int(raw_cid) if isinstance(raw_cid, int | str) else None
        except ValueError:
            return False
        secret = body.get("sec")
        known = apps.get(cid) if cid is not None else None
        return (
            known is not None
            and isinstance(secret, str)
            and hmac.compare_digest(known.encode(), secret.encode())
        )

    def _penalty(self, name: str, *, captcha: bool) -> dict[str, Any]:
        seconds = self.ctx.faults.penalty_seconds
        ripe_at = self.ctx.clock.now().timestamp() + seconds
        return {"p-ticket": _make_ticket(name, ripe_at), "p-time": seconds, "p-captcha": captcha}

    def _ticket_ripe(self, name: str, body: Mapping[str, Any]) -> bool:
        ticket = body.get("p-ticket")
        if not isinstance(ticket, str):
            return False
        ripe_at = _read_ticket(ticket, name)
        return ripe_at is not None and self.ctx.clock.now().timestamp() >= ripe_at

    def _order_penalty(self, key: str, call: _Call) -> NativeAnswer | None:
        """Return the p-ticket penalty of ``faults.order_penalty`` (the command not executed)."""
        mode = self.ctx.faults.order_penalty
        if mode == "off" or key not in _PENALISED_COMMANDS:
            return None
        subject = f"{call.user.name}:{key}"  # a ticket is good for that user and command only
        if mode == "captcha":
            return _ok(self._penalty(subject, captcha=True))
        body = call.body if isinstance(call.body, Mapping) else {}
        if self._ticket_ripe(subject, body):
            return None
        return _ok(self._penalty(subject, captcha=False))

    def _renew(self, token: str | None) -> NativeAnswer:
        session = self.ctx.auth.verify(token) if token else None
        issued = self.ctx.auth.renew(token) if token and session else None
        if session is None or issued is None:
            return _UNAUTHORIZED
        return _ok(self._token_body(issued, session.user))

    @staticmethod
    def _token_body(issued: IssuedToken, user: SimUserConfig) -> dict[str, Any]:
        return {
            "accessToken": issued.token,
            # The simulator serves no market-data socket; the same token stands in for it.
            "mdAccessToken": issued.token,
            "expirationTime": iso(issued.expires),
            "userStatus": "Active",
            "userId": user.id,
            "name": user.name,
            "hasLive": False,
        }

    def _me(self, call: _Call) -> NativeAnswer:
        user = call.user
        return _ok(
            {
                "userId": user.id,
                "name": user.name,
                "fullName": f"{user.name.capitalize()} Simulator",
                "email": f"{user.name}@sim.tradebridge.invalid",
                "emailVerified": True,
                "isTrial": False,
            }
        )

    # --- generic entity reads --------------------------------------------------------------
    def _entity_table(self) -> dict[str, _Entity]:
        engine = self.ctx.engine

        def owned(call: _Call) -> list[SimAccount]:
            return engine.accounts(call.user.id)

        def owned_ids(call: _Call) -> set[int]:
            return {account.id for account in owned(call)}

        def order_ids(call: _Call) -> set[int]:
            ids = owned_ids(call)
            return {order.id for order in engine.orders() if order.account_id in ids}

        def own_account(call: _Call, account_id: int) -> bool:
            return account_id in owned_ids(call)

        def own_order(call: _Call, order_id: int) -> bool:
            order = engine.order(order_id)
            return order is not None and own_account(call, order.account_id)

        def of_accounts(items: Iterable[Any], call: _Call) -> list[Any]:
            # The user's account ids once per read, not once per item.
            ids = owned_ids(call)
            return [item for item in items if item.account_id in ids]

        def one(kind: str, owner: Callable[[Any], int], by_order: bool = False) -> Any:
            # ``item``/``items`` by id: a dictionary lookup, then the ownership check.
            def by_id(call: _Call, item_id: int) -> Any | None:
                item = engine.entity(kind, item_id)
                if item is None:
                    return None
                mine = own_order(call, owner(item)) if by_order else own_account(call, owner(item))
                return item if mine else None

            return by_id

        def own_strategy(call: _Call, strategy_id: int) -> bool:
            strategy = engine.order_strategy(strategy_id)
            return strategy is not None and own_account(call, strategy.account_id)

        def account_find(call: _Call, name: str) -> SimAccount | None:
            account = engine.account_by_name(name)
            return account if account is not None and account.user_id == call.user.id else None

        return {
            "account": _Entity(visible=owned, find=account_find),
            "contract": _Entity(
                visible=lambda _call: engine.listed_contracts(),
                by_id=lambda _call, contract_id: engine.contract(contract_id),
                find=lambda _call, name: engine.find_contract(name),
            ),
            "order": _Entity(
                visible=lambda call: of_accounts(engine.orders(), call),
                deps=lambda call, account_id: (
                    engine.orders(account_id) if own_account(call, account_id) else []
                ),
                by_id=one("order", lambda o: o.account_id),
            ),
            "orderversion": _Entity(
                visible=lambda call: [
                    version
                    for order_id in sorted(order_ids(call))
                    for version in engine.order_versions(order_id)
                ],
                deps=lambda call, order_id: (
                    engine.order_versions(order_id) if own_order(call, order_id) else []
                ),
                by_id=one("orderVersion", lambda v: v.order_id, by_order=True),
            ),
            "executionreport": _Entity(
                visible=lambda call: of_accounts(engine.execution_reports(), call),
                deps=lambda call, order_id: (
                    engine.execution_reports(order_id) if own_order(call, order_id) else []
                ),
                by_id=one("executionReport", lambda r: r.account_id),
            ),
            "command": _Entity(
                visible=lambda call: _own_items(engine.commands(), order_ids(call)),
                deps=lambda call, order_id: (
                    engine.commands(order_id) if own_order(call, order_id) else []
                ),
                by_id=one("command", lambda c: c.order_id, by_order=True),
            ),
            "fill": _Entity(
                visible=lambda call: of_accounts(engine.fills(), call),
                deps=lambda call, order_id: (
                    engine.fills(order_id=order_id) if own_order(call, order_id) else []
                ),
                by_id=one("fill", lambda f: f.account_id),
            ),
            "position": _Entity(
                visible=lambda call: of_accounts(engine.positions(), call),
                deps=lambda call, account_id: (
                    engine.positions(account_id) if own_account(call, account_id) else []
                ),
            ),
            "orderstrategy": _Entity(
                visible=lambda call: of_accounts(engine.order_strategies(), call),
                deps=lambda call, account_id: (
                    engine.order_strategies(account_id) if own_account(call, account_id) else []
                ),
            ),
            "orderstrategylink": _Entity(
                visible=lambda call: [
                    link
                    for st in engine.order_strategies()
                    if own_account(call, st.account_id)
                    for link in engine.order_strategy_links(st.id)
                ],
                deps=lambda call, strategy_id: (
                    engine.order_strategy_links(strategy_id)
                    if own_strategy(call, strategy_id)
                    else []
                ),
            ),
            "cashbalance": _Entity(
                visible=lambda call: [engine.cash_balance(a.id) for a in owned(call)],
                deps=lambda call, account_id: (
                    [engine.cash_balance(account_id)] if own_account(call, account_id) else []
                ),
            ),
        }

    def _read(self, entity: _Entity, operation: str, call: _Call) -> NativeAnswer:
        if operation == "list":
            return _ok(_wire_all(entity, entity.visible(call)))
        if operation == "item":
            return _ok(entity.wire(self._item(entity, call, call.query_int("id"))))
        if operation == "items":
            items = [self._item_or_none(entity, call, i) for i in call.query_ints("ids")]
            return _ok(_wire_all(entity, [item for item in items if item is not None]))
        if operation == "deps" and entity.deps is not None:
            return _ok(_wire_all(entity, entity.deps(call, call.query_int("masterid"))))
        if operation == "ldeps" and entity.deps is not None:
            deps = entity.deps
            masters = call.query_ints("masterids")
            return _ok(_wire_all(entity, [item for m in masters for item in deps(call, m)]))
        if operation == "find" and entity.find is not None:
            found = entity.find(call, call.query_str("name"))
            if found is None:
                raise _NotFoundError
            return _ok(entity.wire(found))
        if operation == "suggest" and entity is self._entities["contract"]:
            return self._suggest(call)
        return _NOT_FOUND

    def _item_or_none(self, entity: _Entity, call: _Call, item_id: int) -> Any | None:
        if entity.by_id is not None:
            return entity.by_id(call, item_id)
        return next((item for item in entity.visible(call) if item.id == item_id), None)

    def _item(self, entity: _Entity, call: _Call, item_id: int) -> Any:
        item = self._item_or_none(entity, call, item_id)
        if item is None:
            raise _NotFoundError
        return item

    def _suggest(self, call: _Call) -> NativeAnswer:
        text = call.query.get("t", "")
        raw_limit = call.query.get("l")
        try:
            limit = int(raw_limit) if raw_limit else _SUGGEST_DEFAULT
        except ValueError:
            raise BadRequest("l must be an integer") from None
        return _ok([to_wire(c) for c in self.engine.suggest_contracts(text.upper(), limit)])

    def _contract_maturity(self, call: _Call) -> NativeAnswer:
        maturity_id = call.query_int("id")
        contract = self._contract_of_maturity(maturity_id)
        if contract is None:
            raise _NotFoundError
        front = self.engine.suggest_contracts(contract.symbol.root, 1)
        is_front = bool(front) and front[0].id == contract.id
        return _ok(contract_maturity_wire(contract, is_front=is_front))

    def _contract_of_maturity(self, maturity_id: int) -> SimContract | None:
        # Only listed (unexpired) contracts: the engine offers no lookup by maturity id.
        for contract in self.engine.listed_contracts():
            if contract.maturity_id == maturity_id:
                return contract
        return None

    def _product_find(self, call: _Call) -> NativeAnswer:
        product = PRODUCTS.get(call.query_str("name"))
        if product is None:
            raise _NotFoundError
        return _ok(product_wire(product))

    def _product_item(self, call: _Call) -> NativeAnswer:
        product_id = call.query_int("id")
        for root, known_id in PRODUCT_IDS.items():
            if known_id == product_id:
                return _ok(product_wire(PRODUCTS[root]))
        raise _NotFoundError

    def _product_list(self, _call: _Call) -> NativeAnswer:
        return _ok([product_wire(product) for product in PRODUCTS.values()])

    def _cash_snapshot(self, call: _Call) -> NativeAnswer:
        body = OrderBody(call.body, lowercase_enums="reject")
        account_id = body.integer("accountId", required=True)
        account = self.engine.account(account_id) if account_id is not None else None
        if account is None or account.user_id != call.user.id:
            return _ok({"errorText": ACCESS_DENIED})
        cash = self.engine.cash_balance(account.id)
        open_pnl = self.engine.open_pnl(account.id)
        initial = Decimal(0)
        for position in self.engine.positions(account.id):
            contract = self.engine.contract(position.contract_id)
            if contract is None or not position.net_pos:
                continue
            last = self.engine.quote(contract.id).last
            notional = abs(position.net_pos) * last * contract.product.value_per_point
            initial += notional * _MARGIN_RATE
        return _ok(
            {
                "totalCashValue": number(cash.amount),
                "totalPnL": number(cash.realized_pnl + open_pnl),
                "netLiq": number(cash.amount + open_pnl),
                "openPnL": number(open_pnl),
                "realizedPnL": number(cash.realized_pnl),
                "initialMargin": number(initial.quantize(Decimal("0.01"))),
                "maintenanceMargin": number(
                    (initial * _MAINTENANCE_SHARE).quantize(Decimal("0.01"))
                ),
                "weekRealizedPnL": number(cash.realized_pnl),
            }
        )

    # --- order commands ---------------------------------------------------------------------
    def _order_body(self, call: _Call) -> OrderBody:
        return OrderBody(call.body, lowercase_enums=self.ctx.config.lowercase_enums)

    def _account_of(self, call: _Call, body: OrderBody) -> SimAccount | NativeAnswer:
        account_id = body.integer("accountId")
        spec = body.string("accountSpec")
        if account_id is None and spec is None:
            raise BadRequest("accountId or accountSpec is required")
        by_id = self.engine.account(account_id) if account_id is not None else None
        by_name = self.engine.account_by_name(spec) if spec is not None else None
        if by_id is not None and by_name is not None and by_id.id != by_name.id:
            return _failure("UnknownReason", "accountSpec and accountId name different accounts")
        account = by_id if account_id is not None else by_name
        if account is None or (spec is not None and by_name is None):
            return _failure("UnknownReason", ACCESS_DENIED)
        if account.user_id != call.user.id:
            return _failure("UnknownReason", ACCESS_DENIED)
        return account

    def _order_request(self, body: OrderBody) -> OrderRequest:
        """Parse the ``placeorder`` fields; the account is resolved afterwards."""
        qty = body.integer("orderQty", required=True)
        if qty is None or qty <= 0:
            raise BadRequest("orderQty must be a positive integer")
        return OrderRequest(
            account_id=0,
            symbol=body.string("symbol", required=True) or "",
            action=body.action(),
            order_type=body.order_type(),
            order_qty=qty,
            price=body.decimal("price"),
            stop_price=body.decimal("stopPrice"),
            time_in_force=body.time_in_force(TimeInForce.DAY),
            expire_time=body.timestamp("expireTime"),
            cl_ord_id=body.string("clOrdId"),
            text=body.string("text") or "",
            is_automated=bool(body.boolean("isAutomated")),
        )

    def _place(
        self,
        call: _Call,
        legs: Callable[[OrderBody], tuple[BracketRequest | None, ...]],
        execute: Callable[[OrderRequest, tuple[BracketRequest | None, ...]], PlaceResult],
    ) -> NativeAnswer:
        body = self._order_body(call)
        try:
            request = self._order_request(body)
            extra = legs(body)
        except Unsupported as exc:
            return _failure("Unsupported", str(exc))
        account = self._account_of(call, body)
        if isinstance(account, NativeAnswer):
            return account
        result = execute(replace(request, account_id=account.id), extra)
        if not result.ok:
            return _place_failure(result)
        if should_drop_answer(self.ctx):
            raise DropAnswer
        ids = {
            "orderId": result.order_id,
            "oso1Id": result.oso1_id,
            "oso2Id": result.oso2_id,
            "ocoId": result.oco_id,
        }
        return _ok({key: value for key, value in ids.items() if value is not None})

    def _place_order(self, call: _Call) -> NativeAnswer:
        return self._place(
            call, lambda _body: (), lambda request, _legs: self.engine.place_order(request)
        )

    def _place_oso(self, call: _Call) -> NativeAnswer:
        lowercase = self.ctx.config.lowercase_enums

        def legs(body: OrderBody) -> tuple[BracketRequest | None, ...]:
            raw2 = body.body.get("bracket1"), body.body.get("bracket2")
            first = parse_bracket(raw2[0], "bracket1", lowercase_enums=lowercase)
            second = (
                None
                if raw2[1] is None
                else parse_bracket(raw2[1], "bracket2", lowercase_enums=lowercase)
            )
            return first, second

        def execute(
            request: OrderRequest, brackets: tuple[BracketRequest | None, ...]
        ) -> PlaceResult:
            first, second = brackets
            assert first is not None
            return self.engine.place_oso(request, first, second)

        return self._place(call, legs, execute)

    def _place_oco(self, call: _Call) -> NativeAnswer:
        lowercase = self.ctx.config.lowercase_enums

        def execute(request: OrderRequest, legs: tuple[BracketRequest | None, ...]) -> PlaceResult:
            (other,) = legs
            assert other is not None
            return self.engine.place_oco(request, other)

        return self._place(
            call,
            lambda body: (
                parse_bracket(body.body.get("other"), "other", lowercase_enums=lowercase),
            ),
            execute,
        )

    def _start_strategy(self, call: _Call) -> NativeAnswer:
        body = self._order_body(call)
        symbol = body.string("symbol", required=True) or ""
        action = body.action()
        type_id = body.integer("orderStrategyTypeId", required=True)
        raw = body.string("params", required=True) or ""
        uuid = body.string("uuid")
        contract = self.engine.find_contract(symbol)
        tick = contract.product.tick_size if contract is not None else None
        try:
            entry, brackets = parse_strategy_params(
                raw, units=self.ctx.config.strategy_units, tick=tick,
                lowercase_enums=self.ctx.config.lowercase_enums,
                breakeven_key=self.ctx.config.strategy_breakeven_key,
            )  # fmt: skip
        except Unsupported as exc:
            return _ok({"errorText": f"Unsupported: {exc}"})
        account = self._account_of(call, body)
        if isinstance(account, NativeAnswer):
            return _ok({"errorText": ACCESS_DENIED})
        request = replace(entry, account_id=account.id, symbol=symbol, action=action)
        assert type_id is not None
        result = self.engine.start_order_strategy(
            request, brackets, type_id=type_id, params=raw, uuid=uuid
        )
        if result.strategy is None:
            return _ok({"errorText": result.error_text or "UnknownReason"})
        if should_drop_answer(self.ctx):
            raise DropAnswer
        return _ok({"orderStrategy": to_wire(result.strategy)})

    def _interrupt_strategy(self, call: _Call) -> NativeAnswer:
        body = self._order_body(call)
        strategy_id = body.integer("orderStrategyId", required=True)
        strategy = self.engine.order_strategy(strategy_id) if strategy_id is not None else None
        if strategy is None or not self._owns(call, strategy.account_id):
            return _ok({"errorText": ACCESS_DENIED})
        result = self.engine.interrupt_order_strategy(strategy.id)
        if result.error_text is not None:
            return _ok({"errorText": result.error_text})
        assert result.strategy is not None
        return _ok({"orderStrategy": to_wire(result.strategy)})

    def _modify_strategy(self, call: _Call) -> NativeAnswer:
        body = self._order_body(call)
        strategy_id = body.integer("orderStrategyId", required=True)
        body.string("command", required=True)
        strategy = self.engine.order_strategy(strategy_id) if strategy_id is not None else None
        if strategy is None or not self._owns(call, strategy.account_id):
            return _ok({"errorText": ACCESS_DENIED})
        return _ok({"errorText": "Unsupported: the simulator does not model strategy commands"})

    def _owned_order_id(self, call: _Call, body: OrderBody) -> int | None:
        order_id = body.integer("orderId", required=True)
        order = self.engine.order(order_id) if order_id is not None else None
        if order is None:
            return None
        account = self.engine.account(order.account_id)
        return order.id if account is not None and account.user_id == call.user.id else None

    def _modify_order(self, call: _Call) -> NativeAnswer:
        body = self._order_body(call)
        try:
            order_id = self._owned_order_id(call, body)
            qty = body.integer("orderQty", required=True)
            order_type = body.order_type()
        except Unsupported as exc:
            return _failure("Unsupported", str(exc))
        if qty is None or qty <= 0:
            raise BadRequest("orderQty must be a positive integer")
        price, stop_price = body.decimal("price"), body.decimal("stopPrice")
        time_in_force = (
            body.time_in_force(TimeInForce.DAY) if body.body.get("timeInForce") else None
        )
        cl_ord_id = body.string("clOrdId")
        automated = bool(body.boolean("isAutomated"))
        if order_id is None:
            return _failure("UnknownReason", ACCESS_DENIED)
        result = self.engine.modify_order(
            order_id, qty, order_type, price, stop_price, time_in_force, cl_ord_id, automated
        )
        return _command_answer(result)

    def _cancel_order(self, call: _Call) -> NativeAnswer:
        body = self._order_body(call)
        order_id = self._owned_order_id(call, body)
        cl_ord_id = body.string("clOrdId")
        automated = bool(body.boolean("isAutomated"))
        if order_id is None:
            return _failure("UnknownReason", ACCESS_DENIED)
        return _command_answer(self.engine.cancel_order(order_id, cl_ord_id, automated))

    def _liquidate_position(self, call: _Call) -> NativeAnswer:
        body = self._order_body(call)
        account_id = body.integer("accountId", required=True)
        contract_id = body.integer("contractId", required=True)
        body.boolean("admin", required=True)
        automated = bool(body.boolean("isAutomated"))
        account = self.engine.account(account_id) if account_id is not None else None
        if account is None or account.user_id != call.user.id or contract_id is None:
            return _failure("UnknownReason", ACCESS_DENIED)
        if self.engine.contract(contract_id) is None:
            return _failure("InvalidContract", f"Unknown contract {contract_id}")
        result = self.engine.liquidate_position(account.id, contract_id, automated)
        if not result.ok:
            return _place_failure(result)
        if should_drop_answer(self.ctx):
            raise DropAnswer
        return _ok({"orderId": result.order_id})

    def _liquidate_positions(self, call: _Call) -> NativeAnswer:
        body = self._order_body(call)
        raw = body.required("positions")
        body.boolean("admin", required=True)
        automated = bool(body.boolean("isAutomated"))
        if not isinstance(raw, list) or not all(
            isinstance(p, int) and not isinstance(p, bool) for p in raw
        ):
            raise BadRequest("positions must be a list of position ids")
        mine = {p.id: p for p in self.engine.positions() if self._owns(call, p.account_id)}
        missing = [p for p in raw if p not in mine]
        if missing:
            return _ok({"ok": False, "errorText": f"Unknown positions {missing}"})
        errors = []
        for position_id in raw:
            position = mine[position_id]
            result = self.engine.liquidate_position(
                position.account_id, position.contract_id, automated
            )
            if not result.ok:
                errors.append(result.failure_text or result.failure_reason or "failed")
        if errors:
            return _ok({"ok": False, "errorText": "; ".join(errors)})
        return _ok({"ok": True})

    def _owns(self, call: _Call, account_id: int) -> bool:
        account = self.engine.account(account_id)
        return account is not None and account.user_id == call.user.id


def _own_items(items: Iterable[Any], order_ids: set[int]) -> list[Any]:
    """Keep the items (commands) of the given orders; the id set is built once per read."""
    return [item for item in items if item.order_id in order_ids]


def _wire_all(entity: _Entity, items: Iterable[Any]) -> list[dict[str, Any]]:
    return [entity.wire(item) for item in items]


def _failure(reason: str, text: str) -> NativeAnswer:
    return _ok({"failureReason": reason, "failureText": text})


def _place_failure(result: PlaceResult) -> NativeAnswer:
    body: dict[str, Any] = {
        "failureReason": result.failure_reason or "UnknownReason",
        "failureText": result.failure_text or "",
    }
    # A risk refusal leaves a Rejected order behind; its id comes with the failure.
    if result.order_id is not None:
        body["orderId"] = result.order_id
    return _ok(body)


def _command_answer(result: CommandResult) -> NativeAnswer:
    if result.ok:
        return _ok({"commandId": result.command_id})
    body: dict[str, Any] = {
        "failureReason": result.failure_reason or "UnknownReason",
        "failureText": result.failure_text or "",
    }
    # A refused modify or cancel still leaves its (rejected) command behind.
    if result.command_id is not None:
        body["commandId"] = result.command_id
    return _ok(body)


def _make_ticket(name: str, ripe_at: float) -> str:
    payload = json.dumps({"n": name, "t": ripe_at, "r": secrets.token_hex(4)}).encode()
    signature = hmac.new(_TICKET_KEY, payload, hashlib.sha256).digest()[:16]
    return base64.urlsafe_b64encode(payload + signature).decode().rstrip("=")


def _read_ticket(ticket: str, name: str) -> float | None:
    try:
        raw = base64.urlsafe_b64decode(ticket + "=" * (-len(ticket) % 4))
    except ValueError:
        return None
    payload, signature = raw[:-16], raw[-16:]
    expected = hmac.new(_TICKET_KEY, payload, hashlib.sha256).digest()[:16]
    if not hmac.compare_digest(expected, signature):
        return None
    try:
        claims = json.loads(payload)
    except ValueError:
        return None
    if not isinstance(claims, dict) or claims.get("n") != name:
        return None
    ripe_at = claims.get("t")
    return float(ripe_at) if isinstance(ripe_at, int | float) else None


def build_router(ctx: SimContext, api: NativeApi | None = None) -> APIRouter:
    """Build the REST router of the native dialect, mounted at ``/v1``.

    ``NativeFront`` serves its GET and POST requests ahead of it in the app (``app.py``);
    the route stays for every other method (405) and for an app without the front door.
    """
    native = api if api is not None else NativeApi(ctx)
    router = APIRouter(prefix="/v1", include_in_schema=False)

    @router.api_route("/{endpoint:path}", methods=list(_NATIVE_METHODS))
    async def dispatch(endpoint: str, request: Request) -> Response:
        return await _answer(native, request.method, endpoint, request.scope, await request.body())

    return router


# The methods of the native REST surface: Tradovate's API is GETs and POSTs.
_NATIVE_METHODS = ("GET", "POST")


class NativeFront:
    """The native REST surface's GET and POST requests (``/v1/...``) straight to
    ``NativeApi``; every other request to the app behind.

    The same answers as the router's route (``_answer``), without FastAPI's routing over
    every route of the four surfaces, its dependency solving and endpoint dispatch: ~0.4 ms,
    a quarter of an order's round trip on loopback (bench/README.md, ``sim_bench.py``).
    Mounted inside ``FaultMiddleware``, so faults and dropped answers (``DropAnswer``) apply
    as before, and inside the app's error middleware.
    """

    def __init__(self, app: ASGIApp, api: NativeApi) -> None:
        self._app = app
        self._api = api

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Handle one ASGI connection scope."""
        if (
            scope["type"] != "http"
            or scope["method"] not in _NATIVE_METHODS
            or not scope["path"].startswith(NATIVE_PREFIX)
        ):
            await self._app(scope, receive, send)
            return
        chunks: list[bytes] = []
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return  # the client left before its body was read: nothing to answer
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                break
        endpoint = scope["path"][len(NATIVE_PREFIX) :]
        response = await _answer(self._api, scope["method"], endpoint, scope, b"".join(chunks))
        await response(scope, receive, send)


async def _answer(
    native: NativeApi, method: str, endpoint: str, scope: Scope, raw: bytes
) -> Response:
    """Answer one native REST request: its JSON body, query and bearer token to the API."""
    body: Any = None
    if raw.strip():
        try:
            body = json.loads(raw)
        except ValueError:
            return PlainTextResponse("the body is not JSON", status_code=400)
    # As Starlette reads a query (Request.query_params): Latin-1, blanks kept, last one wins.
    query = dict(parse_qsl(scope["query_string"].decode("latin-1"), keep_blank_values=True))
    token = bearer_token(scope["headers"])
    return to_response(await native.handle(method, endpoint, query, body, token))


def to_response(answer: NativeAnswer) -> Response:
    """Return the HTTP response of an answer."""
    if answer.body is None:
        return Response(status_code=answer.status)
    if isinstance(answer.body, str):
        return PlainTextResponse(answer.body, status_code=answer.status)
    return JSONResponse(answer.body, status_code=answer.status)

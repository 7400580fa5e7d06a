"""The TradingView Broker REST dialect that Tradovate serves at ``tv-demo``/``tv-live``.

Routes sit at the root (no ``/v1``), bodies are form-encoded, enums are lowercase and every
answer is the ``{s, d, errmsg}`` envelope: business and validation errors are HTTP 200
``s:"error"``; a missing or bad token is 401; an account id that is not one of the token
user's bridge ids (``D...``), an unknown order or position, or an unknown route is 404.
See reference/tradovate-api.md §9, §10.1 and §12, and https://www.tradingview.com/rest-api-spec/.

Decisions where the reference is unverified (documented in docs/simulator.md):

* native and bridge tokens both work as the Bearer here (one public client does that);
* 404 bodies are a bare ``{"s":"error","errmsg":"Not Found"}``: they never say *what* was
  not found, so a client has to diagnose as it would against Tradovate;
* ``requestId`` (query or form) is stored as the command's ``clOrdId`` and echoed in the
  order JSON only when ``SimConfig.bridge_echo_request_id`` is on (off by default);
* ``currentBid``/``currentAsk``, when required, are required for every order type;
* capitalised ``side``/``type`` answer per ``SimConfig.capitalised_enums``.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine, Iterable
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any, TypeVar
from urllib.parse import parse_qsl

from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute

from tradebridge.domain.enums import OrderType, Side, TimeInForce
from tradebridge.domain.products import ExpiryRule
from tradebridge.sim.auth import Session
from tradebridge.sim.context import SimContext
from tradebridge.sim.engine import (
    BracketRequest,
    OrderRequest,
    OrdStatus,
    PlaceResult,
    SimAccount,
    SimContract,
    SimOrder,
    SimPosition,
)
from tradebridge.sim.faults import DropAnswer, should_drop_answer

_STATUS: dict[OrdStatus, str] = {
    OrdStatus.PENDING_NEW: "placing",
    OrdStatus.SUSPENDED: "inactive",
    OrdStatus.WORKING: "working",
    OrdStatus.PENDING_CANCEL: "working",
    OrdStatus.PENDING_REPLACE: "working",
    OrdStatus.FILLED: "filled",
    OrdStatus.CANCELED: "canceled",
    OrdStatus.EXPIRED: "canceled",
    OrdStatus.REJECTED: "rejected",
}
_FINAL = frozenset({OrdStatus.FILLED, OrdStatus.CANCELED, OrdStatus.EXPIRED, OrdStatus.REJECTED})
_SIDES = {s.value: s for s in Side}
_TYPES = {t.value: t for t in OrderType}
_METHODS = ("GET", "POST", "PUT", "DELETE", "PATCH")
_FORM_TYPE = "application/x-www-form-urlencoded"
_T = TypeVar("_T")


class _Reply(Exception):
    """Stop handling a request and answer with ``response``."""

    def __init__(self, response: Response) -> None:
        super().__init__("reply")
        self.response = response


class _BridgeRoute(APIRoute):
    """A route whose handler (and dependencies) may answer early by raising ``_Reply``."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def replying(request: Request) -> Response:
            try:
                return await handler(request)
            except _Reply as reply:
                return reply.response

        return replying


def ok(data: Any = None) -> JSONResponse:
    """Return the success envelope (``d`` omitted when there is no payload)."""
    return JSONResponse({"s": "ok"} if data is None else {"s": "ok", "d": data})


def error(message: str) -> _Reply:
    """Return an HTTP 200 ``s:"error"`` answer to raise."""
    return _Reply(JSONResponse({"s": "error", "errmsg": message}))


def not_found() -> _Reply:
    """Return a bare 404 to raise; it never says which part was not found."""
    return _Reply(JSONResponse({"s": "error", "errmsg": "Not Found"}, status_code=404))


def unauthorized() -> _Reply:
    """Return a 401 to raise."""
    return _Reply(JSONResponse({"s": "error", "errmsg": "Unauthorized"}, status_code=401))


def _num(value: Decimal | None) -> float | None:
    # TradingView's spec types prices as doubles; futures prices are exact in binary64.
    return None if value is None else float(value)


def _keep(new: Decimal | None, old: Decimal | None) -> Decimal | None:
    return old if new is None else new


def _ts(value: datetime) -> int:
    return int(value.timestamp())


async def read_form(request: Request) -> dict[str, str]:
    """Return the url-encoded body's fields (the last value of a repeated field wins)."""
    content_type = request.headers.get("content-type", "")
    body = await request.body()
    if body and "json" in content_type:
        raise error("the body must be form-encoded (application/x-www-form-urlencoded)")
    if body and "multipart" in content_type:
        raise error("the body must be application/x-www-form-urlencoded, not multipart")
    media_type = content_type.partition(";")[0].strip().lower()
    if body and media_type != _FORM_TYPE:
        # §9.7: the body is application/x-www-form-urlencoded; a form-shaped body under no
        # or another Content-Type is not read as a form (§10.1 step 7 lints exactly this).
        shown = media_type or "no Content-Type"
        raise error(
            f"the body must be form-encoded (application/x-www-form-urlencoded), not {shown}"
        )
    try:
        return dict(parse_qsl(body.decode(), keep_blank_values=True))
    except UnicodeDecodeError:
        raise error("the body is not valid UTF-8") from None


def _decimal(form: dict[str, str], name: str) -> Decimal | None:
    raw = form.get(name, "").strip()
    if not raw:
        return None
    try:
        value = Decimal(raw)
    except InvalidOperation:
        raise error(f"{name} must be a number, got {raw!r}") from None
    if not value.is_finite():
        raise error(f"{name} must be a finite number, got {raw!r}")
    return value


def _required(form: dict[str, str], name: str) -> str:
    value = form.get(name, "").strip()
    if not value:
        raise error(f"missing required field: {name}")
    return value


def _qty(form: dict[str, str], name: str = "qty") -> int:
    value = _decimal(form, name)
    if value is None:
        raise error(f"missing required field: {name}")
    if value <= 0 or value != value.to_integral_value():
        raise error(f"{name} must be a positive whole number, got {form[name]!r}")
    return int(value)


def build_router(ctx: SimContext) -> APIRouter:
    """Build the bridge's routes over the simulator's shared state."""
    router = APIRouter(route_class=_BridgeRoute)
    # Every route under one account: the ``account_of`` dependency reads ``{account_id}``.
    account_router = APIRouter(prefix="/accounts/{account_id}", route_class=_BridgeRoute)
    engine = ctx.engine
    # Session statistics for /quotes, as the simulator observed them since it started.
    sessions: dict[int, dict[str, Decimal]] = {}

    # Async, so that FastAPI runs them on the event loop: the engine is not thread-safe.
    async def session_of(request: Request) -> Session:
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise unauthorized()
        session = ctx.auth.verify(token)
        if session is None:
            raise unauthorized()
        return session

    async def account_of(request: Request, account_id: str) -> SimAccount:
        session = await session_of(request)
        account = engine.account_by_bridge_id(account_id)
        # Only the exact bridge id of one of the token user's accounts opens the route: a
        # name, a native numeric id or another user's id is 404 on every call (§10.1 H1).
        if account is None or account.user_id != session.user.id:
            raise not_found()
        return account

    # Dependencies as defaults: annotations are strings here and must resolve globally.
    user_session = Depends(session_of)
    bridge_account = Depends(account_of)

    # --- wire shapes ---------------------------------------------------------------------
    def duration_id(tif: TimeInForce) -> str:
        for advertised in ctx.config.durations:
            if advertised.lower() == tif.value:
                return advertised
        return tif.value.upper()

    def contract_name(contract_id: int) -> str:
        contract = engine.contract(contract_id)
        return contract.name if contract is not None else str(contract_id)

    def order_json(order: SimOrder, children: dict[int, list[SimOrder]]) -> dict[str, Any]:
        version = order.version
        out: dict[str, Any] = {
            "id": str(order.id),
            "instrument": contract_name(order.contract_id),
            "qty": version.order_qty,
            "side": order.action.value,
            "type": version.order_type.value,
            "filledQty": order.filled_qty,
            "avgPrice": _num(order.avg_fill_price),
            "limitPrice": _num(version.price),
            "stopPrice": _num(version.stop_price),
            "duration": {"type": duration_id(version.time_in_force)},
            "status": _STATUS[order.ord_status],
        }
        if version.expire_time is not None:
            out["duration"]["datetime"] = _ts(version.expire_time)
        if order.parent_id is not None:
            out["parentId"] = str(order.parent_id)
            out["parentType"] = "order"
        for child in children.get(order.id, []):
            if child.version.order_type is OrderType.LIMIT:
                out["takeProfit"] = _num(child.version.price)
            else:
                out["stopLoss"] = _num(child.version.stop_price)
        if ctx.config.bridge_echo_request_id and order.cl_ord_id:
            out["requestId"] = order.cl_ord_id
        return {k: v for k, v in out.items() if v is not None}

    def children_of(orders: Iterable[SimOrder]) -> dict[int, list[SimOrder]]:
        out: dict[int, list[SimOrder]] = {}
        for order in orders:
            if order.parent_id is not None:
                out.setdefault(order.parent_id, []).append(order)
        return out

    def lingers(order: SimOrder, now: datetime) -> bool:
        if order.ord_status not in _FINAL:
            return True
        if order.ts_final is None:
            return True
        return (now - order.ts_final).total_seconds() < ctx.config.finished_order_linger_s

    def position_pl(position: SimPosition, contract: SimContract) -> Decimal:
        if position.net_pos == 0 or position.net_price is None:
            return Decimal(0)
        last = engine.quote(contract.id).last
        return (last - position.net_price) * position.net_pos * contract.product.value_per_point

    def position_json(position: SimPosition) -> dict[str, Any] | None:
        contract = engine.contract(position.contract_id)
        if position.net_pos == 0 or contract is None:
            return None
        return {
            "id": str(position.id),
            "instrument": contract.name,
            "qty": abs(position.net_pos),
            "side": "buy" if position.net_pos > 0 else "sell",
            "avgPrice": _num(position.net_price),
            "unrealizedPl": _num(position_pl(position, contract)),
        }

    def max_count(request: Request) -> int | None:
        raw = request.query_params.get("maxCount")
        if raw is None or raw == "":
            return None
        if not raw.isdigit():
            raise error(f"maxCount must be a whole number, got {raw!r}")
        return int(raw)

    def owned_order(account: SimAccount, order_id: str) -> SimOrder:
        order = engine.order(int(order_id)) if order_id.isdigit() else None
        if order is None or order.account_id != account.id:
            raise not_found()
        return order

    # --- parsing an order ---------------------------------------------------------------
    def enum_value(table: dict[str, _T], name: str, raw: str) -> _T:
        if raw in table:
            return table[raw]
        if raw.lower() in table:
            # The field report of §10.1 (H2): capitalised enums may be a 404 on Tradovate.
            if ctx.config.capitalised_enums == "http_404":
                raise not_found()
            raise error(f"invalid {name} {raw!r}: use lowercase ({', '.join(table)})")
        raise error(f"invalid {name} {raw!r}: expected one of {', '.join(table)}")

    def time_in_force(form: dict[str, str]) -> tuple[TimeInForce, datetime | None]:
        raw = form.get("durationType", "").strip()
        if not raw:
            return TimeInForce.DAY, None
        if raw not in ctx.config.durations:
            advertised = ", ".join(ctx.config.durations)
            raise error(f"unsupported durationType {raw!r}: expected one of {advertised}")
        try:
            tif = TimeInForce(raw.lower())
        except ValueError:
            raise error(f"unsupported durationType {raw!r}") from None
        when = _decimal(form, "durationDateTime")
        try:
            expires = datetime.fromtimestamp(float(when), UTC) if when is not None else None
        except (OverflowError, OSError, ValueError):
            raise error(f"durationDateTime is not a unix time: {when}") from None
        if tif is TimeInForce.GTD and expires is None:
            raise error("missing required field: durationDateTime (for a GTD duration)")
        return tif, expires

    def parse_order(
        account: SimAccount, form: dict[str, str], request_id: str | None
    ) -> tuple[OrderRequest, list[BracketRequest]]:
        instrument = _required(form, "instrument")
        qty = _qty(form)
        side = enum_value(_SIDES, "side", _required(form, "side"))
        order_type = enum_value(_TYPES, "type", _required(form, "type"))
        limit_price = _decimal(form, "limitPrice")
        stop_price = _decimal(form, "stopPrice")
        if order_type.needs_limit_price and limit_price is None:
            raise error(f"missing required field: limitPrice (for a {order_type} order)")
        if order_type.needs_stop_price and stop_price is None:
            raise error(f"missing required field: stopPrice (for a {order_type} order)")
        tif, expires = time_in_force(form)
        if ctx.config.require_bid_ask:
            missing = [n for n in ("currentAsk", "currentBid") if not form.get(n, "").strip()]
            if missing:
                raise error(f"missing required field: {', '.join(missing)}")
        _decimal(form, "currentAsk")
        _decimal(form, "currentBid")
        stop_loss = _decimal(form, "stopLoss")
        take_profit = _decimal(form, "takeProfit")
        entry = OrderRequest(
            account_id=account.id,
            symbol=instrument,
            action=side,
            order_type=order_type,
            order_qty=qty,
            price=limit_price if order_type.needs_limit_price else None,
            stop_price=stop_price if order_type.needs_stop_price else None,
            time_in_force=tif,
            expire_time=expires,
            cl_ord_id=request_id,
            # The bridge has no isAutomated flag; orders sent through an API are automated,
            # and a native-only "require isAutomated" switch must not refuse them.
            is_automated=True,
        )
        # The form gives the legs prices only; they take the entry's duration (docs/simulator.md).
        brackets: list[BracketRequest] = []
        if stop_loss is not None:
            brackets.append(BracketRequest(side.opposite, OrderType.STOP, stop_price=stop_loss,
                                           time_in_force=tif, expire_time=expires))  # fmt: skip
        if take_profit is not None:
            brackets.append(BracketRequest(side.opposite, OrderType.LIMIT, price=take_profit,
                                           time_in_force=tif, expire_time=expires))  # fmt: skip
        return entry, brackets

    def failure(result: PlaceResult) -> str:
        return result.failure_text or result.failure_reason or "order rejected"

    def request_id_of(request: Request, form: dict[str, str]) -> str | None:
        value = (form.get("requestId") or request.query_params.get("requestId") or "").strip()
        return value or None

    # --- authorization and configuration ------------------------------------------------
    @router.post("/authorize")
    async def authorize(request: Request) -> Response:
        form = await read_form(request)
        login = _required(form, "login")
        password = _required(form, "password")
        user = ctx.auth.user_by_credentials(login, password)
        if user is None:
            raise error("Invalid login or password")
        issued = ctx.auth.issue(user, "tv")
        return ok({"access_token": issued.token, "expiration": _ts(issued.expires)})

    @router.post("/logout")
    async def logout(session: Session = user_session) -> Response:
        del session  # the token simply expires; logging out only checks it was valid
        return ok()

    @router.get("/config")
    async def config(session: Session = user_session) -> Response:
        del session
        durations = [
            {"id": d, "title": d, **({"hasDatePicker": True} if d.upper() == "GTD" else {})}
            for d in ctx.config.durations
        ]
        columns = [
            {"id": "balance", "title": "Balance"},
            {"id": "unrealizedPl", "title": "Unrealized P&L"},
            {"id": "equity", "title": "Equity"},
        ]
        return ok(
            {
                "accountManager": [
                    {"id": "accountSummary", "title": "Account", "columns": columns}
                ],
                "durations": durations,
                "pullingInterval": {
                    "quotes": 500,
                    "orders": 500,
                    "positions": 1000,
                    "accountManager": 1000,
                },
            }
        )

    def account_flags() -> dict[str, Any]:
        return {
            "supportOrderBrackets": True,
            "supportPositionBrackets": False,
            "supportClosePosition": True,
            "supportEditAmount": True,
            "supportLevel2Data": False,
            "supportMultiposition": False,
            "supportPLUpdate": True,
            "supportStopLimitOrders": True,
            "supportOrdersHistory": True,
            "supportExecutions": True,
            "supportPositions": True,
            "supportLogout": True,
            "supportDigitalSignature": False,
        }

    @router.get("/accounts")
    async def accounts(session: Session = user_session) -> Response:
        return ok(
            [
                {
                    "id": a.bridge_id,
                    "name": a.name,
                    "type": "demo",
                    "currency": "USD",
                    "currencySign": "$",
                    "config": account_flags(),
                }
                for a in engine.accounts(session.user.id)
            ]
        )

    # --- account reads ----------------------------------------------------------------
    @account_router.get("/state")
    async def state(account: SimAccount = bridge_account) -> Response:
        balance = engine.cash_balance(account.id).amount
        open_pl = engine.open_pnl(account.id)
        equity = balance + open_pl
        return ok(
            {
                "balance": _num(balance),
                "unrealizedPl": _num(open_pl),
                "equity": _num(equity),
                "amData": [[[f"{balance:.2f}", f"{open_pl:.2f}", f"{equity:.2f}"]]],
            }
        )

    @account_router.get("/instruments")
    async def instruments(account: SimAccount = bridge_account) -> Response:
        del account
        return ok([instrument_json(c) for c in engine.listed_contracts()])

    def instrument_json(contract: SimContract) -> dict[str, Any]:
        product = contract.product
        return {
            "name": contract.name,
            "description": f"{product.description} {contract.symbol.expiry():%b %Y}",
            "minQty": 1,
            "maxQty": ctx.config.max_order_qty or 1000,
            "qtyStep": 1,
            "pipSize": _num(product.tick_size),
            "pipValue": _num(product.tick_value),
            "minTick": _num(product.tick_size),
            "lotSize": 1,
            "type": "futures",
            "currency": "USD",
            "exchange": product.exchange,
            "expiration": contract.symbol.expiry().isoformat(),
        }

    @account_router.get("/orders")
    async def orders(account: SimAccount = bridge_account) -> Response:
        now = ctx.clock.now()
        mine = engine.orders(account.id)
        kids = children_of(mine)
        return ok([order_json(o, kids) for o in mine if lingers(o, now)])

    @account_router.get("/ordersHistory")
    async def orders_history(request: Request, account: SimAccount = bridge_account) -> Response:
        limit = max_count(request)
        mine = engine.orders(account.id)
        kids = children_of(mine)
        final = [o for o in mine if o.ord_status in _FINAL]
        final.sort(key=lambda o: o.ts_final or o.timestamp, reverse=True)
        return ok([order_json(o, kids) for o in final[:limit]])

    @account_router.get("/orders/{order_id}")
    async def get_order(order_id: str, account: SimAccount = bridge_account) -> Response:
        order = owned_order(account, order_id)
        return ok(order_json(order, children_of(engine.orders(account.id))))

    @account_router.get("/positions")
    async def positions(account: SimAccount = bridge_account) -> Response:
        shaped = (position_json(p) for p in engine.positions(account.id))
        return ok([p for p in shaped if p is not None])

    def owned_position(account: SimAccount, position_id: str) -> SimPosition:
        for position in engine.positions(account.id):
            if str(position.id) == position_id:
                return position
        raise not_found()

    @account_router.get("/positions/{position_id}")
    async def get_position(position_id: str, account: SimAccount = bridge_account) -> Response:
        shaped = position_json(owned_position(account, position_id))
        if shaped is None:
            raise error("the position is flat")
        return ok(shaped)

    @account_router.get("/executions")
    async def executions(request: Request, account: SimAccount = bridge_account) -> Response:
        instrument = request.query_params.get("instrument") or None
        limit = max_count(request)
        out: list[dict[str, Any]] = []
        for fill in sorted(engine.fills(account_id=account.id), key=lambda f: f.id, reverse=True):
            name = contract_name(fill.contract_id)
            if not fill.active or (instrument is not None and name != instrument):
                continue
            out.append(
                {
                    "id": str(fill.id),
                    "instrument": name,
                    "price": _num(fill.price),
                    "time": int(fill.timestamp.timestamp() * 1000),  # ms, as charts want
                    "qty": fill.qty,
                    "side": fill.action.value,
                }
            )
        return ok(out[:limit])

    # --- order commands --------------------------------------------------------------
    @account_router.post("/orders")
    async def place(request: Request, account: SimAccount = bridge_account) -> Response:
        if ctx.faults.bridge_order_post_404:
            raise not_found()
        form = await read_form(request)
        entry, brackets = parse_order(account, form, request_id_of(request, form))
        if brackets:
            second = brackets[1] if len(brackets) > 1 else None
            result = engine.place_oso(entry, brackets[0], second)
        else:
            result = engine.place_order(entry)
        if not result.ok or result.order_id is None:
            raise error(failure(result))
        if should_drop_answer(ctx):
            raise DropAnswer
        return ok({"orderId": str(result.order_id)})

    @account_router.put("/orders/{order_id}")
    async def modify(
        request: Request, order_id: str, account: SimAccount = bridge_account
    ) -> Response:
        order = owned_order(account, order_id)
        form = await read_form(request)
        version = order.version
        qty = _qty(form)  # required, as TradingView's spec has it (reference §9.5, §9.8)
        limit_price = _decimal(form, "limitPrice")
        stop_price = _decimal(form, "stopPrice")
        stop_loss = _decimal(form, "stopLoss")
        take_profit = _decimal(form, "takeProfit")
        legs = children_of(engine.orders(account.id)).get(order.id, [])
        leg_changes: list[tuple[SimOrder, Decimal]] = []
        for wanted, kind in ((stop_loss, OrderType.STOP), (take_profit, OrderType.LIMIT)):
            if wanted is None:
                continue
            leg = next((x for x in legs if x.version.order_type is kind), None)
            if leg is None:
                raise error("adding a bracket to an existing order is not supported")
            leg_changes.append((leg, wanted))
        result = engine.modify_order(
            order.id,
            qty,
            version.order_type,
            _keep(limit_price, version.price) if version.order_type.needs_limit_price else None,
            _keep(stop_price, version.stop_price) if version.order_type.needs_stop_price else None,
            is_automated=True,
        )
        if not result.ok:
            raise error(too_late(result.failure_reason) or result.failure_text or "rejected")
        for leg, price in leg_changes:
            is_limit = leg.version.order_type is OrderType.LIMIT
            leg_result = engine.modify_order(
                leg.id,
                leg.version.order_qty,
                leg.version.order_type,
                price if is_limit else None,
                None if is_limit else price,
                is_automated=True,
            )
            if not leg_result.ok:
                raise error(leg_result.failure_text or leg_result.failure_reason or "rejected")
        return ok()

    def too_late(reason: str | None) -> str | None:
        return "Too late" if reason == "TooLate" else None

    @account_router.delete("/orders/{order_id}")
    async def cancel(order_id: str, account: SimAccount = bridge_account) -> Response:
        order = owned_order(account, order_id)
        if order.ord_status in _FINAL:
            raise error("Too late")
        result = engine.cancel_order(order.id, is_automated=True)
        if not result.ok:
            raise error(too_late(result.failure_reason) or result.failure_text or "rejected")
        return ok()

    @account_router.delete("/positions/{position_id}")
    async def close_position(position_id: str, account: SimAccount = bridge_account) -> Response:
        position = owned_position(account, position_id)
        if position.net_pos == 0:
            raise error("the position is flat")
        result = engine.liquidate_position(account.id, position.contract_id, is_automated=True)
        if not result.ok:
            raise error(failure(result))
        if should_drop_answer(ctx):  # a closing order was placed: its answer may be lost too
            raise DropAnswer
        return ok()

    # --- market data ----------------------------------------------------------------------
    @router.get("/quotes")
    async def quotes(request: Request, session: Session = user_session) -> Response:
        del session
        names = [n.strip() for n in request.query_params.get("symbols", "").split(",")]
        if not any(names):
            raise error("missing required field: symbols")
        return ok([quote_json(n) for n in names if n])

    def quote_json(name: str) -> dict[str, Any]:
        contract = engine.find_contract(name)
        if contract is None:
            return {"s": "error", "n": name, "errmsg": "Unknown symbol"}
        if engine.is_expired(contract):
            return {"s": "error", "n": name, "errmsg": "Symbol has expired"}
        quote = engine.quote(contract.id)
        stats = sessions.setdefault(
            contract.id, {"open": quote.last, "high": quote.last, "low": quote.last}
        )
        stats["high"] = max(stats["high"], quote.last)
        stats["low"] = min(stats["low"], quote.last)
        change = quote.last - stats["open"]
        volume = sum(f.qty for f in engine.fills() if f.contract_id == contract.id)
        return {
            "s": "ok",
            "n": name,
            "v": {
                "lp": _num(quote.last),
                "bid": _num(quote.bid),
                "ask": _num(quote.ask),
                "spread": _num(quote.ask - quote.bid),
                "open_price": _num(stats["open"]),
                "high_price": _num(stats["high"]),
                "low_price": _num(stats["low"]),
                "prev_close_price": _num(stats["open"]),
                "ch": _num(change),
                "chp": round(float(change / stats["open"] * 100), 4) if stats["open"] else 0.0,
                "volume": volume,
            },
        }

    @router.get("/mapping")
    async def mapping() -> Response:
        # Works without a token (the old spec says so). Equity-index futures trade on
        # TradingView's CME_MINI / CBOT_MINI feeds; the others under their exchange.
        symbols = []
        for contract in engine.listed_contracts():
            product = contract.product
            prefix = product.exchange
            if product.expiry_rule is ExpiryRule.EQUITY_INDEX:
                prefix += "_MINI"
            symbols.append(
                {"s": f"{prefix}:{contract.symbol.tradingview_name}", "f": [contract.name]}
            )
        return ok({"symbols": symbols, "fields": ["brokerSymbol"]})

    _close_other_methods(account_router)
    _close_other_methods(router)
    router.include_router(account_router)
    return router


def _close_other_methods(router: APIRouter) -> None:
    """Answer 404, not 405, to a method a bridge path does not serve (an unknown route)."""
    served: dict[str, set[str]] = {}
    for route in router.routes:
        if isinstance(route, APIRoute):
            served.setdefault(route.path, set()).update(route.methods or ())

    async def missing() -> Response:
        raise not_found()

    for path, methods in served.items():
        others = [m for m in _METHODS if m not in methods]
        if others:
            relative = path.removeprefix(router.prefix)  # add_api_route prepends it again
            router.add_api_route(relative, missing, methods=others, include_in_schema=False)

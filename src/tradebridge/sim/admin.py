"""The simulator's own control surface under ``/_sim`` (loopback tool, no authentication).

Tradovate serves nothing like it: tests, ``tradebridge sim fault|price|state`` and demos use
it to flip faults, move prices, expire every token (``POST /_sim/tokens/expire``) and read
counters while the simulator runs. Validation errors answer 422 with
``{"detail": "<field>: <problem>; ..."}``.
"""

from __future__ import annotations

from decimal import Decimal, InvalidOperation
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import ValidationError

from tradebridge.sim import websocket
from tradebridge.sim.config import FaultConfig
from tradebridge.sim.context import SimContext
from tradebridge.sim.engine import FINAL_ORD_STATUSES


def _problem(status: int, detail: str) -> JSONResponse:
    return JSONResponse({"detail": detail}, status_code=status)


def _explain(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err["loc"]) or "body"
        parts.append(f"{where}: {err['msg']}")
    return "; ".join(parts)


async def _json_object(request: Request) -> dict[str, Any] | JSONResponse:
    try:
        body = await request.json()
    except ValueError:
        return _problem(422, "body: expected a JSON object")
    if not isinstance(body, dict):
        return _problem(422, "body: expected a JSON object")
    return body


def build_router(ctx: SimContext) -> APIRouter:
    """Build the ``/_sim`` routes over the simulator's shared state."""
    router = APIRouter(prefix="/_sim", tags=["simulator"])
    engine = ctx.engine

    def faults_json() -> dict[str, Any]:
        return ctx.faults.model_dump(mode="json")

    @router.get("/health")
    async def health() -> JSONResponse:
        return JSONResponse({"status": "ok", "time": ctx.clock.now().isoformat()})

    @router.get("/faults")
    async def get_faults() -> JSONResponse:
        return JSONResponse(faults_json())

    @router.patch("/faults")
    async def patch_faults(request: Request) -> JSONResponse:
        body = await _json_object(request)
        if isinstance(body, JSONResponse):
            return body
        try:
            # Validate the whole result first, so a bad field changes nothing.
            wanted = FaultConfig.model_validate({**ctx.faults.model_dump(), **body})
        except ValidationError as exc:
            return _problem(422, _explain(exc))
        apply_faults(wanted)
        return JSONResponse(faults_json())

    @router.post("/faults/reset")
    async def reset_faults() -> JSONResponse:
        apply_faults(FaultConfig())
        return JSONResponse(faults_json())

    def apply_faults(wanted: FaultConfig) -> None:
        # Change the live object field by field: other parts may hold a reference to it.
        live = ctx.faults
        for name in FaultConfig.model_fields:
            value = getattr(wanted, name)
            if getattr(live, name) != value:
                setattr(live, name, value)

    @router.post("/price")
    async def set_price(request: Request) -> JSONResponse:
        body = await _json_object(request)
        if isinstance(body, JSONResponse):
            return body
        symbol, raw = body.get("symbol"), body.get("price")
        if not isinstance(symbol, str) or not symbol:
            return _problem(422, "symbol: a contract name such as MNQZ6 is required")
        try:
            price = Decimal(str(raw))
        except InvalidOperation:
            return _problem(422, f"price: expected a number, got {raw!r}")
        if not price.is_finite() or price <= 0 or isinstance(raw, bool):
            return _problem(422, f"price: expected a positive number, got {raw!r}")
        contract = engine.find_contract(symbol)
        if contract is None:
            return _problem(404, f"symbol: unknown contract {symbol!r}")
        if not contract.product.is_on_tick(price):
            tick = contract.product.tick_size
            return _problem(422, f"price: {price} is not a multiple of the tick size {tick}")
        engine.set_price(contract.id, price)
        quote = engine.quote(contract.id)
        return JSONResponse(
            {
                "symbol": contract.name,
                "last": str(quote.last),
                "bid": str(quote.bid),
                "ask": str(quote.ask),
            }
        )

    @router.get("/state")
    async def state() -> JSONResponse:
        orders = engine.orders()
        return JSONResponse(
            {
                "logins": ctx.auth.logins,
                "sessions": ctx.auth.live_sessions(),
                "sockets": websocket.socket_registry(ctx).count,
                "orders": len(orders),
                "working_orders": sum(1 for o in orders if o.ord_status not in FINAL_ORD_STATUSES),
                "fills": len(engine.fills()),
                "open_positions": sum(1 for p in engine.positions() if p.net_pos != 0),
                "time": ctx.clock.now().isoformat(),
            }
        )

    @router.post("/tokens/expire")
    async def expire_tokens(rewrite: bool = True) -> JSONResponse:
        # Every token stops working at once; a running seeder writes fresh ones right after
        # (clients that re-read Redis on a 401 recover, the others keep failing), unless
        # ``?rewrite=false``: then Redis keeps the dead tokens, as when a token service is down.
        expired = ctx.auth.expire_all()
        keys: list[str] = []
        for write in list(ctx.token_writers) if rewrite else []:
            try:
                keys.extend(await write())
            except Exception as exc:  # noqa: BLE001 - reported to the caller, who decides
                return _problem(502, f"tokens expired, writing fresh ones failed: {exc!r}")
        return JSONResponse({"expired_sessions": expired, "keys_rewritten": len(keys)})

    @router.post("/ws/drop")
    async def drop_sockets() -> JSONResponse:
        return JSONResponse({"dropped": await websocket.drop_all(ctx)})

    return router

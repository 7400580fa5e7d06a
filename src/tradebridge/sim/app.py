"""The simulator's HTTP application: every dialect's router on one FastAPI app.

Broker-facing routes look like Tradovate's hosts (native ``/v1/...``, the WebSocket at
``/v1/websocket``, the TradingView bridge at the root); the simulator's own surface lives
under ``/_sim`` (admin, and the OpenAPI docs, which Tradovate's hosts do not serve).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

from fastapi import FastAPI

from tradebridge.sim import admin, native, tvbridge, websocket
from tradebridge.sim.context import SimContext
from tradebridge.sim.faults import FaultMiddleware, seed_faults

_log = logging.getLogger(__name__)


def build_app(ctx: SimContext) -> FastAPI:
    """Build the simulator's ASGI app over one shared state."""
    closing = asyncio.Event()

    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        ticker = asyncio.create_task(_tick_prices(ctx), name="sim-price-ticker")
        try:
            yield
        finally:
            closing.set()
            ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await ticker

    app = FastAPI(
        title="tradebridge simulator",
        lifespan=lifespan,
        docs_url="/_sim/docs",
        redoc_url=None,
        openapi_url="/_sim/openapi.json",
        # Tradovate answers 404 to a trailing slash (reference §10.1 H5), never a redirect.
        redirect_slashes=False,
    )
    app.state.ctx = ctx
    app.state.closing = closing
    app.state.native_api = native.NativeApi(ctx)
    seed_faults(ctx.config.seed)

    app.include_router(native.build_router(ctx, app.state.native_api))
    app.include_router(websocket.build_router(ctx))
    app.include_router(tvbridge.build_router(ctx))
    app.include_router(admin.build_router(ctx))
    # Inside the faults (added first: Starlette nests later middleware outside earlier).
    app.add_middleware(native.NativeFront, api=app.state.native_api)
    app.add_middleware(FaultMiddleware, ctx=ctx, closing=closing)
    return app


async def _tick_prices(ctx: SimContext) -> None:
    """Step the price path every ``price_step_s`` seconds."""
    while True:
        await asyncio.sleep(ctx.config.price_step_s)
        try:
            ctx.engine.advance()
        except NotImplementedError:
            return  # the engine is still a stub
        except Exception:  # noqa: BLE001 - one bad step must not stop the market
            # The next step tries again; the failure is logged with its traceback.
            _log.exception("price step failed")

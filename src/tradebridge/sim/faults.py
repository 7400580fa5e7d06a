"""Fault injection for every broker-facing route of the simulator (one ASGI middleware).

The switches live in ``SimConfig.faults`` (``FaultConfig``) and are read on every request,
so tests and ``/_sim/faults`` can flip them while the server runs. Routes under ``/_sim``
(the simulator's own admin surface) and WebSocket upgrades are never touched; the
WebSocket applies its own faults.

Per request, in this order:

1. ``latency_ms``: sleep before the request is handled (so the handler runs late, too).
2. ``lockout_429_users``: HTTP 429 with an empty body (``Content-Length: 0``), the shape
   Tradovate documents for its per-user limit (reference §6.2). A name matches requests
   whose bearer token belongs to that user; ``"*"`` matches every request, logins included.
3. ``error_5xx_rate``: that share of requests (with ``error_5xx_writes_only``, of requests
   other than GET: order placement, modify, cancel) is answered 500, 502 or 503 with a short
   text body and is NOT executed (the "broker unavailable before anything happened" case).
4. ``drop_after_accept_rate``: order handlers of both dialects call ``should_drop_answer``
   after the engine accepted an order and raise ``DropAnswer`` when it says so. The
   middleware then loses the answer according to ``drop_mode``:

   * ``"reset"``: the response head is sent with a ``Content-Length`` that no body follows,
     then the connection is closed. The client sees a truncated answer (aiohttp raises
     ``ClientPayloadError``, httpx ``RemoteProtocolError``), never a status it could trust.
   * ``"hang"``: nothing is sent for ``hang_seconds`` (the client's read times out), then
     the connection is closed as in ``"reset"``. Stopping the server ends the wait early.
   * ``"http_500"``: an ordinary 500 answer, although the order exists.
   * ``"http_401"``: the dialect's ordinary 401 answer (native: ``Access is denied`` as
     text; bridge: ``{"s":"error","errmsg":"Unauthorized"}``), although the order exists:
     a token that expired or was rotated while the order was in flight (§6.3, §11.2 rule
     3: "401/429 mid-flight").
   * ``"http_4xx"``: the status ``drop_status`` (say a proxy's 408, a 409 or a 423) with a
     short text body, although the order exists.

   In every mode the order stays accepted: this is the "ambiguous outcome" of reference
   §6.3 that clients must resolve by looking the order up, never by resending.

``missing_routes`` is applied by the native dialect's dispatcher (``NativeApi.handle``, so
REST and WebSocket requests alike): an endpoint matching one of the patterns is answered
exactly as an undefined route is (401 without a valid token, else 404 ``Not found``,
reference §6.2), which plays a broker or proxy that lacks, say, ``ldeps``.
"""

from __future__ import annotations

import asyncio
import contextlib
import fnmatch
import logging
import random
from typing import TYPE_CHECKING

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from tradebridge.sim.model import ACCESS_DENIED

if TYPE_CHECKING:
    from tradebridge.sim.context import SimContext

_SERVER_ERRORS = (
    (500, b"Internal Server Error"),
    (502, b"Bad Gateway"),
    (503, b"Service Unavailable"),
)
# The head of a "reset" answer promises this many body bytes; none follow.
_PROMISED_LENGTH = b"64"
# Native routes live under this prefix; the bridge's at the root (``app.py``).
NATIVE_PREFIX = "/v1/"
# The bridge's 401, as its router answers a refused token (``tvbridge.unauthorized``).
_BRIDGE_UNAUTHORIZED = b'{"s":"error","errmsg":"Unauthorized"}'

# Fault rolls only need to be reproducible per process, not secret; ``seed_faults`` reseeds.
_dice = random.Random()  # noqa: S311 - simulated faults, not cryptography


class DropAnswer(Exception):
    """Raised by an order handler after the order was accepted: lose the answer."""


def seed_faults(seed: int) -> None:
    """Reseed the dice of every fault roll (for reproducible runs)."""
    _dice.seed(seed)


def roll(rate: float) -> bool:
    """Return True with probability ``rate`` (0 never, 1 always)."""
    if rate <= 0:
        return False
    if rate >= 1:
        return True
    return _dice.random() < rate


def should_drop_answer(ctx: SimContext) -> bool:
    """Roll ``faults.drop_after_accept_rate``: whether to lose the answer of an accepted order."""
    return roll(ctx.faults.drop_after_accept_rate)


def route_missing(ctx: SimContext, endpoint: str) -> bool:
    """Return whether ``faults.missing_routes`` removes a native endpoint (``fill/ldeps``).

    Patterns are shell-style (``*/ldeps``) and, like Tradovate's endpoints, ignore case.
    """
    key = endpoint.strip("/").lower()
    return any(fnmatch.fnmatchcase(key, pattern) for pattern in ctx.faults.missing_routes)


def bearer_token(headers: list[tuple[bytes, bytes]]) -> str | None:
    """Return the token of an ``Authorization: Bearer`` header, or None."""
    for key, value in headers:
        if key.lower() == b"authorization":
            scheme, _, token = value.decode("latin-1").partition(" ")
            if scheme.lower() == "bearer" and token.strip():
                return token.strip()
    return None


class FaultMiddleware:
    """Apply the switches of ``ctx.faults`` to every broker-facing HTTP request."""

    def __init__(self, app: ASGIApp, ctx: SimContext, closing: asyncio.Event) -> None:
        self.app = app
        self.ctx = ctx
        # Set when the server stops, so that a "hang" does not hold the shutdown.
        self.closing = closing

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Handle one ASGI connection scope."""
        if scope["type"] != "http" or str(scope["path"]).startswith("/_sim"):
            await self.app(scope, receive, send)
            return
        faults = self.ctx.faults
        if faults.latency_ms:
            await asyncio.sleep(faults.latency_ms / 1000)
        if self._locked_out(scope):
            await _answer(send, 429, b"")
            return
        writes_only = faults.error_5xx_writes_only and scope.get("method") == "GET"
        if not writes_only and roll(faults.error_5xx_rate):
            status, text = _dice.choice(_SERVER_ERRORS)
            await _answer(send, status, text)
            return
        started = False

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        except DropAnswer:
            if started:  # a handler bug: it answered, then asked to drop; keep the answer
                raise
            await self._drop(send, str(scope["path"]))

    def _locked_out(self, scope: Scope) -> bool:
        users = self.ctx.faults.lockout_429_users
        if not users:
            return False
        if "*" in users:
            return True
        token = bearer_token(scope["headers"])
        session = self.ctx.auth.verify(token) if token else None
        return session is not None and session.user.name in users

    async def _drop(self, send: Send, path: str) -> None:
        faults = self.ctx.faults
        mode = faults.drop_mode
        if mode == "http_500":
            await _answer(send, 500, b"Internal Server Error")
            return
        if mode == "http_401":
            if path.startswith(NATIVE_PREFIX):
                await _answer(send, 401, ACCESS_DENIED.encode())
            else:
                await _answer(send, 401, _BRIDGE_UNAUTHORIZED, content_type=b"application/json")
            return
        if mode == "http_4xx":
            await _answer(send, faults.drop_status, b"answer lost (simulated)")
            return
        if mode == "hang":
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.closing.wait(), timeout=faults.hang_seconds)
        # Send a head that promises a body, then return without it: the server closes the
        # connection ("returned without completing response") and the client sees a
        # truncated answer. ASGI offers no cleaner way to reset a connection.
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", _PROMISED_LENGTH),
                ],
            }
        )


async def _answer(
    send: Send, status: int, body: bytes, *, content_type: bytes = b"text/plain; charset=utf-8"
) -> None:
    headers = [(b"content-length", str(len(body)).encode())]
    if body:
        headers.append((b"content-type", content_type))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class DroppedAnswerLogFilter(logging.Filter):
    """Hide uvicorn's error line for answers the simulator drops on purpose."""

    def filter(self, record: logging.LogRecord) -> bool:
        """Return False for the line a deliberate "reset" or "hang" produces."""
        return "returned without completing response" not in record.getMessage()

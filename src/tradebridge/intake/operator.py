"""The operator endpoints: ``GET /kill``, ``POST /kill``, ``POST /resume`` (docs/kill-switch.md).

Authenticated by ``Authorization: Bearer <serve.operator_token>``, compared in constant time;
without a configured token every call answers 403, a missing or wrong token 401. The token is
never logged nor echoed. ``POST /kill`` takes ``{"account" | "accounts", "flatten", "reason",
"by"}`` (no account: every account), ``POST /resume`` the same without ``flatten``; both
answer with the kill switches as they stand afterwards.
"""

from __future__ import annotations

import json
import time
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from tradebridge.config import Settings
from tradebridge.errors import ContentRefused, InvalidInput, StoreError
from tradebridge.intake.formats.body import MAX_DEPTH, nesting_depth
from tradebridge.intake.kill import configured_accounts, release_kill_switch, throw_kill_switch
from tradebridge.intake.security import secret_matches
from tradebridge.obs.logging import get_logger
from tradebridge.store.kill import KillSwitchWatch
from tradebridge.store.ledger import Ledger

_log = get_logger("tradebridge.intake.operator")
_MAX_BODY_BYTES = 16384


class _Resume(BaseModel):
    """The body of ``POST /resume``."""

    model_config = ConfigDict(extra="forbid")

    account: str | None = Field(None, min_length=1, max_length=200)
    accounts: list[str] | None = Field(None, min_length=1, max_length=1000)
    reason: str | None = Field(None, max_length=500)
    by: str | None = Field(None, min_length=1, max_length=200, description="who asks")

    def names(self) -> list[str] | None:
        """Return the accounts named (None: every account)."""
        if self.account is not None and self.accounts is not None:
            raise InvalidInput("account and accounts are both given", field="accounts")
        if self.account is not None:
            return [self.account]
        return self.accounts


class _Kill(_Resume):
    """The body of ``POST /kill``."""

    flatten: bool = False


class _Refused(Exception):
    def __init__(self, status: int, error: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(error)
        self.status = status
        self.headers = headers


class OperatorActions:
    """Throw, release and read the kill switches: what ``POST /kill``, ``POST /resume`` and
    ``GET /kill`` do, and the dashboard's buttons (``via`` names which, in the ledger)."""

    def __init__(
        self, settings: Settings, ledger: Ledger, kill: KillSwitchWatch, *, via: str
    ) -> None:
        self._ledger = ledger
        self._kill = kill
        self._configured = configured_accounts(settings)
        self.via = via

    async def state(self) -> dict[str, object]:
        """Return the kill switches as they stand now (a read begun after this call)."""
        return (await self._kill.read_since(_now())).as_json()

    async def kill(
        self, names: list[str] | None, *, flatten: bool, by: str, reason: str | None
    ) -> dict[str, Any]:
        """Throw the switch of ``names`` (None: the global one), flattening if asked; return
        the answer of ``POST /kill``. ``InvalidInput`` names a bad account."""
        changes = await throw_kill_switch(
            self._ledger, names, flatten=flatten, configured=self._configured, changed_by=by,
            via=self.via, reason=reason,
        )  # fmt: skip
        self._kill.poke()
        signal_ids = [s for change in changes for s in change.signal_ids]
        _log.warning("kill_switch_thrown", via=self.via, by=by, flatten=signal_ids,
                     accounts=names or "every account", reason=reason)  # fmt: skip
        found = await self._kill.read_since(_now())
        return {
            "status": "killed",
            "already_on": [c.after.scope for c in changes if not c.changed],
            "signal_ids": signal_ids,
            "kill_switch": found.as_json(),
        }

    async def resume(
        self, names: list[str] | None, *, by: str, reason: str | None
    ) -> dict[str, Any]:
        """Release the switch of ``names`` (None: the global one); return the answer of
        ``POST /resume``."""
        released = await release_kill_switch(
            self._ledger, names, changed_by=by, via=self.via, reason=reason
        )
        self._kill.poke()
        _log.warning("kill_switch_released", via=self.via, by=by,
                     accounts=names or "every account", reason=reason)  # fmt: skip
        found = await self._kill.read_since(_now())
        still = {name or "global": found.stopping(name) for name, _ in released}
        return {
            "status": "resumed" if any(c for _, c in released) else "unchanged",
            "released": [c.after.scope for _, c in released if c is not None],
            "not_on": [("global" if n is None else n) for n, c in released if c is None],
            "still_stopped": {k: v for k, v in still.items() if v is not None},
            "kill_switch": found.as_json(),
        }


def build_operator_router(settings: Settings, ledger: Ledger, kill: KillSwitchWatch) -> APIRouter:
    """Return the router of the operator endpoints."""
    token = settings.serve.operator_token
    expected = token.get_secret_value() if token is not None else ""
    actions = OperatorActions(settings, ledger, kill, via="http")
    router = APIRouter(tags=["operator"])

    def authorize(request: Request) -> None:
        if not expected:
            raise _Refused(
                403,
                "the operator endpoints are off: set serve.operator_token "
                "(TRADEBRIDGE_SERVE__OPERATOR_TOKEN, at least 24 characters)",
            )
        scheme, _, given = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not secret_matches(given.strip(), expected):
            raise _Refused(401, "missing or wrong operator token (Authorization: Bearer …)",
                           {"WWW-Authenticate": "Bearer"})  # fmt: skip

    def who(request: Request, asked: str | None) -> str:
        peer = request.client.host if request.client else "unknown"
        return f"http {peer}" + (f" ({asked})" if asked else "")

    async def handle(request: Request, work: Callable[[], Awaitable[JSONResponse]]) -> JSONResponse:
        try:
            authorize(request)
            return await work()
        except _Refused as e:
            return JSONResponse({"status": "refused", "error": str(e)}, e.status, e.headers)
        except InvalidInput as e:
            return JSONResponse({"status": "invalid", "error": str(e), "field": e.field}, 400)
        except ValidationError as e:
            return JSONResponse({"status": "invalid", "error": _explain(e)}, 400)
        except ContentRefused as e:  # a StoreError, but the input's fault: not an outage
            return JSONResponse({"status": "invalid", "error": _refused(e)}, 400)
        except (StoreError, TimeoutError) as e:
            _log.warning("operator request failed", error=type(e).__name__)
            return JSONResponse(
                {"status": "unavailable", "error": f"the database failed ({type(e).__name__})"},
                503,
            )

    @router.get("/kill", summary="The kill switches (operator token)")
    async def show(request: Request) -> JSONResponse:
        async def work() -> JSONResponse:
            return JSONResponse({"status": "ok", "kill_switch": await actions.state()})

        return await handle(request, work)

    @router.post("/kill", summary="Throw the kill switch (operator token)")
    async def throw(request: Request) -> JSONResponse:
        async def work() -> JSONResponse:
            body = _Kill.model_validate(await _body(request))
            by = who(request, body.by)
            return JSONResponse(
                await actions.kill(body.names(), flatten=body.flatten, by=by, reason=body.reason)
            )

        return await handle(request, work)

    @router.post("/resume", summary="Release the kill switch (operator token)")
    async def resume(request: Request) -> JSONResponse:
        async def work() -> JSONResponse:
            body = _Resume.model_validate(await _body(request))
            by = who(request, body.by)
            return JSONResponse(await actions.resume(body.names(), by=by, reason=body.reason))

        return await handle(request, work)

    return router


async def _body(request: Request) -> dict[str, Any]:
    """Return the JSON object of the body (empty: ``{}``); ``InvalidInput`` names what is wrong."""
    raw = b""
    async for chunk in request.stream():
        raw += chunk
        if len(raw) > _MAX_BODY_BYTES:
            raise InvalidInput(f"the body is over {_MAX_BODY_BYTES} bytes")
    if not raw.strip():
        return {}
    # Measured before the (recursive) parser runs: a RecursionError caught here would leave
    # CPython 3.11's recursion bookkeeping off for the thread ("AST constructor recursion
    # depth mismatch" in a later ast.parse).
    deep = raw.count(b"[") + raw.count(b"{") > MAX_DEPTH
    if deep and nesting_depth(raw.decode("utf-8", "replace")) > MAX_DEPTH:
        raise InvalidInput("the body is nested too deeply: send a flat JSON object")
    try:
        value = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise InvalidInput("the body is not JSON") from None
    except RecursionError:
        raise InvalidInput("the body is nested too deeply: send a flat JSON object") from None
    if not isinstance(value, dict):
        raise InvalidInput("the body must be a JSON object")
    return value


def _refused(error: ContentRefused) -> str:
    """Say what the database refused, by the kind of error only (its text may quote the value)."""
    _log.warning("operator request refused by the database", error=type(error).__name__)
    kind = type(error.__cause__ or error).__name__
    return (
        f"the database cannot store this request's contents ({kind}): "
        "send text without NUL characters and of sane size"
    )


def _now() -> float:
    return time.monotonic()


def _explain(error: ValidationError) -> str:
    """Name each bad field and what is wrong with it (never its value)."""
    return "; ".join(
        f"{'.'.join(str(part) for part in e['loc']) or 'body'}: {e['msg']}"
        for e in error.errors(include_input=False)
    )

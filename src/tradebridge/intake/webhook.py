"""The TradingView webhook: ``POST /webhook`` and ``POST /webhook/{secret}``.

Order of work per request, cheapest first (reference §2): source address (403), client
certificate (403), rate (429), body size while reading (413), JSON (400), secret (401),
then the idempotency key (200 ``duplicate``) before anything else, then the full parse
(400), then ONE transaction storing the alert and its ledger rows, then the answer. The
only 5xx is 503, and only when nothing was stored: TradingView resends on 5xx, and the key
absorbs the overlap. Nothing after the commit can turn the answer into a 5xx, and nothing a
sender writes can cause one: the body is bounded before it is parsed (formats.body.decode_body),
contents the database refuses are a 400, and an unforeseen error before storing is a 400 that
is logged (nothing was stored; a 5xx would only bring three identical resends).

The rate limit spares the addresses of ``webhook.allowed_ips`` (TradingView's four by
default): TradingView does not resend a 429, so limiting it would lose alerts silently.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import JSONResponse
from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Receive, Scope, Send

from tradebridge.config import Settings
from tradebridge.domain.clock import utcnow
from tradebridge.errors import ContentRefused, InvalidInput, StoreError
from tradebridge.intake.answers import AcceptedAnswer, ErrorAnswer
from tradebridge.intake.formats.alert import AlertRejected, Format, ParsedAlert
from tradebridge.intake.formats.body import decode_body
from tradebridge.intake.formats.detect import PARSERS, detect_format
from tradebridge.intake.formats.pickmytrade import PickMyTradeAlert
from tradebridge.intake.formats.tradebridge import TradebridgeAlert, is_kill, parse_kill
from tradebridge.intake.formats.traderspost import TradersPostAlert
from tradebridge.intake.kill import configured_accounts, new_kill_group_id, throw_kill_switch
from tradebridge.intake.plan import expand_accounts, new_group_id, plan_alert
from tradebridge.intake.security import (
    Gate,
    RateLimiter,
    body_secrets,
    client_cert_ok,
    redact,
    secret_matches,
    validate_webhook_settings,
)
from tradebridge.obs import metrics
from tradebridge.obs.logging import get_logger
from tradebridge.pipeline.risk import RulesBook
from tradebridge.store.kill import KillSwitchWatch
from tradebridge.store.ledger import InsertResult, Ledger, NewAlert

__all__ = ["IntakeDeps", "build_router", "mount_webhook", "validate_webhook_settings"]

_log = get_logger("tradebridge.intake.webhook")

# Failures that mean "the database did not take it": answered 503 so TradingView resends.
# The ledger translated the driver's errors (store_errors); the database refusing the
# alert's contents (ContentRefused, a StoreError too) is a 400 and is caught first.
_STORE_ERRORS = (TimeoutError, StoreError)

_TIME_FIELD: dict[Format, str] = {"tradebridge": "time", "traderspost": "time",
                                  "pickmytrade": "date"}  # fmt: skip


@dataclass(frozen=True, slots=True)
class IntakeDeps:
    """What the webhook needs: settings, the ledger, a clock (UTC, timezone-aware) and the
    process's kill switch watch (None: one of its own, reading the database per alert)."""

    settings: Settings
    ledger: Ledger
    clock: Callable[[], datetime] = field(default=utcnow)
    kill: KillSwitchWatch | None = None


class _Refused(Exception):
    """An early answer (4xx) before anything is stored."""

    def __init__(
        self, status: int, body: ErrorAnswer, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(body.error)
        self.status = status
        self.body = body
        self.headers = headers


def mount_webhook(app: FastAPI, deps: IntakeDeps) -> ASGIApp:
    """Add the webhook's routes to ``app`` and return ``app`` behind the webhook's front door
    (``_WebhookFront``): serve this, not ``app``. ``ConfigError`` if the settings are unsafe."""
    validate_webhook_settings(deps.settings)
    intake = _Intake(deps)
    app.include_router(build_router(deps, intake))
    return _WebhookFront(app, intake)


class _WebhookFront:
    """``POST /webhook`` and ``POST /webhook/{secret}`` straight to the intake; every other
    request to the app behind.

    The same handler as the app's routes (which stay, for the OpenAPI page and as the way
    every other method or path is answered: 405, 404, the slash redirect), without FastAPI's
    layers on the hot path: its middleware stack, routing over every route, and endpoint
    dispatch, ~0.4 ms of CPU per alert (bench/README.md, hop_bench.py). The handler never
    raises (``_Intake.handle``), so nothing is lost with the error middleware.
    """

    def __init__(self, app: ASGIApp, intake: _Intake) -> None:
        self._app = app
        self._intake = intake

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST":
            path: str = scope["path"]
            secret: str | None = None
            if path == "/webhook" or (
                path.startswith("/webhook/") and (secret := path[9:]) and "/" not in secret
            ):
                response = await self._intake.handle(Request(scope, receive), secret)
                await response(scope, receive, send)
                return
        await self._app(scope, receive, send)


def build_router(deps: IntakeDeps, intake: _Intake | None = None) -> APIRouter:
    """Return the webhook's router (``intake``: the handler, else one of its own);
    ``ConfigError`` if the webhook settings are unsafe."""
    validate_webhook_settings(deps.settings)
    intake = intake or _Intake(deps)
    router = APIRouter(tags=["webhook"])
    common: dict[str, Any] = {
        "response_model": AcceptedAnswer,
        "responses": _ERROR_RESPONSES,
        "openapi_extra": {"requestBody": _REQUEST_BODY},
    }

    @router.post(
        "/webhook",
        summary="Receive a TradingView alert (secret in the body)",
        description=_DESCRIPTION,
        **common,
    )
    async def webhook(request: Request) -> JSONResponse:
        return await intake.handle(request, None)

    @router.post(
        "/webhook/{secret}",
        summary="Receive a TradingView alert (secret in the URL path)",
        description=_DESCRIPTION,
        **common,
    )
    async def webhook_with_secret(request: Request, secret: str) -> JSONResponse:
        return await intake.handle(request, secret)

    return router


class _Intake:
    def __init__(self, deps: IntakeDeps) -> None:
        self._deps = deps
        self._hook = deps.settings.webhook
        self._gate = Gate.from_config(self._hook)
        self._limiter = RateLimiter(self._hook.rate_limit_per_minute, self._hook.rate_limit_burst)
        secret = self._hook.secret
        self._secret = secret.get_secret_value() if secret is not None else ""
        settings = deps.settings
        # The rules in force per account and strategy, resolved once for this process.
        self._rules = RulesBook(settings)
        self._kill = deps.kill or KillSwitchWatch(
            deps.ledger, forced=settings.risk.kill_switch, poll_s=settings.serve.kill_switch_poll_s
        )

    async def handle(self, request: Request, path_secret: str | None) -> JSONResponse:
        try:
            return await self._handle(request, path_secret)
        except _Refused as refused:
            _count(refused.body.status)
            _log_refusal(request, refused)
            return _answer(refused.status, refused.body.model_dump(exclude_none=True),
                           refused.headers)  # fmt: skip
        except ClientDisconnect:
            # The sender went away mid-body, or the server's read deadline cut it off
            # (_http_guard): nothing was stored and nobody is left to read an answer.
            _count("disconnected")
            return _answer(400, {"status": "invalid", "error": "the body was not received"})
        except Exception:  # noqa: BLE001 - whatever the input, never a 5xx (module docstring)
            # Everything after the commit answers inside _handle, so nothing was stored here.
            _log.exception("webhook alert not read: internal error, nothing stored")
            _count("error")
            body = ErrorAnswer(
                status="invalid",
                error="the alert could not be read (internal error, logged); nothing stored",
            )
            return _answer(400, body.model_dump(exclude_none=True))

    async def _handle(self, request: Request, path_secret: str | None) -> JSONResponse:
        received_at = self._deps.clock()
        started = time.perf_counter()
        peer = request.client.host if request.client else None
        address = self._gate.client_address(peer, request.headers.get("x-forwarded-for"))
        if self._hook.ip_allowlist and not self._gate.allows(address):
            raise _Refused(403, ErrorAnswer(status="forbidden", error="address not allowed"))
        if self._hook.client_cert and not (
            self._gate.peer_is_proxy(peer) and client_cert_ok(self._hook, request.headers)
        ):
            raise _Refused(
                403, ErrorAnswer(status="forbidden", error="no valid client certificate")
            )
        # TradingView's own addresses are never limited: it does not resend a 429.
        if not self._gate.allows(address) and not self._limiter.allow(address):
            raise _Refused(
                429,
                ErrorAnswer(status="rate_limited", error="too many alerts from this address"),
                {"Retry-After": "1"},
            )
        raw = await self._read_body(request)
        try:
            body = decode_body(raw)
        except AlertRejected as e:
            raise _Refused(400, _invalid(e)) from None
        self._check_secret(body, path_secret)

        fmt = detect_format(body)
        key, body_sha = _dedupe_keys(fmt, body, raw)
        window = timedelta(seconds=self._hook.dedupe_window_s)
        if fmt == "tradebridge" and is_kill(body):
            if (repeat := await self._repeat(key, body_sha, received_at - window)) is not None:
                return repeat
            return await self._kill_switch(body, raw, key, body_sha, address, received_at)
        try:
            # Denials by a kill switch are known here (kept current by NOTIFY: no query).
            async with asyncio.timeout(self._hook_timeout()):
                switches = await self._kill.state()
        except _STORE_ERRORS as e:
            return self._unavailable(e.__cause__ or e)
        # A repeat is found by the insert itself (one statement; ON CONFLICT for a key, under
        # the body's lock for a hash): only an alert we would refuse looks for one first.
        try:
            parsed = PARSERS[fmt](body)
            stale = self._stale_reason(parsed, received_at)
            plan = plan_alert(parsed, self._deps.settings, received_at.date(),
                              group_id=new_group_id(), stale_reason=stale,
                              kill=switches, now=received_at, rules=self._rules)  # fmt: skip
        except AlertRejected as e:
            # A repeat of an alert stored before (the settings may have changed since) is
            # answered as the duplicate it is, not refused.
            if (repeat := await self._repeat(key, body_sha, received_at - window)) is not None:
                return repeat
            await self._record_invalid(fmt, body, raw, address, received_at, e)
            raise _Refused(400, _invalid(e)) from None

        alert = NewAlert(
            received_at=received_at,
            format=fmt,
            outcome="stale" if stale else "accepted",
            payload=redact(body),
            idempotency_key=key,
            body_sha256=body_sha,
            dedupe_window=window,
            source_ip=address,
            fired_at=parsed.fired_at,
            group_id=plan.group_id,
        )
        try:
            async with asyncio.timeout(self._hook_timeout()):
                stored = await self._deps.ledger.insert_alert(alert, plan.rows)
        except ContentRefused as e:
            raise _refused_contents(e.__cause__ or e) from None
        except _STORE_ERRORS as e:
            return self._unavailable(e.__cause__ or e)
        # Stored: from here on every outcome is a 200 (a 5xx would bring three resends).
        if not stored.duplicate and stored.signal_ids:
            metrics.observe_step("stored", time.perf_counter() - started)
        try:
            return self._stored_answer(stored, parsed, plan.instrument, plan.notes, stale)
        except Exception:  # noqa: BLE001 - the alert is stored; the answer must stay 2xx
            _log.exception("webhook answer failed after storing", group_id=stored.group_id)
            return _answer(200, {"status": "accepted" if not stale else "rejected",
                                 "signal_ids": list(stored.signal_ids),
                                 "group_id": stored.group_id})  # fmt: skip

    def _hook_timeout(self) -> float:
        return float(self._hook.store_timeout_s)

    async def _kill_switch(
        self,
        body: Mapping[str, Any],
        raw: bytes,
        key: str | None,
        body_sha: str | None,
        address: str,
        received_at: datetime,
    ) -> JSONResponse:
        """Throw the kill switch (``action: kill``), then record the alert; a kill is never
        stale. Thrown first: a resend after a lost answer throws it again (no harm), where a
        recorded alert without its kill would be deduplicated into nothing."""
        settings = self._deps.settings
        try:
            request = parse_kill(body)
            names = None
            if request.accounts:
                names = [n for n, _ in expand_accounts(request.accounts, settings)]
        except AlertRejected as e:
            await self._record_invalid("tradebridge", body, raw, address, received_at, e)
            raise _Refused(400, _invalid(e)) from None
        by = f"webhook {address}" + (f" strategy {request.strategy}" if request.strategy else "")
        group = new_kill_group_id()
        try:
            async with asyncio.timeout(self._hook_timeout()):
                changes = await throw_kill_switch(
                    self._deps.ledger, names, flatten=request.flatten,
                    configured=configured_accounts(settings), changed_by=by, via="webhook",
                    reason=request.reason or "webhook action kill", group_id=group,
                )  # fmt: skip
                signal_ids = [s for change in changes for s in change.signal_ids]
                alert = NewAlert(
                    received_at=received_at, format="tradebridge", outcome="kill",
                    payload=redact(body), idempotency_key=key, body_sha256=body_sha,
                    dedupe_window=timedelta(seconds=self._hook.dedupe_window_s),
                    source_ip=address, group_id=group,
                )  # fmt: skip
                stored = await self._deps.ledger.insert_alert(alert, ())
        except InvalidInput as e:
            error = AlertRejected(str(e), field="flatten" if e.field == "flatten" else "account")
            await self._record_invalid("tradebridge", body, raw, address, received_at, error)
            raise _Refused(400, _invalid(error)) from None
        except ContentRefused as e:
            raise _refused_contents(e.__cause__ or e) from None
        except _STORE_ERRORS as e:
            return self._unavailable(e.__cause__ or e)
        if stored.duplicate:
            return _duplicate(stored)
        what = "every account" if names is None else ", ".join(names)
        _count("kill")
        _log.warning("kill_switch_thrown", via="webhook", accounts=what, by=by,
                     flatten=signal_ids, reason=request.reason)  # fmt: skip
        answer = AcceptedAnswer(
            status="killed",
            signal_ids=signal_ids,
            group_id=group,
            format="tradebridge",
            detail=f"kill switch on for {what}"
            + (f"; flatten queued for {len(signal_ids)} account(s)" if signal_ids else ""),
        )
        return _answer(200, answer.model_dump(exclude_none=True))

    async def _read_body(self, request: Request) -> bytes:
        cap = self._hook.max_body_bytes
        too_large = _Refused(
            413, ErrorAnswer(status="too_large", error=f"the body is over {cap} bytes")
        )
        declared = request.headers.get("content-length")
        if declared is not None and declared.strip().isdigit() and int(declared) > cap:
            raise too_large
        chunks: list[bytes] = []
        size = 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > cap:  # enforced while reading: a huge body is never held in memory
                raise too_large
            chunks.append(chunk)
        return b"".join(chunks)

    def _check_secret(self, body: Mapping[str, Any], path_secret: str | None) -> None:
        given = [path_secret] if path_secret is not None else []
        given += body_secrets(body)
        if not self._secret:
            return  # allow_no_secret_for_local_tests (validate_webhook_settings)
        ok = bool(given)
        for value in given:
            # Every secret the alert carries must match: all compared, in constant time.
            ok &= isinstance(value, str) and secret_matches(value, self._secret)
        if not ok:
            raise _Refused(401, ErrorAnswer(status="unauthorized", error="missing or wrong secret"))

    def _stale_reason(self, parsed: ParsedAlert, received_at: datetime) -> str | None:
        if parsed.fired_at is None:
            return None
        age = (received_at - parsed.fired_at).total_seconds()
        skew = self._hook.clock_skew_s
        if age < -skew:
            raise AlertRejected(
                f"time is {-age:.1f} s in the future",
                field=_TIME_FIELD[parsed.format],
                expected=f"the fire time ({{{{timenow}}}}), at most {skew:g} s ahead of us",
            )
        limit = self._hook.stale_after_s
        if age > limit + skew:
            return (
                f"fired {age:.1f} s before it was received; alerts older than {limit:g} s "
                f"(+{skew:g} s clock skew) are not traded"
            )
        return None

    async def _record_invalid(
        self,
        fmt: str,
        body: Mapping[str, Any],
        raw: bytes,
        address: str,
        received_at: datetime,
        error: AlertRejected,
    ) -> None:
        # Audit of an authenticated but untradeable alert; best effort, never a 5xx.
        alert = NewAlert(
            received_at=received_at,
            format=fmt,
            outcome="invalid",
            payload=redact(body),
            body_sha256=hashlib.sha256(raw).hexdigest(),
            source_ip=address,
            error=str(error)[:500],
        )
        try:
            async with asyncio.timeout(self._hook_timeout()):
                await self._deps.ledger.insert_alert(alert, ())
        except _STORE_ERRORS as e:  # ContentRefused included
            _log.warning("invalid alert not recorded", error=type(e).__name__)

    def _stored_answer(
        self,
        stored: InsertResult,
        parsed: ParsedAlert,
        instrument: str | None,
        notes: tuple[str, ...],
        stale: str | None,
    ) -> JSONResponse:
        if stored.duplicate:  # a concurrent delivery won the race
            return _duplicate(stored)
        answer = AcceptedAnswer(
            status="rejected" if stale else "accepted",
            signal_ids=list(stored.signal_ids),
            group_id=stored.group_id,
            instrument=instrument,
            format=parsed.format,
            reason="stale" if stale else None,
            detail=stale,
            ignored_fields=list(parsed.ignored_fields),
            notes=list(notes),
        )
        _count("stale" if stale else "accepted")
        _log.info(
            "webhook alert stored",
            outcome=stored.outcome,
            group_id=stored.group_id,
            signal_ids=list(stored.signal_ids),
            format=parsed.format,
            instrument=instrument,
        )
        return _answer(200, answer.model_dump(exclude_none=True))

    async def _repeat(
        self, key: str | None, body_sha: str | None, since: datetime
    ) -> JSONResponse | None:
        """Answer an alert stored before as the duplicate it is; None when it is new."""
        try:
            async with asyncio.timeout(self._hook_timeout()):
                found = await self._deps.ledger.find_alert(
                    idempotency_key=key, body_sha256=body_sha, since=since
                )
        except _STORE_ERRORS as e:
            return self._unavailable(e.__cause__ or e)
        return None if found is None else _duplicate(found)

    def _unavailable(self, error: BaseException) -> JSONResponse:
        _log.warning("webhook alert not stored: database unavailable", error=type(error).__name__)
        _count("unavailable")
        body = ErrorAnswer(
            status="unavailable", error="the alert could not be stored; send it again"
        )
        return _answer(503, body.model_dump(exclude_none=True), {"Retry-After": "5"})


def _dedupe_keys(fmt: Format, body: Mapping[str, Any], raw: bytes) -> tuple[str | None, str | None]:
    """Return (idempotency key, body hash): the key when the alert has a fire time."""
    fired = body.get(_TIME_FIELD[fmt])
    if fired is None or (isinstance(fired, str) and not fired.strip()):
        return None, hashlib.sha256(raw).hexdigest()
    # The whole body (its secrets masked, its keys sorted): TradingView resends the body it
    # sent, and two orders fired in one second (a market and a limit buy of one strategy)
    # differ somewhere in theirs. Some identity fields alone made the second a "duplicate".
    identity = [fmt, _norm(fired), json.dumps(redact(body), sort_keys=True, default=str)]
    digest = hashlib.sha256(json.dumps(identity, separators=(",", ":")).encode()).hexdigest()
    return f"{fmt}:{digest}", None


def _norm(value: Any) -> Any:
    if value is None:
        return None
    if isinstance(value, dict | list):
        return json.dumps(redact(value), sort_keys=True, default=str)
    return str(value).strip().lower()


def _log_refusal(request: Request, refused: _Refused) -> None:
    """Log a refused alert: a warning for a wrong secret or a barred address (someone may be
    probing), info for a malformed or refused alert; a rate-limited flood only at debug."""
    level = {401: "warning", 403: "warning", 429: "debug"}.get(refused.status, "info")
    getattr(_log, level)(
        "webhook alert refused",
        http_status=refused.status,
        outcome=refused.body.status,
        error=refused.body.error[:300],
        field=refused.body.field,
        address=request.client.host if request.client else None,
    )


def _duplicate(found: InsertResult) -> JSONResponse:
    _count("duplicate")
    answer = AcceptedAnswer(
        status="duplicate",
        signal_ids=list(found.signal_ids),
        group_id=found.group_id,
        original_status=found.outcome,
    )
    return _answer(200, answer.model_dump(exclude_none=True))


def _refused_contents(error: BaseException) -> _Refused:
    # Only the kind of error: PostgreSQL's message may quote the offending value.
    _log.warning("webhook alert not stored: the database refused its contents",
                 error=type(error).__name__)  # fmt: skip
    return _Refused(
        400,
        ErrorAnswer(
            status="invalid",
            error=f"the database cannot store this alert's contents ({type(error).__name__})",
            expected="text without NUL characters, values of sane size",
        ),
    )


def _invalid(error: AlertRejected) -> ErrorAnswer:
    return ErrorAnswer(status="invalid", error=str(error), field=error.field,
                       expected=error.expected)  # fmt: skip


class _AsciiJSONResponse(JSONResponse):
    """JSON with ASCII escapes: an answer quoting hostile text can always be encoded."""

    def render(self, content: Any) -> bytes:
        return json.dumps(content, allow_nan=False, separators=(",", ":")).encode("ascii")


def _answer(
    status: int, content: dict[str, Any], headers: dict[str, str] | None = None
) -> JSONResponse:
    return _AsciiJSONResponse(status_code=status, content=content, headers=headers)


def _count(outcome: str) -> None:
    try:
        metrics.WEBHOOK_REQUESTS.labels(outcome=outcome).inc()
    except Exception:  # noqa: BLE001 - a metric must never change an answer
        _log.debug("webhook metric failed", outcome=outcome)


def _inline(schema: dict[str, Any]) -> dict[str, Any]:
    """Inline ``$defs`` references so the schema stands alone inside the OpenAPI document."""
    defs = schema.pop("$defs", {})

    def walk(node: Any) -> Any:
        if isinstance(node, dict):
            ref = node.get("$ref")
            if isinstance(ref, str) and ref.startswith("#/$defs/"):
                return walk(defs[ref.removeprefix("#/$defs/")])
            return {k: walk(v) for k, v in node.items()}
        if isinstance(node, list):
            return [walk(v) for v in node]
        return node

    result: dict[str, Any] = walk(schema)
    return result


_ALERT_SCHEMA = {
    "oneOf": [
        _inline(TradebridgeAlert.model_json_schema()),
        _inline(TradersPostAlert.model_json_schema()),
        _inline(PickMyTradeAlert.model_json_schema()),
    ]
}
_REQUEST_BODY: dict[str, Any] = {
    "required": True,
    "description": "The alert message. TradingView sends text/plain when the message is not "
    "valid JSON and application/json when it is; both are read the same way.",
    "content": {
        "application/json": {"schema": _ALERT_SCHEMA},
        "text/plain": {"schema": {"type": "string", "description": "a JSON alert as text"}},
    },
}
_ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorAnswer, "description": "Invalid alert: the field and what it expects"},
    401: {"model": ErrorAnswer, "description": "Missing or wrong secret"},
    403: {"model": ErrorAnswer, "description": "Address or client certificate not allowed"},
    413: {"model": ErrorAnswer, "description": "Body over webhook.max_body_bytes"},
    429: {"model": ErrorAnswer, "description": "Rate limited (per address, per process)"},
    503: {"model": ErrorAnswer, "description": "Not stored (database down): send it again"},
}
_DESCRIPTION = """\
Stores the alert as ledger rows (one per account, sharing a group id) in one transaction,
then answers; workers place the orders. Formats: tradebridge's own, TradersPost-style and
PickMyTrade-style, recognised automatically (docs/tradingview.md).

200 answers: `accepted` (signal ids), `duplicate` (a repeat of a stored alert: the first
delivery's ids), `rejected` with reason `stale` (stored as denied, not traded), `killed`
(action `kill`: the kill switch is on; with `flatten`, the flatten rows' ids).
"""

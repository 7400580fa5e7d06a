"""The dashboard's routes: login, the pages, the live stream and the actions (POST + CSRF)."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qs

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response, StreamingResponse

from tradebridge.brokers.auth import AccountTokens
from tradebridge.brokers.pool import BrokerPool
from tradebridge.config import Settings
from tradebridge.domain.clock import parse_since, utcnow
from tradebridge.domain.commands import CancelOrder
from tradebridge.domain.ids import AccountName, BrokerOrderId
from tradebridge.domain.lifecycle import SignalStatus
from tradebridge.errors import BridgeError, ContentRefused, InvalidInput, StoreError
from tradebridge.intake.operator import OperatorActions
from tradebridge.obs.logging import get_logger, redact_text
from tradebridge.runtime.dashboard import _html as h
from tradebridge.runtime.dashboard._session import (
    LOGIN_COOKIE,
    SESSION_COOKIE,
    LoginLimiter,
    Session,
    Sessions,
)
from tradebridge.runtime.health import HealthChecker
from tradebridge.runtime.live import is_live
from tradebridge.runtime.risk_watch import RiskWatch
from tradebridge.store.kill import KillSwitchWatch
from tradebridge.store.ledger import Ledger, LedgerRow
from tradebridge.store.ledger.trace import Trace, load_trace, signal_record

_log = get_logger("tradebridge.runtime.dashboard")
_MAX_FORM_BYTES = 16384
_BROKER_TIMEOUT_S = 10.0
_LIST_LIMIT = 200
_HEARTBEAT_S = 15.0
_NOTIFICATIONS_SHOWN = 20
_HEADERS = {
    "Cache-Control": "no-store",
    "Content-Security-Policy": (
        "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
        "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
}
_OFF = (
    "The dashboard is off: no password is configured. Set dashboard.password (the variable "
    "TRADEBRIDGE_DASHBOARD__PASSWORD, at least 12 characters) and restart; `tradebridge up` "
    "makes one in its data directory (dashboard_password). See docs/dashboard.md."
)


@dataclass(frozen=True, slots=True)
class DashboardDeps:
    """What the dashboard reads and acts on; the parts a process lacks are None."""

    settings: Settings
    ledger: Ledger
    checker: HealthChecker
    kill: KillSwitchWatch
    risk: RiskWatch | None = None
    pool: BrokerPool | None = None
    tokens: AccountTokens | None = None
    stop: asyncio.Event | None = None  # set when the process stops: live streams end


class _Denied(Exception):
    """A request the dashboard refuses: its answer."""

    def __init__(self, response: Response) -> None:
        super().__init__("refused")
        self.response = response


def _html(body: str, status: int = 200) -> HTMLResponse:
    return HTMLResponse(body, status, headers=_HEADERS)


def _redirect(to: str) -> RedirectResponse:
    return RedirectResponse(to, 303, headers=_HEADERS)


def _peer(request: Request) -> str:
    return request.client.host if request.client else "unknown"


def _nul_in(request: Request) -> str | None:
    """Return the name of a query or path parameter holding a NUL, if one does: the database
    refuses such text, and its error would read as an outage."""
    given = [*request.query_params.multi_items(), *request.path_params.items()]
    return next((name for name, value in given if "\x00" in str(value)), None)


async def _form(request: Request) -> dict[str, str]:
    """Return the fields of a urlencoded form body (the first value of each)."""
    raw = b""
    async for chunk in request.stream():
        raw += chunk
        if len(raw) > _MAX_FORM_BYTES:
            raise _Denied(_html(h.page("Too large", h.note("the form is too large", "error")), 413))
    try:
        fields = parse_qs(raw.decode(), keep_blank_values=True, max_num_fields=50)
    except (UnicodeDecodeError, ValueError):
        bad = h.page("Bad form", h.note("the form is unreadable", "error"))
        raise _Denied(_html(bad, 400)) from None
    return {k: v[0] for k, v in fields.items()}


def build_dashboard_router(deps: DashboardDeps) -> APIRouter:
    """Return the router of ``/ui`` (a 404 explaining how to enable it without a password)."""
    router = APIRouter(include_in_schema=False)
    password = deps.settings.dashboard.password
    if password is None:

        @router.api_route("/ui", methods=["GET", "POST"])
        @router.api_route("/ui/{rest:path}", methods=["GET", "POST"])
        async def off(rest: str = "") -> HTMLResponse:
            del rest
            return _html(h.page("Dashboard off", h.note(_OFF, "error")), 404)

        return router
    return _Dashboard(
        deps, Sessions(password.get_secret_value(), deps.settings.dashboard.session_ttl_s)
    ).router


class _Dashboard:
    """The routes of an enabled dashboard."""

    def __init__(self, deps: DashboardDeps, sessions: Sessions) -> None:
        self.deps = deps
        self.cfg = deps.settings.dashboard
        self.sessions = sessions
        self.limiter = LoginLimiter(self.cfg.login_attempts_per_minute)
        self.actions = OperatorActions(deps.settings, deps.ledger, deps.kill, via="dashboard")
        self.accounts = [a.name for a in deps.settings.accounts]
        self.live = is_live(deps.settings)
        self.router = APIRouter(include_in_schema=False)
        r = self.router
        r.add_api_route("/ui/assets/app.css", self.css, methods=["GET"])
        r.add_api_route("/ui/assets/app.js", self.js, methods=["GET"])
        r.add_api_route("/ui", self.home, methods=["GET"])
        r.add_api_route("/ui/login", self.login_form, methods=["GET"])
        r.add_api_route("/ui/login", self.login, methods=["POST"])
        r.add_api_route("/ui/logout", self.guarded(self.logout), methods=["POST"])
        r.add_api_route("/ui/signals", self.guarded(self.signals), methods=["GET"])
        r.add_api_route("/ui/signals/stream", self.stream, methods=["GET"])
        r.add_api_route("/ui/trace/{signal_id:path}", self.guarded(self.trace), methods=["GET"])
        r.add_api_route("/ui/accounts", self.guarded(self.accounts_page), methods=["GET"])
        r.add_api_route("/ui/accounts/cancel", self.guarded(self.cancel), methods=["POST"])
        r.add_api_route("/ui/health", self.guarded(self.health), methods=["GET"])
        for action in ("kill", "resume", "flatten"):
            r.add_api_route(f"/ui/{action}", self.guarded(self.switch), methods=["POST"])
        r.add_api_route("/ui/latency", self.guarded(self.latency), methods=["GET"])

    def page(self, title: str, body: str, *, active: str = "", csrf: str | None = None) -> str:
        """Return a whole page (every page says LIVE when orders trade real money)."""
        return h.page(title, body, active=active, csrf=csrf, live=self.live)

    # --- sessions -------------------------------------------------------------------------

    async def session(self, request: Request) -> Session | None:
        """Return the request's valid session, if any: signed, not expired, not logged out
        (a logout is recorded in the ledger, so a copy of the cookie ends with it).
        ``StoreError`` / ``TimeoutError`` if the ledger cannot say."""
        session = self.sessions.read(request.cookies.get(SESSION_COOKIE))
        if session is None or await self.deps.ledger.dashboard_session_ended(session.id):
            return None
        return session

    async def _session_or_none(self, request: Request) -> Session | None:
        """The request's session; None too when the ledger cannot say (the login page)."""
        try:
            return await self.session(request)
        except (StoreError, TimeoutError):
            return None

    def guarded(
        self, handler: Callable[[Request, Session], Awaitable[Response]]
    ) -> Callable[[Request], Awaitable[Response]]:
        """Wrap ``handler``: a page without a session goes to the login; a POST needs the
        session's CSRF token; a database failure is a 503 page, not a traceback, and text the
        database refuses (a NUL in a filter, a trace id or a reason) a 400 page."""

        async def endpoint(request: Request) -> Response:
            try:
                session = await self.session(request)
            except (StoreError, TimeoutError) as e:
                _log.warning("dashboard_read_failed", error=type(e).__name__)
                note = h.note(f"the database failed ({type(e).__name__})", "error")
                return _html(self.page("Unavailable", note), 503)
            if session is None:
                if request.method == "POST":
                    return _html(self.page("Logged out", h.note("log in again", "error")), 401)
                return _redirect("/ui/login")
            refused = _nul_in(request)
            if refused is not None:
                return self.error(session, "Refused", f"{refused} must not contain NUL "
                                  "characters: correct it and try again", 400)  # fmt: skip
            try:
                if request.method == "POST":
                    form = await _form(request)
                    if not self.sessions.csrf_matches(session.id, form.get("csrf")):
                        _log.warning("dashboard_csrf_refused", peer=_peer(request))
                        return self.error(session, "Refused", "missing or wrong CSRF token; "
                                          "reload the page and try again", 403)  # fmt: skip
                    request.state.form = form
                return await handler(request, session)
            except _Denied as e:
                return e.response
            except ContentRefused as e:  # a StoreError, but the input's fault: not an outage
                kind = type(e.__cause__ or e).__name__
                _log.warning("dashboard_input_refused", error=kind)
                return self.error(session, "Refused", f"the database refused what was entered "
                                  f"({kind}): use text without NUL characters", 400)  # fmt: skip
            except (StoreError, TimeoutError) as e:
                _log.warning("dashboard_read_failed", error=type(e).__name__)
                return self.error(session, "Unavailable",
                                  f"the database failed ({type(e).__name__})", 503)  # fmt: skip

        return endpoint

    def csrf(self, session: Session) -> str:
        return self.sessions.csrf(session.id)

    def error(self, session: Session, title: str, text: str, status: int) -> HTMLResponse:
        return _html(self.page(title, h.note(text, "error"), csrf=self.csrf(session)), status)

    async def css(self) -> Response:
        return Response(h.CSS, media_type="text/css", headers=_HEADERS)

    async def js(self) -> Response:
        return Response(h.SCRIPT, media_type="text/javascript", headers=_HEADERS)

    async def home(self, request: Request) -> Response:
        return _redirect("/ui/signals" if await self._session_or_none(request) else "/ui/login")

    def _login_page(self, nonce: str, message: str = "", status: int = 200) -> Response:
        body = (
            (h.note(message, "error") if message else "")
            + '<form method="post" action="/ui/login">'
            + h.csrf_field(self.sessions.csrf(f"login:{nonce}"))
            + '<label>Password <input type="password" name="password" autocomplete='
            '"current-password" required autofocus></label> <button type="submit">Log in'
            "</button></form>"
        )
        response: Response = _html(self.page("Log in", body), status)
        response.set_cookie(LOGIN_COOKIE, nonce, max_age=3600, path="/ui/login", httponly=True,
                            samesite="strict", secure=self.cfg.secure_cookie)  # fmt: skip
        return response

    async def login_form(self, request: Request) -> Response:
        if await self._session_or_none(request) is not None:
            return _redirect("/ui/signals")
        nonce = request.cookies.get(LOGIN_COOKIE) or secrets.token_urlsafe(16)
        return self._login_page(nonce)

    async def login(self, request: Request) -> Response:
        peer = _peer(request)
        nonce = request.cookies.get(LOGIN_COOKIE) or secrets.token_urlsafe(16)
        wait = self.limiter.allow(peer)
        if wait is not None:
            _log.warning("dashboard_login_limited", peer=peer)
            response = self._login_page(
                nonce, f"too many login attempts; wait {wait:.0f} s and try again", 429
            )
            response.headers["Retry-After"] = str(max(1, round(wait)))
            return response
        try:
            form = await _form(request)
        except _Denied as e:
            return e.response
        given_nonce = request.cookies.get(LOGIN_COOKIE)
        if not given_nonce or not self.sessions.csrf_matches(f"login:{given_nonce}",
                                                             form.get("csrf")):  # fmt: skip
            return self._login_page(nonce, "the login form expired; try again", 403)
        if not self.sessions.password_matches(form.get("password", "")):
            _log.warning("dashboard_login_failed", peer=peer)
            return self._login_page(nonce, "wrong password", 401)
        cookie, _session = self.sessions.issue()
        _log.info("dashboard_login", peer=peer)
        done = _redirect("/ui/signals")
        done.set_cookie(SESSION_COOKIE, cookie, max_age=int(self.sessions.ttl_s), path="/ui",
                        httponly=True, samesite="strict",
                        secure=self.cfg.secure_cookie)  # fmt: skip
        done.delete_cookie(LOGIN_COOKIE, path="/ui/login")
        return done

    async def logout(self, request: Request, session: Session) -> Response:
        del request
        # Recorded until the cookie would expire: no copy of it (another tab, a shared
        # machine, a proxy's log) opens a page or throws a switch after this.
        until = datetime.fromtimestamp(session.expires, UTC)
        await self.deps.ledger.end_dashboard_session(session.id, until)
        _log.info("dashboard_logout")
        response = _redirect("/ui/login")
        response.delete_cookie(SESSION_COOKIE, path="/ui")
        return response

    # --- signals ----------------------------------------------------------------------------

    def _filters(self, request: Request) -> dict[str, str]:
        q = request.query_params
        return {k: q.get(k, "").strip() for k in ("account", "strategy", "status", "since")}

    async def _rows(self, filters: dict[str, str]) -> list[LedgerRow]:
        since = parse_since(filters["since"], utcnow()) if filters["since"] else None
        status = filters["status"]
        return await self.deps.ledger.list_signals(
            since=since, statuses=[status] if status else None,
            account=filters["account"] or None, strategy=filters["strategy"] or None,
            limit=_LIST_LIMIT,
        )  # fmt: skip

    @staticmethod
    def _row_cells(row: LedgerRow) -> list[str]:
        r = signal_record(row)
        what = " ".join(str(x) for x in (r["intent"], r["side"], r["quantity"], r["instrument"])
                        if x)  # fmt: skip
        fill = f"{r['filled_qty']} @ {r['avg_fill_price']}" if r["avg_fill_price"] else ""
        latency = "" if r["latency_ms"] is None else f"{r['latency_ms']} ms"
        link = f'<a href="{h.trace_url(row.signal_id)}">{h.esc(row.signal_id)}</a>'
        created = (r["created_at"] or "")[:23].replace("T", " ")
        return [h.esc(created), link, h.esc(r["source"]), h.esc(r["account"]),
                h.esc(r["strategy"]), h.esc(what), h.badge(r["status"]),
                h.esc(r["broker_order_id"]), h.esc(fill), h.esc(latency),
                h.esc(r["error"])]  # fmt: skip

    def _rows_html(self, rows: list[LedgerRow]) -> str:
        if not rows:
            return '<tr><td colspan="11">no signals match</td></tr>'
        return h.rows_html(self._row_cells(row) for row in rows)

    async def signals(self, request: Request, session: Session) -> Response:
        filters = self._filters(request)
        if "since" not in request.query_params:
            filters["since"] = "1h"
        try:
            rows = await self._rows(filters)
        except ValueError as e:
            return self.error(session, "Signals", f"since: {e}", 400)
        statuses = "".join(
            f'<option value="{s.value}"{" selected" if s.value == filters["status"] else ""}>'
            f"{s.value}</option>"
            for s in SignalStatus
        )
        accounts = "".join(
            f'<option value="{h.esc(a)}"{" selected" if a == filters["account"] else ""}>'
            f"{h.esc(a)}</option>"
            for a in self.accounts
        )
        form = (
            '<form method="get" action="/ui/signals" class="filters">'
            f'<label>Account <select name="account"><option value="">any</option>{accounts}'
            "</select></label>"
            f'<label>Strategy <input name="strategy" value="{h.esc(filters["strategy"])}">'
            "</label>"
            f'<label>Status <select name="status"><option value="">any</option>{statuses}'
            "</select></label>"
            f'<label>Since <input name="since" size="8" value="{h.esc(filters["since"])}" '
            'placeholder="1h, 30m, ISO time"></label><button type="submit">Filter</button>'
            "</form>"
        )
        stream = h.url("signals/stream", **filters)
        headers = ["time (UTC)", "signal", "source", "account", "strategy", "intent", "status",
                   "broker order", "fill", "latency", "error"]  # fmt: skip
        head = "".join(f"<th>{h.esc(x)}</th>" for x in headers)
        body = (
            f'{form}<p id="live">live</p><table id="signals"><thead><tr>{head}</tr></thead>'
            f'<tbody id="signal-rows" data-stream="{stream}">{self._rows_html(rows)}</tbody>'
            "</table>"
        )
        return _html(self.page("Signals", body, active="signals", csrf=self.csrf(session)))

    async def stream(self, request: Request) -> Response:
        try:
            session = await self.session(request)
        except (StoreError, TimeoutError) as e:
            return Response(f"the database failed ({type(e).__name__})", 503, headers=_HEADERS)
        if session is None:
            return Response("log in first", 401, headers=_HEADERS)
        filters = self._filters(request)
        try:
            if filters["since"]:
                parse_since(filters["since"], utcnow())
        except ValueError as e:
            return Response(f"since: {e}", 400, headers=_HEADERS)
        refused = _nul_in(request)
        if refused is not None:
            return Response(f"{refused} must not contain NUL characters", 400, headers=_HEADERS)
        events = self._events(filters, session)
        return StreamingResponse(
            events, media_type="text/event-stream", headers={**_HEADERS, "X-Accel-Buffering": "no"}
        )

    async def _events(self, filters: dict[str, str], session: Session) -> AsyncIterator[str]:
        """Yield a ``rows`` event whenever the table body changes, a comment as heartbeat."""
        stop = self.deps.stop
        last = ""
        quiet = 0.0
        yield "retry: 2000\n\n"
        while (stop is None or not stop.is_set()) and session.expires > self.sessions.now():
            try:
                if await self.deps.ledger.dashboard_session_ended(session.id):
                    return  # logged out (in another tab, or another browser): the stream ends
                fragment = self._rows_html(await self._rows(filters))
            except (StoreError, TimeoutError) as e:
                why = h.esc(type(e).__name__)
                fragment = f'<tr><td colspan="11">the database failed ({why}); retrying</td></tr>'
            digest = hashlib.sha256(fragment.encode()).hexdigest()
            if digest != last:
                last, quiet = digest, 0.0
                yield f"event: rows\ndata: {json.dumps({'html': fragment})}\n\n"
            elif quiet >= _HEARTBEAT_S:
                quiet = 0.0
                yield ": keep-alive\n\n"
            if stop is None:
                await asyncio.sleep(self.cfg.refresh_s)
            else:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), self.cfg.refresh_s)
            quiet += self.cfg.refresh_s

    # --- trace ------------------------------------------------------------------------------

    async def trace(self, request: Request, session: Session) -> Response:
        signal_id = request.path_params["signal_id"]
        found = await load_trace(self.deps.ledger, signal_id)
        if found is None:
            return self.error(session, "Trace", f"no signal with signal_id {signal_id!r}", 404)
        body = _trace_body(found)
        return _html(
            self.page(f"Signal {signal_id}", body, active="signals", csrf=self.csrf(session))
        )

    # --- accounts ---------------------------------------------------------------------------

    async def accounts_page(self, request: Request, session: Session) -> Response:
        q = request.query_params
        message = ""
        if q.get("cancelled"):
            message = h.note(f"cancel of order {q['cancelled']} sent; the broker accepted it", "ok")
        return _html(await self._accounts_html(session, message))

    async def _accounts_html(self, session: Session, message: str) -> str:
        csrf = self.csrf(session)
        parts = [message]
        standings = self.deps.risk.current if self.deps.risk is not None else {}
        for name in self.accounts:
            parts.append(f'<section class="account" data-account="{h.esc(name)}">'
                         f"<h2>{h.esc(name)}</h2>")  # fmt: skip
            standing = standings.get(name)
            if standing is None:
                parts.append(h.note("risk state not read yet"))
            else:
                risk = standing.as_json()
                parts.append(h.facts({
                    "trading day": risk["trading_day"], "balance": risk["balance"],
                    "day P&L": risk["day_pnl"], "open orders": risk["open_orders"],
                    "orders today": risk["orders_today"],
                    "limits reached": ", ".join(risk["reached"]) or "none",
                }))  # fmt: skip
                if risk["limits"]:
                    parts.append(h.table(
                        ["limit", "value", "limit at", "room", "reached", "setting"],
                        ([h.esc(rule), h.esc(x["value"]), h.esc(x["limit"]), h.esc(x["room"]),
                          h.esc("yes" if x["reached"] else "no"), h.esc(x["setting"])]
                         for rule, x in risk["limits"].items()),
                    ))  # fmt: skip
            parts.append(await self._broker_html(name, csrf))
            parts.append(await self._position_check_html(name))
            parts.append("</section>")
        parts.append(await self._tokens_html())
        return self.page("Accounts", "".join(parts), active="accounts", csrf=csrf)

    async def _broker_html(self, name: str, csrf: str) -> str:
        pool = self.deps.pool
        if pool is None:
            return h.note("no broker in this process")
        try:
            async with asyncio.timeout(_BROKER_TIMEOUT_S):
                broker = await pool.get(name)
                positions = await broker.position_reports(AccountName(name))
                orders = await broker.order_reports(AccountName(name))
        except (BridgeError, TimeoutError) as e:
            return h.note(f"the broker did not answer: {type(e).__name__}: {e}", "error")
        held = [p for p in positions if p.net_qty]
        out = ["<h3>Positions</h3>"]
        out.append(h.table(["contract", "net qty", "avg price", "open P&L", "realized P&L"],
                           ([h.esc(p.contract), h.esc(p.net_qty), h.esc(p.avg_price),
                             h.esc(p.open_pnl), h.esc(p.realized_pnl)] for p in held))
                   if held else h.note("flat"))  # fmt: skip
        working = [o for o in orders if o.status.is_open]
        out.append("<h3>Working orders</h3>")
        if not working:
            out.append(h.note("none"))
        else:
            rows = []
            for o in working:
                cancel = (
                    '<form method="post" action="/ui/accounts/cancel" class="inline">'
                    f"{h.csrf_field(csrf)}"
                    f'<input type="hidden" name="account" value="{h.esc(name)}">'
                    f'<input type="hidden" name="order_id" value="{h.esc(o.broker_order_id)}">'
                    f'<button type="submit" data-cancel="{h.esc(o.broker_order_id)}">Cancel'
                    "</button></form>"
                )
                rows.append([h.esc(o.broker_order_id), h.esc(o.contract), h.esc(o.side),
                             h.esc(o.order_type), h.esc(o.quantity), h.esc(o.filled_qty),
                             h.esc(o.limit_price), h.esc(o.stop_price), h.esc(o.status),
                             h.esc(o.client_order_id), cancel])  # fmt: skip
            out.append(h.table(["id", "contract", "side", "type", "qty", "filled", "limit",
                                "stop", "status", "client id", ""], rows))  # fmt: skip
        return "".join(out)

    async def _position_check_html(self, name: str) -> str:
        """The last position check (docs/dispatcher.md "Positions"): what tradebridge's fills
        explain, what the account holds besides, and any divergence."""
        checks = [c for c in await self.deps.ledger.position_checks(name)
                  if c.broker_net or c.ours or c.accepted or c.diverged_since]  # fmt: skip
        out = ["<h3>Position check</h3>"]
        if not checks:
            out.append(h.note("nothing held or traded by tradebridge at the last check"))
            return "".join(out)
        rows = []
        for c in checks:
            state = (
                f"DIVERGED since {c.diverged_since:%Y-%m-%d %H:%M:%S}: {c.unexplained:+} "
                f"unexplained (tradebridge reconcile accept {name})"
                if c.diverged_since is not None
                else "ok"
            )
            mark = "diverged" if c.diverged_since else "ok"
            rows.append([h.esc(c.contract), h.esc(f"{c.broker_net:+}"), h.esc(f"{c.ours:+}"),
                         h.esc(f"{c.accepted:+} ({c.accepted_by})"),
                         h.esc(f"{c.checked_at:%H:%M:%S}" if c.checked_at else ""),
                         f'<span data-position="{mark}">{h.esc(state)}</span>'])  # fmt: skip
        out.append(h.table(["contract", "broker", "tradebridge's fills", "held besides",
                            "checked", "state"], rows))  # fmt: skip
        return "".join(out)

    async def _tokens_html(self) -> str:
        out = ["<section><h2>Token health</h2>"]
        if self.deps.tokens is None:
            out.append(h.note("no token store in this process"))
        else:
            try:
                found = await self.deps.tokens.health(self.accounts)
            except BridgeError as e:
                out.append(h.note(f"cannot read the tokens: {type(e).__name__}", "error"))
                found = None
            if found is not None:
                # One line per Tradovate user: a token covers every account of its user.
                by_user: dict[str, list[tuple[str, dict[str, Any]]]] = {}
                for account, entry in found.detail["accounts"].items():
                    by_user.setdefault(entry.get("user") or "(no user)", []).append(
                        (account, entry)
                    )
                rows = []
                for user, entries in sorted(by_user.items()):
                    for account, entry in entries:
                        rows.append([h.esc(user), h.esc(account), h.badge(entry["state"]),
                                     h.esc(entry.get("expires_at")),
                                     h.esc("yes" if entry.get("self_managed") else "no"),
                                     h.esc(entry.get("until") or entry.get("login_error")
                                           or entry.get("error"))])  # fmt: skip
                out.append(h.table(["user", "account", "token", "expires at", "self-managed",
                                    "detail"], rows))  # fmt: skip
        out.append("</section>")
        return "".join(out)

    async def cancel(self, request: Request, session: Session) -> Response:
        form: dict[str, str] = request.state.form
        account, order_id = form.get("account", ""), form.get("order_id", "").strip()
        if account not in self.accounts or not order_id:
            return self.error(session, "Cancel", "name a configured account and an order id",
                              400)  # fmt: skip
        if self.deps.pool is None:
            return self.error(session, "Cancel", "no broker in this process", 503)
        try:
            async with asyncio.timeout(_BROKER_TIMEOUT_S):
                broker = await self.deps.pool.get(account)
                await broker.cancel(CancelOrder(AccountName(account), BrokerOrderId(order_id)))
        except (BridgeError, TimeoutError) as e:
            _log.warning("dashboard_cancel_failed", account=account, broker_order_id=order_id,
                         error=type(e).__name__)  # fmt: skip
            message = h.note(f"cancel of order {order_id} failed: {type(e).__name__}: {e}",
                             "error")  # fmt: skip
            return _html(await self._accounts_html(session, message), 502)
        _log.warning("dashboard_cancel", account=account, broker_order_id=order_id,
                     by=f"dashboard {_peer(request)}")  # fmt: skip
        return _redirect(f"/ui/accounts?cancelled={order_id}")

    # --- health and the kill switch ---------------------------------------------------------

    async def health(self, request: Request, session: Session) -> Response:
        report = await self.deps.checker.check()
        state = await self.actions.state()
        message = ""
        done = request.query_params.get("done")
        if done in _DONE:
            message = h.note(_DONE[done], "ok")
        checks = [
            [h.esc(name), h.badge(check.get("level") or ("ok" if check["ok"] else "failing")),
             h.esc(check.get("latency_ms")),
             h.pretty({k: v for k, v in check.items() if k not in {"ok", "level", "latency_ms"}})]
            for name, check in report["checks"].items()
        ]  # fmt: skip
        csrf = self.csrf(session)
        on = bool(state["global"])
        options = "".join(f'<option value="{h.esc(a)}">{h.esc(a)}</option>' for a in self.accounts)
        switch = (
            f'<section><h2>Kill switch</h2><p id="kill-state" data-on="{"yes" if on else "no"}">'
            f"global: <strong>{'ON' if on else 'off'}</strong></p>{h.pretty(state)}"
            f'<form method="post" action="/ui/{"resume" if on else "kill"}">{h.csrf_field(csrf)}'
            f'<label>Account <select name="account"><option value="">every account</option>'
            f'{options}</select></label> <label>Reason <input name="reason"></label> '
            f'<button type="submit" id="kill-toggle">{"Release" if on else "Throw"} the kill '
            "switch…</button></form></section>"
            "<section><h2>Flatten all</h2><p>Throws the kill switch of every account and "
            "queues a flatten of each: working orders cancelled, positions closed.</p>"
            f'<form method="post" action="/ui/flatten">{h.csrf_field(csrf)}'
            '<button type="submit" class="danger" id="flatten">Flatten all…</button></form>'
            "</section>"
        )
        body = (
            f"{message}<p>Status: {h.badge(report['status'])} · environment "
            f"{h.esc(report['environment'])}{' (LIVE: real money)' if report['live'] else ''}</p>"
            f"{switch}<section><h2>Components</h2>"
            f"{h.table(['check', 'state', 'latency ms', 'detail'], checks)}</section>"
            f"{await self._notifications_html()}"
        )
        return _html(self.page("Health", body, active="health", csrf=csrf))

    async def _notifications_html(self) -> str:
        """Return the latest notifications the ledger recorded (docs/notifications.md)."""
        out = ['<section><h2>Notifications</h2><div id="notifications">']
        try:
            sends = await self.deps.ledger.recent_sends(_NOTIFICATIONS_SHOWN)
        except (StoreError, TimeoutError) as e:
            out.append(h.note(f"cannot read the notifications: {type(e).__name__}", "error"))
            sends = None
        if sends is not None and not sends:
            out.append(h.note("none sent yet (docs/notifications.md: [notify] channels)"))
        elif sends:
            # The error is the channel's answer: masked like a log line, in case it quotes one.
            rows = (
                [h.esc(f"{s.ts_done:%Y-%m-%d %H:%M:%S}"), h.esc(s.kind), h.esc(s.phase),
                 h.esc(s.title), h.esc(s.channel), h.badge(s.outcome), h.esc(s.attempts),
                 h.esc(redact_text(s.error) if s.error else None)]
                for s in sends
            )  # fmt: skip
            out.append(h.table(["when (UTC)", "kind", "phase", "title", "channel", "outcome",
                                "attempts", "error"], rows))  # fmt: skip
        out.append("</div></section>")
        return "".join(out)

    async def switch(self, request: Request, session: Session) -> Response:
        """Kill, resume or flatten: a first POST asks to confirm, the second (confirm=yes) acts."""
        action = request.url.path.rsplit("/", 1)[-1]
        form: dict[str, str] = request.state.form
        account = form.get("account", "").strip() or None
        reason = form.get("reason", "").strip()[:500] or None
        names = None if account is None else [account]
        if form.get("confirm") != "yes":
            return _html(self._confirm(session, action, account, reason))
        by = f"dashboard {_peer(request)}"
        try:
            if action == "resume":
                await self.actions.resume(names, by=by, reason=reason)
            else:
                await self.actions.kill(names, flatten=action == "flatten", by=by, reason=reason)
        except InvalidInput as e:
            return self.error(session, "Kill switch", str(e), 400)
        return _redirect(f"/ui/health?done={action}")

    def _confirm(self, session: Session, action: str, account: str | None,
                 reason: str | None) -> str:  # fmt: skip
        target = f"account {account}" if account else "every account"
        what = {
            "kill": f"Throw the kill switch for {target}? New orders will be denied.",
            "resume": f"Release the kill switch for {target}? New orders will be placed again.",
            "flatten": "Flatten every account? The kill switch of every account is thrown, "
            "working orders are cancelled and positions closed.",
        }[action]
        body = (
            f'<p id="confirm-text">{h.esc(what)}</p><form method="post" action="/ui/{action}">'
            f"{h.csrf_field(self.csrf(session))}"
            f'<input type="hidden" name="account" value="{h.esc(account)}">'
            f'<input type="hidden" name="reason" value="{h.esc(reason)}">'
            '<input type="hidden" name="confirm" value="yes">'
            f'<button type="submit" class="danger" id="confirm">Yes, {h.esc(action)}</button> '
            '<a href="/ui/health">No, go back</a></form>'
        )
        return self.page("Confirm", body, active="health", csrf=self.csrf(session))

    # --- latency ----------------------------------------------------------------------------

    async def latency(self, request: Request, session: Session) -> Response:
        del request
        found = await self.deps.ledger.latency_since(utcnow() - timedelta(hours=1))
        labels = ("p50", "p90", "p99")
        steps = [*found.steps, found.calls]
        rows = [
            [h.esc(s.step), h.esc(s.count),
             *([h.esc(f"{v:.1f}") for v in s.percentiles] if s.percentiles else ["—"] * 3)]
            for s in steps
        ]  # fmt: skip
        chart = h.bar_chart([(s.step, s.percentiles) for s in steps if s.percentiles], labels)
        outcomes = h.facts({
            "signals": found.total, "sent to the broker": found.submitted,
            "accepted by the broker": found.accepted, "filled": found.filled,
            "rejected or failed": found.refused, "denied by our checks": found.denied,
            "placement success": h.percent(found.placement_success),
            "broker calls answered 2xx": h.percent(found.call_success),
        })  # fmt: skip
        body = (
            f"<p>Signals created since {h.esc(found.since.isoformat(timespec='seconds'))} "
            "(the last hour), from the ledger's timestamps.</p>"
            f'<section><h2>Success</h2><div id="success">{outcomes}</div></section>'
            f"<section><h2>Per step (ms)</h2>{chart}"
            f"{h.table(['step', 'rows', 'p50', 'p90', 'p99'], rows)}</section>"
        )
        return _html(self.page("Latency", body, active="latency", csrf=self.csrf(session)))


_DONE = {
    "kill": "kill switch thrown",
    "resume": "kill switch released",
    "flatten": "kill switch thrown and a flatten queued for every account",
}


def _verdicts_of(detail: Any) -> list[dict[str, Any]]:
    """Return the risk verdicts an event's detail holds (a submit's or a denial's)."""
    if not isinstance(detail, dict):
        return []
    found = detail.get("risk") or detail.get("verdicts") or []
    return [v for v in found if isinstance(v, dict)]


def _trace_body(found: Trace) -> str:
    data = found.as_json()
    s = data["signal"]
    row = found.row
    summary = h.facts({
        "status": s["status"], "account": s["account"], "strategy": s["strategy"],
        "source": s["source"], "created": s["created_at"], "client order id":
        data["client_order_id"], "broker order id": s["broker_order_id"],
        "filled": f"{s['filled_qty']} @ {s['avg_fill_price']}" if s["avg_fill_price"] else
        s["filled_qty"], "latency (insert → broker answer)":
        None if s["latency_ms"] is None else f"{s['latency_ms']} ms", "error": s["error"],
    })  # fmt: skip
    intent = h.facts({
        "intent": s["intent"], "side": row.side, "quantity": row.quantity,
        "instrument": row.instrument, "order type": row.order_type, "price": row.price,
        "stop price": row.stop_price, "stop loss": row.stop_loss,
        "take profit": row.take_profit, "stop loss ticks": row.stop_loss_ticks,
        "take profit ticks": row.take_profit_ticks, "target position": row.target_position,
        "time in force": row.time_in_force,
    })  # fmt: skip
    timeline = h.table(["step", "ms after insert"],
                       ([h.esc(k), h.esc("—" if v is None else v)]
                        for k, v in data["timeline_ms"].items()))  # fmt: skip
    alert = data["alert"]
    alert_html = (
        h.note("none: the row was inserted into the table directly")
        if alert is None
        else h.facts({k: alert[k] for k in ("received_at", "format", "source_ip", "outcome",
                                            "fired_at", "error")})
        + "<h3>Payload (secrets masked)</h3>" + h.pretty(alert["payload"])
    )  # fmt: skip
    verdicts = [
        [h.esc(event["event"]), h.esc(v.get("rule")),
         h.badge("ok" if v.get("passed") else "denied"), h.esc(v.get("reason")),
         h.esc(v.get("setting"))]
        for event in data["history"]
        for v in _verdicts_of(event["detail"])
    ]  # fmt: skip
    history = h.table(["at", "event", "detail"],
                      ([h.esc(e["at"]), h.esc(e["event"]), h.pretty(e["detail"])]
                       for e in data["history"]))  # fmt: skip
    calls = h.table(["at", "call", "status", "latency ms", "error", "request", "answer"],
                    ([h.esc(c["at"]), h.esc(f"{c['method']} {c['path']}"), h.esc(c["status"]),
                      h.esc(c["latency_ms"]), h.esc(c["error"]), h.pretty(c["request"]),
                      h.pretty(c["answer"])] for c in data["broker_calls"]))  # fmt: skip
    return (
        f'<section id="trace">{summary}</section>'
        f"<section><h2>Parsed intent</h2>{intent}</section>"
        f"<section><h2>Timeline</h2>{timeline}</section>"
        f"<section><h2>Alert</h2>{alert_html}</section>"
        "<section><h2>Risk verdicts</h2>"
        + (h.table(["event", "rule", "verdict", "reason", "setting"], verdicts) if verdicts
           else h.note("none recorded"))
        + f'</section><section><h2>Events</h2><div id="history">{history}</div></section>'
        f'<section><h2>Broker calls</h2><div id="calls">{calls}</div></section>'
        f'<p><a href="/ui/signals">Back to the signals</a> · '
        f'<a href="{h.trace_url(found.row.signal_id)}">Reload</a></p>'
    )  # fmt: skip

"""The HTTP plumbing both Tradovate dialects share.

``BrokerHttp`` wraps one ``aiohttp.ClientSession`` (about a third of httpx's CPU per request,
bench/README.md ``client_bench.py``): a timeout on every request, the client-side
budget of each Tradovate user (reference §7, ``budget``: orders ahead of reads), exactly one
``broker_call`` log event per request, and aiohttp's exceptions translated into the error
tree. The event is a summary (method, path, status, latency, body sizes); the redacted
bodies join it only when DEBUG is on, since idle polling would otherwise log ~15 KB of
answers every 30 s. The full redacted record, bodies included, goes to in-process
listeners (e.g. the ``broker_calls`` table). Bodies are redacted once, and only when
something keeps them (DEBUG, or a listener that says it does: redacting a 200-order answer
costs milliseconds); a penalty answer (``p-ticket``) always keeps its body. Transport errors:

* nothing was sent (refused connection, connect timeout, no pool slot) → ``BrokerUnavailable``;
* the request may have been sent (timeout, reset, closed or garbled answer) → ``ConnectionLost``.
  A submit turns that into ``OutcomeUnknown``; reads may retry it.

Which one is decided by whether a connection was handed to the request (a trace hook), not
by the exception's class alone: aiohttp's overall timeout raises the same ``TimeoutError``
while connecting and while waiting for the answer. The client never resends on its own
(aiohttp would resend a GET, PUT or DELETE once on a dead keep-alive connection; a
``DELETE`` of a position closes it): retries live in ``retry.py``.

Status codes are not interpreted here except by ``raise_for_status``, which dialects call
for the answers they do not classify themselves.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import ssl
import time
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any
from urllib.parse import quote, urlencode, urlsplit

import aiohttp
from yarl import URL

from tradebridge.brokers.budget import RequestBudget, RequestKind
from tradebridge.brokers.fence import check_fence
from tradebridge.config import TradovateConfig
from tradebridge.domain.calls import BrokerCall
from tradebridge.errors import (
    AuthError,
    BrokerError,
    BrokerRejected,
    BrokerUnavailable,
    ConnectionLost,
    Lockout,
    NotFound,
)
from tradebridge.obs import metrics
from tradebridge.obs.logging import get_logger, redact, redact_text

# BrokerCall is the domain's audit record (domain/calls.py), re-exported with the client.
__all__ = [
    "DEFAULT_LOCKOUT_S",
    "BrokerCall",
    "BrokerHttp",
    "CallListener",
    "HttpAnswer",
    "RequestBudget",
    "RequestKind",
    "http_for",
    "raise_for_status",
]

_log = get_logger("tradebridge.brokers.http")

DEFAULT_LOCKOUT_S = 3600.0  # 423/429: "users must wait 1 hour" (reference §6.2)

# The answers to a sent order command that prove nothing executed: refused as written (§6.2:
# 400 malformed, 404 unknown route or id) or by the HTTP layer before a handler read it (405,
# 411, 413, 414, 415, 431). Any other status after sending (a proxy's 408, a 409, a 423, a
# 429, an undocumented code, a 5xx) may come after the order executed: its outcome is
# unknown, and it is looked up before anything is sent again (§6.3).
NOT_EXECUTED_STATUSES = frozenset({400, 404, 405, 411, 413, 414, 415, 431})


def outcome_unknown_status(status: int) -> bool:
    """Return whether an order command answered ``status`` may have executed (§6.3)."""
    return not 200 <= status < 300 and status not in NOT_EXECUTED_STATUSES


CallListener = Callable[[BrokerCall], None]


@dataclass(frozen=True, slots=True)
class HttpAnswer:
    """An HTTP answer: status, the JSON body (or text, or None when empty) and headers."""

    status: int
    body: Any
    text: str
    headers: Mapping[str, str]

    @property
    def is_json(self) -> bool:
        """Return whether the body parsed as JSON."""
        return self.body is not None and not isinstance(self.body, str)


class BrokerHttp:
    """An async HTTP client for one broker base URL, shared by the adapters of a dialect."""

    def __init__(
        self,
        base_url: str,
        *,
        dialect: str,
        timeout_s: float = 10.0,
        connect_timeout_s: float = 5.0,
        budget: RequestBudget | None = None,
        listeners: tuple[CallListener, ...] = (),
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.dialect = dialect
        self.budget = budget
        # Each listener, and whether it keeps the bodies now (None: always).
        self._listeners: list[tuple[CallListener, Callable[[], bool] | None]] = [
            (listener, None) for listener in listeners
        ]
        # ``timeout_s`` caps the whole request (connection, sending, the answer's last byte);
        # ``connect_timeout_s`` the wait for a connection (a pool slot, then connecting).
        self._timeout = aiohttp.ClientTimeout(total=timeout_s, connect=connect_timeout_s)
        # Made in the event loop of the first request (aiohttp binds a session to one).
        self._session: aiohttp.ClientSession | None = None
        self._closed = False
        self._proxy: str | None = None  # the environment's, read with the session

    def add_listener(
        self, listener: CallListener, *, bodies: Callable[[], bool] | None = None
    ) -> Callable[[], None]:
        """Deliver every ``BrokerCall`` to ``listener``; return a function that removes it.

        ``bodies`` says, per call, whether the listener keeps the bodies (default: always);
        when no listener does (and DEBUG is off) the call comes without them.
        """
        entry = (listener, bodies)
        self._listeners.append(entry)
        return lambda: self._listeners.remove(entry)

    async def aclose(self) -> None:
        """Close the connection pool; later requests fail with ``BrokerUnavailable``."""
        self._closed = True
        session, self._session = self._session, None
        if session is not None:
            await session.close()

    async def preconnect(self, count: int) -> int:
        """Have ``count`` connections open to the broker, idle in the pool, for requests about
        to leave; return how many are. Best effort: a failure is left to those requests.

        A connection idle for a few seconds is closed (here, and by the broker), so the
        orders of an alert after a quiet spell would each open one (TCP, TLS) after their
        write-ahead: opened now, beside it, they are open by then. Nothing is sent on them.
        """
        if self._closed:
            return 0
        connector = self._session_now().connector
        if connector is None or self._proxy is not None:
            return 0  # through a proxy the pool's keys differ: left to the requests
        # Held until the last one is open: at most half the pool's slots, so that requests
        # leaving meanwhile never wait for one (100 accounts claimed at once open 50 here).
        count = min(count, connector.limit // 2) if connector.limit else count
        # A request of this client's kind, only as the pool's key (host, port, TLS).
        key = aiohttp.ClientRequest(
            "GET", URL(self.base_url), loop=asyncio.get_running_loop(), ssl=True
        )
        tasks = [
            asyncio.ensure_future(connector.connect(key, [], self._timeout)) for _ in range(count)
        ]
        try:
            await asyncio.wait(tasks)
        finally:
            # Each one opened goes back to the pool, idle, for the next request; cancelled
            # midway (a shutdown), those still connecting release theirs when they land, so
            # none is dropped unreleased.
            for task in tasks:
                if task.done():
                    _release_opened(task)
                else:
                    task.cancel()
                    task.add_done_callback(_release_opened)
        return sum(1 for task in tasks if not task.cancelled() and task.exception() is None)

    def _session_now(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._proxy = _env_proxy(self.base_url)
            self._session = _new_session(self.base_url, self._proxy)
        return self._session

    async def request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, Any] | None = None,
        json_body: Any = None,
        form: Mapping[str, Any] | None = None,
        token: str | None = None,
        budget_key: str | None = None,
        kind: RequestKind | None = None,
        client_order_id: str | None = None,
        account: str | None = None,
        timeout_s: float | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> HttpAnswer:
        """Send one request (no retry) and return its answer; translate transport errors.

        ``kind`` says which windows of the user's budget count it; by default a GET is a
        read and anything else an order (logins say ``AUTH``).
        """
        if kind is None:
            kind = RequestKind.READ if method == "GET" else RequestKind.ORDER
        if self.budget is not None and budget_key is not None:
            await self.budget.bucket(budget_key).acquire(kind)
        if kind is RequestKind.ORDER:
            # After the budget's wait, which can be long: may this process still send it?
            await check_fence()
        sent_headers = dict(headers or {})
        if token is not None:
            sent_headers["Authorization"] = f"Bearer {token}"
        query = _query(params) if params else ""
        logged_path = path + ("?" + query if query else "")
        request_body = json_body if json_body is not None else (dict(form) if form else None)
        # Bodies are encoded here, byte for byte as httpx did (compact UTF-8 JSON; the form
        # with urlencode), so that the wire and the logged sizes stay as they were.
        content: bytes | None = None
        if json_body is not None:
            content = json.dumps(
                json_body, ensure_ascii=False, separators=(",", ":"), allow_nan=False
            ).encode()
            sent_headers.setdefault("Content-Type", "application/json")
        elif form is not None:
            content = urlencode([(k, str(v)) for k, v in form.items()]).encode()
            sent_headers.setdefault("Content-Type", _FORM)
        sizes = _Sizes(request=len(content) if content else 0)
        url = URL(self.base_url + quote(path, safe=_PATH_SAFE) + ("?" + query if query else ""),
                  encoded=True)  # fmt: skip
        timeout = self._timeout
        if timeout_s is not None:
            timeout = aiohttp.ClientTimeout(total=timeout_s, connect=timeout_s)
        attempt = SimpleNamespace(connected=False)  # set by the trace hook (_new_session)
        ts_sent = datetime.now(UTC)
        started = time.perf_counter()
        if self._closed:  # a task still running at shutdown: nothing is sent
            error: BrokerError = BrokerUnavailable(
                f"{self.dialect} {method} {path}: cannot connect (the client is closed)"
            )
            self._record(ts_sent, method, logged_path, None, started, request_body, None,
                         client_order_id, account, str(error), sizes)  # fmt: skip
            raise error
        try:
            async with self._session_now().request(
                method, url, data=content, headers=sent_headers, timeout=timeout,
                allow_redirects=False, trace_request_ctx=attempt,
                # no body, no Content-Type (aiohttp would add application/octet-stream)
                skip_auto_headers=_NO_CONTENT_TYPE if content is None else None,
            ) as response:  # fmt: skip
                raw = await response.read()
        except (aiohttp.ClientError, TimeoutError) as e:
            # Nothing was sent only when no connection was handed out and the error is one of
            # connecting (refused, DNS, TLS) or of waiting for it; anything else may have been.
            if not attempt.connected and isinstance(
                e, (aiohttp.ClientConnectorError, TimeoutError)
            ):
                error = BrokerUnavailable(
                    f"{self.dialect} {method} {path}: cannot connect ({type(e).__name__})"
                )
            else:
                error = ConnectionLost(
                    f"{self.dialect} {method} {path}: no answer after sending ({type(e).__name__})"
                )
            self._record(ts_sent, method, logged_path, None, started, request_body, None,
                         client_order_id, account, str(error), sizes)  # fmt: skip
            raise error from e
        answer = _parse(response, raw)
        sizes = _Sizes(request=sizes.request, response=len(raw))
        self._record(ts_sent, method, logged_path, answer.status, started, request_body,
                     answer.body, client_order_id, account, None, sizes)  # fmt: skip
        return answer

    def _record(
        self,
        ts_sent: datetime,
        method: str,
        path: str,
        status: int | None,
        started: float,
        request_body: Any,
        response_body: Any,
        client_order_id: str | None,
        account: str | None,
        error: str | None,
        sizes: _Sizes,
    ) -> None:
        debug = _log.is_enabled_for(logging.DEBUG)
        keep = (
            debug
            or _is_penalty(response_body)
            or any(wants is None or wants() for _, wants in self._listeners)
        )
        call = BrokerCall(
            ts_sent=ts_sent,
            dialect=self.dialect,
            method=method,
            path=redact_text(path),
            status=status,
            latency_ms=round((time.perf_counter() - started) * 1000, 3),
            request_body=redact(request_body) if keep else None,
            response_body=redact(response_body) if keep else None,
            client_order_id=client_order_id,
            account=account,
            error=error,
        )
        bodies: dict[str, Any] = {}
        if debug:
            bodies = {"request": call.request_body, "answer": call.response_body}
        _log.info(
            "broker_call",
            dialect=call.dialect,
            method=call.method,
            path=call.path,
            status=call.status,
            latency_ms=call.latency_ms,
            request_bytes=sizes.request,
            response_bytes=sizes.response,
            error=call.error,
            # Only when known: the order context of the row at hand has them otherwise.
            **({"client_order_id": call.client_order_id} if call.client_order_id else {}),
            **({"account": call.account} if call.account else {}),
            **bodies,
        )
        operation = operation_of(method, call.path)
        metrics.BROKER_CALLS.labels(self.dialect, operation, _outcome(status, response_body)).inc()
        if status == 401:
            metrics.AUTH_FAILURES.labels(self.dialect, "token_refused").inc()
        elif status in (423, 429):
            metrics.BROKER_LOCKOUT_ANSWERS.labels(self.dialect, str(status)).inc()
        metrics.BROKER_CALL_SECONDS.labels(self.dialect, operation).observe(
            time.perf_counter() - started
        )
        for listener, _ in list(self._listeners):
            try:
                listener(call)
            except Exception:  # noqa: BLE001 - an audit sink must never break an order path
                _log.exception("broker_call_listener_failed")


def operation_of(method: str, path: str) -> str:
    """Return the metric label of a request: its method and path, ids as ``{id}`` (a segment
    with a digit: account, order and contract ids) and no query, e.g. ``GET /order/item``,
    ``POST /accounts/{id}/orders``; a bounded set, the API's own."""
    route = path.split("?", 1)[0]
    parts = ["{id}" if any(c.isdigit() for c in part) else part for part in route.split("/")]
    return f"{method} {'/'.join(parts)}"


def _outcome(status: int | None, body: Any) -> str:
    """Return the outcome label: ok (2xx), penalty (a p-ticket), rejected (4xx: the broker
    said no), error (5xx, or no answer at all)."""
    if status is None or status >= 500:
        return "error"
    if status >= 400:
        return "rejected"
    return "penalty" if _is_penalty(body) else "ok"


def _is_penalty(body: Any) -> bool:
    # A penalty ticket (reference §2.3) is small, and listeners act on it (lockouts).
    return isinstance(body, dict) and "p-ticket" in body


@dataclass(frozen=True, slots=True)
class _Sizes:
    """Bytes on the wire of a request's body and of its answer's (None: no answer)."""

    request: int
    response: int | None = None


_FORM = "application/x-www-form-urlencoded"
_NO_CONTENT_TYPE = ("Content-Type",)
# Characters a path keeps as they are (RFC 3986 pchar, "/" and escapes already made).
_PATH_SAFE = "/:@!$&'()*+,;=%~"


def _query(params: Mapping[str, Any]) -> str:
    """Return the query string of ``params``, booleans as ``true``/``false`` (as httpx)."""
    items = [
        (key, _primitive(one))
        for key, value in params.items()
        for one in (value if isinstance(value, list | tuple) else (value,))
    ]
    return urlencode(items)


def _primitive(value: Any) -> str:
    if value is True:
        return "true"
    if value is False:
        return "false"
    return "" if value is None else str(value)


async def _on_connection(_session: Any, context: SimpleNamespace, _params: Any) -> None:
    """Mark the request's attempt as connected: from here on, it may have been sent."""
    attempt = context.trace_request_ctx
    if attempt is not None:
        attempt.connected = True


def _new_session(base_url: str, proxy: str | None) -> aiohttp.ClientSession:
    trace = aiohttp.TraceConfig()
    trace.on_connection_create_end.append(_on_connection)
    trace.on_connection_reuseconn.append(_on_connection)
    session = aiohttp.ClientSession(
        # 100 connections, idle ones kept 5 s: httpx's pool, which the broker saw until now.
        connector=aiohttp.TCPConnector(
            limit=100, keepalive_timeout=5.0, ssl=_ssl_context(base_url)
        ),
        headers={"Accept": "application/json", "User-Agent": "tradebridge"},
        trace_configs=[trace],
        proxy=proxy,
        # The proxy is read once, above: aiohttp's trust_env reads it (and ~/.netrc) in a
        # thread on every request.
        trust_env=False,
    )
    # aiohttp resends a GET, PUT or DELETE once when a reused connection turns out dead; it
    # may have arrived (a DELETE of a position closes it twice). One call, one send: retries
    # are retry.py's, with the error tree (tests/brokers/test_http.py pins this).
    session._retry_connection = False  # noqa: SLF001 - no public switch (aiohttp 3.14)
    return session


def _ssl_context(base_url: str) -> ssl.SSLContext | bool:
    """Return the certificates httpx trusted: ``SSL_CERT_FILE``/``SSL_CERT_DIR``, else certifi's."""
    if not base_url.startswith("https:"):
        return True  # unused: no TLS
    if os.environ.get("SSL_CERT_FILE"):
        return ssl.create_default_context(cafile=os.environ["SSL_CERT_FILE"])
    if os.environ.get("SSL_CERT_DIR"):
        return ssl.create_default_context(capath=os.environ["SSL_CERT_DIR"])
    import certifi  # httpx's dependency, so always installed with it

    return ssl.create_default_context(cafile=certifi.where())


def _release_opened(task: asyncio.Future[aiohttp.connector.Connection]) -> None:
    """Put back in the pool the connection ``task`` opened, if it opened one."""
    if not task.cancelled() and task.exception() is None:
        task.result().release()


def _env_proxy(base_url: str) -> str | None:
    """Return the proxy the environment sets for ``base_url`` (``HTTPS_PROXY``, ``NO_PROXY``)."""
    parts = urlsplit(base_url)
    if parts.hostname is None or urllib.request.proxy_bypass(parts.hostname):
        return None
    return urllib.request.getproxies().get(parts.scheme)


def _parse(response: aiohttp.ClientResponse, raw: bytes) -> HttpAnswer:
    try:
        text = raw.decode(response.charset or "utf-8", errors="replace")
    except LookupError:  # an unknown charset: as httpx, fall back to UTF-8
        text = raw.decode("utf-8", errors="replace")
    body: Any = None
    if text.strip():
        try:
            body = json.loads(text)
        except ValueError:
            body = text
    headers: dict[str, str] = {}
    for name, value in response.headers.items():
        key = name.lower()
        headers[key] = f"{headers[key]}, {value}" if key in headers else value
    return HttpAnswer(response.status, body, text, headers)


def raise_for_status(
    answer: HttpAnswer, what: str, *, lockout_s: float = DEFAULT_LOCKOUT_S
) -> None:
    """Raise the error-tree class of a non-2xx answer (401, 404, 423, 429, 4xx, 5xx)."""
    status = answer.status
    if 200 <= status < 300:
        return
    if status == 401:
        raise AuthError(f"{what}: HTTP 401, the token was refused or has expired")
    if status == 404:
        raise NotFound(f"{what}: HTTP 404, unknown id or route (run `tradebridge doctor`)")
    if status in (423, 429):
        until = datetime.now(UTC) + timedelta(seconds=lockout_s)
        raise Lockout(
            f"{what}: HTTP {status}, Tradovate locked this user out; no calls until "
            f"{until.isoformat(timespec='seconds')}",
            until=until,
        )
    if status >= 500:
        raise BrokerUnavailable(f"{what}: HTTP {status} from the broker")
    raise BrokerRejected(
        f"{what}: HTTP {status}: {redact_text(answer.text[:200])}",
        reason=f"HTTP{status}",
        text=redact_text(answer.text[:200]),
    )


def http_for(
    config: TradovateConfig,
    dialect: str,
    *,
    budget: RequestBudget | None = None,
    listeners: tuple[CallListener, ...] = (),
) -> BrokerHttp:
    """Build the client of a dialect (``native`` or ``tvbridge``) from the settings."""
    base_url = config.native_url if dialect == "native" else config.bridge_url
    return BrokerHttp(
        base_url,
        dialect=dialect,
        timeout_s=config.request_timeout_s,
        connect_timeout_s=config.connect_timeout_s,
        budget=budget or RequestBudget(config),
        listeners=listeners,
    )

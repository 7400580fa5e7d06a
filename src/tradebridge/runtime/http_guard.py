"""Slow or greedy clients cannot hold the HTTP server: read deadlines, header cap, per-address cap.

uvicorn bounds only the idle time between two requests (``timeout_keep_alive``). A client
that sends its headers or its body a byte at a time keeps its connection, and any number of
them keep as many (issue 10: 300 slowloris connections held for 60 s, none closed), and
httptools takes headers of any size. uvicorn takes its HTTP protocol as a class
(``uvicorn.Config(http=...)``), so ``guarded_protocol()`` subclasses the httptools protocol
it uses by default and adds, per connection:

* a **header deadline**: from the connection's first byte (or its first byte after a
  response) until the request line and headers are complete, ``header_timeout_s``;
* a **body deadline**: from the end of the headers until the body is complete,
  ``body_timeout_s``;
* a **header size cap** (``max_header_bytes``, request line and headers);
* a **cap on open connections per client address** (``max_connections_per_address``);
  further connections from that address get a 429 and are closed at once. Addresses in
  ``webhook.allowed_ips`` (TradingView's) and ``webhook.trusted_proxies`` (a proxy carries
  everyone's connections, and has its own timeouts) are exempt.

A request past a deadline is answered ``408`` (unless its answer has started) and closed; a
webhook waiting for that body sees a disconnect and stores nothing. The 408 and the 429 are
sent before a half-close, and the connection is closed once the client closes its side or
after a second: a plain close with unread input would reset it and could lose the answer.
Each refusal is counted in ``tradebridge_http_refused_total{reason}``.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from tradebridge.config import Settings
from tradebridge.intake.security import Network, parse_networks
from tradebridge.obs import metrics

_CLOSE_HEADERS = b"content-type: text/plain; charset=utf-8\r\nconnection: close\r\n"


def _canned(status: bytes, text: bytes) -> bytes:
    return (
        b"HTTP/1.1 " + status + b"\r\n" + _CLOSE_HEADERS
        + b"content-length: " + str(len(text)).encode() + b"\r\n\r\n" + text
    )  # fmt: skip


_TOO_MANY = _canned(b"429 Too Many Requests", b"too many connections from this address\n")
_TIMEOUT = _canned(b"408 Request Timeout", b"the request was not received in time\n")
# After such an answer the connection is half-closed and what the client still sends is
# read and dropped for at most this long: closing a socket with unread data resets it, and
# the reset can destroy the answer before the client reads it.
_LINGER_S = 1.0


class _HeadersTooLarge(Exception):
    """Raised inside a parser callback: httptools turns it into uvicorn's 400 and a close."""


@dataclass(slots=True)
class ConnectionGuard:
    """The limits of one server and the open connections per address they count."""

    header_timeout_s: float
    body_timeout_s: float
    max_header_bytes: int
    max_per_address: int  # 0: no cap
    exempt: tuple[Network, ...] = ()
    open: Counter[str] = field(default_factory=Counter)
    refused: Counter[str] = field(default_factory=Counter)

    @classmethod
    def from_settings(cls, settings: Settings) -> ConnectionGuard:
        """Build the guard of ``settings.serve``; TradingView's and proxies' addresses exempt."""
        serve, hook = settings.serve, settings.webhook
        return cls(
            header_timeout_s=serve.header_timeout_s,
            body_timeout_s=serve.body_timeout_s,
            max_header_bytes=serve.max_header_bytes,
            max_per_address=serve.max_connections_per_address,
            exempt=parse_networks(hook.allowed_ips, "webhook.allowed_ips")
            + parse_networks(hook.trusted_proxies, "webhook.trusted_proxies"),
        )

    def admit(self, address: str | None) -> bool:
        """Count a new connection from ``address``; ``False`` if it is one too many."""
        key = address or "unknown"
        full = self.max_per_address and self.open[key] >= self.max_per_address
        if full and not self._exempt(key):
            self.refuse("per_address_cap")
            return False
        self.open[key] += 1
        return True

    def release(self, address: str | None) -> None:
        """Forget one connection of ``address``."""
        key = address or "unknown"
        self.open[key] -= 1
        if self.open[key] <= 0:
            del self.open[key]

    def refuse(self, reason: str) -> None:
        """Count a connection cut off or turned away."""
        self.refused[reason] += 1
        with contextlib.suppress(Exception):  # a metric must never change the answer
            metrics.HTTP_REFUSED.labels(reason=reason).inc()

    def _exempt(self, address: str) -> bool:
        try:
            parsed = ipaddress.ip_address(address)
        except ValueError:
            return False
        return any(parsed in net for net in self.exempt)


def guarded_protocol(guard: ConnectionGuard) -> type[asyncio.Protocol]:
    """Return uvicorn's httptools protocol class with ``guard``'s limits built in."""

    class GuardedHttpToolsProtocol(HttpToolsProtocol):
        _guard_admitted = False
        _guard_done = False  # answered by the guard: input is dropped until the close
        _guard_timer: asyncio.TimerHandle | None = None
        _guard_phase: str | None = None  # "headers" | "body" | None (idle or answering)
        _guard_header_bytes = 0

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            host = self.client[0] if self.client else None
            if not guard.admit(host):
                self._guard_answer_and_close(_TOO_MANY)
                return
            self._guard_admitted = True
            self._guard_arm("headers")

        def connection_lost(self, exc: Exception | None) -> None:
            self._guard_cancel()
            if self._guard_admitted:
                self._guard_admitted = False
                guard.release(self.client[0] if self.client else None)
            super().connection_lost(exc)

        def data_received(self, data: bytes) -> None:
            if self._guard_done or not self._guard_admitted:
                return  # answered by the guard: its close is under way
            if self._guard_phase is None and (self.cycle is None or self.cycle.response_complete):
                # The first byte of the next request (leading blank lines included, which
                # the parser skips without starting a message): its headers' clock starts.
                self._guard_arm("headers")
            super().data_received(data)

        def on_message_begin(self) -> None:
            super().on_message_begin()
            self._guard_header_bytes = 0
            if self._guard_phase != "headers":
                self._guard_arm("headers")

        def on_url(self, url: bytes) -> None:
            self._guard_count(len(url))
            super().on_url(url)

        def on_header(self, name: bytes, value: bytes) -> None:
            self._guard_count(len(name) + len(value) + 4)
            super().on_header(name, value)

        def on_headers_complete(self) -> None:
            super().on_headers_complete()
            self._guard_arm("body")

        def on_message_complete(self) -> None:
            super().on_message_complete()
            self._guard_cancel()

        def _guard_count(self, size: int) -> None:
            self._guard_header_bytes += size
            if self._guard_header_bytes > guard.max_header_bytes:
                guard.refuse("header_too_large")
                raise _HeadersTooLarge

        def _guard_arm(self, phase: str) -> None:
            self._guard_cancel()
            self._guard_phase = phase
            delay = guard.header_timeout_s if phase == "headers" else guard.body_timeout_s
            self._guard_timer = self.loop.call_later(delay, self._guard_expired, phase)

        def _guard_cancel(self) -> None:
            if self._guard_timer is not None:
                self._guard_timer.cancel()
                self._guard_timer = None
            self._guard_phase = None

        def _guard_expired(self, phase: str) -> None:
            self._guard_timer = None
            self._guard_phase = None
            if self.transport.is_closing():
                return
            guard.refuse(f"{phase}_timeout")
            # In the headers phase the cycle, if any, is the previous request's; in the body
            # phase it is this one's. A 408 goes out only where no other answer is under way.
            cycle: Any = self.cycle
            if phase == "headers":
                answer = cycle is None or cycle.response_complete
            else:
                answer = not cycle.response_started
                # The application stops waiting for the body now (it sees a disconnect)
                # and cannot write an answer of its own after the 408.
                cycle.disconnected = True
                cycle.message_event.set()
            if answer:
                self._guard_answer_and_close(_TIMEOUT)
            else:
                self.transport.close()

        def _guard_answer_and_close(self, answer: bytes) -> None:
            self._guard_cancel()
            self._guard_done = True
            self.transport.write(answer)
            if self.transport.can_write_eof():
                self.transport.write_eof()  # after the answer: the client reads it, then EOF
                # The client's close ends it (eof_received); this, if it never closes.
                self._guard_timer = self.loop.call_later(_LINGER_S, self.transport.close)
            else:
                self.transport.close()

    return GuardedHttpToolsProtocol

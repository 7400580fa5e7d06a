"""Real local receivers for notification tests: an HTTP server taking apprise's ``json://``
and ``form://`` posts, and an SMTP server (aiosmtpd) taking its email. Both run in threads
of their own, as a remote service would, and can be told to fail or to hang."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from email import message_from_bytes
from email.message import Message
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl

from aiosmtpd.controller import Controller


@dataclass
class Received:
    """One post: its path, headers and body (JSON or form fields)."""

    path: str
    headers: dict[str, str]
    body: dict[str, Any]


@dataclass
class HttpReceiver:
    """A local HTTP server recording every POST; ``fail_next`` answers 500 that many times,
    ``hang`` holds every request until ``release`` is set."""

    port: int = 0
    posts: list[Received] = field(default_factory=list)
    fail_next: int = 0
    hang: bool = False
    release: threading.Event = field(default_factory=threading.Event)
    tries: int = 0
    _changed: threading.Condition = field(default_factory=threading.Condition)

    @property
    def host(self) -> str:
        """Return host:port."""
        return f"127.0.0.1:{self.port}"

    def wait_for(self, count: int, timeout: float = 20.0) -> list[Received]:
        """Wait until ``count`` posts arrived; return them."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while len(self.posts) < count:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"{len(self.posts)} post(s) arrived, wanted {count}")
                self._changed.wait(left)
            return list(self.posts)

    async def until(self, count: int, timeout: float = 20.0) -> list[Received]:
        """``wait_for`` without blocking the event loop (the notifier runs in it)."""
        return await asyncio.to_thread(self.wait_for, count, timeout)

    async def until_tries(self, count: int, timeout: float = 20.0) -> None:
        """``wait_tries`` without blocking the event loop."""
        await asyncio.to_thread(self.wait_tries, count, timeout)

    def wait_tries(self, count: int, timeout: float = 20.0) -> None:
        """Wait until ``count`` requests (answered or not) arrived."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while self.tries < count:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"{self.tries} request(s) arrived, wanted {count}")
                self._changed.wait(left)

    def _handle(self, handler: BaseHTTPRequestHandler) -> int:
        length = int(handler.headers.get("content-length") or 0)
        raw = handler.rfile.read(length)
        with self._changed:
            self.tries += 1
            self._changed.notify_all()
            failing = self.fail_next > 0
            if failing:
                self.fail_next -= 1
        if self.hang:
            self.release.wait(60)
        if failing:
            return 500
        kind = handler.headers.get("content-type", "")
        body = json.loads(raw) if "json" in kind else dict(parse_qsl(raw.decode()))
        with self._changed:
            self.posts.append(Received(handler.path, dict(handler.headers), body))
            self._changed.notify_all()
        return 200


@contextmanager
def http_receiver() -> Iterator[HttpReceiver]:
    """Run an ``HttpReceiver`` on a free loopback port."""
    receiver = HttpReceiver()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            status = receiver._handle(self)
            self.send_response(status)
            self.send_header("content-length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
            del format, args

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    receiver.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, name="http-receiver", daemon=True)
    thread.start()
    try:
        yield receiver
    finally:
        receiver.release.set()
        server.shutdown()
        server.server_close()
        thread.join(10)


@dataclass
class SmtpReceiver:
    """A local SMTP server recording every message."""

    port: int = 0
    messages: list[Message] = field(default_factory=list)
    envelopes: list[tuple[str, list[str]]] = field(default_factory=list)
    _changed: threading.Condition = field(default_factory=threading.Condition)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802
        """Record the message (aiosmtpd's handler hook)."""
        del server, session
        with self._changed:
            self.messages.append(message_from_bytes(envelope.content))
            self.envelopes.append((envelope.mail_from, list(envelope.rcpt_tos)))
            self._changed.notify_all()
        return "250 OK"

    def wait_for(self, count: int, timeout: float = 20.0) -> list[Message]:
        """Wait until ``count`` messages arrived; return them."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while len(self.messages) < count:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"{len(self.messages)} mail(s) arrived, wanted {count}")
                self._changed.wait(left)
            return list(self.messages)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextmanager
def smtp_receiver() -> Iterator[SmtpReceiver]:
    """Run an ``SmtpReceiver`` (aiosmtpd) on a free loopback port."""
    receiver = SmtpReceiver(port=_free_port())
    controller = Controller(receiver, hostname="127.0.0.1", port=receiver.port)
    controller.start()
    try:
        yield receiver
    finally:
        controller.stop()


def body_text(message: Message) -> str:
    """Return the text of an email (its first text part)."""
    for part in message.walk():
        if part.get_content_type().startswith("text/"):
            payload = part.get_payload(decode=True)
            assert isinstance(payload, bytes)
            return payload.decode(part.get_content_charset() or "utf-8")
    return ""

"""A loopback HTTP/1.1 server for tests of the broker client, in the test's event loop.

It reads each request whole (line, headers, ``Content-Length`` body), records it as sent,
then does what the test asked: answer (keep-alive), reset the connection, close it without
an answer, hang, or answer garbage. The simulator cannot misbehave at those exact points,
and a mock would not show what reached the socket.
"""

from __future__ import annotations

import asyncio
import contextlib
import select
import socket
import struct
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class RawRequest:
    """One request as it arrived: request line parts, headers (lowercase names), body."""

    method: str
    target: str
    headers: dict[str, str]
    body: bytes


@dataclass(frozen=True, slots=True)
class Answer:
    """Answer with this status, body and content type (keep-alive)."""

    status: int = 200
    body: bytes = b""
    content_type: str = "application/json"


class Reset:
    """Reset the connection (RST) after reading the request."""


class Close:
    """Close the connection (FIN) after reading the request, without an answer."""


class Hang:
    """Read the request and never answer (until the server closes)."""


class Garbage:
    """Answer bytes that are not HTTP."""


Behaviour = Answer | Reset | Close | Hang | Garbage


class RawHttpServer:
    """Serve ``127.0.0.1:port``; ``behave(n)`` says what to do with the n-th request (from 0)."""

    def __init__(self, behave: Callable[[int], Behaviour]) -> None:
        self.behave = behave
        self.requests: list[RawRequest] = []
        self.connections = 0
        self.port = 0
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._handlers: set[asyncio.Task[None]] = set()

    @property
    def url(self) -> str:
        """Return the base URL."""
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> None:
        """Listen on a free loopback port."""
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = int(self._server.sockets[0].getsockname()[1])

    async def close(self) -> None:
        """Stop listening and close every connection."""
        if self._server is not None:
            self._server.close()
        for writer in list(self._writers):
            writer.close()  # each handler then reads EOF and ends
        await asyncio.gather(*self._handlers, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self._writers.add(writer)
        handler = asyncio.current_task()
        assert handler is not None
        self._handlers.add(handler)
        try:
            while request := await _read_request(reader):
                behaviour = self.behave(len(self.requests))
                self.requests.append(request)
                if isinstance(behaviour, Answer):
                    writer.write(
                        f"HTTP/1.1 {behaviour.status} X\r\nContent-Type: {behaviour.content_type}"
                        f"\r\nContent-Length: {len(behaviour.body)}\r\n\r\n".encode()
                        + behaviour.body
                    )
                    await writer.drain()
                    continue
                if isinstance(behaviour, Reset):
                    sock = writer.get_extra_info("socket")
                    # SO_LINGER with a zero timeout: close() sends RST instead of FIN.
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                elif isinstance(behaviour, Garbage):
                    writer.write(b"this is not http\r\n\r\n")
                    await writer.drain()
                elif isinstance(behaviour, Hang):
                    await reader.read()  # until the client or close() ends it
                break
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            self._writers.discard(writer)
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()
            self._handlers.discard(handler)


async def _read_request(reader: asyncio.StreamReader) -> RawRequest | None:
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError:
        return None  # the client closed the connection between requests
    line, *fields = head.decode("latin-1").rstrip("\r\n").split("\r\n")
    method, target, _ = line.split(" ", 2)
    headers = {}
    for field in fields:
        name, _, value = field.partition(":")
        headers[name.strip().lower()] = value.strip()
    body = await reader.readexactly(int(headers.get("content-length", "0")))
    return RawRequest(method, target, headers, body)


@asynccontextmanager
async def raw_http(behave: Callable[[int], Behaviour]) -> AsyncIterator[RawHttpServer]:
    """Run a ``RawHttpServer`` for the ``with`` block."""
    server = RawHttpServer(behave)
    await server.start()
    try:
        yield server
    finally:
        await server.close()


@contextmanager
def unanswered_port(max_fillers: int = 16) -> Iterator[int]:
    """Yield a loopback port whose connection attempts hang (a connect timeout, for real).

    A listener with a backlog of 0 that never accepts: once its queue holds a connection,
    the kernel drops further SYNs (Linux, ``tcp_abort_on_overflow = 0``), so ``connect``
    waits until the client gives up. Fillers are opened until one is left pending.
    """
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    port = int(listener.getsockname()[1])
    fillers: list[socket.socket] = []
    try:
        for _ in range(max_fillers):
            filler = socket.socket()
            filler.setblocking(False)
            fillers.append(filler)
            filler.connect_ex(("127.0.0.1", port))
            # Writable within 0.5 s: it connected (queued); the next one may be left out.
            _, writable, _ = select.select([], [filler], [], 0.5)
            if not writable:
                break
        else:
            raise RuntimeError(f"every connection to a full backlog completed (port {port})")
        yield port
    finally:
        for filler in fillers:
            filler.close()
        listener.close()

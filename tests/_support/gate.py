"""A TCP gate for tests: forwards connections to a target until it is cut. Cut, it closes
every forwarded connection and closes new ones at once (a network that drops the link),
until it is opened again. Runs in the test's event loop."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager


class TcpGate:
    """Forwards ``127.0.0.1:port`` to ``target_host:target_port`` while ``is_open``."""

    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self.port = 0
        self.is_open = True
        self.refused = 0  # connections closed at once while cut
        self.forwarded = 0  # connections forwarded
        self._server: asyncio.Server | None = None
        self._links: set[asyncio.StreamWriter] = set()
        self._pipes: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        """Listen on a free loopback port."""
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = int(self._server.sockets[0].getsockname()[1])

    def cut(self) -> None:
        """Close every forwarded connection and close new ones at once."""
        self.is_open = False
        for writer in list(self._links):
            writer.close()

    def open(self) -> None:
        """Forward new connections again."""
        self.is_open = True

    async def close(self) -> None:
        """Stop listening and close everything."""
        self.cut()
        if self._server is not None:
            self._server.close()
        for task in list(self._pipes):
            task.cancel()
        await asyncio.gather(*self._pipes, return_exceptions=True)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if not self.is_open:
            self.refused += 1
            writer.close()
            return
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.close()
            return
        self.forwarded += 1
        self._links.update((writer, up_writer))
        pipes = [
            asyncio.create_task(self._pipe(reader, up_writer)),
            asyncio.create_task(self._pipe(up_reader, writer)),
        ]
        self._pipes.update(pipes)
        try:
            await asyncio.wait(pipes, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in pipes:
                task.cancel()
            await asyncio.gather(*pipes, return_exceptions=True)
            self._pipes.difference_update(pipes)
            for end in (writer, up_writer):
                self._links.discard(end)
                end.close()

    @staticmethod
    async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError, asyncio.IncompleteReadError):
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()


@asynccontextmanager
async def tcp_gate(target_host: str, target_port: int) -> AsyncIterator[TcpGate]:
    """Run a ``TcpGate`` to the target for the block."""
    gate = TcpGate(target_host, target_port)
    await gate.start()
    try:
        yield gate
    finally:
        await gate.close()

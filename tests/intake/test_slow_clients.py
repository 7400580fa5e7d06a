"""Slow clients cannot hold the server (issue 10): a slowloris client against the real server.

The webhook runs with ``serve``'s uvicorn settings and guard (``app.http_config``) over a
real PostgreSQL. The attacking connections come from 127.0.0.2 (any 127.x address is this
machine), the trader's alerts from 127.0.0.1. Every client here is bounded in connections
and time and stops by itself; the drips are the attack's pace, not waits for a condition.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from urllib.parse import urlsplit

import pytest
from fastapi import FastAPI

from intake.conftest import SECRET, Hook, HookFactory, make_settings
from tradebridge.obs import metrics
from tradebridge.runtime.serve import http_config

ATTACKER = "127.0.0.2"
# Deadlines short enough for a quick suite; the bounds below are generous for a busy box.
FAST = {"header_timeout_s": 1.0, "body_timeout_s": 1.0, "keep_alive_timeout_s": 1}
BOUND_S = 20.0


def now_iso() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def alert_bytes(**fields: object) -> bytes:
    body = {"secret": SECRET, "symbol": "MNQ1!", "action": "buy", "quantity": 1,
            "time": now_iso(), **fields}  # fmt: skip
    return json.dumps(body).encode()


def post_head(length: int) -> bytes:
    return (
        b"POST /webhook HTTP/1.1\r\nHost: tradebridge\r\nContent-Type: application/json\r\n"
        b"Content-Length: " + str(length).encode() + b"\r\n\r\n"
    )


def refused(reason: str) -> float:
    return metrics.HTTP_REFUSED.labels(reason=reason)._value.get()


class Conn:
    """One raw TCP connection to the webhook."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.opened = time.monotonic()

    @classmethod
    async def open(cls, hook: Hook, source: str = ATTACKER) -> Conn:
        where = urlsplit(hook.url)
        reader, writer = await asyncio.open_connection(
            where.hostname, where.port, local_addr=(source, 0)
        )
        return cls(reader, writer)

    async def drip(self, data: bytes, every_s: float = 0.1) -> None:
        """Send ``data`` a byte at a time until it is sent or the server closes."""
        for i in range(len(data)):
            if self.reader.at_eof() or self.writer.is_closing():
                return
            try:
                self.writer.write(data[i : i + 1])
                await self.writer.drain()
            except ConnectionError:
                return
            await asyncio.sleep(every_s)

    async def answer(self) -> tuple[int | None, float]:
        """Read until the server closes; return the status it sent (if any) and when it closed."""
        try:
            data = await self.reader.read()
        except ConnectionError:
            data = b""
        closed = time.monotonic() - self.opened
        status = int(data.split(b" ", 2)[1]) if data.startswith(b"HTTP/1.1 ") else None
        return status, closed

    def close(self) -> None:
        self.writer.close()


@asynccontextmanager
async def connections() -> AsyncIterator[list[Conn]]:
    opened: list[Conn] = []
    try:
        yield opened
    finally:
        for conn in opened:
            conn.close()


async def slowloris(hook: Hook, conn: Conn, payload: bytes) -> tuple[int | None, float]:
    """Drip ``payload`` while reading the answer; return what the server did."""
    dripping = asyncio.create_task(conn.drip(payload))
    try:
        return await conn.answer()
    finally:
        dripping.cancel()


async def test_slow_headers_are_cut_off_with_408(make_hook: HookFactory) -> None:
    hook = await make_hook(serve=FAST)
    before = refused("headers_timeout")
    async with asyncio.timeout(BOUND_S), connections() as opened:
        opened.append(conn := await Conn.open(hook))
        status, closed = await slowloris(
            hook, conn, b"POST /webhook HTTP/1.1\r\nX-Slow: " + b"a" * 500
        )
    assert status == 408
    assert closed >= 0.9  # never before the deadline, however busy the machine
    assert refused("headers_timeout") == before + 1


async def test_silent_connection_is_closed_at_the_header_deadline(make_hook: HookFactory) -> None:
    hook = await make_hook(serve=FAST)
    async with asyncio.timeout(BOUND_S), connections() as opened:
        opened.append(conn := await Conn.open(hook))
        status, closed = await conn.answer()
    assert (status, closed >= 0.9) == (408, True)


async def test_slow_body_is_cut_off_with_408_and_stores_nothing(make_hook: HookFactory) -> None:
    hook = await make_hook(serve=FAST)
    body = alert_bytes()
    before = refused("body_timeout")
    async with asyncio.timeout(BOUND_S), connections() as opened:
        opened.append(conn := await Conn.open(hook))
        conn.writer.write(post_head(len(body)))
        status, _ = await slowloris(hook, conn, body)
    assert status == 408
    assert refused("body_timeout") == before + 1
    assert await hook.rows() == []
    assert await hook.alerts() == []


async def test_blank_lines_after_an_answer_do_not_hold_a_keep_alive_connection(
    make_hook: HookFactory,
) -> None:
    # llhttp skips CR/LF between requests without starting one; uvicorn's keep-alive timer
    # stops at any byte. The header deadline still runs.
    hook = await make_hook(serve=FAST)
    body = alert_bytes()
    async with asyncio.timeout(BOUND_S), connections() as opened:
        opened.append(conn := await Conn.open(hook))
        conn.writer.write(post_head(len(body)) + body)
        head = await conn.reader.readuntil(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200 ")
        length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n")
                      if line.lower().startswith(b"content-length:"))  # fmt: skip
        await conn.reader.readexactly(length)
        status, _ = await slowloris(hook, conn, b"\r\n" * 200)
    assert status == 408
    assert len(await hook.rows()) == 1


async def test_idle_keep_alive_connection_is_closed(make_hook: HookFactory) -> None:
    hook = await make_hook(serve=FAST)
    body = alert_bytes()
    async with asyncio.timeout(BOUND_S), connections() as opened:
        opened.append(conn := await Conn.open(hook, source="127.0.0.1"))
        conn.writer.write(post_head(len(body)) + body)
        data = await conn.reader.read()  # the 200, then EOF when the keep-alive runs out
    assert data.startswith(b"HTTP/1.1 200 ")
    assert time.monotonic() - conn.opened >= 0.9


async def test_oversized_headers_are_400_and_closed(make_hook: HookFactory) -> None:
    hook = await make_hook(serve={"max_header_bytes": 4096})
    before = refused("header_too_large")
    async with asyncio.timeout(BOUND_S), connections() as opened:
        opened.append(conn := await Conn.open(hook))
        conn.writer.write(b"POST /webhook HTTP/1.1\r\nHost: x\r\n" + b"X-Big: " + b"b" * 8000)
        conn.writer.write(b"\r\n\r\n")
        status, _ = await conn.answer()
    assert status == 400
    assert refused("header_too_large") == before + 1


async def test_connections_over_the_per_address_cap_get_429(make_hook: HookFactory) -> None:
    hook = await make_hook(serve={"max_connections_per_address": 4, "header_timeout_s": 60})
    async with asyncio.timeout(BOUND_S), connections() as opened:
        for _ in range(4):
            opened.append(await Conn.open(hook))
        opened.append(extra := await Conn.open(hook))
        status, _ = await extra.answer()
        assert status == 429
        # Another address is not affected by the attacker's connections.
        answer = await hook.post(alert_bytes())
        assert answer.status_code == 200, answer.text
        # One of the four goes away: its place is free again (once the server has seen it).
        opened[0].close()
        await opened[0].writer.wait_closed()
        while True:
            opened.append(again := await Conn.open(hook))
            again.writer.write(post_head(len(body := alert_bytes(id="again"))) + body)
            head = await again.reader.read(12)
            if head != b"HTTP/1.1 429":
                break
    assert head == b"HTTP/1.1 200"


async def test_tradingview_addresses_are_not_capped(make_hook: HookFactory) -> None:
    hook = await make_hook(allowed_ips=["127.0.0.3"], serve={"max_connections_per_address": 2})
    async with asyncio.timeout(BOUND_S), connections() as opened:
        for _ in range(6):
            opened.append(await Conn.open(hook, source="127.0.0.3"))
        for i, conn in enumerate(opened):
            body = alert_bytes(id=f"tv{i}")
            conn.writer.write(post_head(len(body)) + body)
        heads = [await conn.reader.readuntil(b"\r\n") for conn in opened]
    assert heads == [b"HTTP/1.1 200 OK\r\n"] * 6


@pytest.mark.parametrize("attackers", [100])
async def test_slowloris_attack_does_not_hold_the_server_or_its_alerts(
    make_hook: HookFactory, attackers: int
) -> None:
    """``attackers`` connections drip headers from one address while alerts arrive."""
    hook = await make_hook(serve={"header_timeout_s": 2.0, "body_timeout_s": 2.0})
    async with asyncio.timeout(60), connections() as opened:
        for _ in range(attackers):
            opened.append(await Conn.open(hook))
        attack = [
            asyncio.create_task(slowloris(hook, conn, b"GET / HTTP/1.1\r\nX-A: " + b"a" * 600))
            for conn in opened
        ]
        answers = [await hook.post(alert_bytes(id=f"real{i}")) for i in range(10)]
        outcomes = await asyncio.gather(*attack)
    assert [a.status_code for a in answers] == [200] * 10
    statuses = [status for status, _ in outcomes]
    held = max(closed for _, closed in outcomes)
    # The cap (32) admitted some, which the header deadline cut off; the rest were refused.
    assert set(statuses) <= {408, 429}, statuses
    assert statuses.count(429) >= attackers - 32
    assert held < 2.0 + 10.0, f"a slow connection was held {held:.1f} s"
    assert len(await hook.rows()) == 10


def test_http_config_takes_the_serve_settings() -> None:
    settings = make_settings({"keep_alive_timeout_s": 7, "header_timeout_s": 3.5})
    config = http_config(FastAPI(), settings)
    assert config.timeout_keep_alive == 7
    assert isinstance(config.http, type)
    assert config.http.__name__ == "GuardedHttpToolsProtocol"

"""The webhook served by uvicorn on a loopback socket, over a fresh migrated database."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import asyncpg
import httpx
import pytest
import uvicorn
from fastapi import FastAPI
from starlette.types import ASGIApp

import store.conftest as store_fixtures
from _support.webhook_fuzz import ACCOUNTS, SECRET, WEBHOOK_SETTINGS
from tradebridge.config import Settings, load_settings
from tradebridge.intake.webhook import IntakeDeps, mount_webhook
from tradebridge.runtime.serve import http_config
from tradebridge.store.ledger import Ledger

# The fresh-database fixtures of the store tests, shared rather than copied.
empty_db = store_fixtures.empty_db
ledger_db = store_fixtures.ledger_db
ledger = store_fixtures.ledger

# One definition, shared with the fuzz bodies and bench/fuzz_webhook.py.
__all__ = ["ACCOUNTS", "SECRET"]


def make_settings(
    serve: dict[str, Any] | None = None,
    *,
    accounts: list[dict[str, Any]] | None = None,
    sections: dict[str, Any] | None = None,
    **webhook: Any,
) -> Settings:
    """Return settings with three (native) accounts, a group and the test secret.

    ``webhook`` overrides the webhook section, ``serve`` the HTTP server's, ``accounts`` the
    accounts, ``sections`` other sections (``risk``, ``orders``).
    """
    base: dict[str, Any] = {**WEBHOOK_SETTINGS, **webhook}
    return load_settings(
        accounts=accounts if accounts is not None else [{"name": name} for name in ACCOUNTS],
        webhook=base,
        serve=serve or {},
        data_dir="/nonexistent",
        **(sections or {}),
    )


@dataclass
class Hook:
    """A running webhook: its URL, an HTTP client, the ledger and a database connection."""

    url: str
    client: httpx.AsyncClient
    ledger: Ledger
    db: asyncpg.Connection

    async def post(self, body: Any, *, path: str = "/webhook", **kwargs: Any) -> httpx.Response:
        """POST ``body`` (a dict as JSON, bytes/str as they are)."""
        if isinstance(body, dict | list):
            return await self.client.post(self.url + path, json=body, **kwargs)
        return await self.client.post(self.url + path, content=body, **kwargs)

    async def rows(self) -> list[asyncpg.Record]:
        """Return every ledger row, in insertion order."""
        return await self.db.fetch("select * from trading_signals order by seq")

    async def alerts(self) -> list[asyncpg.Record]:
        """Return every webhook_alerts row."""
        return await self.db.fetch("select * from webhook_alerts order by id")


HookFactory = Callable[..., Awaitable[Hook]]


def build_app(settings: Settings, ledger: Ledger) -> ASGIApp:
    """Return an app serving the webhook alone, as ``serve`` mounts it (its front door)."""
    deps = IntakeDeps(settings=settings, ledger=ledger, clock=lambda: datetime.now(UTC))
    return mount_webhook(FastAPI(), deps)


@contextlib.asynccontextmanager
async def serving(app: ASGIApp, settings: Settings) -> AsyncIterator[str]:
    """Serve ``app`` on a free loopback port as ``serve`` would (``http_config``: the same
    uvicorn settings and slow-client guard); yield its base URL."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(http_config(app, settings))
    server.install_signal_handlers = lambda: None  # type: ignore[method-assign]
    task = asyncio.create_task(server.serve(sockets=[sock]))
    while not server.started:
        if task.done():
            task.result()
        await asyncio.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task
        sock.close()


@pytest.fixture
async def make_hook(ledger: Ledger, ledger_db: str) -> AsyncIterator[HookFactory]:
    """Start webhook servers over the test's ledger; ``await make_hook(**webhook_settings)``."""
    async with contextlib.AsyncExitStack() as stack:
        db = await asyncpg.connect(ledger_db)
        stack.push_async_callback(db.close)
        client = await stack.enter_async_context(httpx.AsyncClient(timeout=10))

        async def make(
            *, use_ledger: Ledger | None = None, serve: dict[str, Any] | None = None, **webhook: Any
        ) -> Hook:
            settings = make_settings(serve, **webhook)  # accounts= and sections= pass through
            url = await stack.enter_async_context(
                serving(build_app(settings, use_ledger or ledger), settings)
            )
            return Hook(url=url, client=client, ledger=ledger, db=db)

        yield make


@pytest.fixture
async def hook(make_hook: HookFactory) -> Hook:
    """A webhook with the default test settings."""
    return await make_hook()

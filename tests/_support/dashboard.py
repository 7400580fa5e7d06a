"""Helpers of the dashboard tests: a ``serve`` with the dashboard on, a logged-in client, the
CSRF token of a page, a resting limit order."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx

from _support.runtime import serve_settings, serving
from tradebridge.domain.contracts import resolve_symbol
from tradebridge.sim.server import SimServer
from tradebridge.store.ledger import Ledger

PASSWORD = "dashboard-test-password-F4K3"
SECRET = "dashboard-test-webhook-secret-F4K3"
TOKEN = "dashboard-test-operator-token-0123456789-F4K3"
FIRST, SECOND = "DEMO0000001", "DEMO0000002"
IDS = {FIRST: 100001, SECOND: 100002}
_CSRF = re.compile(r'name="csrf" value="([^"]+)"')


def dashboard_settings(
    sim: SimServer, database: str, redis: str, data_dir: Path, **sections: Any
) -> Any:
    """Return ``serve`` settings with the dashboard, the webhook and the operator token on."""
    dashboard = {"password": PASSWORD, "refresh_s": 0.2, **sections.pop("dashboard", {})}
    return serve_settings(
        sim, database, redis, data_dir, secret=SECRET, dashboard=dashboard,
        serve={"operator_token": TOKEN, **sections.pop("serve", {})}, **sections,
    )  # fmt: skip


def csrf_of(html: str) -> str:
    """Return the first CSRF token of a page."""
    found = _CSRF.search(html)
    assert found is not None, "no CSRF field on the page"
    return found.group(1)


async def login(client: httpx.AsyncClient, base: str, password: str = PASSWORD) -> httpx.Response:
    """Log ``client`` in (its cookie jar keeps the session); return the login's answer."""
    form = await client.get(f"{base}/ui/login")
    assert form.status_code == 200, form.text
    return await client.post(
        f"{base}/ui/login", data={"password": password, "csrf": csrf_of(form.text)}
    )


def far_below(sim: SimServer) -> str:
    """Return a limit price far below the simulator's MNQ market (it rests, never fills)."""
    name = resolve_symbol("MNQ1!", datetime.now(UTC).date()).name

    def read() -> Decimal:
        contract = sim.ctx.engine.find_contract(name)
        assert contract is not None
        return sim.ctx.engine.quote(contract.id).last

    last: Decimal = sim.call(read)
    tick = Decimal("0.25")
    return str((last * Decimal("0.8") / tick).to_integral_value() * tick)


def working_orders(sim: SimServer, account: str) -> list[str]:
    """Return the ids of the account's working orders at the simulator."""
    return sim.call(lambda: [str(o.id) for o in sim.ctx.engine.orders(IDS[account])
                             if o.ord_status.value == "Working"])  # fmt: skip


async def until(predicate: Callable[[], Awaitable[Any]], timeout: float, what: str) -> Any:
    """Await ``predicate()`` until it returns something truthy; fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = await predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(0.05)


def webhook_body(**fields: Any) -> dict[str, Any]:
    """Return a webhook alert: buy 1 MNQ1! on the first account unless ``fields`` say else."""
    return {"secret": SECRET, "symbol": "MNQ1!", "action": "buy", "quantity": 1,
            "account": FIRST, **fields}  # fmt: skip


@dataclass(frozen=True)
class Dashboard:
    """A running ``serve`` with the dashboard, a logged-in client and a ledger beside it."""

    found: Any  # the serve's Endpoints
    client: httpx.AsyncClient
    ledger: Ledger

    @property
    def base(self) -> str:
        """Return the serve's HTTP base URL."""
        return str(self.found.http_url)


@asynccontextmanager
async def logged_in(settings: Any, database: str) -> AsyncIterator[Dashboard]:
    """Run ``serve`` with ``settings`` and log a client in; close everything afterwards."""
    async with (
        serving(settings) as found, httpx.AsyncClient(timeout=10) as client,
        await Ledger.connect(database) as ledger,
    ):  # fmt: skip
        await login(client, found.http_url)
        yield Dashboard(found, client, ledger)

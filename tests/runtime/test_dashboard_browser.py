"""The dashboard in a real headless Chromium (issue 14): Debian's ``chromium`` driven by
Playwright (``executable_path``; Playwright never downloads a browser here). An in-process
``serve`` on a fresh PostgreSQL, the session Redis and the simulator.

One walk through it, as a trader would: log in; a signal sent to the webhook appears and
turns ``filled`` without a reload; its trace opens; a working order is cancelled from the
accounts page; the kill switch is thrown and released through its confirmation; and the
browser logs no console error on the way. Screenshots of each page are kept under
``artifacts/dashboard-browser/`` (``TRADEBRIDGE_ARTIFACTS`` overrides; git ignores it); the
test prints where.

Without Chromium this test fails, naming the fix: ``./dev test`` installs it.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from _support.dashboard import (
    FIRST,
    PASSWORD,
    dashboard_settings,
    far_below,
    until,
    webhook_body,
    working_orders,
)
from _support.runtime import serving
from tradebridge.sim.server import SimServer
from tradebridge.store.embedded import EmbeddedRedis
from tradebridge.store.ledger import Ledger

ROOT = Path(__file__).resolve().parents[2]
_TIMEOUT_MS = 20_000


def chromium_path() -> str:
    """Return Debian's Chromium (or ``TRADEBRIDGE_CHROMIUM``); fail, naming the fix, if absent."""
    given = os.environ.get("TRADEBRIDGE_CHROMIUM")
    found = given or shutil.which("chromium") or shutil.which("chromium-browser")
    if not found or not Path(found).exists():
        pytest.fail(
            "the browser tests need Chromium and none was found (looked for "
            f"{given or 'chromium and chromium-browser on PATH'}): install Debian's package with "
            "`apt-get install -y chromium` (./dev test does it), or point "
            "TRADEBRIDGE_CHROMIUM at a Chromium binary"
        )
    return found


def artifacts_dir() -> Path:
    """Return (and create) where this run's screenshots go."""
    where = Path(os.environ.get("TRADEBRIDGE_ARTIFACTS", ROOT / "artifacts")) / "dashboard-browser"
    where.mkdir(parents=True, exist_ok=True)
    return where


@pytest.fixture
async def browser() -> AsyncIterator[object]:
    """A headless Chromium, closed after the test."""
    from playwright.async_api import async_playwright

    executable = chromium_path()
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(executable_path=executable, headless=True)
        try:
            yield launched
        finally:
            await launched.close()


async def test_dashboard_in_chromium_login_live_signal_trace_cancel_and_kill_switch(
    browser: object,
    sim_tokens: SimServer,
    fresh_db: str,
    redis_server: EmbeddedRedis,
    tmp_path: Path,
) -> None:
    from playwright.async_api import Browser, ConsoleMessage, Error, expect

    assert isinstance(browser, Browser)
    sim = sim_tokens
    shots = artifacts_dir()
    print(f"dashboard screenshots: {shots}")  # noqa: T201 - the test names its artifacts
    problems: list[str] = []
    settings = dashboard_settings(sim, fresh_db, redis_server.url, tmp_path)
    async with (
        serving(settings) as found, httpx.AsyncClient(timeout=10) as client,
        await Ledger.connect(fresh_db) as ledger,
    ):  # fmt: skip
        base = found.http_url
        context = await browser.new_context()
        page = await context.new_page()
        page.set_default_timeout(_TIMEOUT_MS)

        def on_console(message: ConsoleMessage) -> None:
            if message.type == "error":
                problems.append(f"console: {message.text}")

        def on_page_error(error: Error) -> None:
            problems.append(f"page error: {error}")

        page.on("console", on_console)
        page.on("pageerror", on_page_error)

        # Log in: /ui sends a stranger to the login page.
        await page.goto(f"{base}/ui")
        await expect(page).to_have_url(f"{base}/ui/login")
        await page.screenshot(path=shots / "1-login.png", full_page=True)
        await page.fill('input[name="password"]', PASSWORD)
        await page.click('button[type="submit"]')
        await expect(page).to_have_url(f"{base}/ui/signals")
        await expect(page.locator("#live")).to_contain_text("live")

        # A webhook signal appears and turns filled, with no reload of the page.
        await page.evaluate("window.__noReload = true")
        started = time.monotonic()
        sent = await client.post(found.webhook_url, json=webhook_body(strategy="browser"))
        assert sent.status_code == 200, sent.text
        [signal_id] = sent.json()["signal_ids"]
        row = page.locator("#signal-rows tr", has=page.locator(f'a:text-is("{signal_id}")'))
        await expect(row.locator('[data-status="filled"]')).to_be_visible()
        print(f"webhook to 'filled' on the page: {time.monotonic() - started:.2f} s")  # noqa: T201
        assert await page.evaluate("window.__noReload === true"), "the page was reloaded"
        await page.screenshot(path=shots / "2-signals.png", full_page=True)

        # Its trace opens.
        await row.locator("a").first.click()
        await expect(page).to_have_url(f"{base}/ui/trace/{signal_id}")
        await expect(page.locator("#calls")).to_contain_text("placeorder")
        await expect(page.locator("#trace")).to_contain_text("filled")
        await page.screenshot(path=shots / "3-trace.png", full_page=True)

        # A working order is cancelled from the accounts page.
        resting = await client.post(found.webhook_url, json=webhook_body(
            order_type="limit", price=far_below(sim)))  # fmt: skip
        assert resting.status_code == 200, resting.text

        async def working() -> list[str]:
            return working_orders(sim, FIRST)

        [order_id] = await until(working, 20, "the limit order to rest")
        await page.click('nav a[href="/ui/accounts"]')
        button = page.locator(f'button[data-cancel="{order_id}"]')
        await page.screenshot(path=shots / "4-accounts.png", full_page=True)
        await button.click()
        await expect(page.locator(".note.ok")).to_contain_text(f"cancel of order {order_id}")
        assert working_orders(sim, FIRST) == []
        await expect(page.locator(f'button[data-cancel="{order_id}"]')).to_have_count(0)

        # The kill switch: thrown through its confirmation, then released the same way.
        await page.click('nav a[href="/ui/health"]')
        await expect(page.locator("#kill-state")).to_have_attribute("data-on", "no")
        await page.fill('input[name="reason"]', "browser test")
        await page.click("#kill-toggle")
        await expect(page.locator("#confirm-text")).to_contain_text("Throw the kill switch")
        assert not (await ledger.kill_switches()).global_on  # asking is not doing
        await page.click("#confirm")
        await expect(page.locator("#kill-state")).to_have_attribute("data-on", "yes")
        assert (await ledger.kill_switches()).global_on
        await page.screenshot(path=shots / "5-health-killed.png", full_page=True)
        await page.click("#kill-toggle")
        await page.click("#confirm")
        await expect(page.locator("#kill-state")).to_have_attribute("data-on", "no")
        assert not (await ledger.kill_switches()).global_on

        await page.click('nav a[href="/ui/latency"]')
        await expect(page.locator("svg.chart")).to_be_visible()
        await page.screenshot(path=shots / "6-latency.png", full_page=True)
        await context.close()
    assert problems == []
    assert sorted(p.name for p in shots.glob("*.png")) == [
        "1-login.png", "2-signals.png", "3-trace.png", "4-accounts.png",
        "5-health-killed.png", "6-latency.png",
    ]  # fmt: skip

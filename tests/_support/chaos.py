"""The chaos suite's shared parts: alert traffic, ``/healthz`` sampling and the judge.

Every chaos test (``tests/chaos/``) drives real traffic through a real bridge while something
breaks, then asks the simulator what it holds. The judge compares each row with the orders
the simulator keeps under the row's own client id (native ``clOrdId``, bridge ``requestId``)
and finds duplicates (two orders for one row), lost orders (a placed row without its order,
an order of ours that no row points at) and wrong adoptions (a row pointing at an order
that is not its own).
"""

from __future__ import annotations

import asyncio
import os
import random
import re
import time
from collections import Counter
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest

from _support.runtime import serve_settings, serving
from tradebridge.brokers.tvbridge.wire import request_id_for
from tradebridge.domain.enums import Dialect
from tradebridge.domain.lifecycle import SignalStatus
from tradebridge.runtime.endpoints import Endpoints
from tradebridge.sim.server import SimServer
from tradebridge.store.embedded import EmbeddedRedis
from tradebridge.store.ledger import Ledger, LedgerRow

SLOW = os.environ.get("TRADEBRIDGE_SLOW") == "1"
SECRET = "chaos-webhook-secret"
TOKEN_KEY = "token:{account_name}"
# Two accounts per dialect, one of each per Tradovate user.
DIALECTS = {
    "DEMO0000001": Dialect.NATIVE,
    "DEMO0000002": Dialect.TVBRIDGE,
    "PAAPEX1361890000010": Dialect.NATIVE,
    "PAAPEX1361890000011": Dialect.TVBRIDGE,
}
# The risk rules off (docs/risk.md), at any hour.
RISK_OFF: dict[str, object] = {
    "trading_hours": "always",
    **dict.fromkeys(("max_order_qty", "max_position", "max_account_position", "max_open_orders",
                     "max_orders_per_minute", "max_orders_per_day"), "off"),
}  # fmt: skip
RISK_OFF_TOML = "[risk]\n" + "".join(f'{k} = "{v}"\n' for k, v in RISK_OFF.items())
# How long an unknown row may hold its account back before it is escalated or failed.
UNKNOWN_BOUND_S = 20.0


IN_FLIGHT = frozenset(
    {SignalStatus.PENDING, SignalStatus.PROCESSING, SignalStatus.SUBMITTED, SignalStatus.UNKNOWN}
)
# Rows whose order must exist at the broker (exactly one, and theirs).
PLACED = frozenset(
    {
        SignalStatus.WORKING,
        SignalStatus.PARTIALLY_FILLED,
        SignalStatus.FILLED,
        SignalStatus.CANCELLED,
        SignalStatus.EXPIRED,
    }
)
# Rows that must have no order at the broker.
NOTHING_PLACED = frozenset({SignalStatus.DENIED, SignalStatus.FAILED})
FAR = {"buy": Decimal(1000), "sell": Decimal(99000)}  # far-away limits: they rest
SIM_USERS = (("demo", "demo"), ("apex", "apex"))


def sim_commands(sim_url: str) -> list[dict[str, Any]]:
    """Return every ``command`` entity of every simulator user (native ``command/list``)."""
    out: list[dict[str, Any]] = []
    # A long crash run leaves tens of thousands of commands: a generous read deadline.
    with httpx.Client(base_url=f"{sim_url}/v1", timeout=120) as client:
        for name, password in SIM_USERS:
            login = client.post(
                "/auth/accesstokenrequest",
                json={"name": name, "password": password, "appId": "tests", "appVersion": "1",
                      "cid": 1, "sec": "tests", "deviceId": "chaos-tests"},
            )  # fmt: skip
            token = login.json()["accessToken"]
            listed = client.get("/command/list", headers={"authorization": f"Bearer {token}"})
            out.extend(listed.json())
    return out


@dataclass
class Verdict:
    """What the simulator's record says about the rows."""

    duplicates: list[str] = field(default_factory=list)
    lost: list[str] = field(default_factory=list)
    wrong: list[str] = field(default_factory=list)
    other: list[str] = field(default_factory=list)
    review: list[str] = field(default_factory=list)

    def problems(self) -> list[str]:
        """Return every finding that fails a run (``review`` rows are counted, not failed)."""
        return [*self.duplicates, *self.lost, *self.wrong, *self.other]

    def summary(self) -> str:
        """Return the counts, for the run's printed line."""
        return (
            f"duplicates {len(self.duplicates)}, lost {len(self.lost)}, "
            f"wrong adoptions {len(self.wrong)}, needs_review {len(self.review)}"
        )


def judge(
    rows: list[LedgerRow],
    dialects: Mapping[str, Dialect],
    sim_url: str,
    resting: set[str] | frozenset[str] = frozenset(),
) -> Verdict:
    """Compare every row with the orders the simulator holds under the row's client id.

    ``dialects`` names each account's dialect (a bridge row's client id goes out as the
    ``requestId`` derived from it); ``resting`` are orders placed by hand, without a client
    id, that no row may point at. ``needs_review`` rows are allowed on bridge accounts only
    (the bridge cannot always tell an order of its own from one placed by hand).
    """
    orders: dict[str | None, list[str]] = {}
    for command in sim_commands(sim_url):
        if command.get("commandType") == "New" and command.get("orderId") is not None:
            orders.setdefault(command.get("clOrdId"), []).append(str(command["orderId"]))
    verdict = Verdict()
    ours: set[str] = set()
    for row in rows:
        sid, status = row.signal_id, row.status.value
        client_id = row.client_order_id
        dialect = dialects[row.account_name or ""]
        if client_id is not None and dialect is Dialect.TVBRIDGE:
            client_id = request_id_for(client_id)  # what the bridge sent as requestId
        placed = orders.get(client_id, []) if client_id is not None else []
        if client_id is not None:
            ours.add(client_id)
        if len(placed) > 1:
            verdict.duplicates.append(f"duplicate: {sid} {status}: orders {placed}")
        if row.status in PLACED and not placed:
            verdict.lost.append(
                f"lost: {sid} {status} (order {row.tradovate_order_id}) has no order"
            )
        if row.status in NOTHING_PLACED and placed:
            verdict.lost.append(f"lost: {sid} {status}: its orders {placed} belong to no row")
        if row.tradovate_order_id is not None and row.tradovate_order_id not in placed:
            verdict.wrong.append(
                f"wrong adoption: {sid} {status} points at {row.tradovate_order_id}, "
                f"its own orders are {placed}"
                + (" (one placed by hand)" if row.tradovate_order_id in resting else "")
            )
        if row.status in PLACED and row.tradovate_order_id is None:
            verdict.lost.append(f"lost: {sid} {status} without tradovate_order_id")
        if row.status is SignalStatus.FILLED and row.filled_qty != row.quantity:
            verdict.other.append(f"{sid} filled {row.filled_qty} of {row.quantity}")
        if row.status is SignalStatus.NEEDS_REVIEW:
            note = f"{sid} ({row.account_name}, orders {placed}): {row.error_message}"
            verdict.review.append(note)
            if dialect is Dialect.NATIVE:
                verdict.other.append(f"needs_review on a native account: {note}")
    for client_id, placed in orders.items():
        if client_id is None and set(placed) <= resting:
            continue
        if client_id is None or client_id not in ours:
            verdict.lost.append(f"lost: orders {placed} (client id {client_id}) match no row")
    return verdict


async def print_histories(ledger: Ledger, problems: list[str], pattern: str) -> None:
    """Print the events of the rows the problems name (the database is gone afterwards)."""
    named = sorted({m for p in problems for m in re.findall(pattern, p)})[:10]
    for signal_id in named:
        print(f"--- history of {signal_id}")  # noqa: T201
        for event in await ledger.history(signal_id):
            detail = event.detail
            if isinstance(detail, dict):
                detail = {k: v for k, v in detail.items() if k not in ("evidence", "baseline")}
            print(f"  {event.created_at:%H:%M:%S.%f} {event.event} {detail}"[:400])  # noqa: T201


async def rows_of(ledger: Ledger, ids: list[str]) -> list[LedgerRow]:
    """Return the rows of ``ids`` in insertion order."""
    records = await ledger.pool.fetch(
        "select * from trading_signals where signal_id = any($1::text[]) order by seq", ids
    )
    return [LedgerRow.from_record(r) for r in records]


async def settled(
    ledger: Ledger, ids: list[str], quiet_s: float, *, also: frozenset[SignalStatus] = frozenset()
) -> list[LedgerRow]:
    """Wait until no row of ``ids`` is in flight (or in a status of ``also``); return them.

    Fails once ``quiet_s`` pass without any row settling: a backlog still draining is
    progress, not a hang, however long it takes on a loaded machine.
    """
    deadline = time.monotonic() + quiet_s
    least = len(ids) + 1
    waiting = IN_FLIGHT | also
    while True:
        rows = await rows_of(ledger, ids)
        stuck = [r for r in rows if r.status in waiting]
        if len(rows) == len(ids) and not stuck:
            return rows
        if len(stuck) < least:
            least, deadline = len(stuck), time.monotonic() + quiet_s
        if time.monotonic() > deadline:
            missing = sorted(set(ids) - {r.signal_id for r in rows})[:10]
            detail = ", ".join(f"{r.signal_id}={r.status.value}" for r in stuck[:20])
            pytest.fail(
                f"{len(stuck)} rows still in flight, none settled in the last {quiet_s:.0f}s: "
                f"{detail}" + (f"; accepted but absent: {missing}" if missing else "")
            )
        await asyncio.sleep(0.2)


async def pause(stop: asyncio.Event, seconds: float) -> bool:
    """Sleep ``seconds`` or until ``stop``; return whether ``stop`` is set."""
    try:
        await asyncio.wait_for(stop.wait(), seconds)
    except TimeoutError:
        return False
    return True


@dataclass
class Alerts:
    """TradingView-style alerts posted to a webhook at a steady rate until stopped.

    Every alert carries its own fire time (``time``), so the webhook's idempotency key tells
    a resend from a new alert. An alert that is not answered, or answered 503 ("not stored,
    send it again"), is sent again, identical, every ``resend_s`` for up to ``give_up_s``,
    as a careful sender would; a resend of a stored alert is answered ``duplicate`` with the
    first delivery's ids. ``accepted`` holds the signal ids of every alert answered 200.
    """

    url: str
    secret: str
    accounts: tuple[str, ...]
    per_s: float = 10.0
    seed: int = 1
    limit_share: float = 0.2  # alerts that are far-away limits (they rest), the rest market
    resend_s: float = 0.25
    give_up_s: float = 120.0
    accepted: list[str] = field(default_factory=list)
    answers: Counter[str] = field(default_factory=Counter)
    sent: int = 0
    unanswered: list[dict[str, Any]] = field(default_factory=list)
    # Answers no careful sender expects (anything but 200 and 503): each fails the test.
    failures: list[str] = field(default_factory=list)
    _seen: set[str] = field(default_factory=set)

    def body(self, n: int, rng: random.Random) -> dict[str, Any]:
        """Return the ``n``-th alert."""
        side = "buy" if rng.random() < 0.5 else "sell"
        fired = datetime.now(UTC) + timedelta(microseconds=n % 1000)
        body: dict[str, Any] = {
            "secret": self.secret, "symbol": "MNQ1!", "action": side, "quantity": 1,
            "account": self.accounts[n % len(self.accounts)], "time": fired.isoformat(),
        }  # fmt: skip
        if rng.random() < self.limit_share:
            body.update(order_type="limit", price=str(FAR[side]))
        return body

    async def run(self, stop: asyncio.Event) -> None:
        """Post alerts until ``stop``; then wait for every alert still being resent."""
        rng = random.Random(self.seed)
        pending: set[asyncio.Task[None]] = set()
        # A sender holds a few connections, as TradingView does (one request per alert): more
        # than the guard's per-address cap would be answered 429 (runtime/http_guard.py).
        limits = httpx.Limits(max_connections=8, max_keepalive_connections=8)
        async with httpx.AsyncClient(timeout=5, limits=limits) as client:
            while not stop.is_set():
                body = self.body(self.sent, rng)
                self.sent += 1
                task = asyncio.create_task(self._deliver(client, body))
                pending.add(task)
                task.add_done_callback(pending.discard)
                await pause(stop, 1.0 / self.per_s)
            if pending:
                await asyncio.gather(*pending)

    async def until_accepted(self, count: int, timeout: float, what: str) -> None:
        """Wait until ``count`` alerts in all were accepted."""
        deadline = time.monotonic() + timeout
        while len(self.accepted) < count:
            assert not self.failures, self.failures[:5]
            if time.monotonic() > deadline:
                pytest.fail(f"timed out waiting for {what}: {len(self.accepted)} accepted, "
                            f"answers {dict(self.answers)}")  # fmt: skip
            await asyncio.sleep(0.05)

    async def _deliver(self, client: httpx.AsyncClient, body: dict[str, Any]) -> None:
        deadline = time.monotonic() + self.give_up_s
        while True:
            try:
                answer = await client.post(self.url, json=body)
                outcome = str(answer.status_code)
            except httpx.TransportError as e:
                answer, outcome = None, type(e).__name__
            self.answers[outcome] += 1
            if answer is not None and answer.status_code == 200:
                found = answer.json()
                if found["status"] not in ("accepted", "duplicate"):
                    self.failures.append(f"alert answered 200 {found}")
                    return
                # A duplicate's ids count too: the first delivery may have been stored and
                # its answer lost (a 503 on a commit that went through, a reset).
                fresh = [i for i in found["signal_ids"] if i not in self._seen]
                self._seen.update(fresh)
                self.accepted.extend(fresh)
                return
            if answer is not None and answer.status_code != 503:
                self.failures.append(f"alert answered {answer.status_code}: {answer.text[:200]}")
                return
            if time.monotonic() > deadline:
                self.unanswered.append(body)
                return
            await asyncio.sleep(self.resend_s)


@dataclass
class HealthLog:
    """``/healthz`` read every ``every_s`` until stopped: (monotonic time, HTTP status, body)."""

    url: str
    every_s: float = 0.2
    samples: list[tuple[float, int, dict[str, Any]]] = field(default_factory=list)

    async def run(self, stop: asyncio.Event) -> None:
        """Sample until ``stop``."""
        async with httpx.AsyncClient(timeout=10) as client:
            while not stop.is_set():
                try:
                    answer = await client.get(self.url)
                    self.samples.append((time.monotonic(), answer.status_code, answer.json()))
                except httpx.TransportError:
                    self.samples.append((time.monotonic(), 0, {}))
                await pause(stop, self.every_s)

    def between(self, start: float, end: float) -> list[dict[str, Any]]:
        """Return the bodies sampled between two ``time.monotonic`` moments."""
        return [body for at, _, body in self.samples if start <= at <= end]


async def healthz_until(url: str, wanted: str, timeout: float, what: str) -> dict[str, Any]:
    """Read ``/healthz`` until its status is ``wanted``; return that answer."""
    deadline = time.monotonic() + timeout
    body: dict[str, Any] = {}
    async with httpx.AsyncClient(timeout=10) as client:
        while True:
            body = (await client.get(url)).json()
            if body.get("status") == wanted:
                return body
            if time.monotonic() > deadline:
                pytest.fail(f"/healthz never said {wanted} ({what}); last: {body}")
            await asyncio.sleep(0.2)


@dataclass
class Serving:
    """A running bridge: its endpoints, a ledger on its database, its alert traffic."""

    endpoints: Endpoints
    ledger: Ledger
    alerts: Alerts
    health: HealthLog


@dataclass
class Rig:
    """The simulator, a private Redis with the simulator's token writer, a database."""

    sim: SimServer
    redis: EmbeddedRedis
    database_url: str
    data_dir: Path

    @property
    def sim_url(self) -> str:
        """Return the simulator's base URL."""
        return self.sim.url

    def admin(self, method: str, path: str, **kwargs: Any) -> Any:
        """Call the simulator's admin surface (``/_sim``); return the JSON answer."""
        answer = httpx.request(method, f"{self.sim.url}/_sim{path}", timeout=10, **kwargs)
        answer.raise_for_status()
        return answer.json()

    def settings(self, **sections: Any) -> Any:
        """Return ``serve`` settings on the rig's stores, the four accounts in their dialects."""
        dispatcher = {
            "workers": 2, "drain_interval_s": 0.5, "reconcile_interval_s": 1.0,
            "unknown_bound_s": UNKNOWN_BOUND_S, "error_retry_s": 0.2, "error_retry_max_s": 2.0,
            # The fence's rule kept (dead_worker_hold_floor: 2 + 3), recovery sooner.
            "liveness_fresh_s": 2.0, "dead_worker_hold_s": 6.0,
            **sections.pop("dispatcher", {}),
        }  # fmt: skip
        tradovate = {
            "request_timeout_s": 3.0, "lookup_absent_after_s": 1.0,
            **sections.pop("tradovate", {}),
        }  # fmt: skip
        webhook = {"rate_limit_per_minute": 0, **sections.pop("webhook", {})}
        # The traffic's orders rest far away and come faster than the risk rules' defaults
        # allow (docs/risk.md): they are off, what is judged is exactly-once placement.
        risk = {**RISK_OFF, **sections.pop("risk", {})}
        settings = serve_settings(
            self.sim, self.database_url, self.redis.url, self.data_dir, secret=SECRET,
            dispatcher=dispatcher, tradovate=tradovate, tvbridge={"poll_interval_s": 0.5},
            risk=risk, **sections,
        )  # fmt: skip
        accounts = [
            a.model_copy(update={"dialect": DIALECTS[a.name]})
            for a in settings.accounts
            if a.name in DIALECTS
        ]
        webhook_cfg = settings.webhook.model_copy(update=webhook)
        return settings.model_copy(update={"accounts": accounts, "webhook": webhook_cfg})

    @asynccontextmanager
    async def serve(self, per_s: float = 10.0, **sections: Any) -> AsyncIterator[Serving]:
        """Run ``serve`` with alert traffic and ``/healthz`` sampling set up (not started)."""
        async with (
            serving(self.settings(**sections)) as endpoints,
            await Ledger.connect(self.database_url, min_size=1, max_size=4) as ledger,
        ):
            alerts = Alerts(endpoints.webhook_url, SECRET, tuple(DIALECTS), per_s=per_s)
            yield Serving(endpoints, ledger, alerts, HealthLog(endpoints.healthz_url))

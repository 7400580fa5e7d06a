"""``/healthz`` and ``/metrics``: is this process able to do its work, and what has it done.

``/healthz`` answers with one JSON entry per check (``ok``, ``latency_ms``, and on failure a
reason that names the kind of error, never a URL's password or a token) and an overall
``status``: ``failing`` (HTTP 503) when the database, Redis or a broker host does not answer
or a condition says so, ``degraded`` (HTTP 200: the process still takes alerts) when a
condition needs a human (rows unknown past their bound, a token missing or locked out, claims
or reconcile failing), else ``ok``. Conditions are registered by the parts that know them
(``HealthChecker.conditions``). Broker hosts are probed with a plain
unauthenticated GET, cached for ``ttl_s``: a health check must not spend Tradovate's request
budget. Any HTTP answer counts as reachable; only a failed connection or a timeout does not.
The document also says which Tradovate environment the process trades (``environment``,
and ``live``: true when orders trade real money).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, Literal

import httpx
import redis.asyncio as aioredis
from fastapi import APIRouter
from fastapi.responses import JSONResponse, Response

from tradebridge.brokers.auth import AccountTokens
from tradebridge.config import Settings
from tradebridge.domain.enums import Dialect, Environment
from tradebridge.obs import metrics
from tradebridge.store.kill import KillSwitchWatch
from tradebridge.store.ledger import Ledger

_TIMEOUT_S = 2.0


@dataclass(frozen=True, slots=True)
class CheckResult:
    """The outcome of one health check."""

    ok: bool
    latency_ms: float
    error: str | None = None

    def as_json(self) -> dict[str, Any]:
        """Return the check as JSON-ready data."""
        out: dict[str, Any] = {"ok": self.ok, "latency_ms": round(self.latency_ms, 2)}
        if self.error is not None:
            out["error"] = self.error
        return out


async def _timed(probe: Callable[[], Awaitable[object]], timeout_s: float) -> CheckResult:
    started = time.perf_counter()
    try:
        async with asyncio.timeout(timeout_s):
            await probe()
    except TimeoutError:
        return CheckResult(False, (time.perf_counter() - started) * 1000, "timed out")
    except Exception as e:  # noqa: BLE001 - any failure is the check's answer
        # The type only: messages of database and Redis errors can carry URLs.
        return CheckResult(False, (time.perf_counter() - started) * 1000, type(e).__name__)
    return CheckResult(True, (time.perf_counter() - started) * 1000)


def broker_hosts(settings: Settings) -> dict[str, str]:
    """Return the broker base URLs the configured accounts use, by dialect name."""
    hosts: dict[str, str] = {}
    for account in settings.accounts:
        if account.dialect is Dialect.TVBRIDGE:
            hosts[Dialect.TVBRIDGE.value] = settings.tradovate.bridge_url
        else:
            hosts[Dialect.NATIVE.value] = settings.tradovate.native_url
    return hosts


Level = Literal["ok", "degraded", "failing"]
_RANK: dict[str, int] = {"ok": 0, "degraded": 1, "failing": 2}


@dataclass(frozen=True, slots=True)
class Condition:
    """A state of the process that is not a reachability probe (rows, tokens, loops)."""

    level: Level
    detail: Mapping[str, Any] = field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        """Return the condition as JSON-ready data."""
        return {"ok": self.level == "ok", "level": self.level, **self.detail}


def worst(levels: Sequence[str]) -> Level:
    """Return the most severe of ``levels`` (ok when empty)."""
    top: Level = "ok"
    for level in levels:
        if _RANK[level] > _RANK[top]:
            top = level  # type: ignore[assignment]
    return top


@dataclass
class HealthChecker:
    """Runs the checks of ``/healthz``; broker probes are cached for ``ttl_s``."""

    ledger: Ledger
    redis: aioredis.Redis
    brokers: Mapping[str, str]
    ttl_s: float = 30.0
    timeout_s: float = _TIMEOUT_S
    environment: Environment = Environment.DEMO
    # Named conditions, each a coroutine returning a Condition; one that raises is failing.
    conditions: dict[str, Callable[[], Awaitable[Condition]]] = field(default_factory=dict)
    _cache: dict[str, tuple[float, CheckResult]] = field(default_factory=dict)

    async def check(self) -> dict[str, Any]:
        """Run every check and condition and return the ``/healthz`` document."""
        names = ["database", "redis", *(f"broker:{name}" for name in self.brokers)]
        probes = [
            _timed(self.ledger.ping, self.timeout_s),
            _timed(self.redis.ping, self.timeout_s),
            *(self._broker(url) for url in self.brokers.values()),
        ]
        conditions = [self._condition(probe) for probe in self.conditions.values()]
        results, found = await asyncio.gather(asyncio.gather(*probes), asyncio.gather(*conditions))
        checks = {name: result.as_json() for name, result in zip(names, results, strict=True)}
        levels: list[str] = ["ok" if result.ok else "failing" for result in results]
        for name, condition in zip(self.conditions, found, strict=True):
            checks[name] = condition.as_json()
            levels.append(condition.level)
        return {
            "status": worst(levels),
            "environment": self.environment.value,
            "live": self.environment is Environment.LIVE,
            "checks": checks,
        }

    async def _condition(self, probe: Callable[[], Awaitable[Condition]]) -> Condition:
        try:
            async with asyncio.timeout(self.timeout_s):
                return await probe()
        except TimeoutError:
            return Condition("failing", {"error": "timed out"})
        except Exception as e:  # noqa: BLE001 - a condition that cannot be read is failing
            return Condition("failing", {"error": type(e).__name__})

    async def _broker(self, url: str) -> CheckResult:
        cached = self._cache.get(url)
        now = time.monotonic()
        if cached is not None and now - cached[0] < self.ttl_s:
            return cached[1]

        async def probe() -> None:
            async with httpx.AsyncClient(timeout=self.timeout_s) as client:
                await client.get(url)

        result = await _timed(probe, self.timeout_s)
        self._cache[url] = (now, result)
        return result


def queue_condition(ledger: Ledger, age_s: float, depth: int) -> Callable[[], Awaitable[Condition]]:
    """Return the condition "the queue moves": degraded while a pending row has waited
    ``age_s`` (``notify.queue_age_s``) or ``depth`` rows wait (no worker takes the queue, or
    an account is held by a row in flight), with the count and the oldest's age."""

    async def check() -> Condition:
        pending, oldest_s = await ledger.queue_backlog()
        level: Level = "degraded" if oldest_s >= age_s or pending >= depth else "ok"
        return Condition(level, {"pending": pending, "oldest_s": round(oldest_s, 1)})

    return check


def unresolved_rows(ledger: Ledger, bound_s: float) -> Callable[[], Awaitable[Condition]]:
    """Return the condition "rows a human must look at": ``needs_review`` rows and ``unknown``
    rows older than the bound (``dispatcher.unknown_bound_s``); degraded with their ids."""
    bound = timedelta(seconds=bound_s)

    async def check() -> Condition:
        count = await ledger.count_unresolved(unknown_bound=bound)
        metrics.ROWS_NEEDING_REVIEW.set(count)
        if not count:
            return Condition("ok")
        rows = await ledger.unresolved(unknown_bound=bound, limit=20)
        return Condition(
            "degraded",
            {
                "count": count,
                "rows": [
                    {"signal_id": r.signal_id, "status": r.status.value,
                     "account": r.account_name, "error": r.error_message}
                    for r in rows
                ],
            },
        )  # fmt: skip

    return check


def build_ops_router(checker: HealthChecker) -> APIRouter:
    """Return the router of ``/healthz`` and ``/metrics``."""
    router = APIRouter()

    @router.get("/healthz")
    async def healthz() -> JSONResponse:
        report = await checker.check()
        # degraded still answers 200: the process takes alerts, a human should look.
        return JSONResponse(report, status_code=503 if report["status"] == "failing" else 200)

    @router.get("/metrics")
    async def prometheus() -> Response:
        body, content_type = metrics.render()
        return Response(body, media_type=content_type)

    return router


def tokens_condition(
    settings: Settings, tokens: AccountTokens
) -> Callable[[], Awaitable[Condition]]:
    """Return the ``tokens`` condition of ``/healthz``: Redis and the managers, no Tradovate."""
    names = [a.name for a in settings.accounts]

    async def condition() -> Condition:
        found = await tokens.health(names)
        return Condition(found.level, found.detail)

    return condition


def kill_switch_condition(watch: KillSwitchWatch) -> Callable[[], Awaitable[Condition]]:
    """Return the ``kill_switch`` condition: degraded while a switch is on (trading is
    stopped on purpose; a human turns it off) or the switches cannot be read, with who threw
    each, when and why. Each account's risk state (P&L, distance to each limit) is the risk
    engine's: it registers a condition of its own beside this one."""

    async def check() -> Condition:
        # While the watch cannot read them (the database check says why), the last state read
        # stays in force: show it rather than nothing.
        found = watch.current if watch.error is not None else await watch.state()
        detail: dict[str, Any] = found.as_json()
        if watch.error is not None:
            detail["error"] = f"cannot read the kill switches ({watch.error}); last known kept"
        stopped = found.global_on or bool(found.engaged()) or watch.error is not None
        return Condition("degraded" if stopped else "ok", detail)

    return check

"""Composition root: build everything from the settings and run it under one supervisor.

``run_serve`` is ``tradebridge serve``: the ledger, Redis, the broker pool, N dispatchers and
one HTTP server (``/healthz``, ``/metrics``, the webhook), all in one ``asyncio.TaskGroup``.
With no ``DATABASE_URL`` / ``REDIS_URL`` it first starts a private PostgreSQL and Redis under
the data directory (the embedded default) and stops them on the way out.
``run_up`` is ``tradebridge up``: the same, plus the simulator as broker (its accounts become
the configured accounts, its tokens are written to Redis and kept fresh), a local webhook
secret, and ``endpoints.json`` in the data directory so that other tools find the stack.

Stopping (SIGTERM, SIGINT, or the ``stop`` event): the dispatchers are cancelled first and
hand back the rows they claimed but did not send, then the HTTP server closes, then the
broker pool, Redis and the ledger; embedded servers stop last, their data kept.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import signal
import socket
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis
import uvicorn
from fastapi import FastAPI
from pydantic import SecretStr

from tradebridge._net import bind_socket
from tradebridge.config import AccountConfig, Settings, TradovateConfig
from tradebridge.domain.enums import Dialect
from tradebridge.intake.webhook import IntakeDeps, build_router, validate_webhook_settings
from tradebridge.obs import metrics
from tradebridge.obs.logging import get_logger
from tradebridge.runtime.health import (
    Condition,
    HealthChecker,
    broker_hosts,
    build_ops_router,
    tokens_condition,
    unresolved_rows,
)
from tradebridge.runtime.http_guard import ConnectionGuard, guarded_protocol
from tradebridge.store.embedded import (
    EmbeddedPostgres,
    EmbeddedRedis,
    prepare_data_dir,
    server_dir,
)
from tradebridge.store.ledger import Ledger
from tradebridge.store.migrate import describe_url, migrate
from tradebridge.store.tokens import connect_redis

_log = get_logger("tradebridge.runtime.app")

ENDPOINTS_FILE = "endpoints.json"
WEBHOOK_SECRET_FILE = "webhook_secret"  # noqa: S105 - a file name, not a secret
# The simulator has no request budget of its own; Tradovate's (about 1/s) would only slow
# the local stack down.
_SIM_REQUESTS_PER_S = 200.0
_SIM_REQUEST_BURST = 200


@dataclass(frozen=True, slots=True)
class Endpoints:
    """Where a running stack answers. ``database_url`` and ``redis_url`` carry passwords."""

    http_url: str
    database_url: str = field(repr=False)
    redis_url: str = field(repr=False)
    simulator_url: str | None = None
    data_dir: Path | None = None
    webhook_secret_file: Path | None = None
    accounts: tuple[str, ...] = ()

    @property
    def healthz_url(self) -> str:
        """Return the health check URL."""
        return f"{self.http_url}/healthz"

    @property
    def metrics_url(self) -> str:
        """Return the Prometheus metrics URL."""
        return f"{self.http_url}/metrics"

    @property
    def webhook_url(self) -> str:
        """Return the TradingView webhook URL."""
        return f"{self.http_url}/webhook"

    def as_json(self, *, with_secrets: bool = False) -> dict[str, Any]:
        """Return the endpoints as JSON-ready data; passwords masked unless ``with_secrets``."""
        return {
            "pid": os.getpid(),
            "data_dir": str(self.data_dir) if self.data_dir else None,
            "http_url": self.http_url,
            "webhook_url": self.webhook_url,
            "webhook_secret_file": (
                str(self.webhook_secret_file) if self.webhook_secret_file else None
            ),
            "healthz_url": self.healthz_url,
            "metrics_url": self.metrics_url,
            "dashboard_url": None,
            "database_url": self.database_url if with_secrets else mask_url(self.database_url),
            "redis_url": self.redis_url if with_secrets else mask_url(self.redis_url),
            "simulator_url": self.simulator_url,
            "simulator_native_url": f"{self.simulator_url}/v1" if self.simulator_url else None,
            "accounts": list(self.accounts),
        }


def mask_url(url: str) -> str:
    """Return ``url`` with its password replaced by ``***``."""
    scheme, sep, rest = url.partition("://")
    if not sep or "@" not in rest:
        return url
    credentials, _, host = rest.rpartition("@")
    user, has_password, _ = credentials.partition(":")
    return f"{scheme}://{user}{':***' if has_password else ''}@{host}"


# --- stores: external or embedded ---------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Stores:
    """The database and Redis a process uses; ``embedded`` says whether it started them."""

    settings: Settings
    database_url: str = field(repr=False)
    redis_url: str = field(repr=False)
    embedded_database: bool
    embedded_redis: bool


@contextlib.asynccontextmanager
async def open_stores(settings: Settings, *, durable: bool = True) -> AsyncIterator[Stores]:
    """Yield settings whose database and Redis exist, starting embedded servers for the gaps.

    Embedded servers live under ``settings.data_dir`` (``postgres/``, ``redis/``), are reused
    across restarts (same cluster, same password) and stopped on exit, their data kept.
    """
    started: list[EmbeddedPostgres | EmbeddedRedis] = []
    try:
        database = settings.database.url
        if database is None:
            postgres = EmbeddedPostgres(
                directory=server_dir(settings.data_dir, "postgres"), durable=durable
            )
            await asyncio.to_thread(postgres.start)
            started.append(postgres)
            database = SecretStr(postgres.url)
            _log.info("embedded postgres started", where=str(postgres.directory))
        redis_url = settings.redis.url
        if redis_url is None:
            redis_server = EmbeddedRedis(directory=prepare_data_dir(settings.data_dir) / "redis")
            await asyncio.to_thread(redis_server.start)
            started.append(redis_server)
            redis_url = SecretStr(redis_server.url)
            _log.info("embedded redis started", where=str(redis_server.directory))
        resolved = settings.model_copy(
            update={
                "database": settings.database.model_copy(update={"url": database}),
                "redis": settings.redis.model_copy(update={"url": redis_url}),
            }
        )
        yield Stores(
            settings=resolved,
            database_url=database.get_secret_value(),
            redis_url=redis_url.get_secret_value(),
            embedded_database=settings.database.url is None,
            embedded_redis=settings.redis.url is None,
        )
    finally:
        for server in reversed(started):
            await asyncio.to_thread(server.stop)
        if started:
            _log.info("embedded servers stopped")


# --- serve --------------------------------------------------------------------------------


class _Server(uvicorn.Server):
    """uvicorn without its own signal handling: the supervisor owns SIGTERM and SIGINT."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        """Leave signals alone."""
        yield


@contextlib.contextmanager
def _signals_set(stop: asyncio.Event) -> Iterator[None]:
    # Only the main thread of a process may own signals; elsewhere the caller stops us.
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    loop = asyncio.get_running_loop()
    handled = (signal.SIGTERM, signal.SIGINT)
    for sig in handled:
        loop.add_signal_handler(sig, stop.set)
    try:
        yield
    finally:
        for sig in handled:
            loop.remove_signal_handler(sig)


def _worker_id(index: int, run: str) -> str:
    # ``run`` tells apart two serves in one process (tests): worker ids name liveness locks.
    return f"{socket.gethostname()}:{os.getpid()}:{run}:{index}"


def _build_app(settings: Settings, ledger: Ledger, checker: HealthChecker) -> FastAPI:
    # The OpenAPI page documents the webhook's payloads for traders writing alerts.
    app = FastAPI(title="tradebridge", redoc_url=None)
    app.include_router(build_ops_router(checker))
    if not settings.webhook.enabled:
        _log.info("webhook disabled by settings (webhook.enabled = false)")
        return app
    app.include_router(build_router(IntakeDeps(settings=settings, ledger=ledger, clock=_utcnow)))
    return app


def http_config(app: FastAPI, settings: Settings) -> uvicorn.Config:
    """Return the uvicorn settings of the bridge's HTTP server (also used by the tests)."""
    cfg = settings.serve
    return uvicorn.Config(
        app,
        lifespan="off",
        access_log=False,
        log_config=None,
        log_level="warning",
        timeout_graceful_shutdown=int(cfg.shutdown_grace_s),
        # The client address must stay the socket's: X-Forwarded-For is believed only from
        # webhook.trusted_proxies, by the webhook itself (docs/tradingview.md).
        proxy_headers=False,
        # Slow clients cannot hold it: read deadlines, header and per-address caps on top
        # of uvicorn's keep-alive timeout, which bounds only the wait between requests.
        http=guarded_protocol(ConnectionGuard.from_settings(settings)),
        timeout_keep_alive=cfg.keep_alive_timeout_s,
    )


def _check_webhook(settings: Settings) -> None:
    if settings.webhook.enabled:
        validate_webhook_settings(settings)


def _utcnow() -> datetime:
    return datetime.now(UTC)


async def serve_stack(
    stores: Stores,
    *,
    stop: asyncio.Event,
    ready: Callable[[Endpoints], None] | None = None,
    endpoints: Endpoints | None = None,
) -> None:
    """Run dispatchers and the HTTP server on ``stores`` until ``stop`` is set."""
    from tradebridge.brokers.factory import build_account_tokens
    from tradebridge.brokers.pool import BrokerPool
    from tradebridge.dispatch.dispatcher import Dispatcher

    settings = stores.settings
    _check_webhook(settings)
    cfg = settings.serve
    migrate_now = cfg.migrate_on_start
    if migrate_now is None:
        migrate_now = stores.embedded_database
    if migrate_now:
        states = await migrate(stores.database_url)
        applied = [f"{s.version:04d}_{s.name}" for s in states if s.applied_now]
        _log.info("migrations checked", database=describe_url(stores.database_url), applied=applied)
    sock = bind_socket(cfg.host, cfg.port)
    host, port = sock.getsockname()[:2]
    found = Endpoints(
        http_url=f"http://{host}:{port}",
        database_url=stores.database_url,
        redis_url=stores.redis_url,
        data_dir=settings.data_dir,
        accounts=tuple(a.name for a in settings.accounts),
    )
    if endpoints is not None:
        found = replace(endpoints, http_url=found.http_url)
    async with contextlib.AsyncExitStack() as stack:
        stack.callback(sock.close)
        ledger = await Ledger.connect(
            stores.database_url,
            min_size=settings.database.min_pool,
            max_size=max(settings.database.max_pool, settings.dispatcher.workers + 2),
        )
        stack.push_async_callback(ledger.close)
        redis = connect_redis(settings.redis)
        stack.push_async_callback(redis.aclose)
        # Self-managed logins where credentials are configured, else Redis; both refuse to
        # hand out a token while its user is locked out (store/tokens.py).
        tokens = build_account_tokens(settings, redis)
        stack.push_async_callback(tokens.aclose)
        pool = BrokerPool(settings, tokens)
        stack.push_async_callback(pool.close)
        checker = HealthChecker(
            ledger=ledger,
            redis=redis,
            brokers=broker_hosts(settings),
            ttl_s=cfg.broker_health_ttl_s,
        )
        checker.conditions["tokens"] = tokens_condition(settings, tokens)
        server = _Server(http_config(_build_app(settings, ledger, checker), settings))
        run = secrets.token_hex(2)
        dispatchers = [
            Dispatcher(settings, ledger, pool, worker_id=_worker_id(i, run))
            for i in range(settings.dispatcher.workers)
        ]
        checker.conditions["unresolved_rows"] = unresolved_rows(
            ledger, settings.dispatcher.unknown_bound_s
        )
        checker.conditions["workers"] = _workers_condition(dispatchers)
        async with asyncio.TaskGroup() as group:
            http = group.create_task(server.serve(sockets=[sock]), name="http")
            http.add_done_callback(lambda _t: stop.set())
            workers = [
                group.create_task(d.run(), name=f"dispatcher-{i}")
                for i, d in enumerate(dispatchers)
            ]
            metrics.WORKERS_RUNNING.set(len(workers))
            if dispatchers:  # renew ahead of use; an intake-only process calls no broker
                group.create_task(tokens.keep(stop), name="tokens")
            group.create_task(
                _supervise(server, workers, stop, ready, found, cfg.shutdown_grace_s),
                name="supervisor",
            )
        metrics.WORKERS_RUNNING.set(0)


def _workers_condition(dispatchers: Sequence[Any]) -> Callable[[], Awaitable[Condition]]:
    """Return the condition of this process's loops: claims and reconcile rounds failing, a
    liveness lock being retaken, rows retried after internal errors."""

    async def check() -> Condition:
        problems: dict[str, str] = {}
        retrying: dict[str, dict[str, Any]] = {}
        for dispatcher in dispatchers:
            if dispatcher.claim_error is not None:
                problems[f"claim:{dispatcher.worker_id}"] = dispatcher.claim_error
            if dispatcher.liveness_lost:
                problems[f"liveness:{dispatcher.worker_id}"] = "lock not held, retaking"
            reconciler = dispatcher.reconciler
            if reconciler is not None and reconciler.last_error is not None:
                problems["reconcile"] = reconciler.last_error
            for signal_id, (error, tries) in dispatcher.retrying_rows().items():
                retrying[signal_id] = {"error": error, "tries": tries}
        if problems or retrying:
            # Only the kind of error: a database message may carry a URL.
            detail: dict[str, Any] = {}
            if problems:
                detail["failing"] = {k: v.split(":")[0] for k, v in problems.items()}
            if retrying:
                detail["retrying_rows"] = retrying
            return Condition("degraded", detail)
        return Condition("ok", {"workers": len(dispatchers)})

    return check


async def _supervise(
    server: uvicorn.Server,
    workers: list[asyncio.Task[None]],
    stop: asyncio.Event,
    ready: Callable[[Endpoints], None] | None,
    endpoints: Endpoints,
    grace_s: float,
) -> None:
    # uvicorn exposes its start only as a flag.
    while not server.started and not stop.is_set():  # noqa: ASYNC110
        await asyncio.sleep(0.01)
    if server.started:
        _log.info(
            "tradebridge serving",
            http=endpoints.http_url,
            database=mask_url(endpoints.database_url),
            redis=mask_url(endpoints.redis_url),
            workers=len(workers),
        )
        if ready is not None:
            ready(endpoints)
    await stop.wait()
    _log.info("stopping: handing back claimed rows")
    for task in workers:
        task.cancel()
    if workers:
        _done, pending = await asyncio.wait(workers, timeout=grace_s)
        if pending:
            # A task that swallowed its cancellation would hold the whole process open.
            _log.warning("dispatchers did not stop in time; cancelling again", count=len(pending))
            for task in pending:
                task.cancel()
            await asyncio.wait(pending, timeout=1.0)
    server.should_exit = True


async def run_serve(
    settings: Settings,
    *,
    stop: asyncio.Event | None = None,
    ready: Callable[[Endpoints], None] | None = None,
) -> None:
    """Run ``tradebridge serve`` until ``stop`` is set (or SIGTERM/SIGINT if none is given)."""
    _check_webhook(settings)  # refuse before anything starts
    own_stop = stop is None
    stop = stop or asyncio.Event()
    with _signals_set(stop) if own_stop else contextlib.nullcontext():
        async with open_stores(settings) as stores:
            await serve_stack(stores, stop=stop, ready=ready)


# --- up: the whole local stack --------------------------------------------------------------


def load_or_create_secret(path: Path) -> str:
    """Return the secret stored in ``path`` (mode 0600), creating it on first use."""
    with contextlib.suppress(FileNotFoundError):
        existing = path.read_text(encoding="utf-8").strip()
        if existing:
            return existing
    value = secrets.token_urlsafe(24)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(value + "\n")
    return value


def write_private_json(path: Path, data: dict[str, Any]) -> None:
    """Write ``data`` to ``path`` atomically, readable by its owner only."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        json.dump(data, handle, indent=2)
        handle.write("\n")
    tmp.replace(path)


def read_endpoints(data_dir: Path) -> dict[str, Any] | None:
    """Return the ``endpoints.json`` of a running ``up`` stack, or ``None`` if none runs."""
    path = data_dir / ENDPOINTS_FILE
    try:
        data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    pid = data.get("pid")
    if isinstance(pid, int) and not Path(f"/proc/{pid}").exists():
        return None  # left behind by a stack that was killed
    return data


def simulator_settings(settings: Settings, sim_url: str, users: list[Any]) -> Settings:
    """Return ``settings`` pointed at the simulator, its accounts as the configured ones."""
    accounts = [
        AccountConfig(
            name=account.name,
            dialect=Dialect.NATIVE,
            native_id=account.id,
            bridge_id=account.bridge_id,
            user=user.name,
        )
        for user in users
        for account in user.accounts
    ]
    tradovate = TradovateConfig.model_validate(
        {
            **settings.tradovate.model_dump(),
            "native_url": f"{sim_url}/v1",
            "bridge_url": sim_url,
            "ws_url": "",
            "requests_per_s": max(settings.tradovate.requests_per_s, _SIM_REQUESTS_PER_S),
            "request_burst": max(settings.tradovate.request_burst, _SIM_REQUEST_BURST),
        }
    )
    return settings.model_copy(update={"accounts": accounts, "tradovate": tradovate})


def _local_webhook(settings: Settings, secret: str) -> Settings:
    # Alerts that name no account go to the first simulator account unless one is configured.
    default = settings.webhook.default_account or (
        settings.accounts[0].name if settings.accounts else None
    )
    webhook = settings.webhook.model_copy(
        update={"secret": SecretStr(secret), "default_account": default}
    )
    return settings.model_copy(update={"webhook": webhook})


async def run_up(
    settings: Settings,
    *,
    sim_port: int = 8765,
    stop: asyncio.Event | None = None,
    ready: Callable[[Endpoints], None] | None = None,
) -> None:
    """Run ``tradebridge up``: embedded stores, the simulator, migrations, workers, HTTP."""
    from tradebridge.sim.config import SimConfig
    from tradebridge.sim.server import SimServer

    own_stop = stop is None
    stop = stop or asyncio.Event()
    data_dir = prepare_data_dir(settings.data_dir)
    settings = settings.model_copy(
        update={
            "data_dir": data_dir,
            "serve": settings.serve.model_copy(
                update={"migrate_on_start": settings.serve.migrate_on_start is not False}
            ),
        }
    )
    secret_file = data_dir / WEBHOOK_SECRET_FILE
    secret = load_or_create_secret(secret_file)
    endpoints_file = data_dir / ENDPOINTS_FILE
    with _signals_set(stop) if own_stop else contextlib.nullcontext():
        async with open_stores(settings) as stores, contextlib.AsyncExitStack() as stack:
            # Ids that keep growing across restarts (the ledger outlives the simulator's
            # orders, and one row per broker order is enforced), as Tradovate's do.
            sim = SimServer(SimConfig(port=sim_port, id_offset=int(time.time()) * 1_000_000))
            await asyncio.to_thread(sim.start)
            stack.push_async_callback(asyncio.to_thread, sim.stop)
            await _seed_tokens(sim, stores.redis_url, settings.tokens.key_template, stack)
            local = _local_webhook(
                simulator_settings(stores.settings, sim.url, sim.config.users), secret
            )
            local_stores = replace(stores, settings=local)
            template = Endpoints(
                http_url="",
                database_url=stores.database_url,
                redis_url=stores.redis_url,
                simulator_url=sim.url,
                data_dir=data_dir,
                webhook_secret_file=secret_file,
                accounts=tuple(a.name for a in local.accounts),
            )

            def announce(found: Endpoints) -> None:
                write_private_json(endpoints_file, found.as_json(with_secrets=True))
                if ready is not None:
                    ready(found)

            stack.callback(_unlink_quietly, endpoints_file)
            await serve_stack(local_stores, stop=stop, ready=announce, endpoints=template)


def _unlink_quietly(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        path.unlink()


async def _seed_tokens(
    sim: Any, redis_url: str, key_template: str, stack: contextlib.AsyncExitStack
) -> None:
    """Write the simulator users' tokens to Redis and keep them fresh, on the sim's loop."""
    from tradebridge.sim.seed import TokenSeeder

    # The simulator's engine is not thread-safe: its token seeder runs on its own loop.
    loop: asyncio.AbstractEventLoop = sim.call(asyncio.get_running_loop)
    refreshers: list[asyncio.Task[None]] = []

    async def first() -> list[str]:
        client = aioredis.Redis.from_url(redis_url)
        seeder = TokenSeeder(sim.ctx, client, key_template)
        try:
            keys = await seeder.seed()
        except BaseException:
            await client.aclose()
            raise
        refreshers.append(asyncio.get_running_loop().create_task(_refresh(seeder, client)))
        return keys

    keys = await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(first(), loop))
    _log.info("simulator tokens written to redis", keys=keys)

    def cancel() -> None:
        for task in refreshers:
            loop.call_soon_threadsafe(task.cancel)

    stack.callback(cancel)


async def _refresh(seeder: Any, client: aioredis.Redis) -> None:
    try:
        await seeder.run()
    finally:
        await client.aclose()

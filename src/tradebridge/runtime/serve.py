"""``tradebridge serve``: build everything from the settings and run it under one supervisor.

``run_serve``: the ledger, Redis, the broker pool, N dispatchers and one HTTP server
(``/healthz``, ``/metrics``, the webhook), all in one ``asyncio.TaskGroup``. With no
``DATABASE_URL`` / ``REDIS_URL`` it first starts a private PostgreSQL and Redis under the data
directory (the embedded default) and stops them on the way out (``open_stores``).
``tradebridge up`` (``runtime/up.py``) runs the same with the simulator as broker.

Stopping (SIGTERM, SIGINT, or the ``stop`` event): the dispatchers are cancelled first and
hand back the rows they claimed but did not send, then the HTTP server closes, then the
broker pool, Redis and the ledger; embedded servers stop last, their data kept.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import signal
import socket
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import uvicorn
from fastapi import FastAPI
from pydantic import SecretStr
from starlette.types import ASGIApp

from tradebridge._aio import cancel_and_wait, start_in_thread
from tradebridge._net import bind_socket, port_is_free

# The native adapter's modules load with the server: the broker factory imports them on
# first use (a command that names no account needs none), which was as a cold fan-out began
# (~50-70 ms of pydantic models and websockets on the loop, after the webhook answered).
from tradebridge.brokers import tradovate as _native_adapter  # noqa: F401
from tradebridge.config import Settings
from tradebridge.domain.clock import utcnow
from tradebridge.errors import ConfigError
from tradebridge.intake.operator import build_operator_router
from tradebridge.intake.webhook import IntakeDeps, mount_webhook, validate_webhook_settings
from tradebridge.obs import metrics
from tradebridge.obs.logging import get_logger, mask_url
from tradebridge.runtime.dashboard import DashboardDeps, build_dashboard_router
from tradebridge.runtime.endpoints import Endpoints
from tradebridge.runtime.health import (
    Condition,
    HealthChecker,
    broker_hosts,
    build_ops_router,
    kill_switch_condition,
    queue_condition,
    tokens_condition,
    unresolved_rows,
)
from tradebridge.runtime.http_guard import ConnectionGuard, guarded_protocol
from tradebridge.runtime.live import is_live, require_live_confirmed
from tradebridge.runtime.notify import Notifier, Sender, build_channels, check_notify
from tradebridge.runtime.risk_watch import RiskWatch
from tradebridge.store.embedded import (
    EmbeddedPostgres,
    EmbeddedRedis,
    prepare_data_dir,
    server_dir,
)
from tradebridge.store.kill import KillSwitchWatch
from tradebridge.store.ledger import Ledger
from tradebridge.store.migrate import describe_url, migrate_report
from tradebridge.store.pooling import require_sessions
from tradebridge.store.tokens import check_redis, connect_redis, open_connections

_log = get_logger("tradebridge.runtime.serve")

# Redis connections opened at start when ``redis.open_connections`` is unset, at most
# (managed Redis plans cap a database's clients, some at 30 or 256).
_REDIS_CONNECTIONS_MAX = 64


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
                directory=server_dir(settings.data_dir, "postgres"),
                port=settings.database.embedded_port,
                durable=durable,
            )
            await start_in_thread(postgres.start, postgres.stop)
            started.append(postgres)
            database = SecretStr(postgres.url)
            _log.info("embedded postgres started", where=str(postgres.directory))
        redis_url = settings.redis.url
        if redis_url is None:
            redis_server = EmbeddedRedis(
                directory=prepare_data_dir(settings.data_dir) / "redis",
                port=settings.redis.embedded_port,
            )
            await start_in_thread(redis_server.start, redis_server.stop)
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
def stop_on_signals(stop: asyncio.Event) -> Iterator[None]:
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


def _build_app(dashboard: DashboardDeps) -> ASGIApp:
    settings, ledger, kill = dashboard.settings, dashboard.ledger, dashboard.kill
    # The OpenAPI page documents the webhook's payloads for traders writing alerts.
    app = FastAPI(title="tradebridge", redoc_url=None)
    app.include_router(build_ops_router(dashboard.checker))
    app.include_router(build_operator_router(settings, ledger, kill))
    # /ui: the dashboard, or a 404 saying how to turn it on (docs/dashboard.md).
    app.include_router(build_dashboard_router(dashboard))
    if not settings.webhook.enabled:
        _log.info("webhook disabled by settings (webhook.enabled = false)")
        return app
    deps = IntakeDeps(settings=settings, ledger=ledger, clock=utcnow, kill=kill)
    return mount_webhook(app, deps)


async def _until_stopped(stop: asyncio.Event, work: Awaitable[None]) -> None:
    """Run ``work`` until ``stop`` is set, then cancel it."""
    task = asyncio.ensure_future(work)
    waiter = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait({task, waiter}, return_when=asyncio.FIRST_COMPLETED)
        if task.done():
            task.result()  # raises what ended it
    finally:
        await cancel_and_wait(task, waiter)


def redis_connections(settings: Settings) -> int:
    """Return how many Redis connections a worker process opens at start."""
    if settings.redis.open_connections is not None:
        return settings.redis.open_connections
    at_once = settings.dispatcher.accounts_at_once(len(settings.accounts))
    return min(settings.dispatcher.workers * at_once, _REDIS_CONNECTIONS_MAX)


def http_config(app: ASGIApp, settings: Settings) -> uvicorn.Config:
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
    check_notify(settings)  # a channel without its URL stops the start, like a bad webhook


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
    require_live_confirmed(settings)  # the workers start here, whoever calls
    _check_webhook(settings)
    cfg = settings.serve
    if not stores.embedded_database:
        # Behind a transaction pooler (Supabase's port 6543) the workers would lose their
        # LISTEN and liveness lock without a word: refuse before anything runs there.
        await require_sessions(stores.database_url)
    migrate_now = cfg.migrate_on_start
    if migrate_now is None:
        migrate_now = stores.embedded_database
    if migrate_now:
        report = await migrate_report(stores.database_url)
        applied = [f"{s.version:04d}_{s.name}" for s in report.states if s.applied_now]
        _log.info("migrations checked", database=describe_url(stores.database_url), applied=applied)
        for notice in report.notices:
            _log.warning("migration_notice", notice=notice)
    try:
        sock = bind_socket(cfg.host, cfg.port)
    except OSError as e:
        raise port_taken(cfg.host, cfg.port, "the HTTP server", e) from None
    host, port = sock.getsockname()[:2]
    found = Endpoints(
        http_url=f"http://{host}:{port}",
        database_url=stores.database_url,
        redis_url=stores.redis_url,
        data_dir=settings.data_dir,
        accounts=tuple(a.name for a in settings.accounts),
        dashboard=settings.dashboard.password is not None,
    )
    if endpoints is not None:
        found = replace(endpoints, http_url=found.http_url, dashboard=found.dashboard)
    async with contextlib.AsyncExitStack() as stack:
        stack.callback(sock.close)
        pool_size = max(settings.database.max_pool, settings.dispatcher.workers + 2)
        floor = settings.database.min_pool
        ledger = await Ledger.connect(
            stores.database_url,
            # Kept open and warm: a fan-out never waits for connections to open (asyncpg
            # closes the ones above the floor after 5 idle minutes).
            min_size=pool_size if floor is None else min(floor, pool_size),
            max_size=pool_size,
            statement_timeout_s=settings.database.statement_timeout_s,
            warm=True,
        )
        ledger.lazy_commits = settings.database.lazy_commits
        stack.push_async_callback(ledger.close)
        redis = connect_redis(settings.redis)
        stack.push_async_callback(redis.aclose)
        if settings.dispatcher.workers:
            # Like the database, Redis must answer at start (later outages are ridden out).
            # An intake-only process takes alerts without it: it calls no broker.
            await check_redis(redis, stores.redis_url)
            # Opened now rather than by a fan-out's first orders, each waiting for its own.
            await open_connections(redis, redis_connections(settings))
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
            environment=settings.tradovate.environment,
        )
        checker.conditions["tokens"] = tokens_condition(settings, tokens)
        # One watch of the kill switches for the webhook, the workers and /healthz; read
        # once before anything starts, so the banner and the first row know it.
        kill = KillSwitchWatch(
            ledger,
            forced=settings.risk.kill_switch,
            poll_s=cfg.kill_switch_poll_s,
            accounts=[a.name for a in settings.accounts],
        )
        switches = await kill.read_since(time.monotonic())
        found = replace(found, kill_switch=switches.summary())
        checker.conditions["kill_switch"] = kill_switch_condition(kill)
        # Each account's standing (P&L, room under each limit), for the banner and /healthz.
        risk = RiskWatch(settings, ledger, interval_s=cfg.risk_state_interval_s)
        await risk.read()  # a ledger without 0008 refuses to start here, as without 0007
        found = replace(found, risk=tuple(risk.summaries().items()))
        checker.conditions["risk"] = risk.condition()
        dashboard = DashboardDeps(settings, ledger, checker, kill, risk=risk, pool=pool,
                                  tokens=tokens, stop=stop)  # fmt: skip
        server = _Server(http_config(_build_app(dashboard), settings))
        run = secrets.token_hex(2)
        dispatchers = [
            Dispatcher(settings, ledger, pool, worker_id=_worker_id(i, run), kill=kill)
            for i in range(settings.dispatcher.workers)
        ]
        checker.conditions["unresolved_rows"] = unresolved_rows(
            ledger, settings.dispatcher.unknown_bound_s
        )
        checker.conditions["workers"] = _workers_condition(dispatchers)
        checker.conditions["queue"] = queue_condition(
            ledger, settings.notify.queue_age_s, settings.notify.queue_depth
        )
        notifier = None
        if settings.notify.active:  # off the order path: its own tasks, queues and threads
            sender = Sender(build_channels(settings.notify), settings.notify, ledger=ledger)
            notifier = Notifier(settings, ledger, sender, tokens=tokens, kill=kill, risk=risk,
                                pool=pool, lost=lambda: _lost_orders(dispatchers),
                                judging=lambda: _lost_orders_judging(dispatchers))  # fmt: skip
            checker.conditions["notify"] = notifier.condition()
        async with asyncio.TaskGroup() as group:
            http = group.create_task(server.serve(sockets=[sock]), name="http")
            http.add_done_callback(lambda _t: stop.set())
            group.create_task(_until_stopped(stop, kill.run()), name="kill-switch")
            group.create_task(_until_stopped(stop, risk.run()), name="risk-state")
            if notifier is not None:
                group.create_task(_until_stopped(stop, notifier.run()), name="notify")
            workers = [
                group.create_task(d.run(), name=f"dispatcher-{i}")
                for i, d in enumerate(dispatchers)
            ]
            metrics.WORKERS_RUNNING.set(len(workers))
            metrics.LIVE.set(1 if is_live(settings) else 0)
            if dispatchers:  # renew ahead of use; an intake-only process calls no broker
                group.create_task(tokens.keep(stop), name="tokens")
            group.create_task(
                _supervise(
                    server, workers, stop, ready, found, cfg.shutdown_grace_s, is_live(settings)
                ),
                name="supervisor",
            )
        metrics.WORKERS_RUNNING.set(0)


def _lost_orders(dispatchers: Sequence[Any]) -> list[Any]:
    """Return the open rows whose order the broker does not know, as this process's
    reconcilers found them."""
    return [
        lost
        for dispatcher in dispatchers
        if dispatcher.reconciler is not None
        for lost in dispatcher.reconciler.lost_orders()
    ]


def _lost_orders_judging(dispatchers: Sequence[Any]) -> frozenset[str] | None:
    """Return the accounts whose lost orders this process's reconcilers are still counting;
    None while one of them has not read the open rows yet (or may not exist yet)."""
    counting: set[str] = set()
    for dispatcher in dispatchers:
        if not dispatcher.tracking_decided:
            return None
        if dispatcher.reconciler is not None:
            found = dispatcher.reconciler.lost_orders_judging()
            if found is None:
                return None
            counting |= found
    return frozenset(counting)


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
    live: bool,
) -> None:
    # uvicorn exposes its start only as a flag.
    while not server.started and not stop.is_set():  # noqa: ASYNC110
        await asyncio.sleep(0.01)
    if server.started:
        if live:
            _log.warning("LIVE: orders go to Tradovate's live environment and trade real money")
        _log.info(
            "tradebridge serving",
            environment="LIVE" if live else "demo",
            http=endpoints.http_url,
            database=mask_url(endpoints.database_url),
            redis=mask_url(endpoints.redis_url),
            workers=len(workers),
            kill_switch=endpoints.kill_switch,
            risk=dict(endpoints.risk),
        )
        if endpoints.kill_switch != "off":
            _log.warning("kill switch on: new orders are denied", kill_switch=endpoints.kill_switch)
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
    """Run ``tradebridge serve`` until ``stop`` is set (or SIGTERM/SIGINT if none is given).

    With an embedded server it holds the data directory's lock, as ``up`` does: two
    processes must not start and stop the same servers.
    """
    from tradebridge.runtime.lock import hold_data_dir

    require_live_confirmed(settings)  # refuse before anything starts
    _check_webhook(settings)
    own_stop = stop is None
    stop = stop or asyncio.Event()
    embedded = settings.database.url is None or settings.redis.url is None
    with (
        hold_data_dir(prepare_data_dir(settings.data_dir), "serve")
        if embedded
        else contextlib.nullcontext(),
        stop_on_signals(stop) if own_stop else contextlib.nullcontext(),
    ):
        async with open_stores(settings) as stores:
            await serve_stack(stores, stop=stop, ready=ready)


def check_port(host: str, port: int, what: str, setting: str) -> None:
    """Refuse (``ConfigError``) a pinned ``port`` (not 0) that something listens on."""
    if port and not port_is_free(host, port):
        raise ConfigError(
            f"{what} cannot listen on {host}:{port}: another program does; pin another port "
            f"({setting}) or 0 for a free one"
        )


def port_taken(host: str, port: int, what: str, error: OSError) -> ConfigError:
    """Return the error of a listener that could not bind ``host:port``."""
    why = error.strerror or type(error).__name__
    return ConfigError(f"{what} cannot listen on {host}:{port}: {why}; pin another port or 0")


# --- up: the whole local stack --------------------------------------------------------------

"""``tradebridge up``: the whole bridge on one machine, the simulator as broker.

``run_up`` runs ``serve`` (``runtime/serve.py``) with the simulator's accounts as the
configured accounts, its tokens written to Redis and kept fresh (``seed_sim_tokens``: put
back within seconds if Redis comes back empty, rewritten after ``/_sim/tokens/expire``), a
local webhook secret, and ``endpoints.json`` in the data directory so that other tools find
the stack.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis
from pydantic import SecretStr

from tradebridge._aio import start_in_thread
from tradebridge.config import AccountConfig, Settings, TradovateConfig
from tradebridge.domain.enums import Dialect
from tradebridge.obs.logging import get_logger
from tradebridge.runtime.endpoints import (
    DASHBOARD_PASSWORD_FILE,
    ENDPOINTS_FILE,
    WEBHOOK_SECRET_FILE,
    Endpoints,
    load_or_create_secret,
    write_private_json,
)
from tradebridge.runtime.live import require_live_confirmed
from tradebridge.runtime.lock import hold_data_dir
from tradebridge.runtime.serve import (
    check_port,
    open_stores,
    port_taken,
    serve_stack,
    stop_on_signals,
)
from tradebridge.store.embedded import (
    prepare_data_dir,
)
from tradebridge.store.tokens import check_redis

_log = get_logger("tradebridge.runtime.up")

# The simulator has no request budget of its own; Tradovate's windows (72 orders a minute,
# 4,500 requests an hour by default) would only slow the local stack down.
_SIM_BUDGET = {
    "requests_per_second": 1_000,
    "requests_per_hour": 10_000_000,
    "orders_per_minute": 1_000_000,
    "reads_per_minute": 1_000_000,
}


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
            **{k: max(getattr(settings.tradovate, k), v) for k, v in _SIM_BUDGET.items()},
            # One process, and a budget that never binds: sharing it through Redis would
            # only add a round trip to every request (and keep an hour of them in Redis).
            "budget": "local",
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
    sim_port: int | None = None,
    stop: asyncio.Event | None = None,
    ready: Callable[[Endpoints], None] | None = None,
) -> None:
    """Run ``tradebridge up``: embedded stores, the simulator, migrations, workers, HTTP.

    The data directory's lock is held throughout (``runtime/lock.py``): a second ``up`` on
    it is refused before it touches anything. ``sim_port`` overrides ``[up] sim_port``.
    """
    require_live_confirmed(settings)  # before anything starts
    port = settings.up.sim_port if sim_port is None else sim_port
    data_dir = prepare_data_dir(settings.data_dir)
    with hold_data_dir(data_dir, "up"):
        # Whatever endpoints.json is here is a killed stack's (the lock was free): gone, so
        # that nothing mistakes it for this one's while it starts.
        _unlink_quietly(data_dir / ENDPOINTS_FILE)
        # Pinned ports of this process, checked before anything starts (the embedded servers
        # check theirs once the leftovers of a killed stack are stopped).
        check_port(settings.serve.host, settings.serve.port, "the HTTP server",
                   "[serve] port, `up --port`")  # fmt: skip
        check_port("127.0.0.1", port, "the simulator", "[up] sim_port, `up --sim-port`")
        await _run_up(settings, data_dir, port, stop, ready)


async def _run_up(
    settings: Settings,
    data_dir: Path,
    sim_port: int,
    stop: asyncio.Event | None,
    ready: Callable[[Endpoints], None] | None,
) -> None:
    from tradebridge.sim.config import SimConfig
    from tradebridge.sim.server import SimServer

    own_stop = stop is None
    stop = stop or asyncio.Event()
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
    # The dashboard's password, unless the settings give one: made once, kept like the
    # webhook secret (0600 in the data directory), so that /ui works out of the box.
    password_file = None
    if settings.dashboard.password is None:
        password_file = data_dir / DASHBOARD_PASSWORD_FILE
        dashboard = settings.dashboard.model_copy(
            update={"password": SecretStr(load_or_create_secret(password_file))}
        )
        settings = settings.model_copy(update={"dashboard": dashboard})
    endpoints_file = data_dir / ENDPOINTS_FILE
    with stop_on_signals(stop) if own_stop else contextlib.nullcontext():
        async with open_stores(settings) as stores, contextlib.AsyncExitStack() as stack:
            await _check_redis(stores.redis_url, settings.redis.socket_timeout_s)
            # Ids that keep growing across restarts (the ledger outlives the simulator's
            # orders, and one row per broker order is enforced), as Tradovate's do.
            sim = SimServer(SimConfig(port=sim_port, id_offset=int(time.time()) * 1_000_000))
            try:
                await start_in_thread(sim.start, sim.stop)
            except OSError as e:  # taken since the check
                raise port_taken("127.0.0.1", sim_port, "the simulator", e) from None
            stack.push_async_callback(asyncio.to_thread, sim.stop)
            await seed_sim_tokens(sim, stores.redis_url, settings.tokens.key_template, stack)
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
                dashboard_password_file=password_file,
                accounts=tuple(a.name for a in local.accounts),
            )

            def announce(found: Endpoints) -> None:
                write_private_json(endpoints_file, found.as_json(with_secrets=True))
                if ready is not None:
                    ready(found)

            stack.callback(_unlink_quietly, endpoints_file)
            await serve_stack(local_stores, stop=stop, ready=announce, endpoints=template)


async def _check_redis(url: str, timeout_s: float) -> None:
    # Before the simulator's token writer uses it: one clear error if it does not answer.
    client = aioredis.Redis.from_url(
        url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s
    )
    try:
        await check_redis(client, url)
    finally:
        await client.aclose()


def _unlink_quietly(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        path.unlink()


_SEEDER_STOP_S = 10.0


async def seed_sim_tokens(
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

    async def stop() -> None:
        # On the sim's loop, and waited for: the refresher's client is closed before the
        # simulator (registered earlier on the stack) stops that loop.
        async def cancel() -> None:
            for task in refreshers:
                task.cancel()
            await asyncio.gather(*refreshers, return_exceptions=True)

        with contextlib.suppress(RuntimeError):  # the simulator's loop has stopped already
            done = asyncio.wrap_future(asyncio.run_coroutine_threadsafe(cancel(), loop))
            try:
                # Bounded: a stop must not hang on the simulator's loop (a chaos run's teardown
                # once waited here until its test's timeout).
                await asyncio.wait_for(done, _SEEDER_STOP_S)
            except TimeoutError:
                _log.warning("simulator token refresher did not stop", wait_s=_SEEDER_STOP_S)

    stack.push_async_callback(stop)


async def _refresh(seeder: Any, client: aioredis.Redis) -> None:
    try:
        await seeder.run()
    finally:
        await client.aclose()

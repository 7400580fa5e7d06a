"""Connections of their own: session locks held through restarts, and notifications.

A session lock or a LISTEN lives on a connection outside the pool, taken again after every
reconnect. ``listen`` is a wake-up hint only: nothing may depend on a notification arriving.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta

import asyncpg

from tradebridge._aio import reraise_if_cancelling
from tradebridge.errors import DatabaseUnavailable
from tradebridge.obs.logging import get_logger
from tradebridge.store.ledger.pool import Conn, LedgerPool
from tradebridge.store.migrate import connect

_log = get_logger("tradebridge.store.ledger")

NOTIFY_CHANNEL = "tradebridge_signals"
_LISTENER_SETTINGS = {"application_name": "tradebridge-listener"}
_LOCK_SETTINGS = {"application_name": "tradebridge-liveness"}


async def _ask_keepalive(conn: Conn, seconds: int, key: str) -> None:
    """Ask the server to drop this session ~``seconds`` after the peer stops answering.

    Idle ``seconds``/2, then 3 probes ``seconds``/6 apart; the user timeout covers data left
    unacknowledged. A server (or pooler) that refuses is logged and left as it is.
    """
    settings = {
        "tcp_keepalives_idle": max(1, seconds // 2),
        "tcp_keepalives_interval": max(1, seconds // 6),
        "tcp_keepalives_count": 3,
        "tcp_user_timeout": seconds * 1000,
    }
    try:
        for name, value in settings.items():
            await conn.execute("select set_config($1, $2, false)", name, str(value))
    except asyncpg.PostgresError as e:
        _log.warning("session_keepalive_refused", key=key, error=str(e)[:200])


class Sessions(LedgerPool):
    """Session locks, notifications and the server's start."""

    # --- session locks -------------------------------------------------------------------

    async def hold_lock(
        self,
        namespace: int,
        key: str,
        held: asyncio.Event,
        *,
        elsewhere: asyncio.Event | None = None,
        on_confirm: Callable[[bool, float], None] | None = None,
        keepalive_s: int = 0,
        check_every_s: float = 2.0,
        reconnect_max_s: float = 1.0,
    ) -> None:
        """Hold ``pg_advisory_lock(namespace, hashtext(key))`` until cancelled, forever.

        The lock lives on a connection of its own (never a pooled one). When that connection
        is lost (a database restart ends every session, and with it every session lock), it
        reconnects and takes the lock again, retrying at most ``reconnect_max_s`` apart.
        ``held`` is set exactly while the lock is held. A lock held by another session (a
        second process with the same key) is tried again every second, with a warning; or,
        given ``elsewhere``, quietly, that event set from the first refusal until the lock
        is held or this session is lost (then who holds it is unknown). ``on_confirm(taken,
        at)`` is called when the lock is taken (``taken``) and after each probe answered, with
        the monotonic time the session was last known to hold it. ``keepalive_s`` > 0 asks the
        server to give the session up after about that long without an answer from this host
        (TCP keepalive and user timeout), so a host that vanished frees its lock.
        """
        delay = 0.1
        down_since: float | None = None
        while True:
            try:
                conn = await connect(
                    self._url, server_settings=_LOCK_SETTINGS, connect_timeout_s=check_every_s * 2
                )
            except Exception as e:  # noqa: BLE001 - any failure to connect is retried
                # (a server shutting down can fail a connect in ways connect() does not name)
                reraise_if_cancelling()
                if down_since is None:  # once per outage
                    down_since = time.monotonic()
                    why = str(e)[:200] if isinstance(e, DatabaseUnavailable) else type(e).__name__
                    _log.warning("session_lock_cannot_connect", key=key, error=why)
                await asyncio.sleep(delay)
                delay = min(delay * 2, reconnect_max_s)
                continue
            delay = 0.1
            try:
                if keepalive_s > 0:
                    await _ask_keepalive(conn, keepalive_s, key)
                why = await self._hold_on(
                    conn, namespace, key, held, elsewhere, on_confirm, check_every_s, down_since
                )
            finally:
                held.clear()
                if elsewhere is not None:
                    elsewhere.clear()
                with contextlib.suppress(Exception):
                    await asyncio.shield(conn.close(timeout=2))
            down_since = time.monotonic()
            _log.warning("session_lock_lost", key=key, error=why)

    async def _hold_on(
        self,
        conn: Conn,
        namespace: int,
        key: str,
        held: asyncio.Event,
        elsewhere: asyncio.Event | None,
        on_confirm: Callable[[bool, float], None] | None,
        check_every_s: float,
        down_since: float | None,
    ) -> str:
        """Take the lock on ``conn`` and hold it until the connection is lost; return why."""
        lost = asyncio.Event()
        conn.add_termination_listener(lambda _c: lost.set())
        try:
            asked = time.monotonic()
            while not await conn.fetchval(
                "select pg_try_advisory_lock($1, hashtext($2))", namespace, key,
                timeout=check_every_s,
            ):  # fmt: skip
                if elsewhere is None:
                    _log.warning("session_lock_in_use", key=key)
                elif not elsewhere.is_set():
                    elsewhere.set()
                    _log.info("session_lock_held_elsewhere", key=key)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(lost.wait(), 1.0)
                if lost.is_set():
                    return "connection lost"
                asked = time.monotonic()
            if elsewhere is not None:
                elsewhere.clear()
            held.set()
            if on_confirm is not None:
                on_confirm(True, asked)
            if down_since is not None:
                _log.info("session_lock_retaken", key=key,
                          after_s=round(time.monotonic() - down_since, 3))  # fmt: skip
            while not lost.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(lost.wait(), check_every_s)
                    break
                # A half-open socket raises nothing: probe it.
                asked = time.monotonic()
                await conn.fetchval("select 1", timeout=check_every_s)
                if on_confirm is not None:
                    on_confirm(False, asked)
        except Exception as e:  # noqa: BLE001 - whatever broke the session, take the lock anew
            reraise_if_cancelling()
            return type(e).__name__
        return "connection lost"

    async def ping(self) -> None:
        """Ask the database one trivial question (the health check's probe)."""
        await self._db.fetchval("select 1")

    async def server_uptime(self) -> tuple[datetime, timedelta]:
        """Return when the database server started, and how long ago (its own clock)."""
        row = await self._db.fetchrow(
            "select pg_postmaster_start_time() as started, now() - pg_postmaster_start_time() as up"
        )
        assert row is not None
        return row["started"], row["up"]

    # --- notifications -------------------------------------------------------------------

    async def listen(
        self,
        callback: Callable[[str], object],
        *,
        on_connect: Callable[[], Awaitable[None]] | None = None,
        check_every_s: float = 5.0,
        reconnect_max_s: float = 10.0,
        channel: str = NOTIFY_CHANNEL,
    ) -> None:
        """Call ``callback(payload)`` per notification until cancelled; reconnect forever.

        ``channel``: new rows (the payload is the signal id) unless told otherwise. Uses its
        own connection (never a pooled one) and LISTENs again after every reconnect, then
        awaits ``on_connect`` so the caller drains what it missed.
        """
        delay = 0.1
        while True:
            try:
                conn = await connect(self._url, server_settings=_LISTENER_SETTINGS)
            except Exception as e:  # noqa: BLE001 - any failure to connect is retried
                _log.warning("ledger listener cannot connect", error=str(e), retry_s=delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, reconnect_max_s)
                continue
            delay = 0.1
            try:
                await self._listen_on(conn, callback, on_connect, check_every_s, channel)
            finally:
                with contextlib.suppress(Exception):
                    await asyncio.shield(conn.close(timeout=2))
            _log.warning("ledger listener lost its connection; reconnecting")

    async def _listen_on(
        self,
        conn: Conn,
        callback: Callable[[str], object],
        on_connect: Callable[[], Awaitable[None]] | None,
        check_every_s: float,
        channel: str,
    ) -> None:
        lost = asyncio.Event()

        def on_notify(_c: object, _pid: int, _channel: str, payload: object) -> None:
            callback(str(payload))

        def on_terminate(_c: object) -> None:
            lost.set()

        conn.add_termination_listener(on_terminate)
        try:
            await conn.add_listener(channel, on_notify)
            if on_connect is not None:
                await on_connect()
            while not lost.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(lost.wait(), check_every_s)
                    break
                # A half-open socket raises nothing: probe it.
                await conn.fetchval("select 1", timeout=check_every_s)
        except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as e:
            _log.warning("ledger listener connection failed", error=type(e).__name__)

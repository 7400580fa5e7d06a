"""The kill switches as the database has them, kept current in one process.

``KillSwitchWatch.run`` reads them again on every notification of the ``kill_switches``
trigger (``KILL_CHANNEL``: milliseconds after a change commits) and every ``poll_s`` whatever
arrives (a lost notification costs at most that). ``read_since`` gives a caller that must not
act on an older state a read begun after a given moment, shared by every caller that asks
at once. The dispatcher needs no read of its own: the claim statement returns the switches as
its snapshot has them (``Ledger.claim``), so a row claimed after a kill committed is always
checked against it; a claim that saw a change the watch has not yet read pokes it.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Sequence
from typing import Any

from tradebridge._aio import cancel_and_wait, reraise_if_cancelling
from tradebridge.domain.kill import GLOBAL_SCOPE, KillSwitches, scope_of
from tradebridge.obs import metrics
from tradebridge.obs.logging import get_logger
from tradebridge.store.ledger import KILL_CHANNEL, Ledger

_log = get_logger("tradebridge.store.kill")


class KillSwitchWatch:
    """The kill switches of one process: ``current``, and fresh reads when they matter."""

    def __init__(
        self,
        ledger: Ledger,
        *,
        forced: bool = False,
        poll_s: float = 0.5,
        accounts: Sequence[str] = (),
    ) -> None:
        self._ledger = ledger
        self.forced = forced
        self.poll_s = poll_s
        self._accounts = tuple(accounts)
        self.current = KillSwitches(forced=forced)
        # Monotonic start of the read ``current`` comes from (None: never read).
        self._read_at: float | None = None
        self._inflight: asyncio.Future[Any] | None = None
        self._inflight_at = 0.0
        self._poke = asyncio.Event()
        # Set once the listener has LISTENed (again after each reconnect it reads anew).
        self.listening = asyncio.Event()
        self._running = False
        self._shown: set[str] = set()
        self.error: str | None = None  # why the last read failed (None once one succeeds)

    @property
    def fresh(self) -> bool:
        """Return whether ``current`` is kept up to date (``run`` runs, its reads succeed)."""
        return (
            self._running
            and self.error is None
            and self._read_at is not None
            and time.monotonic() - self._read_at <= 2 * self.poll_s + 1.0
        )

    async def state(self) -> KillSwitches:
        """Return the switches: ``current`` while ``run`` keeps it fresh, else read now."""
        if self.fresh:
            return self.current
        return await self.read_since(time.monotonic())

    async def read_since(self, moment: float) -> KillSwitches:
        """Return the switches as read by a query begun at or after ``moment`` (monotonic).

        Callers asking at once share one query; errors are the ledger's (``StoreError``).
        """
        if self._read_at is not None and self._read_at >= moment:
            return self.current
        reading = self._inflight
        if reading is None or self._inflight_at < moment:
            reading = self._start_read()
        return await asyncio.shield(reading)

    def _start_read(self) -> asyncio.Future[KillSwitches]:
        started = time.monotonic()
        reading = asyncio.ensure_future(self._read(started))
        self._inflight, self._inflight_at = reading, started
        reading.add_done_callback(self._read_done)
        return reading

    def _read_done(self, reading: asyncio.Future[KillSwitches]) -> None:
        if self._inflight is reading:
            self._inflight = None
        if not reading.cancelled():
            reading.exception()  # retrieved: every waiter has it raised already

    async def _read(self, started: float) -> KillSwitches:
        found = await self._ledger.kill_switches(forced=self.forced)
        if self._read_at is None or started >= self._read_at:
            self._publish(found)
            self.current, self._read_at = found, started
        return found

    def _publish(self, found: KillSwitches) -> None:
        if self._read_at is not None and found != self.current:
            _log.warning("kill_switch_changed", kill_switch=found.summary())
        scopes = {GLOBAL_SCOPE, *(scope_of(a) for a in self._accounts), *found.switches}
        for scope in scopes:
            switch = found.switches.get(scope)
            on = found.global_on if scope == GLOBAL_SCOPE else bool(switch and switch.engaged)
            metrics.KILL_SWITCH.labels(scope=scope).set(1 if on else 0)
        for gone in self._shown - scopes:  # a row deleted by hand
            with contextlib.suppress(KeyError):
                metrics.KILL_SWITCH.remove(gone)
        self._shown = scopes

    def observe(self, seen: KillSwitches) -> None:
        """Note the switches as another query saw them (a claim); read now if they differ
        from ``current`` (its notification may still be on its way)."""
        if seen.switches != self.current.switches:
            self.poke()

    def poke(self) -> None:
        """Ask ``run`` to read the switches now (a notification arrived)."""
        self._poke.set()

    async def run(self) -> None:
        """Keep ``current`` up to date until cancelled (notifications, and every ``poll_s``)."""

        async def on_connect() -> None:
            self.listening.set()
            self.poke()  # read what changed while the listener was away

        self._running = True
        listener = asyncio.create_task(
            self._ledger.listen(lambda _scope: self.poke(), on_connect=on_connect,
                                channel=KILL_CHANNEL),
            name="kill-switch-listener",
        )  # fmt: skip
        try:
            while True:
                self._poke.clear()
                await self._refresh()
                # asyncio.timeout, not wait_for: 3.11's wait_for can swallow a cancellation
                # that meets a poke, and the watch would never stop.
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self.poll_s):
                        await self._poke.wait()
                reraise_if_cancelling()
        finally:
            self._running = False
            await cancel_and_wait(listener, self._inflight)

    async def _refresh(self) -> None:
        try:
            await self.read_since(time.monotonic())
        except Exception as e:  # noqa: BLE001 - the watch outlives a database outage
            reraise_if_cancelling()
            if self.error is None:  # once per outage; the last state stays in force
                _log.warning("kill_switch_unreadable", error=type(e).__name__,
                             kept=self.current.summary())  # fmt: skip
            self.error = type(e).__name__
            return
        if self.error is not None:
            _log.info("kill_switch_readable_again", kill_switch=self.current.summary())
            self.error = None

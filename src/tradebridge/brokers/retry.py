"""Retry policies for broker calls, in one place, built from the error tree.

Reads, cancels, modifies, logins and connects retry ``TransientError`` with exponential
backoff and jitter, capped by attempts AND total time; a ``RateLimited`` penalty waits its
``retry_after``. A submit is never retried here: its unknown outcome goes to a lookup.
Tests switch waiting off with ``stamina.set_testing(True, attempts=...)`` or
``RetryConfig(enabled=False)``.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

import stamina

from tradebridge.config import RetryConfig
from tradebridge.errors import RateLimited, TransientError

T = TypeVar("T")


def _backoff_hook(error: BaseException) -> bool | float | dt.timedelta:
    if isinstance(error, RateLimited):
        return error.retry_after  # the broker told us how long; waiting less is pointless
    return isinstance(error, TransientError)


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How one kind of call is retried."""

    config: RetryConfig

    async def run(self, call: Callable[[], Awaitable[T]]) -> T:
        """Await ``call()`` and retry it on transient errors within the caps."""
        cfg = self.config
        if not cfg.enabled or cfg.attempts <= 1:
            return await call()
        async for attempt in stamina.retry_context(
            on=_backoff_hook,
            attempts=cfg.attempts,
            timeout=cfg.timeout_s,
            wait_initial=cfg.wait_initial_s,
            wait_max=cfg.wait_max_s,
            wait_jitter=cfg.wait_jitter_s,
        ):
            with attempt:
                return await call()
        raise AssertionError("stamina ends with a return or an exception")  # pragma: no cover


def no_retry() -> RetryPolicy:
    """Return a policy that calls exactly once (for submits)."""
    return RetryPolicy(RetryConfig(enabled=False, attempts=1))

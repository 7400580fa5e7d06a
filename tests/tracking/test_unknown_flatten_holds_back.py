"""An unknown flatten holds back every later row of its account, plain orders too.

A flatten whose answer was lost is run again (its target is absolute: flat). A plain entry
passed an unknown row of its account; sent after the flatten and before its rerun, it was
closed by the rerun (and its bracket cancelled): the trader's later entry undone by an older
alert. Now the entry waits until the flatten is resolved (or escalated). Found by a review
(2026-12-07).
"""

from __future__ import annotations

from typing import Any

import pytest

from tracking.conftest import ACCOUNT, Stack, until
from tracking.test_brackets_follow import _bracketed, stack
from tradebridge.domain.enums import Dialect
from tradebridge.errors import BrokerError

__all__ = ["stack"]  # fixture

pytestmark = pytest.mark.parametrize("dialect", [Dialect.NATIVE, Dialect.TVBRIDGE])


async def test_a_plain_entry_waits_for_an_unknown_flatten_and_is_not_closed_by_its_rerun(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    await _bracketed(stack, "entry", 1)
    broker = await stack.pool.get(ACCOUNT)
    real = broker.flatten
    runs: list[int] = []
    losing = True  # each run executes at the broker, its answer lost while this holds

    async def answers_lost(command: Any) -> None:
        await real(command)
        runs.append(stack.net_position())
        if losing:
            raise BrokerError("connection reset after sending (the answer is lost)")

    # A rerun reads the position before it closes anything (test_unknown_flatten_reads_first):
    # its reads fail too while this holds, so the flatten stays unknown over its reruns.
    real_positions = broker.position_reports

    async def reads_lost(account: Any, *, fresh: bool = False) -> Any:
        if fresh and losing:
            runs.append(stack.net_position())
            raise BrokerError("connection reset while reading the positions")
        return await real_positions(account, fresh=fresh)

    monkeypatch.setattr(broker, "flatten", answers_lost)
    monkeypatch.setattr(broker, "position_reports", reads_lost)
    await stack.insert("flat", intent="flatten", side=None, quantity=None, instrument=None)
    await stack.wait("flat", "unknown")
    assert stack.net_position() == 0

    # A plain entry while the flatten is unknown between its reruns.
    await stack.insert("later", side="buy", quantity=1)
    seen = len(runs)
    await until(lambda: len(runs) >= seen + 2, "two more runs (or looks) of the flatten",
                timeout=30)  # fmt: skip
    losing = False
    flat = await stack.wait("flat", "filled", "needs_review", timeout=30)
    later = await stack.wait("later", "filled", timeout=30)

    # Run again within max_resends (filled: done), or escalated after them (a human checks).
    assert flat.status in ("filled", "needs_review")
    assert stack.net_position() == 1  # the later entry stands, no rerun closed it
    assert later.ts_submitted is not None
    assert flat.updated_at is not None
    assert later.ts_submitted >= flat.updated_at  # it waited for the flatten's end

"""The request budget of a Tradovate user: sliding windows, orders ahead of reads (§7).

Time is a fake clock: ``sleep`` parks the caller until the test advances the clock past its
deadline, so nothing here waits for real time.
"""

from __future__ import annotations

import asyncio

import pytest

from tradebridge.brokers.budget import (
    BudgetLimits,
    RequestBudget,
    RequestKind,
    UserBudget,
    Window,
    mark_background,
)
from tradebridge.config import TradovateConfig

ORDER, READ, AUTH = RequestKind.ORDER, RequestKind.READ, RequestKind.AUTH


class FakeTime:
    """A clock that moves only when told, and a sleep that waits for it."""

    def __init__(self) -> None:
        self.now = 1000.0
        self._sleepers: list[tuple[float, asyncio.Future[None]]] = []

    def clock(self) -> float:
        return self.now

    def sleep(self, delay: float) -> asyncio.Future[None]:
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._sleepers.append((self.now + delay, future))
        return future

    async def advance(self, seconds: float) -> None:
        self.now += seconds
        for deadline, future in list(self._sleepers):
            if deadline <= self.now + 1e-9:
                self._sleepers.remove((deadline, future))
                if not future.done():
                    future.set_result(None)
        await settle()


async def settle() -> None:
    """Let every ready task run until none is left to run (no time passes)."""
    for _ in range(50):
        await asyncio.sleep(0)


def budget(fake: FakeTime, **limits: int) -> UserBudget:
    values = {"requests_per_second": 1000, "requests_per_hour": 100_000,
              "orders_per_minute": 1000, "reads_per_minute": 1000, **limits}  # fmt: skip
    return UserBudget(BudgetLimits(**values), clock=fake.clock, sleep=fake.sleep)


def start(
    user: UserBudget, kind: RequestKind, admitted: list[str], name: str, *, background: bool = False
) -> asyncio.Task[float]:
    async def one() -> float:
        if background:
            mark_background()  # as reconcile's task does
        waited = await user.acquire(kind)
        admitted.append(name)
        return waited

    return asyncio.ensure_future(one())


def test_window_admits_limit_then_waits_until_the_oldest_leaves() -> None:
    window = Window(3, 60.0)
    for t in (0.0, 10.0, 20.0):
        assert window.wait_s(t) == 0
        window.admit(t)

    assert window.wait_s(30.0) == pytest.approx(30.0)  # the one at 0 leaves at 60
    assert window.wait_s(60.0) == 0
    assert window.used(60.0) == 2


async def test_twenty_order_fanout_is_admitted_at_once_under_the_defaults() -> None:
    fake = FakeTime()
    user = RequestBudget(TradovateConfig(), clock=fake.clock, sleep=fake.sleep).bucket("alice")
    admitted: list[str] = []

    tasks = [start(user, ORDER, admitted, f"o{i}") for i in range(20)]
    await settle()

    assert len(admitted) == 20
    assert [t.result() for t in tasks] == [0.0] * 20


async def test_defaults_stay_inside_the_documented_and_reported_limits() -> None:
    limits = BudgetLimits.of(TradovateConfig())

    assert limits.orders_per_minute < 80  # field report: 80/min counting orders
    assert limits.requests_per_hour < 5000  # documented and reported 5,000/h
    assert limits.requests_per_second < 1000  # documented 1,000/s
    assert limits.reads_per_minute * 60 < limits.requests_per_hour  # reads leave room
    assert limits.requests_per_second >= 20  # a 20-account fan-out leaves together


async def test_orders_per_minute_window_holds_the_next_order_until_the_first_leaves() -> None:
    fake = FakeTime()
    user = budget(fake, orders_per_minute=3)
    admitted: list[str] = []

    for i in range(4):
        start(user, ORDER, admitted, f"o{i}")
        await settle()
        await fake.advance(10)
    assert admitted == ["o0", "o1", "o2"]  # at 1000, 1010, 1020; o3 asked at 1030

    await fake.advance(19)
    assert admitted == ["o0", "o1", "o2"]
    await fake.advance(1)  # 1060: o0 is a minute old
    assert admitted == ["o0", "o1", "o2", "o3"]


async def test_per_second_window_counts_every_kind() -> None:
    fake = FakeTime()
    user = budget(fake, requests_per_second=2)
    admitted: list[str] = []

    start(user, AUTH, admitted, "login")
    start(user, READ, admitted, "r")
    start(user, ORDER, admitted, "o")
    await settle()
    assert admitted == ["login", "r"]

    await fake.advance(1)
    assert admitted == ["login", "r", "o"]


async def test_hour_window_counts_orders_and_reads_together() -> None:
    fake = FakeTime()
    user = budget(fake, requests_per_hour=2)
    admitted: list[str] = []

    start(user, READ, admitted, "r")
    start(user, ORDER, admitted, "o1")
    start(user, ORDER, admitted, "o2")
    await settle()
    assert sorted(admitted) == ["o1", "r"]

    await fake.advance(3599)
    assert "o2" not in admitted
    await fake.advance(1)
    assert admitted[-1] == "o2"


async def test_reads_per_minute_do_not_hold_orders() -> None:
    fake = FakeTime()
    user = budget(fake, reads_per_minute=1)
    admitted: list[str] = []

    start(user, READ, admitted, "r1")
    start(user, READ, admitted, "r2")  # waits a minute for the reads' window
    start(user, ORDER, admitted, "o")
    await settle()

    assert admitted == ["r1", "o"]
    assert user.queued() == (0, 1)


async def test_read_waits_while_an_order_is_queued() -> None:
    fake = FakeTime()
    user = budget(fake, orders_per_minute=1)
    admitted: list[str] = []

    start(user, ORDER, admitted, "o1")
    start(user, ORDER, admitted, "o2")  # queued: the orders' minute is used up
    start(user, READ, admitted, "r")  # its own windows have room, but an order is queued
    await settle()
    assert admitted == ["o1"]

    await fake.advance(60)
    assert admitted == ["o1", "o2", "r"]


async def test_order_goes_ahead_of_reads_queued_before_it() -> None:
    fake = FakeTime()
    user = budget(fake, requests_per_second=1)
    admitted: list[str] = []

    start(user, READ, admitted, "r0")
    await settle()
    for i in range(1, 4):
        start(user, READ, admitted, f"r{i}")
    await settle()
    start(user, ORDER, admitted, "o")
    await settle()
    assert admitted == ["r0"]

    await fake.advance(1)
    assert admitted == ["r0", "o"]
    await fake.advance(1)
    assert admitted == ["r0", "o", "r1"]


async def test_a_read_an_order_waits_for_goes_ahead_of_background_reads() -> None:
    # Reconcile's reads after a restart fill the reads window; the position an alert needs
    # is read at the next free slot, not after all of them.
    fake = FakeTime()
    user = budget(fake, reads_per_minute=1)
    admitted: list[str] = []

    for i in range(3):
        start(user, READ, admitted, f"reconcile{i}", background=True)
        await settle()
    start(user, READ, admitted, "position")
    await settle()
    start(user, READ, admitted, "contract")
    await settle()
    assert admitted == ["reconcile0"]

    await fake.advance(60)
    assert admitted == ["reconcile0", "position"]
    await fake.advance(60)
    assert admitted == ["reconcile0", "position", "contract"]
    await fake.advance(60)
    assert admitted == ["reconcile0", "position", "contract", "reconcile1"]


async def test_background_reads_leave_the_reserved_reads_to_the_others() -> None:
    # Reconcile's look-ups after a restart use up their share of the reads window; the
    # account list and positions a new alert needs are read at once, not a minute later.
    fake = FakeTime()
    user = budget(fake, reads_per_minute=3, reads_reserved=2)
    admitted: list[str] = []

    for i in range(3):
        start(user, READ, admitted, f"reconcile{i}", background=True)
    await settle()
    start(user, READ, admitted, "account list")
    start(user, READ, admitted, "position")
    await settle()
    assert admitted == ["reconcile0", "account list", "position"]

    await fake.advance(60)
    assert admitted == ["reconcile0", "account list", "position", "reconcile1"]
    await fake.advance(60)
    assert admitted[-1] == "reconcile2"


def test_the_reserve_leaves_background_reads_at_least_one_a_minute() -> None:
    assert BudgetLimits.of(TradovateConfig()).reads_reserved == 20
    window = Window(10, 60.0, reserved=20)  # a reserve above a lowered reads_per_minute
    assert window.wait_s(0.0, background=True) == 0
    window.admit(0.0)
    assert window.wait_s(1.0, background=True) == pytest.approx(59.0)
    assert window.wait_s(1.0) == 0


async def test_background_reads_still_wait_behind_orders_and_leave_in_their_order() -> None:
    fake = FakeTime()
    user = budget(fake, requests_per_second=1)
    admitted: list[str] = []

    for i in range(3):
        start(user, READ, admitted, f"bg{i}", background=True)
        await settle()
    start(user, ORDER, admitted, "order")
    await settle()
    for _ in range(3):
        await fake.advance(1)

    assert admitted == ["bg0", "order", "bg1", "bg2"]


async def test_login_shares_the_orders_queue_but_not_their_window() -> None:
    fake = FakeTime()
    user = budget(fake, orders_per_minute=1, reads_per_minute=1)
    admitted: list[str] = []

    start(user, ORDER, admitted, "o1")
    start(user, AUTH, admitted, "login")
    await settle()

    assert admitted == ["o1", "login"]


@pytest.mark.parametrize("kind", [ORDER, READ])
async def test_waiters_of_one_kind_leave_first_come_first_served(kind: RequestKind) -> None:
    fake = FakeTime()
    user = budget(fake, requests_per_second=1)
    admitted: list[str] = []

    for i in range(5):
        start(user, kind, admitted, f"{kind.value}{i}")
        await settle()
    for _ in range(4):
        await fake.advance(1)

    assert admitted == [f"{kind.value}{i}" for i in range(5)]


async def test_a_cancelled_waiter_leaves_the_queue_to_the_next() -> None:
    fake = FakeTime()
    user = budget(fake, orders_per_minute=1)
    admitted: list[str] = []
    start(user, ORDER, admitted, "o1")
    stuck = start(user, ORDER, admitted, "o2")
    start(user, READ, admitted, "r")
    await settle()

    stuck.cancel()
    await settle()

    assert admitted == ["o1", "r"]
    assert user.queued() == (0, 0)


async def test_users_have_separate_windows() -> None:
    fake = FakeTime()
    limits = BudgetLimits(requests_per_second=1, requests_per_hour=10, orders_per_minute=10,
                          reads_per_minute=10)  # fmt: skip
    process = RequestBudget(limits, clock=fake.clock, sleep=fake.sleep)
    await process.bucket("alice").acquire(ORDER)

    waited = await asyncio.wait_for(process.bucket("bob").acquire(ORDER), 1)

    assert waited == 0
    assert process.bucket("alice") is process.bucket("alice")


def test_old_bucket_settings_raise_every_window() -> None:
    old = TradovateConfig.model_validate({"requests_per_s": 1000, "request_burst": 1000})

    assert old.requests_per_second == 2000
    assert old.orders_per_minute == 61_000
    assert old.requests_per_hour == 3_601_000


def test_new_window_settings_win_over_the_old_bucket() -> None:
    mixed = TradovateConfig.model_validate({"requests_per_s": 1000, "orders_per_minute": 10})

    assert mixed.orders_per_minute == 10

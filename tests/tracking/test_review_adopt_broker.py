"""``tradebridge review adopt`` reads the order at the broker before the row takes it.

Refused (exit 1, one line naming what differs, the row left ``needs_review``): an order the
row's account does not have, or of another contract, side, quantity, order type or limit or
stop price than the row's (a bracket leg: test_review_adopt_leg.py). The row's own order is
adopted. A broker that cannot be asked refuses too, unless ``--no-broker-check`` keeps the
old, unchecked adoption.
"""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from _support.native import front
from tracking.conftest import ACCOUNT, ACCOUNT_2, Stack
from tracking.test_review_adopt_checks import (
    S,
    _adopt,
    _by_hand,
    _needs_review,
    broker_config,
    hand_price,
    settings_file,
    stack,
)
from tradebridge.domain.enums import Dialect, OrderType, Side
from tradebridge.store.embedded import EmbeddedRedis, free_port

__all__ = ["broker_config", "stack"]

pytestmark = pytest.mark.parametrize("dialect", [Dialect.NATIVE, Dialect.TVBRIDGE])


async def _still_in_review(stack: Stack, signal_id: str = "r1") -> None:
    row = await stack.ledger.get(signal_id)
    assert row is not None
    assert (row.status, row.tradovate_order_id) == (S.NEEDS_REVIEW, None)


async def test_adopt_the_rows_own_order_makes_it_working(
    stack: Stack, ledger_url: str, broker_config: Path
) -> None:
    order_id = await _by_hand(stack)  # a buy limit of 1 of the front month, as the row asks
    await _needs_review(stack, "r1", order_type=OrderType.LIMIT, price=hand_price(stack))

    result = await _adopt("r1", order_id, broker_config, ledger_url, "--note", "seen in the UI")

    assert result.exit_code == 0, result.output
    row = await stack.ledger.get("r1")
    assert row is not None
    assert (row.status, row.tradovate_order_id) == (S.WORKING, order_id)
    adopted = [e for e in await stack.ledger.history("r1") if e.event == "adopted_by_hand"]
    assert adopted[-1].detail["broker_checked"] is True


OTHER_CONTRACT = front("MES")


@pytest.mark.parametrize(
    ("placed", "reason"),
    [
        ({"side": Side.SELL}, "is a sell, the row's is a buy"),
        ({"contract": OTHER_CONTRACT},
         f"is of contract {OTHER_CONTRACT.name}, the row's is {front().name}"),
        ({"quantity": 2}, "is for 2 contract(s), the row's for 1"),
    ],
    ids=["side", "contract", "quantity"],
)  # fmt: skip
async def test_adopt_order_unlike_the_row_refused(
    stack: Stack, ledger_url: str, broker_config: Path, placed: dict[str, Any], reason: str
) -> None:
    order_id = await _by_hand(stack, **placed)
    await _needs_review(stack, "r1")

    result = await _adopt("r1", order_id, broker_config, ledger_url)

    assert result.exit_code == 1, result.output
    assert f"refused: order {order_id} {reason}" in result.output
    await _still_in_review(stack)


async def test_adopt_other_quantity_with_its_flag_adopted(
    stack: Stack, ledger_url: str, broker_config: Path
) -> None:
    order_id = await _by_hand(stack, quantity=2)
    await _needs_review(stack, "r1", order_type=OrderType.LIMIT, price=hand_price(stack))

    result = await _adopt("r1", order_id, broker_config, ledger_url, "--allow-other-quantity")

    assert result.exit_code == 0, result.output
    row = await stack.ledger.get("r1")
    assert row is not None
    assert (row.status, row.tradovate_order_id) == (S.WORKING, order_id)


TICK = front().product.tick_size


def _p(price: Decimal) -> str:
    return format(price.normalize(), "f")


def _priced(stack: Stack, case: str) -> tuple[dict[str, Any], dict[str, Any], str]:
    """Return (the row, the order placed by hand, the reason refused) of a ``case``."""
    limit = hand_price(stack)  # a buy limit under the market
    stop = stack.last() + 200 * TICK  # a buy stop's trigger above it
    if case == "type":
        return ({}, {}, "is a limit order, the row's is a market order")
    if case == "limit_price":
        return ({"order_type": OrderType.LIMIT, "price": limit}, {"price": limit - TICK},
                f"has limit price {_p(limit - TICK)}, the row's {_p(limit)}")  # fmt: skip
    return ({"order_type": OrderType.STOP, "price": stop},
            {"order_type": OrderType.STOP, "price": stop + TICK},
            f"has stop price {_p(stop + TICK)}, the row's {_p(stop)}")  # fmt: skip


@pytest.mark.parametrize("case", ["type", "limit_price", "stop_price"])
async def test_adopt_order_of_other_type_or_price_refused(
    stack: Stack, ledger_url: str, broker_config: Path, case: str
) -> None:
    # The row's market order never rested: a limit by hand is not it; nor is a limit or a
    # stop at another price than the row's (its fills would be booked at that price).
    row, placed, reason = _priced(stack, case)
    order_id = await _by_hand(stack, **placed)
    await _needs_review(stack, "r1", **row)

    result = await _adopt("r1", order_id, broker_config, ledger_url)

    assert result.exit_code == 1, result.output
    flag = "--allow-other-type" if case == "type" else "--allow-other-price"
    assert f"refused: order {order_id} {reason} ({flag} takes it anyway)" in result.output
    await _still_in_review(stack)


@pytest.mark.parametrize(
    ("case", "flag"),
    [("type", "--allow-other-type"), ("limit_price", "--allow-other-price"),
     ("stop_price", "--allow-other-price")],
)  # fmt: skip
async def test_adopt_other_type_or_price_with_its_flag_adopted(
    stack: Stack, ledger_url: str, broker_config: Path, case: str, flag: str
) -> None:
    row, placed, _ = _priced(stack, case)
    order_id = await _by_hand(stack, **placed)
    await _needs_review(stack, "r1", **row)

    result = await _adopt("r1", order_id, broker_config, ledger_url, flag)

    assert result.exit_code == 0, result.output
    adopted = await stack.ledger.get("r1")
    assert adopted is not None
    assert (adopted.status, adopted.tradovate_order_id) == (S.WORKING, order_id)


@pytest.mark.parametrize("where", ["typo", "other_account"])
async def test_adopt_order_the_account_does_not_have_refused(
    stack: Stack, ledger_url: str, broker_config: Path, where: str
) -> None:
    # A typo'd id, or an order of another account that no row owns.
    real = await _by_hand(stack, account=ACCOUNT_2 if where == "other_account" else ACCOUNT)
    order_id = real + "9" if where == "typo" else real
    await _needs_review(stack, "r1")

    result = await _adopt("r1", order_id, broker_config, ledger_url)

    assert result.exit_code == 1, result.output
    assert f"the broker has no order {order_id} on account {ACCOUNT}" in result.output
    await _still_in_review(stack)


@pytest.mark.parametrize("cause", ["no_token", "broker_down"])
async def test_adopt_broker_unreachable_refused(
    stack: Stack,
    ledger_url: str,
    redis_server: EmbeddedRedis,
    tmp_path: Path,
    dialect: Dialect,
    cause: str,
) -> None:
    order_id = await _by_hand(stack)
    await _needs_review(stack, "r1")
    url = stack.sim.url if cause == "no_token" else f"http://127.0.0.1:{free_port()}"
    config = settings_file(tmp_path / "tradebridge.toml", url, redis_server.url, dialect)
    if cause == "no_token":
        await stack.redis.delete(f"token:{ACCOUNT}")

    result = await _adopt("r1", order_id, config, ledger_url)

    assert result.exit_code == 1, result.output
    assert f"refused: cannot read order {order_id} of {ACCOUNT} at the broker" in result.output
    assert "--no-broker-check" in result.output
    await _still_in_review(stack)


async def test_adopt_broker_down_with_no_broker_check_adopted_unchecked(
    stack: Stack, ledger_url: str, redis_server: EmbeddedRedis, tmp_path: Path, dialect: Dialect
) -> None:
    order_id = await _by_hand(stack)
    await _needs_review(stack, "r1")
    down = f"http://127.0.0.1:{free_port()}"
    config = settings_file(tmp_path / "tradebridge.toml", down, redis_server.url, dialect)

    result = await _adopt("r1", order_id, config, ledger_url, "--no-broker-check")

    assert result.exit_code == 0, result.output
    assert "not checked at the broker (--no-broker-check)" in result.output
    row = await stack.ledger.get("r1")
    assert row is not None
    assert (row.status, row.tradovate_order_id) == (S.WORKING, order_id)
    adopted = [e for e in await stack.ledger.history("r1") if e.event == "adopted_by_hand"]
    assert adopted[-1].detail["broker_checked"] is False

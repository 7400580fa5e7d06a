"""``tradebridge review adopt`` takes an order the broker holds for the row's own account.

The docs (dispatcher.md "Unknown outcomes") say ``adopt`` is refused when another row owns
the order; the ledger's unique index is per account. An order another account's row owns was
accepted: the row became ``working`` on it. The helpers here serve the tests of what
``adopt`` reads at the broker too (test_review_adopt_broker.py, test_review_adopt_leg.py).
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path

import pytest
from click.testing import Result
from typer.testing import CliRunner

from _support.rig import front
from tracking.conftest import ACCOUNT, ACCOUNT_2, Stack, StackFactory
from tradebridge.cli.main import app
from tradebridge.domain.commands import SubmitOrder
from tradebridge.domain.contracts import ContractSymbol
from tradebridge.domain.enums import Dialect, OrderType, Side
from tradebridge.domain.ids import AccountName, ClientOrderId
from tradebridge.domain.lifecycle import SignalStatus
from tradebridge.sim.config import SimConfig
from tradebridge.store.embedded import EmbeddedRedis

S = SignalStatus
TICK = front().product.tick_size

pytestmark = pytest.mark.parametrize("dialect", [Dialect.NATIVE, Dialect.TVBRIDGE])


@pytest.fixture
async def stack(make_stack: StackFactory, dialect: Dialect) -> AsyncIterator[Stack]:
    async with make_stack(SimConfig(port=0, price_step_s=3600), dialect=dialect) as built:
        built.start(built.dispatcher())
        yield built


@pytest.fixture
def broker_config(
    stack: Stack, redis_server: EmbeddedRedis, dialect: Dialect, tmp_path: Path
) -> Path:
    """Return the settings file that names the stack's simulator, Redis and accounts."""
    return settings_file(tmp_path / "tradebridge.toml", stack.sim.url, redis_server.url, dialect)


def settings_file(path: Path, broker_url: str, redis_url: str, dialect: Dialect) -> Path:
    """Write the settings the CLI finds the broker by (its token store on ``redis_url``)."""
    accounts = "".join(
        f'[[accounts]]\nname = "{name}"\nuser = "demo"\ndialect = "{dialect.value}"\n'
        for name in (ACCOUNT, ACCOUNT_2)
    )
    path.write_text(
        f'[tradovate]\nnative_url = "{broker_url}/v1"\nbridge_url = "{broker_url}"\n'
        # Tried once: a broker that does not answer is refused without waiting out retries.
        f'ws_url = ""\n[tradovate.retry]\nenabled = false\n'
        f'[redis]\nurl = "{redis_url}"\n{accounts}'
    )
    return path


async def _cli(*argv: str) -> Result:
    env = {"TRADEBRIDGE_CONFIG": "", "DATABASE_URL": ""}
    return await asyncio.to_thread(CliRunner().invoke, app, list(argv), env=env,
                                   terminal_width=250)  # fmt: skip


def _grid(price: Decimal) -> Decimal:
    return (price / TICK).to_integral_value() * TICK


async def _adopt(
    signal_id: str, order_id: str, config: Path, ledger_url: str, *options: str
) -> Result:
    return await _cli("review", "adopt", signal_id, order_id, *options, "--config", str(config),
                      "--database-url", ledger_url)  # fmt: skip


def hand_price(
    stack: Stack, side: Side = Side.BUY, contract: ContractSymbol | None = None
) -> Decimal:
    """Return the price of ``_by_hand``'s limit: 200 ticks from the market, on the far side
    (the simulator's price holds still: ``price_step_s`` of an hour)."""
    contract = contract or front()
    tick = contract.product.tick_size
    away = -200 * tick if side is Side.BUY else 200 * tick
    return ((stack.last(contract) + away) / tick).to_integral_value() * tick


async def _by_hand(
    stack: Stack,
    *,
    account: str = ACCOUNT,
    side: Side = Side.BUY,
    quantity: int = 1,
    contract: ContractSymbol | None = None,
    order_type: OrderType = OrderType.LIMIT,
    price: Decimal | None = None,
) -> str:
    """Place an order that rests at the broker, as a person would: no row owns it; a limit
    at ``hand_price`` unless told, or a stop (``price``: its trigger, on the far side of the
    market). Return its broker order id."""
    contract = contract or front()
    if price is None:
        price = hand_price(stack, side, contract)
    command = SubmitOrder(
        client_order_id=ClientOrderId(f"hand-{secrets.token_hex(4)}"), account=AccountName(account),
        contract=contract, side=side, order_type=order_type, quantity=quantity,
        limit_price=price if order_type.needs_limit_price else None,
        stop_price=price if order_type.needs_stop_price else None,
    )  # fmt: skip
    broker = await stack.pool.get(account)
    return str(await broker.submit(command))


async def _needs_review(
    stack: Stack,
    signal_id: str,
    account: str = ACCOUNT,
    *,
    order_type: OrderType = OrderType.MARKET,
    price: Decimal | None = None,
) -> None:
    """A buy 1 row (a market order unless told; ``price``: its limit, or its stop's trigger)
    whose outcome nobody could tell (as the dispatcher escalates it)."""
    limit = price if order_type.needs_limit_price else None
    stop = price if order_type.needs_stop_price else None
    # In one transaction: the running dispatcher never sees it pending.
    async with stack.ledger.pool.acquire() as conn, conn.transaction():
        await conn.execute(
            "insert into trading_signals (signal_id, strategy_name, instrument, side, "
            "order_type, quantity, account_name, client_order_id, price, stop_price) "
            "values ($1, 'tests', $2, 'buy', $3, 1, $4, $5, $6, $7)",
            signal_id, front().name, order_type.value, account, f"tb-{signal_id}", limit, stop,
        )  # fmt: skip
        for step in ("processing", "submitted", "unknown", "needs_review"):
            await conn.execute(
                "update trading_signals set status = $2 where signal_id = $1", signal_id, step
            )
    row = await stack.ledger.get(signal_id)
    assert row is not None
    assert row.status is S.NEEDS_REVIEW


async def test_adopt_order_of_another_account_refused(stack: Stack, ledger_url: str) -> None:
    # A resting limit of ACCOUNT_2, owned by its row.
    await stack.insert("other", account_name=ACCOUNT_2, order_type="limit",
                       price=_grid(stack.last() - 200 * TICK))  # fmt: skip
    other = await stack.wait("other", "working")
    assert other.tradovate_order_id is not None
    await _needs_review(stack, "r1")

    result = await _cli("review", "adopt", "r1", other.tradovate_order_id,
                        "--database-url", ledger_url)  # fmt: skip

    row = await stack.ledger.get("r1")
    assert row is not None
    assert result.exit_code == 1, result.output
    assert row.status is S.NEEDS_REVIEW

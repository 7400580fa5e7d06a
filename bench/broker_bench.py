"""Benchmark submit round trips through both adapters, and what the client adds over bare HTTP.

Starts ``tradebridge sim`` on a free loopback port in a subprocess and a private Redis
(``EmbeddedRedis``) holding one native and one bridge token, minted by logging in to the
simulator. Then, per dialect, it places 1-lot market orders (alternating buy and sell, so the
position stays flat) one at a time and measures the round trip of:

* ``TradovateBroker.submit`` and a bare ``httpx`` POST of the same ``placeorder`` body;
* ``TvBridgeBroker.submit`` (built by the factory from settings) and a bare POST of the
  same form, once with ``bid_ask = "always"`` (the default: every submit first reads
  ``/quotes``) and once with ``bid_ask = "never"`` (the POST alone);

The client overhead is adapter minus bare, at each percentile. Bare and adapter runs are
interleaved in rounds, so that the simulator's growing order book weighs on both alike.
The client-side request budget (``requests_per_s``, reference §7) is raised to 1,000,000/s
here: at its production default of 1/s it would measure the token bucket, not the client.
Logs are JSON at INFO into /dev/null, so formatting each ``broker_call`` event is counted.

    .venv/bin/python bench/broker_bench.py [--orders 1000] [--rounds 5]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import httpx
import redis.asyncio as aioredis

from _common import (
    ACCOUNT_NAME,
    BRIDGE_ID,
    accepted,
    bridge_login,
    bridge_market_form,
    latency_cells,
    machine,
    native_login,
    native_market_body,
    print_table,
    running_simulator,
)
from tradebridge.brokers.factory import build_native, build_tvbridge
from tradebridge.config import Settings, load_settings
from tradebridge.domain.commands import SubmitOrder
from tradebridge.domain.contracts import resolve_symbol
from tradebridge.domain.enums import OrderType, Side
from tradebridge.domain.ids import AccountName, ClientOrderId
from tradebridge.obs.logging import configure_logging
from tradebridge.store.embedded import EmbeddedRedis
from tradebridge.store.tokens import TokenStore

WARMUP = 20
UNLIMITED = 1_000_000  # requests per second and burst of the client-side budget


@dataclass
class Series:
    """Latencies of one way of placing orders, and how many failed."""

    name: str
    latencies_ms: list[float] = field(default_factory=list)
    failures: int = 0


Place = Callable[[int], Awaitable[bool]]


async def measure(place: Place, series: Series, start: int, count: int) -> None:
    """Place ``count`` orders one at a time, numbered from ``start``; record each round trip."""
    for n in range(start, start + count):
        t0 = time.perf_counter()
        try:
            ok = await place(n)
        except Exception:  # noqa: BLE001 - a failed order is counted, the run goes on
            ok = False
        series.latencies_ms.append((time.perf_counter() - t0) * 1000)
        series.failures += not ok


def command(n: int, tag: str, contract_symbol: str) -> SubmitOrder:
    """Return the n-th order: a 1-lot market order, buy on even n, sell on odd."""
    return SubmitOrder(
        client_order_id=ClientOrderId(f"bench-{tag}-{n}"),
        account=AccountName(ACCOUNT_NAME),
        contract=resolve_symbol(contract_symbol, datetime.now(UTC).date()),
        side=Side.BUY if n % 2 == 0 else Side.SELL,
        order_type=OrderType.MARKET,
        quantity=1,
    )


def settings_for(url: str, redis_url: str, bid_ask: str, dialect: str) -> Settings:
    """Return settings that point both dialects at the simulator, with no request budget."""
    return load_settings(
        None,
        tradovate={
            "native_url": url + "/v1",
            "bridge_url": url,
            "requests_per_s": UNLIMITED,
            "request_burst": UNLIMITED,
        },
        tvbridge={"bid_ask": bid_ask},
        accounts=[{"name": ACCOUNT_NAME, "dialect": dialect}],
        redis={"url": redis_url},
    )


async def write_tokens(redis: aioredis.Redis, url: str) -> None:
    """Mint one token per dialect and store it as a token service would (reference §2.9)."""
    native = native_login(url)
    bridge = bridge_login(url)
    expiration = datetime.fromtimestamp(float(str(bridge["expiration"])), UTC).isoformat()
    values = {
        f"native:{ACCOUNT_NAME}": {
            "kind": "native",
            "accessToken": native["accessToken"],
            "expirationTime": native["expirationTime"],
        },
        f"tv:{ACCOUNT_NAME}": {
            "kind": "tv",
            "accessToken": bridge["access_token"],
            "expirationTime": expiration,
        },
    }
    for key, value in values.items():
        await redis.set(key, json.dumps(value))


async def bench_native(
    url: str, redis: aioredis.Redis, redis_url: str, symbol: str, orders: int, rounds: int
) -> tuple[Series, Series]:
    """Measure ``TradovateBroker.submit`` and the bare ``placeorder`` POST, interleaved."""
    settings = settings_for(url, redis_url, "always", "native")
    store = TokenStore(redis, settings.tokens, key_for=lambda name: f"native:{name}")
    broker = build_native(settings, settings.account(ACCOUNT_NAME), store)
    token = (await store.token(ACCOUNT_NAME)).access_token
    adapter, bare = Series("native  TradovateBroker.submit"), Series("native  bare httpx POST")

    async def via_adapter(n: int) -> bool:
        return bool(await broker.submit(command(n, "native", symbol)))

    async with httpx.AsyncClient(
        base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=30
    ) as client:

        async def via_bare(n: int) -> bool:
            body = native_market_body(n, symbol) | {"clOrdId": f"bench-bare-native-{n}"}
            return accepted(await client.post("/v1/order/placeorder", json=body))

        await interleave(via_adapter, adapter, via_bare, bare, orders, rounds)
    await broker.close()
    return adapter, bare


async def bench_bridge(
    url: str,
    redis: aioredis.Redis,
    redis_url: str,
    symbol: str,
    orders: int,
    rounds: int,
    bid_ask: str,
) -> tuple[Series, Series]:
    """Measure ``TvBridgeBroker.submit`` and the bare POST of the same form, interleaved."""
    settings = settings_for(url, redis_url, bid_ask, "tvbridge")
    store = TokenStore(redis, settings.tokens, key_for=lambda name: f"tv:{name}")
    broker = build_tvbridge(settings, settings.account(ACCOUNT_NAME), store)
    token = (await store.token(ACCOUNT_NAME)).access_token
    tag = f"bridge-{bid_ask}"
    adapter = Series(f"bridge  TvBridgeBroker.submit (bid_ask={bid_ask})")
    bare = Series(f"bridge  bare httpx POST ({'with' if bid_ask == 'always' else 'no'} bid/ask)")

    async def via_adapter(n: int) -> bool:
        return bool(await broker.submit(command(n, tag, symbol)))

    async with httpx.AsyncClient(
        base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=30
    ) as client:

        async def via_bare(n: int) -> bool:
            form = bridge_market_form(n, symbol)
            if bid_ask == "always":  # the adapter reads them from /quotes; bare sends fixed ones
                form |= {"currentBid": "21000", "currentAsk": "21000.25"}
            params = {"locale": "en", "requestId": f"bench{tag}bare{n}"}
            answer = await client.post(
                f"/accounts/{BRIDGE_ID}/orders",
                params=params,
                data=form,  # httpx sends it form-encoded, as the adapter does
            )
            return accepted(answer)

        await interleave(via_adapter, adapter, via_bare, bare, orders, rounds)
    await broker.close()
    return adapter, bare


async def interleave(
    via_adapter: Place, adapter: Series, via_bare: Place, bare: Series, orders: int, rounds: int
) -> None:
    """Warm both paths up, then alternate bare and adapter chunks; ``orders`` each in total."""
    await measure(via_bare, Series("warm-up"), 10_000_000, WARMUP)
    await measure(via_adapter, Series("warm-up"), 10_000_000, WARMUP)
    chunk = max(orders // rounds, 1)
    done = 0
    while done < orders:
        count = min(chunk, orders - done)
        await measure(via_bare, bare, done, count)
        await measure(via_adapter, adapter, done, count)
        done += count


def overhead_row(adapter: Series, bare: Series) -> list[str]:
    """Return adapter minus bare at p50, p90, p99 and max."""
    a = [float(x) for x in latency_cells(adapter.latencies_ms)]
    b = [float(x) for x in latency_cells(bare.latencies_ms)]
    dialect = adapter.name.split()[0]
    policy = adapter.name.split("(", 1)[1].rstrip(")") if "(" in adapter.name else ""
    name = f"{dialect}  overhead = adapter - bare" + (f" ({policy})" if policy else "")
    return [name, "", *(f"{x - y:+.2f}" for x, y in zip(a, b, strict=True)), ""]


async def run(orders: int, rounds: int) -> tuple[str, str, list[list[str]]]:
    """Run every measurement against one simulator and one private Redis."""
    redis_server = EmbeddedRedis().start()  # a temporary directory, removed on stop
    redis = aioredis.Redis.from_url(redis_server.url)
    rows: list[list[str]] = []
    try:
        with running_simulator() as url:
            await write_tokens(redis, url)
            symbol = resolve_symbol("MNQ1!", datetime.now(UTC).date()).name
            native = await bench_native(url, redis, redis_server.url, symbol, orders, rounds)
            bridge_always = await bench_bridge(
                url, redis, redis_server.url, symbol, orders, rounds, "always"
            )
            bridge_never = await bench_bridge(
                url, redis, redis_server.url, symbol, orders, rounds, "never"
            )
        for adapter, bare in (native, bridge_always, bridge_never):
            rows.extend(
                [s.name, str(len(s.latencies_ms)), *latency_cells(s.latencies_ms), str(s.failures)]
                for s in (bare, adapter)
            )
            rows.append(overhead_row(adapter, bare))
    finally:
        await redis.aclose()
        redis_server.stop()
    return url, symbol, rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--orders", type=int, default=1000, help="orders per measured series")
    parser.add_argument("--rounds", type=int, default=5, help="bare/adapter alternations")
    args = parser.parse_args()

    with Path("/dev/null").open("w", encoding="utf-8") as sink:
        configure_logging("INFO", json_output=True, stream=sink)
        url, symbol, rows = asyncio.run(run(args.orders, args.rounds))
    print(
        f"tradebridge simulator on {url} ({symbol}); {machine()}; sequential submits, "
        "client-side round trip; request budget raised to 1,000,000/s"
    )
    header = ["series", "orders", "p50 ms", "p90 ms", "p99 ms", "max ms", "failed"]
    print_table(header, rows)


if __name__ == "__main__":
    main()

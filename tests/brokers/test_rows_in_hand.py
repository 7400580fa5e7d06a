"""Background reads give way to the rows a process is placing (``budget.rows_in_hand``):
after a restart, reconcile's look-ups took CPU and the budget from the first fan-out."""

from __future__ import annotations

import asyncio
import contextlib

import pytest

from _support.rawhttp import Answer, raw_http
from tradebridge.brokers import budget
from tradebridge.brokers.budget import RowsInHand, mark_background, rows_in_hand
from tradebridge.brokers.http import BrokerHttp


async def test_nothing_in_hand_nothing_waits() -> None:
    hand = RowsInHand()

    async with asyncio.timeout(1):
        await hand.give_way(max_s=30)

    assert not hand.busy


async def test_a_background_read_waits_until_the_last_row_is_done() -> None:
    hand = RowsInHand()
    with contextlib.ExitStack() as second:
        with hand.placing():
            second.enter_context(hand.placing())
            waiting = asyncio.ensure_future(hand.give_way(max_s=30))
            await asyncio.sleep(0)
        await asyncio.sleep(0)
        assert not waiting.done()  # one row still in hand

    async with asyncio.timeout(5):
        await waiting
    assert not hand.busy


async def test_a_background_read_waits_at_most_its_bound_then_goes() -> None:
    hand = RowsInHand()
    with hand.placing():
        async with asyncio.timeout(5):
            await hand.give_way(max_s=0.05)
        assert hand.busy  # it went with the row still in hand: never starved


async def test_the_clients_background_reads_wait_for_the_rows_in_hand_orders_do_not(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(budget, "_GIVE_WAY_S", 30.0)  # a slow machine must not end the wait
    async with raw_http(lambda _n: Answer(200, b"{}")) as server:
        client = BrokerHttp(server.url + "/v1", dialect="native")

        async def background_read() -> None:
            mark_background()
            await client.request("GET", "/position/list")

        try:
            with rows_in_hand.placing():
                read = asyncio.ensure_future(background_read())
                await client.request("POST", "/order/placeorder", json_body={"n": 1})
                await client.request("GET", "/account/list")  # an order's read: at once
                sent_while_placing = [r.target for r in server.requests]
            async with asyncio.timeout(5):
                await read
        finally:
            await client.aclose()

    assert [p.split("/")[-1] for p in sent_while_placing] == ["placeorder", "list"]
    assert server.requests[-1].target.endswith("/position/list")

"""The tracker: an event that still finds no row after its one retry is dropped, not silently."""

from __future__ import annotations

import asyncio
import io
import json
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest

from _support.fixtures import logs_to
from tracking.conftest import ACCOUNT, Stack
from tradebridge.brokers.base import BrokerOrderEvent
from tradebridge.domain.ids import AccountName, BrokerOrderId, ClientOrderId
from tradebridge.domain.orders import OrderAccepted, OrderFilled
from tradebridge.obs.metrics import REGISTRY
from tradebridge.tracking.tracker import Tracker

DROPPED = "tradebridge_tracker_events_dropped_total"


@pytest.fixture
def log_output() -> Iterator[io.StringIO]:
    """Send structured logs to a buffer for one test, then restore the defaults."""
    with logs_to("INFO") as out:
        yield out


class OneEventBroker:
    """A fake adapter whose event stream reports one event, then stays quiet."""

    def __init__(self, event: BrokerOrderEvent) -> None:
        self.event = event

    async def events(self) -> AsyncIterator[BrokerOrderEvent]:
        """Yield the event, then wait for cancellation."""
        yield self.event
        await asyncio.Event().wait()


def _dropped(reason: str) -> float:
    return REGISTRY.get_sample_value(DROPPED, {"reason": reason}) or 0.0


def _event(broker_order_id: str, client_order_id: str | None, event: Any) -> BrokerOrderEvent:
    return BrokerOrderEvent(
        account=AccountName(ACCOUNT),
        broker_order_id=BrokerOrderId(broker_order_id),
        client_order_id=None if client_order_id is None else ClientOrderId(client_order_id),
        event=event,
    )


async def _follow_until_logged(
    stack: Stack, event: BrokerOrderEvent, out: io.StringIO, name: str
) -> dict[str, Any]:
    tracker = Tracker(stack.settings, stack.ledger, stack.pool)
    task = asyncio.create_task(tracker._follow("fake", OneEventBroker(event)))  # type: ignore[arg-type]
    try:
        async with asyncio.timeout(10):
            while True:
                for line in out.getvalue().splitlines():
                    if line.startswith("{") and json.loads(line)["event"] == name:
                        return dict(json.loads(line))
                await asyncio.sleep(0.02)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_tracker_event_without_row_after_retry_logged_and_counted(
    stack: Stack, log_output: io.StringIO
) -> None:
    before = _dropped("no_row")
    fill = OrderFilled(qty=1, price=Decimal("21000.25"), ts_event=datetime.now(UTC), fill_id="f9")

    record = await _follow_until_logged(
        stack, _event("990001", "tb-ghost", fill), log_output, "tracker_event_dropped"
    )

    assert record["level"] == "warning"
    assert record["logger_name"] == "tradebridge.tracking.tracker"
    assert record["kind"] == "OrderFilled"
    assert record["broker_order_id"] == "990001"
    assert record["client_order_id"] == "tb-ghost"
    assert record["signal_id"] is None
    assert record["account"] == ACCOUNT
    assert record["reason"] == "no_row"
    assert _dropped("no_row") == before + 1


async def test_tracker_event_for_another_order_under_our_id_logged_with_signal_id(
    stack: Stack, log_output: io.StringIO
) -> None:
    await stack.insert("s7", client_order_id="tb-s7", tradovate_order_id="990007",
                       status="working")  # fmt: skip
    before = _dropped("other_order")

    accepted = OrderAccepted(BrokerOrderId("990008"), datetime.now(UTC))

    record = await _follow_until_logged(
        stack, _event("990008", "tb-s7", accepted), log_output, "tracker_event_dropped"
    )

    assert (record["kind"], record["broker_order_id"], record["signal_id"]) == (
        "OrderAccepted", "990008", "s7",
    )  # fmt: skip
    assert record["reason"] == "other_order"
    assert _dropped("other_order") == before + 1
    row = await stack.ledger.get("s7")
    assert row is not None
    assert row.status == "working"


async def test_tracker_late_event_of_finished_row_logged_at_info(
    stack: Stack, log_output: io.StringIO
) -> None:
    await stack.insert("f3", client_order_id="tb-f3", tradovate_order_id="990011",
                       status="filled")  # fmt: skip
    accepted = OrderAccepted(BrokerOrderId("990011"), datetime.now(UTC))
    before = _dropped("row_final")

    record = await _follow_until_logged(
        stack, _event("990011", None, accepted), log_output, "tracker_event_dropped"
    )

    assert (record["level"], record["reason"], record["signal_id"]) == ("info", "row_final", "f3")
    assert _dropped("row_final") == before + 1


async def test_tracker_fill_of_a_row_ended_short_is_a_warning(
    stack: Stack, log_output: io.StringIO
) -> None:
    # A fill the row never took (it ended cancelled first): quantity lost from the ledger,
    # not a harmless late event; said at WARNING, counted as fill_after_end.
    await stack.insert("f4", client_order_id="tb-f4", tradovate_order_id="990012",
                       status="cancelled", quantity=3, filled_qty=1)  # fmt: skip
    fill = OrderFilled(1, Decimal("21000.25"), datetime.now(UTC), "fill-990012-2")
    before = _dropped("fill_after_end")

    record = await _follow_until_logged(
        stack, _event("990012", "tb-f4", fill), log_output, "tracker_event_dropped"
    )

    assert (record["level"], record["reason"], record["signal_id"]) == (
        "warning",
        "fill_after_end",
        "f4",
    )
    assert _dropped("fill_after_end") == before + 1

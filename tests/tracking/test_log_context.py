"""Every order-path line about a row carries its ids (STYLE.md 7, issue 14): a real dispatcher
places a row on the simulator while the logs are captured; each line naming the row's signal
id, client order id or broker order id names the others and the account too."""

from __future__ import annotations

import pytest

from _support.fixtures import log_records, logs_to
from tracking.conftest import ACCOUNT, StackFactory
from tradebridge.domain.enums import Dialect
from tradebridge.obs.logging import ORDER_KEYS


@pytest.mark.parametrize("dialect", [Dialect.NATIVE, Dialect.TVBRIDGE])
async def test_order_path_lines_carry_every_id_of_their_row(
    make_stack: StackFactory, dialect: Dialect
) -> None:
    with logs_to("INFO") as out:
        async with make_stack(dialect=dialect) as stack:
            stack.start(stack.dispatcher())
            await stack.insert("ctx-1")
            row = await stack.wait("ctx-1", "filled")
            # The fill's event is applied by the tracker: wait for its line too.
            await stack.insert("ctx-2")
            await stack.wait("ctx-2", "filled")

    ids = {
        "signal_id": "ctx-1",
        "client_order_id": row.client_order_id,
        "broker_order_id": row.tradovate_order_id,
        "account": ACCOUNT,
    }
    about = [
        r for r in log_records(out)
        if any(r.get(k) == ids[k] for k in ("signal_id", "client_order_id", "broker_order_id"))
    ]  # fmt: skip
    events = {r["event"] for r in about}
    assert "broker_call" in events  # the submit, and the reads made for the row
    assert about, "no line about the row"
    for record in about:
        found = {k: record.get(k) for k in ORDER_KEYS}
        missing = {k for k, v in found.items() if v is None and k != "broker_order_id"}
        assert not missing, (record["event"], found)
        assert {k: v for k, v in found.items() if v is not None}.items() <= ids.items(), record
    placed = [r for r in about if r["event"] == "broker_call" and r.get("method") == "POST"]
    assert placed
    if dialect is Dialect.NATIVE:  # the adapter logs the acceptance (the bridge polls quietly)
        assert any(r.get("broker_order_id") == ids["broker_order_id"] for r in about)

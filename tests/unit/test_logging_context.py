"""The order context on every line and one processor chain for all (issue 14): ids bound with
``order_context`` reach our lines and the stdlib's (asyncpg, uvicorn, ``warnings``) alike, in
the tasks the block starts; the console format for a terminal."""

from __future__ import annotations

import asyncio
import io
import logging
import warnings
from collections.abc import Iterator

import pytest
import structlog

from _support.fixtures import log_records, logs_to
from tradebridge.obs.logging import (
    bind_order,
    configure_logging,
    get_logger,
    order_context,
    wants_console,
)

SECRET = "sk-live-0123456789abcdef"
IDS = {"signal_id": "s-1", "client_order_id": "tb-s-1", "account": "DEMO0000001"}


@pytest.fixture
def output() -> Iterator[io.StringIO]:
    """Send logs to a buffer (JSON) for one test, then restore the defaults."""
    with logs_to("INFO") as out:
        yield out
    structlog.contextvars.clear_contextvars()


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_order_context_ids_on_our_lines_and_gone_after(output: io.StringIO) -> None:
    log = get_logger("tests")
    with order_context(**IDS, broker_order_id=None):
        log.info("inside")
        bind_order(broker_order_id="1000001")
        log.info("accepted")
    log.info("outside")

    inside, accepted, outside = log_records(output)
    assert {k: inside[k] for k in IDS} == IDS
    assert "broker_order_id" not in inside
    assert accepted["broker_order_id"] == "1000001"
    assert not set(IDS) & set(outside)
    assert "broker_order_id" not in outside


def test_order_context_nested_restores_the_outer_row(output: io.StringIO) -> None:
    log = get_logger("tests")
    with order_context(signal_id="outer", account="A"):
        with order_context(signal_id="inner", client_order_id="tb-inner"):
            log.info("inner")
        log.info("outer")

    inner, outer = log_records(output)
    assert (inner["signal_id"], inner["client_order_id"]) == ("inner", "tb-inner")
    assert (outer["signal_id"], outer["account"]) == ("outer", "A")
    assert "client_order_id" not in outer


async def test_order_context_reaches_tasks_started_inside(output: io.StringIO) -> None:
    log = get_logger("tests")

    async def child() -> None:
        log.info("child")

    with order_context(**IDS):
        task = asyncio.create_task(child())
    log.info("parent after")
    await task

    records = {r["event"]: r for r in log_records(output)}
    assert records["child"]["signal_id"] == "s-1"
    assert "signal_id" not in records["parent after"]


def _refuse() -> None:
    raise ConnectionError(f"refused: token={SECRET}")


def test_stdlib_lines_go_through_the_same_chain(output: io.StringIO) -> None:
    with order_context(**IDS):
        logging.getLogger("asyncpg.pool").warning("connection lost, password=%s", SECRET)
        try:
            _refuse()
        except ConnectionError:
            logging.getLogger("uvicorn.error").exception("Exception in ASGI application")
        with warnings.catch_warnings():
            warnings.simplefilter("always")
            warnings.warn(f"unclosed connection secret={SECRET}", ResourceWarning, stacklevel=1)

    records = log_records(output)
    assert [r["logger_name"] for r in records] == ["asyncpg.pool", "uvicorn.error", "py.warnings"]
    for record in records:
        assert {k: record[k] for k in IDS} == IDS  # the context processor ran
        assert record["timestamp"].endswith("Z")
    assert [r["level"] for r in records] == ["warning", "error", "warning"]
    assert "ConnectionError" in records[1]["exception"]
    assert SECRET not in output.getvalue()
    assert "password=***" in records[0]["event"]


def test_console_format_is_readable_text_with_the_context() -> None:
    out = io.StringIO()
    with logs_to(None):
        configure_logging("INFO", json_output=False, stream=out)
        with order_context(**IDS):
            get_logger("tests").info("order placed", token=SECRET)
            logging.getLogger("uvicorn.error").warning("via the stdlib")
    structlog.contextvars.clear_contextvars()

    text = out.getvalue()
    assert not text.lstrip().startswith("{")
    lines = text.splitlines()
    assert "order placed" in lines[0]
    assert "signal_id=s-1" in lines[0]
    assert "via the stdlib" in lines[1]
    assert "signal_id=s-1" in lines[1]
    assert SECRET not in text
    assert "\x1b[" not in text  # not a terminal: no colour codes


@pytest.mark.parametrize(("stream", "json_lines"), [(io.StringIO(), True), (_Terminal(), False)])
def test_json_output_unset_is_json_unless_a_terminal(stream: io.StringIO, json_lines: bool) -> None:
    with logs_to(None):
        configure_logging("INFO", json_output=None, stream=stream)
        get_logger("tests").info("hello")

    assert wants_console(stream) is not json_lines
    assert stream.getvalue().startswith("{") is json_lines

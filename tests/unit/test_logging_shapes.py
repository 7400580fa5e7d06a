"""Redaction by key and by token shape: dotted names (loggers, hosts, versions) stay readable."""

from __future__ import annotations

import base64
import io
import json
import logging
import warnings
from collections.abc import Iterator

import pytest

from _support.fixtures import log_records, logs_to
from tradebridge.obs.logging import configure_logging, get_logger, redact, redact_text

JWT = ".".join(
    base64.urlsafe_b64encode(part).rstrip(b"=").decode()
    for part in (
        b'{"alg":"HS256","typ":"JWT"}',
        b'{"sub":"1","exp":1999999999}',
        b"signature-bytes",
    )
)


@pytest.fixture
def output() -> Iterator[io.StringIO]:
    """Send logs to a buffer for one test, then restore the defaults."""
    with logs_to("DEBUG") as out:
        yield out


@pytest.mark.parametrize(
    "text",
    [
        "tradebridge.dispatch.dispatcher",
        "tradebridge.brokers.tradovate.usersync",
        "tv-demo.tradovateapi.com",
        "https://demo-api.tradovateapi.internal/v1/auth/accesstokenrequest",
        "release-2026.20260101.build1234",
        "timeout at 12:30:45, price: 21000.25",
    ],
)
def test_redact_text_dotted_names_untouched(text: str) -> None:
    assert redact_text(text) == text


def test_log_dotted_logger_name_and_hostname_kept(output: io.StringIO) -> None:
    log = get_logger("tradebridge.dispatch.dispatcher")

    log.info("connected", host="tv-demo.tradovateapi.com",
             module="tradebridge.brokers.tradovate.usersync")  # fmt: skip
    logging.getLogger("tradebridge.dispatch.dispatcher").warning("via the stdlib")

    record = log_records(output)[0]
    assert record["logger_name"] == "tradebridge.dispatch.dispatcher"
    assert record["host"] == "tv-demo.tradovateapi.com"
    assert record["module"] == "tradebridge.brokers.tradovate.usersync"
    stdlib = log_records(output)[1]
    assert (stdlib["event"], stdlib["level"], stdlib["logger_name"]) == (
        "via the stdlib", "warning", "tradebridge.dispatch.dispatcher",
    )  # fmt: skip


def _lose_connection() -> None:
    raise ConnectionResetError(f"lost; token Bearer {JWT}")


def test_library_records_and_warnings_are_json_lines_with_their_traceback(
    output: io.StringIO,
) -> None:
    configure_logging("INFO", stream=output)  # in the test's own warnings context
    try:
        _lose_connection()
    except ConnectionResetError:
        logging.getLogger("asyncpg.pool").exception("connection lost")
    with warnings.catch_warnings():
        warnings.simplefilter("always")  # the suite turns warnings into errors
        warnings.warn("unclosed connection", ResourceWarning, stacklevel=1)

    lines = output.getvalue().splitlines()
    records = log_records(output)
    assert len(records) == len(lines) == 2  # nothing but JSON objects, one a line
    lost, warned = records
    assert (lost["event"], lost["level"], lost["logger_name"]) == (
        "connection lost", "error", "asyncpg.pool",
    )  # fmt: skip
    assert "Traceback (most recent call last)" in lost["exception"]
    assert "ConnectionResetError: lost; token Bearer ***" in lost["exception"]
    assert JWT not in output.getvalue()
    assert warned["logger_name"] == "py.warnings"
    assert "ResourceWarning: unclosed connection" in warned["event"]


@pytest.mark.parametrize(
    "value",
    [
        JWT,
        f"Bearer {JWT}",
        f"Authorization: Bearer {JWT}",
        f"login answered ({JWT}) at tv-demo.tradovateapi.com",
        {"outer": [{"inner": f"x {JWT} y"}]},
        [f"token {JWT}"],
    ],
)
def test_redact_jwt_shape_masked_anywhere(value: object) -> None:
    redacted = json.dumps(redact(value))

    assert JWT not in redacted
    assert "***" in redacted


@pytest.mark.parametrize(
    ("text", "leak"),
    [
        ("{'accessToken': 'opaque value 1', 'name': 'demo'}", "opaque value 1"),
        ('{"password":"pw 42","userId":5}', "pw 42"),
        ("wss://md.example/ws?mdAccessToken=opaque-2&x=1", "opaque-2"),
        ("secret=opaque-3", "opaque-3"),
    ],
)
def test_redact_text_secret_key_pair_inside_string_masked(text: str, leak: str) -> None:
    assert leak not in redact_text(text)
    assert "***" in redact_text(text)


def test_log_values_under_secret_keys_masked(output: io.StringIO) -> None:
    log = get_logger("tradebridge.brokers.http")

    body = {"name": "demo", "sec": "opaque-3", "nested": [{"p-ticket": "opaque-4"}]}

    log.info(
        "login",
        accessToken="opaque-1",
        secret="opaque-2",
        authorization="Basic opaque-5",
        body=body,
    )

    text = output.getvalue()
    for leak in ("opaque-1", "opaque-2", "opaque-5", "opaque-3", "opaque-4"):
        assert leak not in text
    record = log_records(output)[0]
    assert record["body"] == {"name": "demo", "sec": "***", "nested": [{"p-ticket": "***"}]}
    assert record["logger_name"] == "tradebridge.brokers.http"

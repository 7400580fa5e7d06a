"""Redaction: no token, password or secret reaches the log output."""

from __future__ import annotations

import base64
import io
import json
import logging
from collections.abc import Iterator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from _support.fixtures import logs_to
from tradebridge.obs import logging as logging_module
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
    "key",
    ["access_token", "accessToken", "mdAccessToken", "password", "sec", "secret",
     "Authorization", "p-ticket", "ACCESS-TOKEN"],
)  # fmt: skip
def test_redact_secret_key_masked_at_any_depth(key: str) -> None:
    data = {"outer": [{"inner": {key: "plain-value-123"}}]}

    assert redact(data) == {"outer": [{"inner": {key: "***"}}]}


@pytest.mark.parametrize(
    ("text", "leak"),
    [
        (f"token is {JWT} here", JWT),
        ("Authorization: Bearer abc123-opaque", "abc123-opaque"),
        ("GET /x?access_token=qwerty987&y=1", "qwerty987"),
        ("renew?p-ticket=tkt-555", "tkt-555"),
        ("sec=s3cr3t", "s3cr3t"),
        ("{'Access_Token': 'tok-777'}", "tok-777"),
        ("ACCESS-TOKEN=xyz999", "xyz999"),
        ("BEARER qq11ww22", "qq11ww22"),
        ("\u017fecret=long-s-777", "long-s-777"),  # a long s: IGNORECASE matches it as "s"
    ],
)
def test_redact_text_secret_shapes_masked(text: str, leak: str) -> None:
    assert leak not in redact_text(text)
    assert "***" in redact_text(text)


def _masked_without_shortcut(text: str) -> str:
    # The three patterns, always searched (redact_text skips them for text that cannot match).
    text = logging_module._BEARER.sub(r"\1 ***", text)
    text = logging_module._JWT.sub("***", text)
    return logging_module._SECRET_PAIR.sub(r"\g<key>\g<sep>***", text)


_SECRET_WORDS = st.sampled_from(
    [*sorted(logging_module.SECRET_KEYS), "bearer ", "Bearer\t", "eyJ", "eyJa.b.c"]
)
_SEPARATORS = st.sampled_from(["", "", "-", "_"])


@st.composite
def _suspicious_text(draw: st.DrawFn) -> str:
    word = draw(_SECRET_WORDS)
    spelt = "".join(
        (c.upper() if draw(st.booleans()) else c) + draw(_SEPARATORS) for c in word
    ).rstrip("-_")
    return (
        draw(st.text(max_size=8))
        + spelt
        + draw(st.sampled_from(["=", ": ", "':'", " "]))
        + (draw(st.text(max_size=12)))
    )


@settings(max_examples=400, deadline=None)
@given(st.one_of(st.text(max_size=40), _suspicious_text()))
def test_redact_text_shortcut_changes_nothing(text: str) -> None:
    assert redact_text(text) == _masked_without_shortcut(text)


@pytest.mark.parametrize(
    "text", ["demo.tradovateapi.com", "price 21000.25", "MNQZ6 filled 3 @ 21000.5", "v1.2.3"]
)
def test_redact_text_ordinary_values_untouched(text: str) -> None:
    assert redact_text(text) == text


def _refuse() -> None:
    raise RuntimeError(f"refused {JWT}")


def test_log_token_never_reaches_output(output: io.StringIO) -> None:
    log = get_logger("tests", account="DEMO0000001")

    log.info("login", accessToken=JWT, body={"password": "pw-42", "name": "demo"},
             note=f"header Bearer {JWT}")  # fmt: skip
    log.warning("stray", detail=f"answer was {{'accessToken': '{JWT}'}}")
    try:
        _refuse()
    except RuntimeError:
        log.exception("failed")
    logging.getLogger("some.library").warning("sent Bearer %s", JWT)

    text = output.getvalue()
    assert JWT not in text
    assert "pw-42" not in text
    records = [json.loads(line) for line in text.splitlines() if line.startswith("{")]
    assert records[0]["account"] == "DEMO0000001"
    assert records[0]["body"] == {"password": "***", "name": "demo"}
    assert records[0]["level"] == "info"
    assert "sent Bearer ***" in text


def test_log_level_filters_below(output: io.StringIO) -> None:
    configure_logging("WARNING", stream=output)

    get_logger("tests").info("quiet")
    get_logger("tests").warning("loud")

    assert "quiet" not in output.getvalue()
    assert "loud" in output.getvalue()


def test_configure_logging_leaves_request_lines_to_broker_call_events(
    output: io.StringIO,
) -> None:
    logging.getLogger("httpx").info("HTTP Request: GET http://x/ 200 OK")
    logging.getLogger("httpx").warning("something worth seeing")
    assert "HTTP Request" not in output.getvalue()
    assert "something worth seeing" in output.getvalue()

"""Start-up refusals of the webhook settings (no database needed)."""

from __future__ import annotations

import pytest

from tradebridge.config import load_settings
from tradebridge.errors import ConfigError
from tradebridge.intake.security import is_loopback_host, validate_webhook_settings


def no_secret_settings(host: str) -> object:
    return load_settings(
        webhook={"allow_no_secret_for_local_tests": True},
        serve={"host": host},
        data_dir="/nonexistent",
    )


@pytest.mark.parametrize("host", ["127.0.0.1", "127.0.0.5", "localhost", "::1", "[::1]"])
def test_no_secret_for_local_tests_is_allowed_on_loopback(host: str) -> None:
    validate_webhook_settings(no_secret_settings(host))  # type: ignore[arg-type]


@pytest.mark.parametrize("host", ["0.0.0.0", "", "::", "192.0.2.10", "bridge.example.com"])
def test_no_secret_for_local_tests_elsewhere_refuses_to_start(host: str) -> None:
    with pytest.raises(ConfigError, match="only on a loopback bind address") as caught:
        validate_webhook_settings(no_secret_settings(host))  # type: ignore[arg-type]
    assert "TRADEBRIDGE_WEBHOOK__SECRET" in str(caught.value)


def test_a_secret_allows_any_bind_address() -> None:
    settings = load_settings(
        webhook={"secret": "s" * 24, "allow_no_secret_for_local_tests": True},
        serve={"host": "0.0.0.0"},
        data_dir="/nonexistent",
    )
    validate_webhook_settings(settings)


@pytest.mark.parametrize(
    ("host", "loopback"),
    [("127.0.0.1", True), ("127.255.0.1", True), ("::1", True), ("LOCALHOST", True),
     ("0.0.0.0", False), ("10.0.0.1", False), ("::", False), ("", False), ("foo", False)],
)  # fmt: skip
def test_is_loopback_host(host: str, loopback: bool) -> None:
    assert is_loopback_host(host) is loopback

"""Settings: sources and their order, derived hosts, the device id, redaction."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tradebridge.config import Settings, load_device_id, load_settings, websocket_url
from tradebridge.domain.enums import Dialect, Environment
from tradebridge.errors import ConfigError


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Run every test without tradebridge variables and away from any tradebridge.toml."""
    import os

    for name in list(os.environ):
        if name.startswith("TRADEBRIDGE_") or name in ("DATABASE_URL", "REDIS_URL"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)


@pytest.mark.parametrize(
    ("environment", "native", "bridge", "ws"),
    [
        ("demo", "https://demo.tradovateapi.com/v1", "https://tv-demo.tradovateapi.com",
         "wss://demo.tradovateapi.com/v1/websocket"),
        ("live", "https://live.tradovateapi.com/v1", "https://tv-live.tradovateapi.com",
         "wss://live.tradovateapi.com/v1/websocket"),
    ],
)  # fmt: skip
def test_settings_environment_derives_every_host(
    environment: str, native: str, bridge: str, ws: str
) -> None:
    settings = load_settings(tradovate={"environment": environment})

    assert settings.tradovate.environment is Environment(environment)
    assert (settings.tradovate.native_url, settings.tradovate.bridge_url) == (native, bridge)
    assert settings.tradovate.ws_url == ws


def test_settings_simulator_url_overrides_and_derives_ws() -> None:
    settings = load_settings(tradovate={"native_url": "http://127.0.0.1:8765/v1/"})

    assert settings.tradovate.native_url == "http://127.0.0.1:8765/v1"
    assert settings.tradovate.ws_url == "ws://127.0.0.1:8765/v1/websocket"
    assert websocket_url("https://demo.tradovateapi.com") == (
        "wss://demo.tradovateapi.com/v1/websocket"
    )


@pytest.mark.parametrize(
    ("given", "used", "warned"),
    [
        ("https://demo.tradovateapi.com", "https://demo.tradovateapi.com/v1", True),
        ("https://live.tradovateapi.com/", "https://live.tradovateapi.com/v1", True),
        ("http://127.0.0.1:8765/v1/", "http://127.0.0.1:8765/v1", False),
        ("https://proxy.example/tradovate", "https://proxy.example/tradovate", False),
    ],
)
def test_settings_native_url_without_path_gets_v1_and_a_note(
    given: str, used: str, warned: bool
) -> None:
    settings = load_settings(tradovate={"native_url": given})

    assert settings.tradovate.native_url == used
    assert settings.tradovate.ws_url == websocket_url(used)
    assert bool(settings.notes) is warned
    if warned:
        assert "add it to silence this warning" in settings.notes[0]
        assert used in settings.notes[0]


@pytest.mark.parametrize(
    ("tradovate", "located"),
    [
        ({}, False),
        ({"environment": "live"}, True),
        ({"native_url": "http://127.0.0.1:1/v1"}, True),
        ({"bridge_url": "http://127.0.0.1:1"}, True),
    ],
)
def test_settings_located_only_when_environment_or_a_url_is_given(
    tradovate: dict[str, str], located: bool
) -> None:
    assert load_settings(tradovate=tradovate).tradovate.located is located


def test_settings_toml_then_env_then_conventional(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    toml = tmp_path / "custom.toml"
    toml.write_text(
        'data_dir = "from-toml"\n'
        '[tradovate]\nenvironment = "live"\nrequest_timeout_s = 3\n'
        '[[accounts]]\nname = "PAAPEX1361890000010"\ndialect = "tvbridge"\n'
        'bridge_id = "D200010"\n'
        '[redis]\nurl = "redis://toml-host:6379/0"\n',
        encoding="utf-8",
    )
    monkeypatch.setenv("TRADEBRIDGE_CONFIG", str(toml))
    monkeypatch.setenv("TRADEBRIDGE_TRADOVATE__REQUEST_TIMEOUT_S", "7")
    monkeypatch.setenv("REDIS_URL", "redis://env-host:6379/0")
    monkeypatch.setenv("DATABASE_URL", "postgresql://u:pw@db:5432/x")

    settings = load_settings()

    assert settings.data_dir == Path("from-toml")
    assert settings.tradovate.environment is Environment.LIVE
    assert settings.tradovate.request_timeout_s == 7
    assert settings.accounts[0].dialect is Dialect.TVBRIDGE
    assert settings.redis.url is not None
    assert settings.redis.url.get_secret_value() == "redis://env-host:6379/0"
    assert settings.database.url is not None
    assert settings.database.url.get_secret_value() == "postgresql://u:pw@db:5432/x"


def test_settings_prefixed_env_beats_conventional(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REDIS_URL", "redis://conventional:6379/0")
    monkeypatch.setenv("TRADEBRIDGE_REDIS__URL", "redis://prefixed:6379/0")

    settings = load_settings()

    assert settings.redis.url is not None
    assert settings.redis.url.get_secret_value() == "redis://prefixed:6379/0"


def test_settings_explicit_config_file_missing_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings(tmp_path / "nope.toml")


def test_settings_invalid_value_config_error_without_value(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("TRADEBRIDGE_TRADOVATE__REQUEST_TIMEOUT_S", "not-a-number-secret")

    with pytest.raises(ConfigError, match="request_timeout_s") as caught:
        load_settings()

    assert "not-a-number-secret" not in str(caught.value)


def test_settings_duplicate_accounts_refused() -> None:
    with pytest.raises(ConfigError, match="listed twice"):
        load_settings(accounts=[{"name": "A"}, {"name": "A"}])


def test_settings_redacted_masks_every_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TRADEBRIDGE_TOKENS__NATIVE__NAME", "trader")
    monkeypatch.setenv("TRADEBRIDGE_TOKENS__NATIVE__PASSWORD", "hunter2-secret")
    monkeypatch.setenv("TRADEBRIDGE_TOKENS__NATIVE__SEC", "api-sec-secret")
    monkeypatch.setenv("DATABASE_URL", "postgresql://u:db-pw-secret@db:5432/x")
    monkeypatch.setenv("TRADEBRIDGE_TRADOVATE__BRIDGE_URL", "https://user:url-pw-secret@h")

    settings = load_settings()
    text = json.dumps(settings.redacted())

    assert settings.tokens.native is not None
    assert settings.tokens.native.password.get_secret_value() == "hunter2-secret"
    for secret in ("hunter2-secret", "api-sec-secret", "db-pw-secret", "url-pw-secret"):
        assert secret not in text
        assert secret not in repr(settings)
    assert '"name": "trader"' in text


def test_settings_account_lookup_and_token_key() -> None:
    settings = load_settings(
        accounts=[{"name": "DEMO1"}, {"name": "DEMO2", "token_key": "token:shared"}],
        tokens={"key_template": "tv:{account_name}"},
    )

    assert settings.token_key("DEMO1") == "tv:DEMO1"
    assert settings.token_key("DEMO2") == "token:shared"
    with pytest.raises(ConfigError, match="DEMO1, DEMO2"):
        settings.account("DEMO3")


def test_device_id_generated_once_and_stable(tmp_path: Path) -> None:
    first = load_device_id(tmp_path / "data")
    second = load_device_id(tmp_path / "data")
    settings = Settings(data_dir=tmp_path / "data")

    assert first == second == settings.device_id()
    assert len(first) == 36
    assert load_device_id(tmp_path / "other") != first


def test_device_id_configured_override_wins(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, tradovate={"device_id": "fixed-device"})

    assert settings.device_id() == "fixed-device"
    assert not (tmp_path / "device_id").exists()


def test_settings_leg_time_in_force_defaults_to_entry_and_reads_any_case() -> None:
    assert load_settings().orders.leg_time_in_force == "entry"
    assert load_settings(orders={"leg_time_in_force": " GTC "}).orders.leg_time_in_force == "gtc"
    with pytest.raises(ConfigError, match="leg_time_in_force"):
        load_settings(orders={"leg_time_in_force": "week"})


def test_settings_roll_days_override_one_root_and_keep_the_others() -> None:
    settings = load_settings(contracts={"roll_days": {"mnq": 3, "CL": 0}})

    calendar = settings.contracts.calendar()

    assert (calendar.roll_days("MNQ"), calendar.roll_days("CL")) == (3, 0)
    assert calendar.roll_days("ES") == 8


@pytest.mark.parametrize(
    ("roll_days", "message"),
    [
        ({"MNQ1!": 3}, r"contracts\.roll_days: unknown root\(s\) MNQ1! \(known: ES, "),
        ({"XYZ": 3}, r"unknown root\(s\) XYZ"),
        ({"ES": -1}, r"ES = -1: roll days are calendar days before expiry, 0 .* to 90"),
        ({"GC": 91}, r"GC = 91: roll days"),
    ],
)
def test_settings_roll_days_unknown_root_or_days_out_of_range_refused(
    roll_days: dict[str, int], message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        load_settings(contracts={"roll_days": roll_days})


def test_settings_roll_days_from_toml(tmp_path: Path) -> None:
    toml = tmp_path / "tradebridge.toml"
    toml.write_text("[contracts]\nroll_days = { ES = 5 }\n", encoding="utf-8")

    assert load_settings(toml).contracts.calendar().roll_days("ES") == 5

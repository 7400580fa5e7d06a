"""Several Tradovate users: ``[[users]]``, their secrets (environment, secrets file), accounts."""

from __future__ import annotations

import os
import secrets
from pathlib import Path

import pytest

from tradebridge.config import (
    NativeCredentials,
    UserConfig,
    format_env_value,
    load_settings,
    read_env_file,
    user_variable,
)
from tradebridge.domain.enums import Dialect
from tradebridge.errors import ConfigError


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Run every test without tradebridge variables and away from any tradebridge.toml."""
    for name in list(os.environ):
        if name.startswith("TRADEBRIDGE_") or name in ("DATABASE_URL", "REDIS_URL"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)


def _write(path: Path, text: str, mode: int = 0o600) -> Path:
    path.write_text(text, encoding="utf-8")
    path.chmod(mode)
    return path


def _config(tmp_path: Path, text: str) -> Path:
    return _write(tmp_path / "tradebridge.toml", text, 0o644)


TWO_USERS = """
[[users]]
name = "demo"

[[users]]
name = "apex.trader-2"
dialect = "tvbridge"

[[accounts]]
name = "DEMO0000001"

[[accounts]]
name = "PAAPEX1361890000010"
dialect = "tvbridge"
bridge_id = "D200010"
"""


@pytest.mark.parametrize(
    ("user", "secret", "variable"),
    [
        ("demo", "PASSWORD", "TRADEBRIDGE_USER_DEMO_PASSWORD"),
        ("apex.trader-2", "PASSWORD", "TRADEBRIDGE_USER_APEX_TRADER_2_PASSWORD"),
        ("me@firm.com", "SEC", "TRADEBRIDGE_USER_ME_FIRM_COM_SEC"),
    ],
)
def test_user_variable_upper_cases_and_replaces_non_alphanumerics(
    user: str, secret: str, variable: str
) -> None:
    assert user_variable(user, secret) == variable


def test_users_secrets_file_beside_config_gives_each_user_its_password(tmp_path: Path) -> None:
    demo, apex, sec = (secrets.token_urlsafe(12) for _ in range(3))
    config = _config(tmp_path, TWO_USERS)
    _write(
        tmp_path / "tradebridge.env",
        f"TRADEBRIDGE_USER_DEMO_PASSWORD={format_env_value(demo)}\n"
        f"TRADEBRIDGE_USER_DEMO_SEC={format_env_value(sec)}\n"
        f"TRADEBRIDGE_USER_APEX_TRADER_2_PASSWORD={format_env_value(apex)}\n",
    )

    settings = load_settings(config)

    native, bridge = (settings.login_of(a) for a in settings.accounts)
    assert native is not None
    assert bridge is not None
    assert (native.name, bridge.name) == ("demo", "apex.trader-2")
    native_login, bridge_login = native.credentials(), bridge.credentials()
    assert native_login is not None
    assert bridge_login is not None
    assert native_login.password.get_secret_value() == demo
    assert isinstance(native_login, NativeCredentials)
    assert native_login.sec.get_secret_value() == sec
    assert bridge_login.password.get_secret_value() == apex


def test_users_environment_wins_over_secrets_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from_file, from_env = secrets.token_hex(8), secrets.token_hex(8)
    config = _config(tmp_path, '[[users]]\nname = "demo"\n')
    _write(tmp_path / "tradebridge.env", f"TRADEBRIDGE_USER_DEMO_PASSWORD={from_file}\n")
    monkeypatch.setenv("TRADEBRIDGE_USER_DEMO_PASSWORD", from_env)

    [user] = load_settings(config).users

    assert user.password is not None
    assert user.password.get_secret_value() == from_env


def test_users_password_env_names_its_variable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    password = secrets.token_hex(8)
    config = _config(tmp_path, '[[users]]\nname = "demo"\npassword_env = "DEMO_PW"\n')
    monkeypatch.setenv("DEMO_PW", password)
    monkeypatch.setenv("TRADEBRIDGE_USER_DEMO_PASSWORD", "not-this-one")

    [user] = load_settings(config).users

    assert user.password is not None
    assert user.password.get_secret_value() == password


def test_users_without_password_have_no_credentials(tmp_path: Path) -> None:
    settings = load_settings(_config(tmp_path, TWO_USERS))

    assert [u.credentials() for u in settings.users] == [None, None]
    assert settings.user_of(settings.accounts[0]) == "demo"


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o660, 0o610])
def test_secrets_file_open_to_group_or_others_refused_with_chmod_fix(
    tmp_path: Path, mode: int
) -> None:
    config = _config(tmp_path, "")
    env_file = _write(tmp_path / "tradebridge.env", "TRADEBRIDGE_USER_DEMO_PASSWORD=x\n", mode)

    with pytest.raises(ConfigError, match=rf"chmod 600 {env_file}"):
        load_settings(config)


def test_secrets_file_from_env_variable_and_its_settings_apply(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    secret = secrets.token_hex(16)
    env_file = _write(
        tmp_path / "elsewhere.env",
        "# systemd EnvironmentFile= and compose env_file: read the same lines\n"
        "\n"
        "REDIS_URL=redis://127.0.0.1:6390/0\n"
        f"TRADEBRIDGE_WEBHOOK__SECRET='{secret}'\n",
    )
    monkeypatch.setenv("TRADEBRIDGE_ENV_FILE", str(env_file))

    settings = load_settings()

    assert settings.redis.url is not None
    assert settings.redis.url.get_secret_value() == "redis://127.0.0.1:6390/0"
    assert settings.webhook.secret is not None
    assert settings.webhook.secret.get_secret_value() == secret


def test_secrets_file_path_in_toml_is_relative_to_it(tmp_path: Path) -> None:
    (tmp_path / "conf").mkdir()
    config = _write(tmp_path / "conf" / "tb.toml", 'env_file = "secrets/tb.env"\n', 0o644)
    (tmp_path / "conf" / "secrets").mkdir()
    _write(tmp_path / "conf" / "secrets" / "tb.env", "REDIS_URL=redis://h:1/0\n")

    settings = load_settings(config)

    assert settings.redis.url is not None
    assert settings.redis.url.get_secret_value() == "redis://h:1/0"


def test_secrets_file_bad_line_names_the_line_not_its_content(tmp_path: Path) -> None:
    secret = secrets.token_hex(8)
    env_file = _write(tmp_path / "tradebridge.env", f"OK=1\n{secret}\n")

    with pytest.raises(ConfigError, match="line 2: expected KEY=VALUE") as caught:
        read_env_file(env_file)

    assert secret not in str(caught.value)


@pytest.mark.parametrize(
    "value",
    [
        "plain",
        "with spaces and # hash",
        "dollar$HOME and `tick`",
        "back\\slash\\",
        'it\'s "quoted" \\ $x',
        "=starts=with=equals",
    ],
)
def test_secrets_file_values_survive_format_and_read(tmp_path: Path, value: str) -> None:
    env_file = _write(tmp_path / "tradebridge.env", f"SECRET={format_env_value(value)}\n")

    assert read_env_file(env_file) == {"SECRET": value}


@pytest.mark.parametrize(
    ("line", "value"),
    [
        ("A=unquoted value", "unquoted value"),
        ("A='single \\n verbatim'", "single \\n verbatim"),
        ('A="double \\" escaped"', 'double " escaped'),
        ("export A=x", "x"),
        ("A=", ""),
    ],
)
def test_secrets_file_reads_systemd_quoting(tmp_path: Path, line: str, value: str) -> None:
    env_file = _write(tmp_path / "tradebridge.env", line + "\n")

    assert read_env_file(env_file) == {"A": value}


def test_account_without_user_belongs_to_the_only_user_of_its_dialect(tmp_path: Path) -> None:
    settings = load_settings(_config(tmp_path, TWO_USERS))

    assert [settings.user_of(a) for a in settings.accounts] == ["demo", "apex.trader-2"]


def test_account_without_user_among_two_users_of_its_dialect_refused_naming_all(
    tmp_path: Path,
) -> None:
    config = _config(
        tmp_path,
        '[[users]]\nname = "demo"\n[[users]]\nname = "apex"\n[[accounts]]\nname = "DEMO0000001"\n',
    )

    with pytest.raises(ConfigError, match=r"DEMO0000001 names no user.*\(demo, apex\)"):
        load_settings(config)


def test_account_user_configured_for_other_dialect_refused(tmp_path: Path) -> None:
    config = _config(
        tmp_path,
        '[[users]]\nname = "apex"\ndialect = "tvbridge"\n'
        '[[accounts]]\nname = "PAAPEX1361890000010"\nuser = "apex"\n',
    )

    with pytest.raises(ConfigError, match=r"PAAPEX1361890000010 \(native\) names user apex"):
        load_settings(config)


def test_account_user_not_configured_reads_redis(tmp_path: Path) -> None:
    config = _config(
        tmp_path, '[[users]]\nname = "demo"\n[[accounts]]\nname = "X1"\nuser = "someone"\n'
    )

    settings = load_settings(config)

    assert settings.user_of(settings.accounts[0]) == "someone"
    assert settings.login_of(settings.accounts[0]) is None


@pytest.mark.parametrize("section", ["native", "bridge"])
def test_user_in_users_and_tokens_section_refused_naming_it(tmp_path: Path, section: str) -> None:
    login = "name" if section == "native" else "login"
    config = _config(
        tmp_path,
        f'[[users]]\nname = "demo"\n[tokens.{section}]\n{login} = "demo"\npassword = "x"\n',
    )

    with pytest.raises(ConfigError, match=rf"user demo is configured twice.*tokens\.{section}"):
        load_settings(config)


def test_tokens_sections_are_users_of_their_dialect(tmp_path: Path) -> None:
    config = _config(
        tmp_path,
        '[tokens.native]\nname = "demo"\npassword = "a"\ncid = 7\n'
        '[tokens.bridge]\nlogin = "apex"\npassword = "b"\n'
        '[[accounts]]\nname = "DEMO0000001"\n'
        '[[accounts]]\nname = "PAAPEX1361890000010"\ndialect = "tvbridge"\n',
    )

    settings = load_settings(config)

    assert [(u.name, u.dialect, u.cid) for u in settings.configured_users()] == [
        ("demo", Dialect.NATIVE, 7),
        ("apex", Dialect.TVBRIDGE, 0),
    ]
    assert [settings.user_of(a) for a in settings.accounts] == ["demo", "apex"]


def test_user_with_fields_of_other_dialect_refused() -> None:
    with pytest.raises(ConfigError, match="cid applies only to native users"):
        load_settings(users=[{"name": "apex", "dialect": "tvbridge", "cid": 5}])


def test_users_reading_the_same_variable_refused() -> None:
    with pytest.raises(ConfigError, match=r"users a\.b and a_b both read"):
        load_settings(users=[{"name": "a.b"}, {"name": "a_b"}])


def test_same_login_in_both_dialects_is_allowed_one_variable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("TRADEBRIDGE_USER_DEMO_PASSWORD", "pw")

    settings = load_settings(
        users=[{"name": "demo"}, {"name": "demo", "dialect": "tvbridge"}],
        accounts=[{"name": "A"}, {"name": "B", "dialect": "tvbridge"}],
    )

    assert [settings.login_of(a) for a in settings.accounts] == settings.users


def test_settings_repr_and_redacted_never_show_user_secrets(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    password, sec = secrets.token_hex(8), secrets.token_hex(8)
    monkeypatch.setenv("TRADEBRIDGE_USER_DEMO_PASSWORD", password)
    monkeypatch.setenv("TRADEBRIDGE_USER_DEMO_SEC", sec)

    settings = load_settings(users=[{"name": "demo"}])

    shown = repr(settings) + str(settings.redacted()) + repr(settings.users)
    assert password not in shown
    assert sec not in shown


def test_user_literal_password_still_accepted() -> None:
    user = UserConfig(name="demo", password="literal")

    login = user.credentials()

    assert login is not None
    assert login.password.get_secret_value() == "literal"

"""``tradebridge config check | show | schema``, the example file and docs/configuration.md."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from tradebridge.cli._provenance import Origin, Provenance
from tradebridge.cli.main import app
from tradebridge.config import load_settings
from tradebridge.domain.enums import Dialect, Environment

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "tradebridge.example.toml"
REFERENCE = ROOT / "docs" / "configuration.md"
# Fake secrets, distinctive so that a test can prove none of them is ever printed.
SECRETS = {
    "TRADEBRIDGE_TOKENS__NATIVE__PASSWORD": "native-pw-FAKE-1",
    "TRADEBRIDGE_TOKENS__NATIVE__SEC": "native-sec-FAKE-2",
    "TRADEBRIDGE_TOKENS__BRIDGE__PASSWORD": "bridge-pw-FAKE-3",
    "TRADEBRIDGE_WEBHOOK__SECRET": "webhook-secret-FAKE-4",
}
EXAMPLE_SECRETS = {
    "TRADEBRIDGE_USER_ALICE_PASSWORD": "alice-pw-FAKE-5",
    "TRADEBRIDGE_USER_ALICE_SEC": "alice-sec-FAKE-6",
    "TRADEBRIDGE_USER_BOB_PASSWORD": "bob-pw-FAKE-7",
    "TRADEBRIDGE_WEBHOOK__SECRET": SECRETS["TRADEBRIDGE_WEBHOOK__SECRET"],
}


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Run every test without tradebridge variables and away from any tradebridge.toml."""
    for name in list(os.environ):
        if name.startswith("TRADEBRIDGE_") or name in ("DATABASE_URL", "REDIS_URL"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)


def _secrets(monkeypatch: pytest.MonkeyPatch, *names: str) -> None:
    for name in names or tuple(SECRETS):
        monkeypatch.setenv(name, SECRETS[name])


def _config(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "tradebridge.toml"
    path.write_text(text, encoding="utf-8")
    return path


def _run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, ["config", *args])
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.output


def _no_secret_in(output: str) -> None:
    for secret in SECRETS.values():
        assert secret not in output
    assert "db-pw-FAKE" not in output


# The risk rails a live account must have defined (docs/risk.md).
_RAILS = '[risk]\nallowed_roots = ["MNQ"]\ndaily_loss_limit = 1000\ntrailing_drawdown = "off"\n'
_TWO_ACCOUNTS = """
[[accounts]]
name = "DEMO1"
user = "alice"

[[accounts]]
name = "BRIDGE1"
dialect = "tvbridge"
user = "bob"

[tokens.native]
name = "alice"
cid = 7

[tokens.bridge]
login = "bob"
"""


# --- the example ----------------------------------------------------------------------------


def _example_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in EXAMPLE_SECRETS.items():
        monkeypatch.setenv(name, value)


def test_example_config_loads_demo_with_one_native_and_one_bridge_account(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _example_secrets(monkeypatch)

    settings = load_settings(EXAMPLE)

    assert settings.tradovate.environment is Environment.DEMO
    assert [a.dialect for a in settings.accounts] == [Dialect.NATIVE, Dialect.TVBRIDGE]
    logins = {a.name: settings.login_of(a) for a in settings.accounts}
    alice, bob = logins["DEMO1234567"], logins["APEX1234560000001"]
    assert alice is not None
    assert alice.name == "alice"
    assert alice.password is not None
    assert alice.password.get_secret_value() == EXAMPLE_SECRETS["TRADEBRIDGE_USER_ALICE_PASSWORD"]
    assert bob is not None
    assert bob.name == "bob"
    assert bob.dialect is Dialect.TVBRIDGE


def test_example_config_holds_no_secret_only_the_variables_naming_them() -> None:
    text = EXAMPLE.read_text(encoding="utf-8")

    assert "password =" not in text
    assert "sec =" not in text
    assert "secret =" not in text
    for variable in EXAMPLE_SECRETS:
        assert variable in text


def test_example_config_passes_check_without_warnings(monkeypatch: pytest.MonkeyPatch) -> None:
    _example_secrets(monkeypatch)

    code, output = _run("check", "--config", str(EXAMPLE))

    assert code == 0, output
    assert output.startswith("Settings OK")
    assert "warning" not in output
    assert "tradebridge logs in as alice ([[users]])" in output
    for value in EXAMPLE_SECRETS.values():
        assert value not in output


# --- check ----------------------------------------------------------------------------------


def test_config_check_good_settings_one_paragraph_summary(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    _secrets(monkeypatch)
    monkeypatch.setenv("DATABASE_URL", "postgresql://tb:db-pw-FAKE@db.example:5432/ledger")
    path = _config(tmp_path, _TWO_ACCOUNTS)

    code, output = _run("check", "--config", str(path))

    assert code == 0, output
    assert output.count("\n") == 1  # one paragraph
    for part in (
        f"settings file {path.resolve()}",
        "Environment: demo.",
        (
            "Dialects: native https://demo.tradovateapi.com/v1, tvbridge "
            "https://tv-demo.tradovateapi.com."
        ),
        "DEMO1 (native, user alice), BRIDGE1 (tvbridge, user bob)",
        "DEMO1: tradebridge logs in as alice ([tokens.native])",
        "BRIDGE1: tradebridge logs in as bob ([tokens.bridge])",
        "Database: postgresql://tb:***@db.example:5432/ledger (from DATABASE_URL).",
        "Redis: embedded Redis under .tradebridge.",
        "Webhook: on, secret set.",
    ):
        assert part in output
    _no_secret_in(output)


def test_config_check_every_problem_named_with_its_fix_never_its_value(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    _secrets(monkeypatch, "TRADEBRIDGE_WEBHOOK__SECRET")
    monkeypatch.setenv("TRADEBRIDGE_SERVE__PORT", "port-FAKE-secret")
    path = _config(
        tmp_path,
        "[tradovate]\nrequest_timout_s = 3\n"
        '[[accounts]]\nname = "A1"\ndialect = "fix"\n'
        "[tokens.native]\ncid = 7\n",
    )

    code, output = _run("check", "--config", str(path))

    assert code == 2
    assert output.startswith("5 problems in the settings:")
    expected = {
        "tradovate.request_timout_s": f"remove it from the settings file {path.resolve()}",
        "accounts[0].dialect": f"change it in the settings file {path.resolve()}",
        "tokens.native.name": "set name in [tokens.native] of the settings file, or "
        "TRADEBRIDGE_TOKENS__NATIVE__NAME in the environment",
        "tokens.native.password": "set TRADEBRIDGE_TOKENS__NATIVE__PASSWORD in the environment "
        "(a secret: never in the settings file)",
        "serve.port": "change it in the environment variable TRADEBRIDGE_SERVE__PORT",
    }
    lines = output.splitlines()
    for setting, fix in expected.items():
        index = next(i for i, line in enumerate(lines) if line.startswith(f"error: {setting}:"))
        assert lines[index + 1].startswith(f"  fix: {fix}"), (setting, lines[index + 1])
    assert "port-FAKE-secret" not in output


@pytest.mark.parametrize(
    ("confirm", "code", "expected"),
    [
        ("", 2, ("error: tradovate.confirm_live is not true but tradovate.environment is "
                 '"live": orders would trade real money')),
        ("confirm_live = false\n", 2, "TRADEBRIDGE_TRADOVATE__CONFIRM_LIVE=true"),
        ("confirm_live = true\n" + _RAILS, 0, ("Environment: LIVE, orders trade real money "
                                                "(confirmed by tradovate.confirm_live).")),
        ('confirm_live = true\n[risk]\nallowed_roots = ["MNQ"]\n', 2,
         ("live accounts need every risk rail defined, and these are not: DEMO1: "
          "daily_loss_limit, trailing_drawdown; BRIDGE1: daily_loss_limit, trailing_drawdown")),
    ],
)  # fmt: skip
def test_config_check_live_needs_confirmation(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, confirm: str, code: int, expected: str
) -> None:
    _secrets(monkeypatch)
    path = _config(tmp_path, f'[tradovate]\nenvironment = "live"\n{confirm}{_TWO_ACCOUNTS}')

    found, output = _run("check", "--config", str(path))

    assert (found, expected in output) == (code, True), output


def test_config_check_live_unconfirmed_reported_beside_other_errors(tmp_path: Path) -> None:
    path = _config(
        tmp_path,
        '[tradovate]\nenvironment = "live"\n'
        '[[accounts]]\nname = "A1"\n[[accounts]]\nname = "A2"\n[[accounts]]\nname = "A1"\n',
    )

    code, output = _run("check", "--config", str(path))

    assert code == 2
    assert output.startswith("2 problems in the settings:")
    assert "error: accounts[2].name: account A1 is listed twice (accounts[0] and accounts[2])" in (
        output
    )
    assert "error: tradovate.confirm_live is not true" in output


def test_config_check_account_with_no_way_to_a_token_warns_and_passes(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    _secrets(monkeypatch, "TRADEBRIDGE_WEBHOOK__SECRET")
    path = _config(tmp_path, '[[accounts]]\nname = "BRIDGE1"\ndialect = "tvbridge"\n')

    code, output = _run("check", "--config", str(path))
    monkeypatch.setenv("REDIS_URL", "redis://127.0.0.1:6379/0")
    code_with_redis, output_with_redis = _run("check", "--config", str(path))

    assert code == 0, output
    assert (
        "warning: accounts[0]: BRIDGE1 (tvbridge) has no way to get a token: no configured "
        "Tradovate user ([[users]]) logs in for it, and no redis.url" in output
    )
    assert "fix: add a [[users]] entry for its user" in output
    assert code_with_redis == 0
    assert "warning" not in output_with_redis
    assert "BRIDGE1: read from Redis under token:BRIDGE1" in output_with_redis


@pytest.mark.parametrize(
    ("toml", "warning"),
    [
        ('native_url = "https://demo.tradovateapi.com"',
         ("tradovate.native_url https://demo.tradovateapi.com has no path: using "
          "https://demo.tradovateapi.com/v1")),
        ('native_url = "https://proxy.example/tradovate"',
         "tradovate.native_url: https://proxy.example/tradovate does not end in /v1"),
        ('bridge_url = "https://tv-demo.tradovateapi.com/v1"',
         "tradovate.bridge_url: https://tv-demo.tradovateapi.com/v1 ends in /v1"),
        ('native_url = "https://live.tradovateapi.com/v1"',
         ("tradovate.native_url: https://live.tradovateapi.com/v1 is a live host but "
          "tradovate.environment is demo")),
    ],
)  # fmt: skip
def test_config_check_wrong_hosts_warn(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, toml: str, warning: str
) -> None:
    _secrets(monkeypatch)
    path = _config(tmp_path, f"[tradovate]\n{toml}\n{_TWO_ACCOUNTS}")

    code, output = _run("check", "--config", str(path))

    assert code == 0, output
    assert f"warning: {warning}" in output


def test_config_check_webhook_without_secret_is_an_error(tmp_path: Path) -> None:
    path = _config(tmp_path, '[[accounts]]\nname = "A1"\n')

    code, output = _run("check", "--config", str(path))

    assert code == 2
    assert "error: webhook.secret is not set" in output


@pytest.mark.parametrize(
    ("setup", "expected"),
    [
        ({"file": "[tradovate\n"},
         ("error: tradebridge.toml: not valid TOML: Expected ']' at the end of a table "
          "declaration (at line 1, column 11)")),
        ({"env": ("TRADEBRIDGE_ACCOUNTS", "not-json-FAKE")},
         "error: TRADEBRIDGE_ACCOUNTS is not valid JSON"),
        ({"env": ("TRADEBRIDGE_CONFIG", "missing.toml")},
         "error: --config: configuration file missing.toml does not exist"),
    ],
)  # fmt: skip
def test_config_check_unreadable_settings_one_clear_error(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, setup: dict[str, Any], expected: str
) -> None:
    if "file" in setup:
        _config(tmp_path, setup["file"])
    if "env" in setup:
        monkeypatch.setenv(*setup["env"])

    code, output = _run("check")

    assert code == 2
    assert expected in output
    assert "not-json-FAKE" not in output
    assert "Traceback" not in output


# --- show -----------------------------------------------------------------------------------


def _show(tmp_path: Path) -> tuple[Path, dict[str, dict[str, Any]]]:
    path = _config(
        tmp_path,
        '[tradovate]\nenvironment = "live"\nconfirm_live = true\nrequest_timeout_s = 3\n'
        f"{_RAILS}{_TWO_ACCOUNTS}"
        '[webhook.symbol_map]\nNQ = "MNQ"\n',
    )
    code, output = _run("show", "--config", str(path), "--json")
    assert code == 0, output
    _no_secret_in(output)
    document = json.loads(output)
    assert document["config_file"] == str(path.resolve())
    return path, {e["setting"]: e for e in document["settings"]}


def test_config_show_every_value_with_where_it_came_from(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    _secrets(monkeypatch)
    monkeypatch.setenv("TRADEBRIDGE_TRADOVATE__ORDERS_PER_MINUTE", "7")
    monkeypatch.setenv("DATABASE_URL", "postgresql://tb:db-pw-FAKE@db.example:5432/ledger")
    monkeypatch.setenv("REDIS_URL", "redis://conventional:6379/0")
    monkeypatch.setenv("TRADEBRIDGE_REDIS__URL", "redis://:db-pw-FAKE@prefixed:6379/0")

    path, found = _show(tmp_path)
    toml = {"source": "file", "from": str(path.resolve())}

    assert found["data_dir"] == {
        "setting": "data_dir",
        "value": ".tradebridge",
        "source": "default",
    }
    expected = {
        "tradovate.environment": ("live", toml),
        "tradovate.request_timeout_s": (3.0, toml),
        "tradovate.orders_per_minute": (
            7, {"source": "env", "from": "TRADEBRIDGE_TRADOVATE__ORDERS_PER_MINUTE"}),
        "tradovate.requests_per_second": (50, {"source": "default"}),
        "tradovate.native_url": ("https://live.tradovateapi.com/v1", {"source": "derived"}),
        "accounts[0].name": ("DEMO1", toml),
        "accounts[0].dialect": ("native", {"source": "default"}),
        "accounts[1].dialect": ("tvbridge", toml),
        "tokens.native.name": ("alice", toml),
        "tokens.native.password": (
            "**********", {"source": "env", "from": "TRADEBRIDGE_TOKENS__NATIVE__PASSWORD"}),
        "tokens.native.app_id": ("tradebridge", {"source": "default"}),
        "database.url": ("postgresql://tb:***@db.example:5432/ledger",
                         {"source": "env", "from": "DATABASE_URL"}),
        "redis.url": (
            "redis://:***@prefixed:6379/0", {"source": "env", "from": "TRADEBRIDGE_REDIS__URL"}),
        "webhook.symbol_map.NQ": ("MNQ", toml),
        "webhook.allowed_ips": (
            ["52.89.214.238", "34.212.75.30", "54.218.53.128", "52.32.178.7"],
            {"source": "default"}),
    }  # fmt: skip
    for setting, (value, origin) in expected.items():
        assert found[setting] == {"setting": setting, "value": value, **origin}


def test_config_show_a_list_comes_whole_from_the_strongest_source(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    _secrets(monkeypatch)
    monkeypatch.setenv("TRADEBRIDGE_ACCOUNTS", '[{"name": "ENV1", "dialect": "tvbridge"}]')

    _path, found = _show(tmp_path)
    env = {"source": "env", "from": "TRADEBRIDGE_ACCOUNTS"}

    assert found["accounts[0].name"] == {"setting": "accounts[0].name", "value": "ENV1", **env}
    assert found["accounts[0].dialect"]["source"] == "env"
    assert found["accounts[0].user"] == {
        "setting": "accounts[0].user", "value": None, "source": "default"
    }  # fmt: skip
    assert "accounts[1].name" not in found


def test_config_show_text_masks_secrets_and_names_each_source(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    _secrets(monkeypatch)
    monkeypatch.setenv("DATABASE_URL", "postgresql://tb:db-pw-FAKE@db.example:5432/ledger")
    path = _config(tmp_path, _TWO_ACCOUNTS)

    code, output = _run("show", "--config", str(path))

    assert code == 0, output
    lines = {line.split()[0]: line for line in output.splitlines()[1:]}
    assert output.splitlines()[0] == f"# settings file: {path.resolve()}"
    assert lines["tokens.native.password"].endswith("env TRADEBRIDGE_TOKENS__NATIVE__PASSWORD")
    assert '"postgresql://tb:***@db.example:5432/ledger"' in lines["database.url"]
    assert lines["database.url"].endswith("env DATABASE_URL")
    assert lines["accounts[1].user"].endswith(f"file {path.resolve()}")
    assert lines["tradovate.confirm_live"].split()[1:] == ["false", "default"]
    _no_secret_in(output)


def test_config_show_invalid_settings_exit_2_with_the_problems(tmp_path: Path) -> None:
    path = _config(tmp_path, "[serve]\nport = -1\n")

    code, output = _run("show", "--config", str(path))

    assert code == 2
    assert "error: serve.port: Input should be greater than or equal to 0" in output


def test_provenance_keyword_arguments_are_the_strongest_source(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("TRADEBRIDGE_TRADOVATE__REQUEST_TIMEOUT_S", "9")

    provenance = Provenance(None, tradovate={"request_timeout_s": 2})

    assert provenance.origin(("tradovate", "request_timeout_s")) == Origin("argument")
    assert provenance.origin(("tradovate", "orders_per_minute")) is None


# --- schema and docs/configuration.md --------------------------------------------------------


def test_config_schema_json_is_the_settings_models() -> None:
    code, output = _run("schema")

    schema = json.loads(output)
    assert code == 0
    tradovate = schema["$defs"]["TradovateConfig"]["properties"]
    assert tradovate["confirm_live"]["default"] is False
    assert "deliberate" in tradovate["confirm_live"]["description"]


def test_configuration_md_matches_the_settings_model() -> None:
    code, generated = _run("schema", "--format", "markdown")

    assert code == 0
    assert generated == REFERENCE.read_text(encoding="utf-8"), (
        "docs/configuration.md is out of date: run "
        "`tradebridge config schema --format markdown > docs/configuration.md`"
    )


def test_configuration_md_every_setting_has_a_type_default_and_description() -> None:
    _code, generated = _run("schema", "--format", "markdown")
    rows = [line for line in generated.splitlines() if line.startswith("| `")]
    cells = [[c.strip() for c in row.strip("|").split(" | ")] for row in rows]

    assert len(rows) > 100
    assert [row[0] for row in cells if len(row) != 5 or not all(row)] == []
    for name, variable in (
        ("`confirm_live`", "`TRADEBRIDGE_TRADOVATE__CONFIRM_LIVE`"),
        ("`url`", "`TRADEBRIDGE_DATABASE__URL`, `DATABASE_URL`"),
    ):
        assert any(row[0] == name and row[3] == variable for row in cells)


@pytest.mark.parametrize("command", [["serve", "--port", "0"], ["db", "migrate"]])
def test_commands_broken_settings_file_one_line_exit_2(tmp_path: Path, command: list[str]) -> None:
    _config(tmp_path, "[tradovate\n")

    result = CliRunner().invoke(app, command)

    assert result.exit_code == 2, result.output
    assert result.output.startswith("error: the settings file is not valid TOML: Expected ']'")
    assert "config check" in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)

"""deploy/ holds together with the code it runs, checked statically (issue 11, section C).

No Docker and no systemd: the compose file is parsed with PyYAML, the units with a small
parser of systemd's unit syntax, the Dockerfile line by line. Then everything they ask of
tradebridge is held against the real thing:

- every ``tradebridge ...`` command line (``ExecStart=``, compose ``command:`` under the
  image's ``ENTRYPOINT``) names a command of the typer app (``tradebridge.cli.main.app``, as
  click sees it) and only options that command has, with values its options accept;
- every ``TRADEBRIDGE_*`` variable they set (units, compose, Dockerfile, the example secrets
  file) is a setting of ``Settings`` (sections joined by ``__``), or a variable the code reads
  by name (``TRADEBRIDGE_CONFIG``), or a user's password / API secret;
- the settings they set load, and the ports agree with them: the healthcheck asks the port
  the process listens on, a published port is the one it listens on, on a non-loopback host;
- the healthchecks ask ``/healthz``, a route of the HTTP server; every ``depends_on``,
  ``Requires=``, ``After=`` and ``Wants=`` names a service or unit that exists;
- stop timeouts are longer than the settings' shutdown grace, the units are hardened, and the
  Dockerfile's ``COPY`` sources exist.

The checker is tested too: a renamed command, option or setting must be reported.
"""

from __future__ import annotations

import ipaddress
import os
import re
import shlex
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import UnionType
from typing import Any, Union, get_args, get_origin
from urllib.parse import urlsplit

import pytest
import typer
import yaml
from pydantic import BaseModel

from tradebridge.cli.main import app
from tradebridge.config import (
    ENV_FILE_NAME,
    Settings,
    load_settings,
    read_env_file,
    user_variable,
)
from tradebridge.runtime.health import build_ops_router

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
SYSTEMD = DEPLOY / "systemd"
COMPOSE = DEPLOY / "compose.yaml"
DOCKERFILE = DEPLOY / "Dockerfile"
ENV_EXAMPLE = DEPLOY / "tradebridge.env.example"
SOURCE = ROOT / "src" / "tradebridge"

UNITS = {
    "tradebridge-migrate.service",
    "tradebridge-intake.service",
    "tradebridge-worker@.service",
    "tradebridge-tokens.service",
    "tradebridge.target",
}
SERVICES = {"postgres", "redis", "migrate", "intake", "worker", "tokens"}
# The units' and services' roles: what each must run.
UNIT_COMMANDS = {
    "tradebridge-migrate.service": ("db", "migrate"),
    "tradebridge-intake.service": ("serve",),
    "tradebridge-worker@.service": ("serve",),
    "tradebridge-tokens.service": ("tokens", "serve"),
}
SERVICE_COMMANDS = {
    "migrate": ("db", "migrate"),
    "intake": ("serve",),
    "worker": ("serve",),
    "tokens": ("tokens", "serve"),
}
LOOPBACK = "127.0.0.1"
# systemd specifiers, filled in at start: a sample value for the command to parse.
SPECIFIERS = {"%i": "8081", "%I": "8081"}


# --- the CLI as click sees it ---------------------------------------------------------------


@dataclass
class Invocation:
    """One ``tradebridge ...`` command line, resolved against the app."""

    where: str
    path: tuple[str, ...] = ()
    options: dict[str, str | None] = field(default_factory=dict)  # parameter name -> value
    errors: list[str] = field(default_factory=list)


def _subcommands(command: Any) -> dict[str, Any]:
    # typer >= 0.20 vendors click: test for a group by its interface, not click's class.
    return dict(getattr(command, "commands", None) or {})


def resolve(argv: list[str], where: str) -> Invocation:
    """Resolve ``argv`` (without the program) to a command and its options; collect errors."""
    found = Invocation(where)
    command: Any = typer.main.get_command(app)
    args = list(argv)
    while args and not args[0].startswith("-") and _subcommands(command):
        name = args.pop(0)
        sub = _subcommands(command).get(name)
        if sub is None:
            known = ", ".join(sorted(_subcommands(command)))
            found.errors.append(
                f"{where}: `tradebridge {' '.join(found.path)} {name}`: no such command "
                f"(commands here: {known})"
            )
            return found
        found.path += (name,)
        command = sub
    if _subcommands(command) and not getattr(command, "invoke_without_command", False):
        found.errors.append(f"{where}: `tradebridge {' '.join(found.path)}` is a group")
        return found
    options = {opt: param for param in command.params for opt in param.opts}
    options |= {opt: param for param in command.params for opt in param.secondary_opts}
    given = list(args)
    while args:
        arg = args.pop(0)
        if not arg.startswith("-"):
            found.errors.append(f"{where}: unexpected argument {arg!r} to {found.path}")
            continue
        name, equals, inline = arg.partition("=")
        param = options.get(name)
        if param is None:
            found.errors.append(
                f"{where}: `tradebridge {' '.join(found.path)}` has no option {name} "
                f"(its options: {', '.join(sorted(options))})"
            )
            return found
        value = None if param.is_flag else inline if equals else args.pop(0) if args else None
        found.options[param.name] = value
    # Then as the command itself parses them (types, values), a specifier filled in.
    try:
        name = found.path[-1] if found.path else "tradebridge"
        command.make_context(name, [SPECIFIERS.get(a, a) for a in given])
    except Exception as e:  # noqa: BLE001 - click's own refusal, reported
        found.errors.append(f"{where}: `tradebridge {' '.join([*found.path, *given])}`: {e}")
    return found


# --- the settings ---------------------------------------------------------------------------


def _model_of(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    if get_origin(annotation) in (Union, UnionType):
        models = [m for a in get_args(annotation) if (m := _model_of(a)) is not None]
        return models[0] if len(models) == 1 else None
    return None


def setting_of(variable: str) -> str | None:
    """Return the dotted setting a ``TRADEBRIDGE_`` variable sets, or None if none."""
    prefix = str(Settings.model_config.get("env_prefix", ""))
    delimiter = str(Settings.model_config.get("env_nested_delimiter", ""))
    if not variable.upper().startswith(prefix.upper()):
        return None
    model: type[BaseModel] | None = Settings
    path: list[str] = []
    for part in variable[len(prefix) :].split(delimiter):
        if model is None:
            return None  # a path below a leaf
        fields = {name.lower(): info for name, info in model.model_fields.items()}
        info = fields.get(part.lower())
        if info is None:
            return None
        path.append(part.lower())
        model = _model_of(info.annotation)
    return ".".join(path)


def _read_by_name(variable: str) -> bool:
    """Return whether the code reads ``variable`` by name, not through Settings (a literal)."""
    quoted = re.compile(rf"[\"']{re.escape(variable)}[\"']")
    return any(quoted.search(path.read_text(encoding="utf-8")) for path in SOURCE.rglob("*.py"))


_USER_SECRET = re.compile(
    re.escape(user_variable("X", "PASSWORD"))
    .replace("X", "[A-Z0-9_]+")
    .replace("PASSWORD", "(PASSWORD|SEC)")
)


def variable_errors(variables: dict[str, str], where: str) -> list[str]:
    """Return the ``TRADEBRIDGE_*`` variables of ``variables`` that tradebridge never reads."""
    errors = []
    for name in variables:
        if not name.upper().startswith("TRADEBRIDGE_"):
            continue
        if setting_of(name) or _USER_SECRET.fullmatch(name) or _read_by_name(name):
            continue
        errors.append(f"{where}: {name} is no setting (docs/configuration.md) and nothing reads it")
    return errors


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> pytest.MonkeyPatch:
    """No settings from the developer's environment; an empty settings file."""
    for name in list(os.environ):
        if name.upper().startswith("TRADEBRIDGE_") or name in {"DATABASE_URL", "REDIS_URL"}:
            monkeypatch.delenv(name)
    monkeypatch.setenv("TRADEBRIDGE_CONFIG", str(tmp_path / "tradebridge.toml"))
    return monkeypatch


def effective(env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Settings:
    """Return the settings a process with ``env`` (settings variables only) would load."""
    with monkeypatch.context() as scoped:
        for name, value in env.items():
            if setting_of(name):
                scoped.setenv(name, value)
        return load_settings()


# --- systemd --------------------------------------------------------------------------------

Unit = dict[str, list[tuple[str, str]]]


def parse_unit(path: Path) -> Unit:
    """Parse a unit file: sections of (key, value) in order, repeats kept, continuations joined."""
    sections: Unit = {}
    current: list[tuple[str, str]] | None = None
    pending = ""
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = pending + raw.strip()
        pending = ""
        if not line or line.startswith(("#", ";")):
            continue
        if line.endswith("\\"):
            pending = line[:-1] + " "
            continue
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], [])
            continue
        assert current is not None, f"{path.name}: {line!r} before any section"
        key, equals, value = line.partition("=")
        assert equals, f"{path.name}: {line!r} is not Key=Value"
        current.append((key.strip(), value.strip()))
    return sections


def values(unit: Unit, section: str, key: str) -> list[str]:
    return [v for k, v in unit.get(section, []) if k == key]


def one(unit: Unit, section: str, key: str) -> str:
    found = values(unit, section, key)
    assert len(found) == 1, f"{section}.{key}: {found}"
    return found[0]


def unit_environment(unit: Unit) -> dict[str, str]:
    env: dict[str, str] = {}
    for assignment in values(unit, "Service", "Environment"):
        for word in shlex.split(assignment):
            name, _, value = word.partition("=")
            env[name] = value
    return env


def exec_argv(line: str) -> list[str]:
    """Return the argv of an ``Exec*=`` line, without systemd's prefixes (``-``, ``+``, ...)."""
    return shlex.split(line.lstrip("-@:+!|"))


@pytest.fixture(scope="module")
def units() -> dict[str, Unit]:
    return {path.name: parse_unit(path) for path in sorted(SYSTEMD.iterdir())}


def unit_invocations(units: dict[str, Unit]) -> Iterator[Invocation]:
    for name, unit in units.items():
        for key in ("ExecStartPre", "ExecStart", "ExecStartPost", "ExecReload", "ExecStop"):
            for line in values(unit, "Service", key):
                argv = exec_argv(line)
                if Path(argv[0]).name == "tradebridge":
                    yield resolve(argv[1:], f"{name} {key}")


def test_the_units_are_there(units: dict[str, Unit]) -> None:
    assert set(units) == UNITS


def test_every_unit_command_and_option_exists(units: dict[str, Unit]) -> None:
    found = list(unit_invocations(units))
    assert [e for i in found for e in i.errors] == []
    roles = {i.where.split()[0]: i.path for i in found if i.where.endswith(" ExecStart")}
    assert roles == UNIT_COMMANDS


def test_every_unit_variable_is_a_setting(units: dict[str, Unit]) -> None:
    errors = [e for n, u in units.items() for e in variable_errors(unit_environment(u), n)]
    assert errors == []


def test_the_units_run_their_roles(units: dict[str, Unit], clean_env: pytest.MonkeyPatch) -> None:
    calls = {
        i.where.split()[0]: i for i in unit_invocations(units) if i.where.endswith("ExecStart")
    }
    intake = calls["tradebridge-intake.service"]
    assert intake.options.get("workers") == "0", "the intake process runs no dispatchers"
    intake_port = intake.options.get("port")
    assert intake_port is not None
    assert intake_port.isdigit()
    worker = calls["tradebridge-worker@.service"]
    # Two serves on one machine cannot share a port: each instance listens on its own (%i),
    # on loopback, with the webhook off.
    assert worker.options.get("port") == "%i"
    assert worker.options.get("host") == LOOPBACK
    settings = effective(unit_environment(units["tradebridge-worker@.service"]), clean_env)
    assert settings.webhook.enabled is False
    assert settings.dispatcher.workers >= 1
    assert one(units["tradebridge-worker@.service"], "Install", "DefaultInstance") != intake_port


def test_the_units_share_one_configuration(units: dict[str, Unit]) -> None:
    for name, unit in units.items():
        if "Service" not in unit:
            continue
        env = unit_environment(unit)
        config = Path(env["TRADEBRIDGE_CONFIG"])
        data_dir = env["TRADEBRIDGE_DATA_DIR"]
        # The secrets file systemd loads is the one tradebridge finds beside the TOML file.
        assert values(unit, "Service", "EnvironmentFile") == [str(config.parent / ENV_FILE_NAME)]
        assert one(unit, "Service", "User") == "tradebridge", name
        assert one(unit, "Service", "WorkingDirectory") == data_dir, name
        assert data_dir in values(unit, "Service", "ReadWritePaths"), name
        assert one(unit, "Service", "StateDirectory") == Path(data_dir).name, name


def test_the_units_are_hardened(units: dict[str, Unit]) -> None:
    for name, unit in units.items():
        if "Service" not in unit:
            continue
        assert one(unit, "Service", "NoNewPrivileges") == "yes", name
        assert one(unit, "Service", "ProtectSystem") == "strict", name
        assert one(unit, "Service", "PrivateTmp") == "yes", name


def test_long_running_units_restart_and_stop_gracefully(
    units: dict[str, Unit], clean_env: pytest.MonkeyPatch
) -> None:
    for name, unit in units.items():
        if "Service" not in unit:
            continue
        if one(unit, "Service", "Type") == "oneshot":
            assert name == "tradebridge-migrate.service"
            assert one(unit, "Service", "RemainAfterExit") == "yes"
            continue
        assert one(unit, "Service", "Restart") == "on-failure", name
        assert one(unit, "Service", "KillSignal") == "SIGTERM", name
        grace = effective(unit_environment(unit), clean_env).serve.shutdown_grace_s
        # The dispatchers get the grace to hand back rows, then the HTTP server as long again.
        assert float(one(unit, "Service", "TimeoutStopSec")) > 2 * grace, name


def test_unit_dependencies_exist(units: dict[str, Unit]) -> None:
    for name, unit in units.items():
        for key in ("Requires", "Wants", "After", "Before", "PartOf", "BindsTo", "Requisite"):
            for listed in values(unit, "Unit", key):
                for other in listed.split():
                    if other.startswith("tradebridge"):
                        assert other in units, f"{name} {key}= {other}: no such unit"
        for key in ("WantedBy", "RequiredBy"):
            for listed in values(unit, "Install", key):
                for other in listed.split():
                    if other.startswith("tradebridge"):
                        assert other in units, f"{name} {key}= {other}: no such unit"
    for name in ("tradebridge-intake.service", "tradebridge-worker@.service"):
        unit = units[name]
        # The migrations run once, before anything that writes the ledger.
        assert "tradebridge-migrate.service" in values(unit, "Unit", "Requires")
        assert "tradebridge-migrate.service" in " ".join(values(unit, "Unit", "After")).split()


# --- compose --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    loaded = yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))
    assert isinstance(loaded, dict)
    return loaded


def dockerfile() -> list[tuple[str, str]]:
    """Return the Dockerfile's instructions (continuations joined, comments dropped)."""
    found: list[tuple[str, str]] = []
    pending = ""
    for raw in DOCKERFILE.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if line.startswith("#") or not (pending or line):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line, pending = pending + line, ""
        instruction, _, rest = line.partition(" ")
        found.append((instruction.upper(), rest.strip()))
    return found


def docker_env() -> dict[str, str]:
    env: dict[str, str] = {}
    for instruction, rest in dockerfile():
        if instruction == "ENV":
            for word in shlex.split(rest):
                name, _, value = word.partition("=")
                env[name] = value
    return env


def docker_entrypoint() -> list[str]:
    import json

    found = [rest for instruction, rest in dockerfile() if instruction == "ENTRYPOINT"]
    assert len(found) == 1
    argv = json.loads(found[0])
    assert isinstance(argv, list)
    return [str(a) for a in argv]


def our_services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Return the services that run the tradebridge image."""
    return {
        name: service
        for name, service in compose["services"].items()
        if service.get("build", {}).get("dockerfile") == "deploy/Dockerfile"
    }


def _argv(value: Any) -> list[str]:
    if value is None:
        return []
    return shlex.split(value) if isinstance(value, str) else [str(v) for v in value]


def service_invocation(name: str, service: dict[str, Any]) -> Invocation:
    entrypoint = _argv(service.get("entrypoint")) or docker_entrypoint()
    assert Path(entrypoint[0]).name == "tradebridge", f"{name}: entrypoint {entrypoint}"
    return resolve([*entrypoint[1:], *_argv(service.get("command"))], f"compose {name}")


def interpolated(value: Any) -> str:
    """Return a compose value with its ``${VAR...}`` filled in (a placeholder: no .env here)."""
    return re.sub(r"\$\{[^}]*\}", "interpolated", str(value))


def service_environment(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.partition("=")[::2] for item in env)
    return {str(k): interpolated(v) for k, v in env.items()}


def listening(
    invocation: Invocation, env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> tuple[str, int]:
    """Return the host and port a ``serve`` listens on: its options, else its settings."""
    settings = effective({**docker_env(), **env}, monkeypatch)
    host = invocation.options.get("host") or settings.serve.host
    port = invocation.options.get("port")
    return host, int(port) if port is not None else settings.serve.port


def healthcheck_url(service: dict[str, Any]) -> str:
    test = _argv(service["healthcheck"]["test"])
    urls = re.findall(r"https?://[^'\"\s)]+", " ".join(test))
    assert len(urls) == 1, test
    # The slim image has no curl: python's urllib asks, and fails on a 503.
    assert test[:2] == ["CMD", "python"], test
    assert "urllib.request" in test[-1], test
    return str(urls[0])


def test_the_services_are_there(compose: dict[str, Any]) -> None:
    assert set(compose["services"]) == SERVICES
    assert set(our_services(compose)) == set(SERVICE_COMMANDS)


def test_every_compose_command_and_option_exists(compose: dict[str, Any]) -> None:
    found = {n: service_invocation(n, s) for n, s in our_services(compose).items()}
    assert [e for i in found.values() for e in i.errors] == []
    assert {n: i.path for n, i in found.items()} == SERVICE_COMMANDS


def test_every_compose_variable_is_a_setting(compose: dict[str, Any]) -> None:
    errors = [
        e
        for name, service in compose["services"].items()
        for e in variable_errors(service_environment(service), f"compose {name}")
    ]
    assert errors == []


def test_the_depended_on_services_exist(compose: dict[str, Any]) -> None:
    services = compose["services"]
    for name, service in services.items():
        depends = service.get("depends_on") or {}
        if isinstance(depends, list):
            depends = {d: {"condition": "service_started"} for d in depends}
        for other, how in depends.items():
            assert other in services, f"{name} depends on {other}: no such service"
            condition = how.get("condition", "service_started")
            if condition == "service_healthy":
                assert "healthcheck" in services[other], f"{name}: {other} has no healthcheck"
            elif condition == "service_completed_successfully":
                assert services[other].get("restart") == "no", f"{other} would not complete"
            else:
                assert condition == "service_started", f"{name}: {condition}"
    # The migrations complete before anything that writes the ledger starts.
    for name in ("intake", "worker"):
        condition = services[name]["depends_on"]["migrate"]["condition"]
        assert condition == "service_completed_successfully"


def test_the_stores_have_healthchecks(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert _argv(services["postgres"]["healthcheck"]["test"])[1] == "pg_isready"
    assert _argv(services["redis"]["healthcheck"]["test"])[1:] == ["redis-cli", "ping"]


def test_the_urls_name_the_stores(compose: dict[str, Any]) -> None:
    services = compose["services"]
    for name, service in our_services(compose).items():
        env = service_environment(service)
        database = urlsplit(env["DATABASE_URL"])
        assert (database.scheme, database.hostname, database.port) == (
            "postgresql",
            "postgres",
            5432,
        ), name
        assert database.username == services["postgres"]["environment"]["POSTGRES_USER"]
        assert database.path.lstrip("/") == services["postgres"]["environment"]["POSTGRES_DB"]
        redis = urlsplit(env["REDIS_URL"])
        assert (redis.scheme, redis.hostname) == ("redis", "redis"), name
        assert redis.port in (None, 6379)


def test_the_healthchecks_ask_the_port_that_listens(
    compose: dict[str, Any], clean_env: pytest.MonkeyPatch
) -> None:
    routes = {getattr(r, "path", None) for r in build_ops_router(checker=None).routes}
    for name, service in our_services(compose).items():
        invocation = service_invocation(name, service)
        if invocation.path != ("serve",):
            assert "healthcheck" not in service, f"{name}: nothing to ask"
            continue
        url = urlsplit(healthcheck_url(service))
        assert url.path in routes, f"{name}: {url.path} is no route of the server"
        assert url.path == "/healthz"
        host, port = listening(invocation, service_environment(service), clean_env)
        assert url.port == port, f"{name}: asks {url.port}, listens on {port}"
        assert url.hostname == LOOPBACK
        assert host in (LOOPBACK, "0.0.0.0"), f"{name}: {host} is not reachable from inside"
        for published in service.get("ports", []):
            target = int(str(published).rsplit(":", 1)[-1])
            assert target == port, f"{name}: publishes {target}, listens on {port}"
            assert not ipaddress.ip_address(host).is_loopback, (
                f"{name}: publishes a port but listens on {host}, unreachable from outside"
            )


def test_intake_and_workers_split(compose: dict[str, Any], clean_env: pytest.MonkeyPatch) -> None:
    services = compose["services"]
    intake = service_invocation("intake", services["intake"])
    assert intake.options.get("workers") == "0"
    assert services["intake"].get("ports"), "the webhook is published"
    worker = services["worker"]
    invocation = service_invocation("worker", worker)
    settings = effective({**docker_env(), **service_environment(worker)}, clean_env)
    assert settings.webhook.enabled is False
    workers = invocation.options.get("workers")
    assert (int(workers) if workers is not None else settings.dispatcher.workers) >= 1
    assert "ports" not in worker, "workers publish nothing"
    assert "container_name" not in worker, "a fixed name would forbid replicas"
    assert int(worker.get("deploy", {}).get("replicas", worker.get("scale", 1))) >= 2


def _seconds(duration: str) -> float:
    units = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
    total = 0.0
    for amount, unit in re.findall(r"(\d+(?:\.\d+)?)(ms|s|m|h)", duration):
        total += float(amount) * units[unit]
    return total


def test_compose_stops_gracefully_and_shares_the_settings(
    compose: dict[str, Any], clean_env: pytest.MonkeyPatch
) -> None:
    image_env = docker_env()
    for name, service in our_services(compose).items():
        assert service["env_file"] == [ENV_EXAMPLE.name.removesuffix(".example")], name
        mounts = {str(v).split(":")[1]: str(v).split(":")[0] for v in service["volumes"]}
        assert mounts[image_env["TRADEBRIDGE_CONFIG"]] == "./tradebridge.toml", name
        assert image_env["TRADEBRIDGE_DATA_DIR"] in mounts, f"{name}: the data dir is no volume"
        if name == "migrate":
            continue
        assert service["stop_signal"] == "SIGTERM"
        grace = effective({**image_env, **service_environment(service)}, clean_env)
        assert _seconds(service["stop_grace_period"]) > 2 * grace.serve.shutdown_grace_s, name


# --- the Dockerfile and the example secrets file --------------------------------------------


def test_the_dockerfile_builds_from_what_exists(compose: dict[str, Any]) -> None:
    for name, service in our_services(compose).items():
        context = (COMPOSE.parent / service["build"]["context"]).resolve()
        assert context == ROOT, name
        assert (context / service["build"]["dockerfile"]).resolve() == DOCKERFILE
    instructions = dockerfile()
    assert next(rest for i, rest in instructions if i == "FROM").startswith("python:3.11-slim")
    for instruction, rest in instructions:
        if instruction != "COPY" or "--from=" in rest:
            continue
        *sources, _target = shlex.split(rest)
        for source in sources:
            assert (ROOT / source).exists(), f"COPY {source}: not in the repository"
    assert variable_errors(docker_env(), "Dockerfile") == []
    assert docker_entrypoint()[0] == "tradebridge"


def test_the_example_secrets_file_names_real_variables(tmp_path: Path) -> None:
    # Read as tradebridge reads its secrets file (which must be private: a copy, mode 0600).
    copy = tmp_path / ENV_FILE_NAME
    copy.write_text(ENV_EXAMPLE.read_text(encoding="utf-8"), encoding="utf-8")
    copy.chmod(0o600)
    found = read_env_file(copy)
    assert {"DATABASE_URL", "REDIS_URL", "TRADEBRIDGE_WEBHOOK__SECRET"} <= set(found)
    assert variable_errors(found, ENV_EXAMPLE.name) == []


# --- the checker itself ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("argv", "complaint"),
    [
        (["srve", "--workers", "0"], "no such command"),
        (["db", "migrat"], "no such command"),
        (["serve", "--worker", "0"], "has no option --worker"),
        (["serve", "--port", "http"], "valid integer"),
        (["serve", "--host"], "requires an argument"),
        (["tokens", "serve", "--onc"], "has no option --onc"),
        (["db"], "is a group"),
    ],
)
def test_the_checker_reports_a_renamed_command_or_option(argv: list[str], complaint: str) -> None:
    errors = resolve(argv, "test").errors
    assert len(errors) == 1
    assert complaint in errors[0]


def test_the_checker_reports_a_renamed_setting() -> None:
    assert setting_of("TRADEBRIDGE_WEBHOOK__ENABLED") == "webhook.enabled"
    assert setting_of("tradebridge_serve__port") == "serve.port"
    assert setting_of("TRADEBRIDGE_TOKENS__NATIVE__PASSWORD") == "tokens.native.password"
    assert variable_errors({"TRADEBRIDGE_WEBHOOK__ENABLE": "false"}, "test")
    assert variable_errors({"TRADEBRIDGE_SERVE__PORT__X": "1"}, "test")
    assert variable_errors({"TRADEBRIDGE_SERVE": "{}"}, "test") == []  # a section as JSON
    assert variable_errors({"TRADEBRIDGE_USER_ALICE_PASSWORD": "x"}, "test") == []
    assert variable_errors({"TRADEBRIDGE_CONFIG": "x"}, "test") == []

"""Where each effective setting came from: each settings source read on its own.

``Settings`` merges its sources (``config.Settings.settings_customise_sources``: arguments,
``TRADEBRIDGE_...`` variables, ``DATABASE_URL``/``REDIS_URL``, the TOML file) the way
pydantic-settings does: tables merge key by key, anything else (a value, a list such as
``[[accounts]]``) is taken whole from the strongest source that has it. ``Provenance``
builds the same sources, reads each one alone and answers, for a path such as
``("accounts", 0, "name")``, which one gave it; a path no source has is a default, or
derived when it differs from the default (the hosts that follow from ``environment``).
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, SecretStr
from pydantic_settings import (
    DotEnvSettingsSource,
    EnvSettingsSource,
    InitSettingsSource,
    PydanticBaseSettingsSource,
    SecretsSettingsSource,
    TomlConfigSettingsSource,
)

from tradebridge.config import Settings, _config_file
from tradebridge.obs.logging import mask_url

Key = str | int
SettingPath = tuple[Key, ...]

ENV_PREFIX = "TRADEBRIDGE_"
# The conventional variables of config._ConventionalEnv, by the setting each one sets.
CONVENTIONAL_ENV: Mapping[SettingPath, str] = {
    ("database", "url"): "DATABASE_URL",
    ("redis", "url"): "REDIS_URL",
}
_SENSITIVE_QUERY = re.compile(r"pass|secret|token|key", re.IGNORECASE)

Kind = Literal["default", "derived", "argument", "env", "file", "source"]


@dataclass(frozen=True, slots=True)
class Origin:
    """Where one value came from: a default, a variable (``name``), a file (``name``)."""

    kind: Kind
    name: str | None = None

    def __str__(self) -> str:
        if self.kind in ("env", "file", "source"):
            return f"{self.kind} {self.name}"
        return self.kind

    def as_json(self) -> dict[str, str]:
        """Return the origin as JSON-ready data."""
        data: dict[str, str] = {"source": self.kind}
        if self.name is not None:
            data["from"] = self.name
        return data


DEFAULT = Origin("default")
DERIVED = Origin("derived")


@dataclass(frozen=True, slots=True)
class Entry:
    """One effective setting: its path, its value (secrets masked) and where it came from."""

    setting: str
    value: Any
    origin: Origin


def dotted(path: Sequence[Key]) -> str:
    """Return ``accounts[0].name`` for ``("accounts", 0, "name")``."""
    text = ""
    for key in path:
        text += f"[{key}]" if isinstance(key, int) else (f".{key}" if text else key)
    return text


def env_name(path: Sequence[Key]) -> str:
    """Return the variable that sets ``path`` (a list's items: the list's, as JSON)."""
    keys: list[str] = []
    for key in path:
        if isinstance(key, int):
            break
        keys.append(key)
    return ENV_PREFIX + "__".join(keys).upper()


@dataclass(frozen=True, slots=True)
class _Source:
    data: Mapping[str, Any]
    origin: Callable[[SettingPath], Origin]


class Provenance:
    """The settings sources of one configuration, each read on its own."""

    def __init__(self, config_file: Path | None = None, **overrides: Any) -> None:
        """Build the sources ``load_settings(config_file, **overrides)`` would merge."""
        token = _config_file.set(config_file)
        try:
            built = Settings.settings_customise_sources(
                Settings,
                init_settings=InitSettingsSource(Settings, init_kwargs=overrides),
                env_settings=EnvSettingsSource(Settings),
                dotenv_settings=DotEnvSettingsSource(Settings),
                file_secret_settings=SecretsSettingsSource(Settings),
            )
        finally:
            _config_file.reset(token)
        self.config_file: Path | None = None
        self._sources = [self._read(source) for source in built]

    def _read(self, source: PydanticBaseSettingsSource) -> _Source:
        data = source()
        # Subclasses first: a TOML source is an init source, a dotenv source an env source.
        if isinstance(source, TomlConfigSettingsSource):
            path = source.toml_file_path
            if isinstance(path, str | os.PathLike) and Path(path).is_file():
                self.config_file = Path(path).resolve()
            where = Origin("file", str(self.config_file or path))
            return _Source(data, lambda _path: where)
        if isinstance(source, DotEnvSettingsSource):
            names = _env_names(source)
            return _Source(data, lambda path: Origin("file", f"{source.env_file} ({names(path)})"))
        if isinstance(source, EnvSettingsSource):
            names = _env_names(source)
            return _Source(data, lambda path: Origin("env", names(path)))
        if isinstance(source, InitSettingsSource):
            return _Source(data, lambda _path: Origin("argument"))
        name = type(source).__name__

        def other(path: SettingPath) -> Origin:
            for prefix, variable in CONVENTIONAL_ENV.items():
                if path[: len(prefix)] == prefix:
                    return Origin("env", variable)
            return Origin("source", name)

        return _Source(data, other)

    def origin(self, path: SettingPath) -> Origin | None:
        """Return the source that gave ``path``; None if none did (a default or derived)."""
        for source in self._sources:
            node: Any = source.data
            depth = 0
            whole = False  # inside a list or a value this source gives whole
            for key in path:
                child = _child(node, key)
                if child is _MISSING:
                    break
                node = child
                depth += 1
                whole = whole or isinstance(node, list)
            else:
                return source.origin(path)
            if whole:
                return DEFAULT  # a field left out of an item of this source's list
            if depth and not isinstance(node, Mapping):
                return source.origin(path[:depth])
        return None

    def raw(self, key: str) -> Any:
        """Return a top-level setting as the sources give it, merged, before validation."""
        merged: Any = None
        for source in reversed(self._sources):  # weakest first; stronger ones win
            if key in source.data:
                merged = _merge(merged, source.data[key])
        return merged

    def entries(self, settings: Settings) -> list[Entry]:
        """Return every effective setting with its origin, secrets masked."""
        effective = masked(settings)
        defaults = masked(Settings.model_construct())
        found: list[Entry] = []
        for path, value in _leaves(effective):
            origin = self.origin(path)
            if origin is None:
                default = _lookup(defaults, path)
                origin = DEFAULT if default is _MISSING or default == value else DERIVED
            found.append(Entry(dotted(path), value, origin))
        return found


def _env_names(source: EnvSettingsSource) -> Callable[[SettingPath], str]:
    """Return the function naming the variable of ``source`` that set a path."""
    prefix = source.env_prefix.lower()
    delimiter = source.env_nested_delimiter
    spelled = {name.lower(): name for name in os.environ}
    known: list[tuple[tuple[str, ...], str]] = []
    for name in source.env_vars:
        lower = name.lower()
        if lower.startswith(prefix):
            rest = lower[len(prefix) :]
            keys = tuple(rest.split(delimiter)) if delimiter else (rest,)
            known.append((keys, spelled.get(lower, name.upper())))

    def name_of(path: SettingPath) -> str:
        keys = tuple(str(k).lower() for k in path)
        matches = [(len(k), name) for k, name in known if keys[: len(k)] == k]
        return max(matches)[1] if matches else env_name(path)

    return name_of


def masked(settings: Settings) -> dict[str, Any]:
    """Return the settings as JSON-ready data, secrets masked; URLs keep all but passwords."""
    data = settings.redacted()
    for path, secret in _secrets(settings, ()):
        value = secret.get_secret_value()
        if "://" in value:
            _assign(data, path, mask_secret_url(value))
    return data


def mask_secret_url(url: str) -> str:
    """Return ``url`` with its password, and query values such as ``password=``, masked."""
    base, sep, query = mask_url(url).partition("?")
    if not sep:
        return base
    parts = []
    for part in query.split("&"):
        key, eq, _value = part.partition("=")
        parts.append(f"{key}=***" if eq and _SENSITIVE_QUERY.search(key) else part)
    return f"{base}?{'&'.join(parts)}"


def _secrets(value: object, path: SettingPath) -> Iterator[tuple[SettingPath, SecretStr]]:
    if isinstance(value, SecretStr):
        yield path, value
    elif isinstance(value, BaseModel):
        for name in type(value).model_fields:
            yield from _secrets(getattr(value, name), (*path, name))
    elif isinstance(value, list | tuple):
        for index, item in enumerate(value):
            yield from _secrets(item, (*path, index))
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from _secrets(item, (*path, str(key)))


def _assign(data: Any, path: SettingPath, value: object) -> None:
    for key in path[:-1]:
        data = data[key]
    data[path[-1]] = value


_MISSING = object()


def _merge(weaker: Any, stronger: Any) -> Any:
    """Merge two values as pydantic-settings does: tables key by key, the rest replaced."""
    if isinstance(weaker, Mapping) and isinstance(stronger, Mapping):
        merged = dict(weaker)
        for key, value in stronger.items():
            merged[key] = _merge(weaker.get(key), value)
        return merged
    return stronger


def _child(node: Any, key: Key) -> Any:
    if isinstance(node, Mapping):
        return node.get(key, _MISSING) if isinstance(key, str) else _MISSING
    if isinstance(node, list) and isinstance(key, int) and key < len(node):
        return node[key]
    return _MISSING


def _lookup(data: Any, path: SettingPath) -> Any:
    for key in path:
        data = _child(data, key)
        if data is _MISSING:
            break
    return data


def _leaves(value: Any, path: SettingPath = ()) -> Iterator[tuple[SettingPath, Any]]:
    """Yield each value to show: tables are walked, lists of tables too; the rest is one."""
    if isinstance(value, dict) and value:
        for key, item in value.items():
            yield from _leaves(item, (*path, str(key)))
    elif isinstance(value, list) and value and all(isinstance(i, dict) for i in value):
        for index, item in enumerate(value):
            yield from _leaves(item, (*path, index))
    else:
        yield path, value

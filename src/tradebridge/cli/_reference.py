"""The settings reference, ``docs/configuration.md``, generated from the settings model.

``reference_markdown()`` is what ``tradebridge config schema --format markdown`` prints: the
hand-written ``HEADER`` below, then one table per section (``[tradovate]``,
``[[accounts]]``, ...) with every setting's name, type, default, variable and description,
all read from ``config.py``. A test regenerates it and compares it with the committed file.
"""

from __future__ import annotations

import enum
import json
import re
import types
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Any, Literal, Union, get_args, get_origin

import annotated_types
from pydantic import BaseModel, SecretStr
from pydantic.fields import FieldInfo
from pydantic_core import to_jsonable_python

from tradebridge.cli._provenance import CONVENTIONAL_ENV, SettingPath, dotted, env_name
from tradebridge.config import Settings

REGENERATE = "tradebridge config schema --format markdown > docs/configuration.md"

HEADER = f"""\
# Configuration reference

Every setting of tradebridge: its section, type, default, environment variable and meaning.
The tables are generated from the settings model (`src/tradebridge/config.py`) by

    {REGENERATE}

and a test fails when the two differ: change a description in `config.py` and run that
command, never edit the tables by hand.

## Where settings come from

One typed tree, read from these sources, strongest first:

1. `TRADEBRIDGE_...` environment variables, one per setting, sections joined by `__`:
   `TRADEBRIDGE_TRADOVATE__ENVIRONMENT=demo` sets `environment` in `[tradovate]`. A list or a
   table is one variable holding JSON: `TRADEBRIDGE_ACCOUNTS='[{{"name": "DEMO1"}}]'`.
2. `DATABASE_URL` and `REDIS_URL`, as hosting platforms set them.
3. The settings file: `tradebridge.toml` in the working directory, or the file named by
   `--config` or `TRADEBRIDGE_CONFIG`. `tradebridge.example.toml` is a commented example.
4. The defaults below.

Tables merge key by key across sources; a list (`[[accounts]]`) comes whole from one source.
Secrets (passwords, the API key's secret, the webhook secret, URLs holding passwords) belong
in the environment, never in the file.

- `tradebridge config check` validates the settings and prints a summary (environment,
  accounts and their users, where tokens come from, the database and Redis), or exits 2
  with every problem, each naming the setting and the fix.
- `tradebridge config show` prints every effective value, secrets masked, and where it
  came from (`--json` for scripts).
- `tradebridge config schema` prints the JSON schema of the settings.

Live trading takes two settings: `environment = "live"` **and** `confirm_live = true` in
`[tradovate]`; without the second, `serve`, `up` and the workers refuse to start."""

_CONSTRAINTS: tuple[tuple[type[Any], str, str], ...] = (
    (annotated_types.Gt, "gt", ">"),
    (annotated_types.Ge, "ge", ">="),
    (annotated_types.Lt, "lt", "<"),
    (annotated_types.Le, "le", "<="),
)


@dataclass(frozen=True, slots=True)
class _Row:
    name: str
    type: str
    default: str
    env: str
    description: str


@dataclass(slots=True)
class _Table:
    heading: str
    about: str
    rows: list[_Row] = field(default_factory=list)


def reference_markdown() -> str:
    """Return ``docs/configuration.md``: the header, then a table per settings section."""
    lines = [HEADER, ""]
    for table in _tables(Settings, (), "Top level", "", in_list=False):
        if not table.rows:
            continue
        lines += [f"## {table.heading}", ""]
        if table.about:
            lines += [table.about, ""]
        lines += [
            "| setting | type | default | environment variable | description |",
            "|---|---|---|---|---|",
        ]
        lines += [
            "| " + " | ".join(_cell(c) for c in (f"`{r.name}`", r.type, r.default, r.env,
                                                  r.description)) + " |"
            for r in table.rows
        ]  # fmt: skip
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"


def _tables(
    model: type[BaseModel], path: SettingPath, heading: str, about: str, *, in_list: bool
) -> Iterator[_Table]:
    table = _Table(heading, about)
    nested: list[Iterator[_Table]] = []
    for name, info in model.model_fields.items():
        where = (*path, name)
        annotation, optional = _without_none(info.annotation)
        if _is_model(annotation):
            note = " Optional: absent unless set." if optional else ""
            nested.append(
                _tables(annotation, where, f"`[{dotted(where)}]`", _doc(annotation) + note,
                        in_list=in_list)
            )  # fmt: skip
            continue
        item = _list_item(annotation)
        if item is not None and _is_model(item):
            variable = env_name(where)
            about = (
                f"{_doc(item)} One `[[{dotted(where)}]]` table each in the settings file, or "
                f"all of them as a JSON list in `{variable}`."
            )
            nested.append(_tables(item, (*where, 0), f"`[[{dotted(where)}]]`", about,
                                  in_list=True))  # fmt: skip
            continue
        row = _row(name, info, where, annotation, optional, in_list=in_list)
        inherited = getattr(model, "defaults_from", None)
        if isinstance(inherited, str):  # an override: what it leaves unset is another's
            row = replace(row, default=f"as `{inherited}`")
        table.rows.append(row)
        for member in _models_in(annotation):
            about = (
                f"{_doc(member)} An entry of `{dotted(where)}` may be such a table instead of "
                "a plain value."
            )
            nested.append(_tables(member, (*where, "*"), f"`{dotted(where)}` members as tables",
                                  about, in_list=True))  # fmt: skip
    yield table
    for tables in nested:
        yield from tables


def _row(
    name: str,
    info: FieldInfo,
    path: SettingPath,
    annotation: Any,
    optional: bool,
    *,
    in_list: bool,
) -> _Row:
    kind = _type_name(annotation)
    if optional:
        kind += " or unset"
    limits = _limits(info)
    if limits:
        kind += f", {limits}"
    if in_list:
        env = "—"
    else:
        complex_value = get_origin(annotation) in (list, dict)
        env = f"`{env_name(path)}`" + (" (JSON)" if complex_value else "")
        if path in CONVENTIONAL_ENV:
            env += f", `{CONVENTIONAL_ENV[path]}`"
    return _Row(name, kind, _default(info), env, info.description or "")


def _without_none(annotation: Any) -> tuple[Any, bool]:
    if get_origin(annotation) in (Union, types.UnionType):
        args = [a for a in get_args(annotation) if a is not type(None)]
        if len(args) < len(get_args(annotation)):
            if len(args) == 1:
                return args[0], True
            return Union[tuple(args)], True  # noqa: UP007 - built from a runtime tuple
    return annotation, False


def _is_model(annotation: Any) -> bool:
    return isinstance(annotation, type) and issubclass(annotation, BaseModel)


def _list_item(annotation: Any) -> Any:
    if get_origin(annotation) is list:
        return get_args(annotation)[0]
    return None


def _models_in(annotation: Any) -> list[type[BaseModel]]:
    found: list[type[BaseModel]] = []
    for arg in get_args(annotation):
        if _is_model(arg):
            found.append(arg)
        else:
            found += _models_in(arg)
    return found


def _type_name(annotation: Any) -> str:
    origin = get_origin(annotation)
    if origin is Annotated:
        base, *extra = get_args(annotation)
        metadata = [m for item in extra for m in getattr(item, "metadata", [item])]
        limits = _constraints(metadata)
        return _type_name(base) + (f" ({limits})" if limits else "")
    if origin is Literal:
        return " or ".join(json.dumps(v) for v in get_args(annotation))
    if origin in (Union, types.UnionType):
        return " or ".join(_type_name(a) for a in get_args(annotation))
    if origin is list:
        return f"list of {_type_name(get_args(annotation)[0])}"
    if origin is dict:
        return f"table of {_type_name(get_args(annotation)[1])}"
    if isinstance(annotation, type) and issubclass(annotation, enum.Enum):
        return " or ".join(json.dumps(m.value) for m in annotation)
    if _is_model(annotation):
        return "table"
    names = {bool: "bool", int: "int", float: "float", str: "string", Path: "path",
             SecretStr: "secret string", Decimal: "decimal", type(None): "unset"}  # fmt: skip
    return names.get(annotation, getattr(annotation, "__name__", str(annotation)))


def _limits(info: FieldInfo) -> str:
    return _constraints(info.metadata)


def _constraints(metadata: list[Any]) -> str:
    found = []
    for item in metadata:
        for kind, attribute, sign in _CONSTRAINTS:
            if isinstance(item, kind):
                found.append(f"{sign} {getattr(item, attribute)}")
        if isinstance(item, annotated_types.MinLen) and item.min_length == 1:
            found.append("not empty")
    return ", ".join(found)


def _default(info: FieldInfo) -> str:
    if info.is_required():
        return "required"
    value = info.get_default(call_default_factory=True, validated_data={})
    if value is None:
        return "unset"
    if isinstance(value, SecretStr):
        return '`""`' if not value.get_secret_value() else "(secret)"
    if isinstance(value, Decimal):
        return f"`{value}`"
    return f"`{json.dumps(to_jsonable_python(value))}`"


def _doc(model: type[BaseModel]) -> str:
    text = (model.__doc__ or "").strip().split("\n\n")[0]
    return re.sub(r"``([^`]+)``", r"`\1`", " ".join(text.split()))


def _cell(text: str) -> str:
    return text.replace("|", "\\|")

"""``[serve] event_loop``: which loop ``serve`` and ``up`` run on."""

from __future__ import annotations

import asyncio
import sys

import pytest

from tradebridge.cli.run import event_loop_runner
from tradebridge.config import load_settings
from tradebridge.errors import ConfigError


def _loop_module(choice: str) -> str:
    async def module() -> str:
        return type(asyncio.get_running_loop()).__module__

    found: list[str] = []

    async def run() -> None:
        found.append(await module())

    event_loop_runner(choice)(run())
    return found[0]


def test_event_loop_default_is_auto() -> None:
    assert load_settings(data_dir="/nonexistent").serve.event_loop == "auto"


@pytest.mark.parametrize(("choice", "module"), [("auto", "uvloop"), ("uvloop", "uvloop"),
                                                ("asyncio", "asyncio")])  # fmt: skip
def test_event_loop_choice_runs_on_that_loop(choice: str, module: str) -> None:
    assert _loop_module(choice).split(".")[0] == module


def test_event_loop_auto_without_uvloop_falls_back_to_asyncio(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "uvloop", None)  # import uvloop raises ImportError

    assert _loop_module("auto").split(".")[0] == "asyncio"


def test_event_loop_uvloop_without_uvloop_refused_naming_the_setting(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "uvloop", None)

    with pytest.raises(ConfigError, match=r"serve\.event_loop = uvloop"):
        event_loop_runner("uvloop")

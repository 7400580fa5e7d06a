"""Opt-in plugin: name the test that dropped an unclosed socket, and where it was made.

An unclosed socket, transport or redis-py connection dropped in a reference cycle is only
found by a later garbage collection, in whatever test runs then. With
``pytest -p _support.leaktrace`` every test ends with a full collection, so each such
``ResourceWarning`` is reported against the test that dropped it, with the peer's address
and, when ``TRADEBRIDGE_LEAKTRACE_FRAMES=N`` is set, the allocation traceback (tracemalloc,
started once the tests are collected, so imports cost nothing). Costs one ``gc.collect()``
per test: for hunting a leak, not for every run.
"""

from __future__ import annotations

import gc
import os
import tracemalloc
import warnings
from collections.abc import Generator
from typing import Any

import pytest

_found: list[str] = []


def _traceback(obj: object) -> str:
    trace = tracemalloc.get_object_traceback(obj) if tracemalloc.is_tracing() else None
    return "\n      ".join(trace.format()) if trace else "(no allocation traceback)"


def _peer(source: object) -> str:
    sock = getattr(source, "_sock", None)
    if sock is None:
        sock = getattr(getattr(source, "_transport", None), "_sock", None)
    if sock is None and hasattr(source, "getpeername"):
        sock = source
    try:
        return f"{sock.getsockname()} -> {sock.getpeername()}" if sock is not None else "?"
    except OSError as e:
        return f"? ({e.strerror})"


def pytest_collection_finish(session: pytest.Session) -> None:
    frames = int(os.environ.get("TRADEBRIDGE_LEAKTRACE_FRAMES", "0"))
    if frames and not tracemalloc.is_tracing():
        tracemalloc.start(frames)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_teardown(item: pytest.Item) -> Generator[None, None, None]:
    yield
    lines: list[str] = []

    def shown(message: Any) -> None:  # warnings.WarningMessage, before the close that follows
        if issubclass(message.category, ResourceWarning):
            source = message.source
            lines.append(f"{item.nodeid}: {message.message} [{_peer(source)}]")
            if source is not None:
                lines.append(f"      {_traceback(source)}")

    with warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings._showwarnmsg_impl = shown  # type: ignore[attr-defined]
        gc.collect()
    _found.extend(lines)


def pytest_terminal_summary(terminalreporter: Any) -> None:
    terminalreporter.section("leaktrace: resources dropped unclosed")
    terminalreporter.write_line("\n".join(_found) if _found else "none")

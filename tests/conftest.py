"""Shared fixtures: real Redis and PostgreSQL on loopback, started once per test session."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest

from _support.fixtures import logs_to
from tradebridge.store.embedded import EmbeddedPostgres, EmbeddedRedis

# The suite runs at any hour, weekends and holidays included: entries are not held to the
# exchange's session (``[risk] trading_hours``, on by default) unless a test says so. The
# trading window has tests of its own with the time set (tests/pipeline/test_risk_rules.py).
# Settings built from a RiskConfig instance do not see this: they set it themselves.
os.environ.setdefault("TRADEBRIDGE_RISK__TRADING_HOURS", "always")

# The session servers' ports, named in the summary: a socket left open that surfaces as an
# unraisable ResourceWarning in a later test names only its peer's port.
_SESSION_PORTS: dict[str, int] = {}


def pytest_sessionfinish(session: pytest.Session) -> None:
    """On a pytest-xdist worker, hand its session servers' ports to the controller."""
    output = getattr(session.config, "workeroutput", None)
    if output is not None:
        output["session_ports"] = dict(_SESSION_PORTS)


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node: Any, error: object) -> None:
    """On the pytest-xdist controller, gather a finished worker's session servers' ports."""
    del error
    ports = getattr(node, "workeroutput", {}).get("session_ports", {})
    for name, port in ports.items():
        _SESSION_PORTS[f"{name} ({node.gateway.id})"] = port


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Name the session servers' ports (to tell whose an unclosed socket was)."""
    if _SESSION_PORTS:
        ports = ", ".join(f"{name} {port}" for name, port in sorted(_SESSION_PORTS.items()))
        terminalreporter.write_line(f"session servers on 127.0.0.1: {ports}")


@pytest.fixture(scope="session")
def redis_server() -> Iterator[EmbeddedRedis]:
    """Start a private Redis for the whole session."""
    server = EmbeddedRedis().start()
    _SESSION_PORTS["Redis"] = server.port
    yield server
    server.stop()


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[EmbeddedPostgres]:
    """Start a private PostgreSQL for the whole session."""
    server = EmbeddedPostgres().start()
    _SESSION_PORTS["PostgreSQL"] = server.port
    yield server
    server.stop()


@pytest.fixture(autouse=True)
def restore_logging() -> Iterator[None]:
    """Restore logging after every test: a command run in-process configures it onto its
    runner's streams, closed once the command returns, and a later test of the same worker
    would log into a closed file (autouse since 2026-12-07: a module that forgot to ask for
    it broke the next module's logging, its dispatcher task included)."""
    with logs_to(None):
        yield

"""The embedded Redis: a start that fails leaves no server behind and says why at once."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from tradebridge.errors import ConfigError
from tradebridge.store.embedded import EmbeddedRedis


def _fake_server(tmp_path: Path, body: str) -> Path:
    script = tmp_path / "redis-server"
    script.write_text(f"#!/bin/sh\necho $$ > {tmp_path}/pid\n{body}\n", encoding="utf-8")
    script.chmod(0o755)
    return script


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_a_server_that_never_listens_is_stopped_when_the_start_gives_up(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TRADEBRIDGE_REDIS_BIN", str(_fake_server(tmp_path, "exec sleep 60")))
    server = EmbeddedRedis(directory=tmp_path / "redis", start_timeout_s=0.5)
    with pytest.raises(ConfigError, match="did not start"):
        server.start()
    pid = int((tmp_path / "pid").read_text(encoding="utf-8"))
    assert not server.is_running
    assert not _alive(pid)  # reaped by the stop, not left running


def test_a_server_that_exits_at_start_is_reported_without_waiting_out_the_timeout(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TRADEBRIDGE_REDIS_BIN", str(_fake_server(tmp_path, "exit 3")))
    server = EmbeddedRedis(directory=tmp_path / "redis", start_timeout_s=60)
    began = time.monotonic()
    with pytest.raises(ConfigError, match=r"exited at start \(status 3\)"):
        server.start()
    assert time.monotonic() - began < 30  # not the 60 s timeout

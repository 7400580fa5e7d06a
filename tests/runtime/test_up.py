"""``tradebridge up`` as a user runs it: a subprocess, a data directory, then ``send --wait``."""

from __future__ import annotations

import json
import signal
import socket
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from _support.runtime import NO_SETTINGS, TRADEBRIDGE, Proc, child_env, reachable_tmp_dir, wait_for
from tradebridge.store.embedded import free_port


def _read_endpoints(data_dir: Path) -> dict[str, Any] | None:
    try:
        data: dict[str, Any] = json.loads((data_dir / "endpoints.json").read_text())
    except (OSError, ValueError):
        return None
    return data


def _port_open(url: str) -> bool:
    parts = httpx.URL(url)
    try:
        with socket.create_connection((parts.host, parts.port or 80), 0.5):
            return True
    except OSError:
        return False


class Stack:
    """One running ``tradebridge up``."""

    def __init__(self, data_dir: Path, log: Path, *pinned: str) -> None:
        self.data_dir = data_dir
        ports = pinned or ("--port", "0", "--sim-port", str(free_port()))
        self.proc = Proc(
            [TRADEBRIDGE, "up", "--data-dir", str(data_dir), *ports], log, env=NO_SETTINGS
        )

    def endpoints(self) -> dict[str, Any]:
        def ready() -> dict[str, Any] | None:
            assert self.proc.alive(), self.proc.output()
            found = _read_endpoints(self.data_dir)
            return found if found and found["pid"] == self.proc.pid else None

        found: dict[str, Any] = wait_for(ready, 90, "endpoints.json")
        return found

    def send(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [TRADEBRIDGE, "send", *args, "--data-dir", str(self.data_dir)],
            capture_output=True, text=True, timeout=60, check=False,
            env=child_env(NO_SETTINGS),
        )  # fmt: skip

    def interrupt(self) -> int:
        self.proc.signal(signal.SIGINT)
        return self.proc.wait(timeout=60)


@pytest.fixture
def data_dir() -> Iterator[Path]:
    with reachable_tmp_dir("tb-up-") as root:
        yield root / "stack"


def test_up_then_send_wait_market_order_reaches_filled_and_restart_keeps_the_row(
    data_dir: Path, tmp_path: Path
) -> None:
    stack = Stack(data_dir, tmp_path / "up1.log")
    try:
        found = stack.endpoints()
        sent = stack.send("buy", "MNQ1!", "1", "--account", "DEMO0000001", "--wait")
        assert sent.returncode == 0, sent.stdout + sent.stderr
        assert "filled" in sent.stdout
        signal_id = sent.stdout.split()[1]
        assert httpx.get(found["healthz_url"], timeout=10).status_code == 200
        assert stack.interrupt() == 0
    finally:
        stack.proc.stop()
    output = stack.proc.output()
    # Stopped and cleaned up: no endpoints file, no server left listening, data kept.
    assert not (data_dir / "endpoints.json").exists()
    assert not _port_open(found["http_url"])
    assert not _port_open(found["simulator_url"])
    assert not _port_open(found["redis_url"].replace("redis://", "http://"))
    assert not (data_dir / "postgres" / "data" / "postmaster.pid").exists()
    secret = (data_dir / "webhook_secret").read_text().strip()
    assert secret not in output

    again = Stack(data_dir, tmp_path / "up2.log")
    try:
        again.endpoints()
        found_again = again.send("sell", "MNQ1!", "1", "--account", "DEMO0000001", "--wait")
        assert found_again.returncode == 0, found_again.stdout + found_again.stderr
        assert (data_dir / "webhook_secret").read_text().strip() == secret
        assert again.interrupt() == 0
    finally:
        again.proc.stop()
    assert signal_id.startswith("cli-")


def test_up_endpoints_json_lists_every_surface_and_is_private(
    data_dir: Path, tmp_path: Path
) -> None:
    stack = Stack(data_dir, tmp_path / "up.log")
    try:
        found = stack.endpoints()
        mode = stat.S_IMODE((data_dir / "endpoints.json").stat().st_mode)
        secret_mode = stat.S_IMODE((data_dir / "webhook_secret").stat().st_mode)
        metrics = httpx.get(found["metrics_url"], timeout=10)
        sim_health = httpx.get(f"{found['simulator_url']}/_sim/health", timeout=10)
    finally:
        stack.proc.stop()
    assert mode == 0o600
    assert secret_mode == 0o600
    assert found["pid"] == stack.proc.pid
    assert found["database_url"].startswith("postgresql://postgres:")
    assert "***" not in found["database_url"]  # the file is private; `send` connects with it
    assert found["redis_url"].startswith("redis://127.0.0.1:")
    assert found["webhook_url"] == f"{found['http_url']}/webhook"
    assert found["webhook_secret_file"] == str(data_dir / "webhook_secret")
    assert found["simulator_native_url"] == f"{found['simulator_url']}/v1"
    assert found["dashboard_url"] == f"{found['http_url']}/ui"
    assert found["dashboard_password_file"] == str(data_dir / "dashboard_password")
    assert "DEMO0000001" in found["accounts"]
    assert metrics.status_code == 200
    assert "tradebridge_live 0.0" in metrics.text
    assert sim_health.status_code == 200
    assert "  environment  demo" in stack.proc.output()  # the banner says which world
    # The banner masks the database password.
    password = found["database_url"].split(":")[2].split("@")[0]
    assert password not in stack.proc.output()


def test_send_without_running_stack_exits_2_with_hint(tmp_path: Path) -> None:
    done = subprocess.run(
        [TRADEBRIDGE, "send", "buy", "MNQ1!", "1", "--account", "X", "--data-dir", str(tmp_path)],
        capture_output=True, text=True, timeout=60, check=False,
        env=child_env(NO_SETTINGS),
    )  # fmt: skip
    assert done.returncode == 2
    assert "tradebridge up" in done.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["hold", "MNQ1!", "1"], "side must be buy or sell"),
        (["buy", "MNQ1!", "one"], "quantity 'one' is not a number"),
        (["buy", "MNQ1!", "1", "--limit", "abc"], "--limit 'abc' is not a number"),
    ],
)
def test_send_bad_input_exits_2_naming_it(args: list[str], message: str) -> None:
    done = subprocess.run(
        [TRADEBRIDGE, "send", *args, "--account", "X",
         "--database-url", "postgresql://u:p@127.0.0.1:1/none"],
        capture_output=True, text=True, timeout=60, check=False, env=child_env(NO_SETTINGS),
    )  # fmt: skip
    assert done.returncode == 2
    assert message in done.stderr


def _up(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [TRADEBRIDGE, "up", *args],
        capture_output=True, text=True, timeout=90, check=False, env=child_env(NO_SETTINGS),
    )  # fmt: skip


def _port(url: str) -> int | None:
    return httpx.URL(url).port


def test_up_second_on_same_data_dir_refused_first_keeps_running_and_pinned_ports_kept(
    data_dir: Path, tmp_path: Path
) -> None:
    http, sim, pg, redis_port = (free_port() for _ in range(4))
    pinned = ("--port", str(http), "--sim-port", str(sim), "--pg-port", str(pg),
              "--redis-port", str(redis_port))  # fmt: skip
    first = Stack(data_dir, tmp_path / "up1.log", *pinned)
    try:
        found = first.endpoints()
        assert [_port(found[k]) for k in ("http_url", "simulator_url", "database_url")] == [
            http,
            sim,
            pg,
        ]
        assert _port(found["redis_url"].replace("redis://", "http://")) == redis_port

        second = _up("--data-dir", str(data_dir), "--port", "0", "--sim-port", "0")

        # Refused before it touched anything: the first stack's servers still answer.
        assert second.returncode == 2, second.stdout + second.stderr
        [line] = [x for x in second.stderr.splitlines() if x.startswith("error:")]
        assert f"`tradebridge up` (pid {first.proc.pid})" in line
        assert found["http_url"] in line
        assert f"127.0.0.1:{pg}" in line
        assert found["database_url"] not in line  # the password stays masked
        assert httpx.get(found["healthz_url"], timeout=10).status_code == 200
        sent = first.send("buy", "MNQ1!", "1", "--account", "DEMO0000001", "--wait")
        assert sent.returncode == 0, sent.stdout + sent.stderr
        # Another data directory asking for a port the first one holds is refused too.
        taken = _up("--data-dir", str(data_dir.parent / "other"), "--port", str(http))
        assert taken.returncode == 2, taken.stderr
        assert f"the HTTP server cannot listen on 127.0.0.1:{http}" in taken.stderr

        first.proc.signal(signal.SIGKILL)  # leaves its PostgreSQL and Redis running
        first.proc.wait(timeout=30)
    finally:
        first.proc.stop()
    assert _port_open(f"http://127.0.0.1:{pg}")
    assert _read_endpoints(data_dir) is not None  # stale: its pid is gone

    # The lock died with it: the next `up` cleans the leftovers up and gets the same ports.
    again = Stack(data_dir, tmp_path / "up2.log", *pinned)
    try:
        found_again = again.endpoints()
        assert _port(found_again["database_url"]) == pg
        again.proc.signal(signal.SIGTERM)
        assert again.proc.wait(timeout=60) == 0
    finally:
        again.proc.stop()
    assert not _port_open(f"http://127.0.0.1:{pg}")
    assert not (data_dir / "endpoints.json").exists()

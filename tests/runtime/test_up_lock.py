"""The data directory's lock, and pinned ports of the embedded servers that are taken."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from _support.runtime import reachable_tmp_dir, wait_for
from tradebridge.errors import ConfigError
from tradebridge.runtime.lock import LOCK_FILE, hold_data_dir
from tradebridge.store.embedded import EmbeddedPostgres, EmbeddedRedis

HOLDER = """
import sys
from pathlib import Path
from tradebridge.runtime.lock import hold_data_dir
with hold_data_dir(Path(sys.argv[1]), "up"):
    sys.stdin.read()
"""


@pytest.fixture
def holder(tmp_path: Path) -> Iterator[subprocess.Popen[str]]:
    """Run a process that holds ``tmp_path``'s lock until it is killed."""
    child = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(tmp_path)], stdin=subprocess.PIPE, text=True
    )
    yield child
    child.kill()
    child.wait()
    assert child.stdin is not None
    child.stdin.close()


def _held_by(path: Path, pid: int) -> bool:
    try:
        return path.read_text().startswith(f"{pid} ")
    except FileNotFoundError:
        return False


def test_lock_taken_by_another_process_refused_naming_its_pid_and_urls(
    tmp_path: Path, holder: subprocess.Popen[str]
) -> None:
    wait_for(lambda: _held_by(tmp_path / LOCK_FILE, holder.pid), 30, "the child's lock")
    endpoints = {"pid": holder.pid, "http_url": "http://127.0.0.1:8080",
                 "simulator_url": "http://127.0.0.1:8765",
                 "database_url": "postgresql://postgres:s3cret@127.0.0.1:5432/postgres",
                 "redis_url": "redis://127.0.0.1:6379/0"}  # fmt: skip
    (tmp_path / "endpoints.json").write_text(json.dumps(endpoints))

    with pytest.raises(ConfigError) as refused, hold_data_dir(tmp_path, "up"):
        pass

    message = str(refused.value)
    assert f"in use by `tradebridge up` (pid {holder.pid})" in message
    assert "http http://127.0.0.1:8080, simulator http://127.0.0.1:8765" in message
    assert "postgresql://postgres:***@127.0.0.1:5432/postgres" in message
    assert "s3cret" not in message
    assert f"kill {holder.pid}" in message


def test_lock_of_a_killed_process_is_free_again(
    tmp_path: Path, holder: subprocess.Popen[str]
) -> None:
    wait_for(lambda: _held_by(tmp_path / LOCK_FILE, holder.pid), 30, "the child's lock")
    holder.kill()
    holder.wait()

    with hold_data_dir(tmp_path, "serve"):
        held = (tmp_path / LOCK_FILE).read_text()

    assert held == f"{os.getpid()} serve\n"


def test_lock_second_holder_in_one_process_refused_while_starting(tmp_path: Path) -> None:
    with hold_data_dir(tmp_path, "up"), pytest.raises(ConfigError) as refused:  # noqa: SIM117
        with hold_data_dir(tmp_path, "up"):
            pass

    assert "still starting: no endpoints.json yet" in str(refused.value)


@pytest.fixture
def taken_port() -> Iterator[int]:
    """Listen on a free port (another program) for the test's length."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


@pytest.mark.parametrize(
    ("server", "setting"),
    [(EmbeddedRedis, "`up --redis-port`"), (EmbeddedPostgres, "`up --pg-port`")],
)
def test_embedded_server_pinned_port_taken_is_a_clear_error(
    taken_port: int, server: type[EmbeddedRedis | EmbeddedPostgres], setting: str
) -> None:
    with reachable_tmp_dir("tb-pinned-") as root:
        embedded = server(directory=root / "server", port=taken_port)
        with pytest.raises(ConfigError) as refused:
            embedded.start()
        embedded.stop()

    assert f"cannot listen on 127.0.0.1:{taken_port}: another program does" in str(refused.value)
    assert setting in str(refused.value)

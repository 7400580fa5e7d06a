"""Private PostgreSQL and Redis servers on loopback: the embedded default and the test engines.

Both use the system's server binaries (Debian's ``postgresql`` and ``redis-server``).
``initdb`` and ``postgres`` refuse to run as root, so as root they run through
``runuser -u postgres`` in a directory that user owns; as an ordinary user they run as that
user. Every server binds 127.0.0.1 on a free port (or the one given) and is stopped (and, if
temporary, its directory removed) by ``stop()``. A pinned port (``port`` given) that another
program holds is refused with a ``ConfigError`` once the leftovers of a killed stack are
stopped.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from tradebridge._net import port_is_free
from tradebridge.errors import ConfigError

_PG_USER = "postgres"
# Where, as root, a server's files go when the postgres user cannot reach the data directory.
FALLBACK_ROOT = Path("/var/lib/tradebridge")


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _is_root() -> bool:
    return os.geteuid() == 0


def _pg_bin_dir() -> Path:
    override = os.environ.get("TRADEBRIDGE_PG_BIN")
    if override:
        return Path(override)
    found = sorted(
        Path("/usr/lib/postgresql").glob("*/bin/initdb"), key=lambda p: p.parent.parent.name
    )
    if found:
        return found[-1].parent
    on_path = shutil.which("initdb")
    if on_path:
        return Path(on_path).parent
    raise ConfigError(
        "PostgreSQL server binaries not found: install them (apt-get install postgresql) "
        "or set DATABASE_URL to an existing database"
    )


def _as_server_user(cmd: list[str]) -> list[str]:
    return ["runuser", "-u", _PG_USER, "--", *cmd] if _is_root() else cmd


def _check_pinned(what: str, port: int, setting: str) -> None:
    """Refuse (``ConfigError``) a pinned ``port`` that something already listens on."""
    if port and not port_is_free("127.0.0.1", port):
        raise ConfigError(
            f"{what} cannot listen on 127.0.0.1:{port}: another program does; pin another "
            f"port ({setting}) or 0 for a free one"
        )


def _wait_port(
    port: int,
    timeout: float,
    what: str,
    log: Path | None = None,
    exited: Callable[[], int | None] = lambda: None,
) -> None:
    """Wait until something listens on ``port``; ``ConfigError`` (with the log's tail) after
    ``timeout`` seconds, or as soon as ``exited()`` gives the server's exit status."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        if (status := exited()) is not None:
            raise ConfigError(f"{what} exited at start (status {status})\n{_tail(log)}")
        time.sleep(0.02)
    raise ConfigError(
        f"{what} did not start on 127.0.0.1:{port} within {timeout:.0f}s\n{_tail(log)}"
    )


def _tail(log: Path | None) -> str:
    """Return the end of a server's log (empty if there is none)."""
    return log.read_text(errors="replace")[-2000:] if log and log.exists() else ""


def _check_reachable(directory: Path) -> None:
    probe = subprocess.run(
        ["runuser", "-u", _PG_USER, "--", "test", "-w", str(directory)],
        check=False,
        capture_output=True,
    )
    if probe.returncode != 0:
        raise ConfigError(
            f"the {_PG_USER} user cannot reach {directory}: a parent directory is private "
            "(mode 0700, like /root). Choose a data directory outside it, e.g. under /var/lib "
            "or /tmp."
        )


def _reachable_by_server_user(directory: Path) -> bool:
    probe = subprocess.run(
        ["runuser", "-u", _PG_USER, "--", "test", "-x", str(directory)],
        check=False,
        capture_output=True,
    )
    return probe.returncode == 0


def prepare_data_dir(data_dir: Path) -> Path:
    """Create the data directory (private to its owner; traversable by postgres as root)."""
    data_dir = data_dir.expanduser().absolute()
    data_dir.mkdir(parents=True, exist_ok=True)
    # As root the postgres user must pass through it to its own subdirectory; it still
    # cannot list it, and the secrets inside are files of mode 0600.
    data_dir.chmod(0o711 if _is_root() else 0o700)
    return data_dir


def server_dir(data_dir: Path, name: str) -> Path:
    """Return where the embedded server ``name`` keeps its files for ``data_dir``.

    Normally ``data_dir/name``. As root, when a parent of ``data_dir`` is private (mode 0700,
    like /root) so that the postgres user cannot reach it, the files go under
    ``FALLBACK_ROOT`` (``TRADEBRIDGE_FALLBACK_DIR`` overrides it), in a directory named after
    ``data_dir``; ``data_dir/<name>.location`` records where.
    """
    data_dir = prepare_data_dir(data_dir)
    inside = data_dir / name
    if not _is_root() or _reachable_by_server_user(data_dir):
        return inside
    root = Path(os.environ.get("TRADEBRIDGE_FALLBACK_DIR") or FALLBACK_ROOT)
    root.mkdir(parents=True, exist_ok=True)
    root.chmod(0o755)
    if not _reachable_by_server_user(root):
        raise ConfigError(
            f"the {_PG_USER} user can reach neither {data_dir} nor the fallback {root}: "
            "choose a data directory outside private directories (e.g. under /var/lib or /tmp)"
        )
    digest = hashlib.sha256(str(data_dir).encode()).hexdigest()[:12]
    fallback = root / f"{name}-{digest}"
    (data_dir / f"{name}.location").write_text(f"{fallback}\n", encoding="utf-8")
    return fallback


@dataclass
class EmbeddedPostgres:
    """A private PostgreSQL cluster under ``directory`` (a temporary one if ``None``)."""

    directory: Path | None = None
    port: int = 0
    password: str = field(default_factory=lambda: secrets.token_hex(12))
    durable: bool = False  # fsync and friends off for throwaway clusters
    _temporary: bool = False

    @property
    def url(self) -> str:
        """Return the ``postgresql://`` URL of the running cluster."""
        return f"postgresql://postgres:{self.password}@127.0.0.1:{self.port}/postgres"

    def start(self) -> EmbeddedPostgres:
        """Create the cluster if needed and start it; return self."""
        bindir = _pg_bin_dir()
        if self.directory is None:
            self.directory = Path(tempfile.mkdtemp(prefix="tradebridge-pg-"))
            self._temporary = True
        root = self.directory
        root.mkdir(parents=True, exist_ok=True)
        data = root / "data"
        pwfile = root / "pw"
        if _is_root():
            shutil.chown(root, _PG_USER, _PG_USER)
            root.chmod(0o700)
            _check_reachable(root)
        if not (data / "PG_VERSION").exists():
            pwfile.write_text(self.password + "\n")
            pwfile.chmod(0o600)
            if _is_root():
                shutil.chown(pwfile, _PG_USER, _PG_USER)
            cmd = [str(bindir / "initdb"), "-D", str(data), "-U", "postgres",
                   f"--pwfile={pwfile}", "--auth-local=trust", "--auth-host=scram-sha-256",
                   "-E", "UTF8", "--locale=C.UTF-8"]  # fmt: skip
            if not self.durable:
                cmd.append("--no-sync")
            done = subprocess.run(
                _as_server_user(cmd), check=False, capture_output=True, text=True, cwd="/"
            )
            if done.returncode != 0:
                raise ConfigError(f"initdb failed: {done.stderr.strip()}")
        else:
            self.password = pwfile.read_text().strip()
        self._stop_stale(bindir, data)
        # After the leftovers are gone: a pinned port still taken is another program's.
        _check_pinned("PostgreSQL", self.port, "[database] embedded_port, `up --pg-port`")
        self.port = self.port or free_port()
        options = f"-p {self.port} -k {root} -c listen_addresses=127.0.0.1"
        if not self.durable:
            options += " -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
        log = root / "pg.log"
        cmd = [str(bindir / "pg_ctl"), "-D", str(data), "-l", str(log), "-w", "-t", "30",
               "-o", options, "start"]  # fmt: skip
        result = subprocess.run(
            _as_server_user(cmd), check=False, capture_output=True, text=True, cwd="/"
        )
        if result.returncode != 0:
            raise ConfigError(f"PostgreSQL failed to start: {result.stderr.strip()}\n{_tail(log)}")
        try:
            _wait_port(self.port, 30, "PostgreSQL", log)
        except BaseException:
            self.stop()  # pg_ctl said it started: never left running without a caller
            raise
        return self

    @staticmethod
    def _stop_stale(bindir: Path, data: Path) -> None:
        # A cluster left running by a process that was killed (kill -9 of `tradebridge up`):
        # stop it, so that this start owns the cluster and chooses its port.
        if not (data / "postmaster.pid").exists():
            return
        status = subprocess.run(
            _as_server_user([str(bindir / "pg_ctl"), "-D", str(data), "status"]),
            check=False, capture_output=True, cwd="/",
        )  # fmt: skip
        if status.returncode == 0:
            cmd = [str(bindir / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop"]
            subprocess.run(_as_server_user(cmd), capture_output=True, check=False, cwd="/")

    @property
    def is_running(self) -> bool:
        """Return whether the cluster's server process is up."""
        if self.directory is None:
            return False
        data = self.directory / "data"
        cmd = [str(_pg_bin_dir() / "pg_ctl"), "-D", str(data), "status"]
        done = subprocess.run(_as_server_user(cmd), capture_output=True, check=False, cwd="/")
        return done.returncode == 0

    def stop(self) -> None:
        """Stop the cluster; remove it if it was temporary."""
        if self.directory is None:
            return
        data = self.directory / "data"
        if (data / "postmaster.pid").exists():
            cmd = [str(_pg_bin_dir() / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop"]
            subprocess.run(_as_server_user(cmd), capture_output=True, check=False, cwd="/")
        if self._temporary:
            shutil.rmtree(self.directory, ignore_errors=True)


@dataclass
class EmbeddedRedis:
    """A private Redis server under ``directory`` (a temporary one if ``None``)."""

    directory: Path | None = None
    port: int = 0
    start_timeout_s: float = 10.0
    _process: subprocess.Popen[bytes] | None = None
    _temporary: bool = False

    @property
    def url(self) -> str:
        """Return the ``redis://`` URL of the running server."""
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> EmbeddedRedis:
        """Start the server; return self."""
        binary = os.environ.get("TRADEBRIDGE_REDIS_BIN") or shutil.which("redis-server")
        if not binary:
            raise ConfigError(
                "redis-server not found: install it (apt-get install redis-server) "
                "or set REDIS_URL to an existing Redis"
            )
        if self.directory is None:
            self.directory = Path(tempfile.mkdtemp(prefix="tradebridge-redis-"))
            self._temporary = True
        self.directory.mkdir(parents=True, exist_ok=True)
        pidfile = self.directory / "redis.pid"
        _stop_stale_redis(pidfile)
        _check_pinned("Redis", self.port, "[redis] embedded_port, `up --redis-port`")
        self.port = self.port or free_port()
        log = self.directory / "redis.log"
        self._process = subprocess.Popen(
            [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", str(self.directory), "--logfile", str(log),
             "--pidfile", str(pidfile)],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        try:
            _wait_port(self.port, self.start_timeout_s, "Redis", log, self._process.poll)
        except BaseException:
            self.stop()  # never left running without a caller to stop it
            raise
        return self

    @property
    def is_running(self) -> bool:
        """Return whether the server process is up."""
        return self._process is not None and self._process.poll() is None

    def stop(self) -> None:
        """Stop the server; remove its directory if it was temporary."""
        if self._process is not None:
            self._process.terminate()
            try:
                self._process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
            self._process = None
        if self._temporary and self.directory is not None:
            shutil.rmtree(self.directory, ignore_errors=True)


def _stop_stale_redis(pidfile: Path) -> None:
    # A server left running by a killed process: its pid file names it. Only a process that
    # is a redis-server is stopped (the pid may have been reused since).
    try:
        pid = int(pidfile.read_text().strip())
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (OSError, ValueError):
        return
    if b"redis-server" not in cmdline:
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and Path(f"/proc/{pid}").exists():
        time.sleep(0.05)

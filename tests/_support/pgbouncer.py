"""PgBouncer on loopback in front of the session's PostgreSQL: the stand-in for Supabase's
Supavisor pooler (session mode on 5432, transaction mode on 6543; docs/supabase.md).

Debian's ``pgbouncer`` package provides the binary (``./dev test`` installs it). A missing
binary is installed when running as root, else the fixture fails loudly: the pooler tests
are what prove the documented deployment works, they are never skipped. PgBouncer refuses to
run as root, so as root it runs as the postgres user from a directory that user owns.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from tradebridge.store.embedded import EmbeddedPostgres, _wait_port, free_port

_PG_USER = "postgres"


def pgbouncer_binary() -> str:
    """Return the pgbouncer binary, installing Debian's package as root if it is missing."""
    found = shutil.which("pgbouncer", path=f"{os.environ.get('PATH', '')}:/usr/sbin")
    if found:
        return found
    if os.geteuid() != 0:
        raise RuntimeError(
            "pgbouncer is not installed and this is not root: apt-get install -y pgbouncer "
            "(./dev test installs it)"
        )
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    policy = Path("/usr/sbin/policy-rc.d")  # keep Debian from starting its own service
    policy.write_text("#!/bin/sh\nexit 101\n")
    policy.chmod(0o755)
    try:
        done = subprocess.run(
            ["apt-get", "install", "-y", "-qq", "--no-install-recommends", "pgbouncer"],
            env=env, capture_output=True, text=True, check=False,
        )  # fmt: skip
        if done.returncode != 0:
            subprocess.run(["apt-get", "update", "-qq"], env=env, capture_output=True, check=False)
            done = subprocess.run(
                ["apt-get", "install", "-y", "-qq", "--no-install-recommends", "pgbouncer"],
                env=env, capture_output=True, text=True, check=False,
            )  # fmt: skip
    finally:
        policy.unlink(missing_ok=True)
    if done.returncode != 0:
        raise RuntimeError(f"cannot install pgbouncer: {done.stderr.strip()[-500:]}")
    return "/usr/sbin/pgbouncer"


@dataclass
class PgBouncer:
    """A PgBouncer in ``pool_mode`` in front of ``postgres`` (every database, user postgres)."""

    postgres: EmbeddedPostgres
    pool_mode: str = "session"
    settings: dict[str, str] = field(default_factory=dict)  # more [pgbouncer] settings
    port: int = 0
    directory: Path | None = None
    _process: subprocess.Popen[bytes] | None = None

    def url(self, server_url: str) -> str:
        """Return ``server_url`` (a database on ``postgres``) reached through the pooler."""
        parts = urlsplit(server_url)
        netloc = f"{parts.username}:{parts.password}@127.0.0.1:{self.port}"
        return urlunsplit(parts._replace(netloc=netloc))

    def start(self) -> PgBouncer:
        """Write the configuration and start the pooler; return self."""
        binary = pgbouncer_binary()
        self.directory = Path(tempfile.mkdtemp(prefix="tradebridge-pgbouncer-"))
        self.port = self.port or free_port()
        users = self.directory / "users.txt"
        users.write_text(f'"postgres" "{self.postgres.password}"\n')
        settings = {
            "listen_addr": "127.0.0.1",
            "listen_port": str(self.port),
            "unix_socket_dir": "",
            "auth_type": "scram-sha-256",
            "auth_file": str(users),
            "pool_mode": self.pool_mode,
            "max_client_conn": "200",
            "default_pool_size": "40",
            "logfile": str(self.directory / "pgbouncer.log"),
            "pidfile": str(self.directory / "pgbouncer.pid"),
            # asyncpg sends it at connect; PgBouncer refuses startup parameters it does not know
            "ignore_startup_parameters": "extra_float_digits",
            **self.settings,
        }
        lines = [
            "[databases]",
            f"* = host=127.0.0.1 port={self.postgres.port}",
            "[pgbouncer]",
            *(f"{key} = {value}" for key, value in settings.items()),
        ]
        config = self.directory / "pgbouncer.ini"
        config.write_text("\n".join(lines) + "\n")
        cmd = [binary, str(config)]
        if os.geteuid() == 0:
            for path in (self.directory, users, config):
                shutil.chown(path, _PG_USER, _PG_USER)
            users.chmod(0o600)
            cmd = ["runuser", "-u", _PG_USER, "--", *cmd]
        self._process = subprocess.Popen(
            cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        try:
            _wait_port(self.port, 10, "PgBouncer", self.directory / "pgbouncer.log",
                       self._process.poll)  # fmt: skip
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Stop the pooler and remove its directory."""
        if self._process is not None:
            self._process.terminate()
            try:
                self._process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
            self._process = None
        if self.directory is not None:
            shutil.rmtree(self.directory, ignore_errors=True)

    def log(self) -> str:
        """Return the pooler's log so far (for a failing test's message)."""
        assert self.directory is not None
        with contextlib.suppress(OSError):
            return (self.directory / "pgbouncer.log").read_text(errors="replace")
        return ""


@contextlib.contextmanager
def pgbouncer(postgres: EmbeddedPostgres, pool_mode: str, **settings: str) -> Iterator[PgBouncer]:
    """Run a PgBouncer in ``pool_mode`` in front of ``postgres`` for the block."""
    bouncer = PgBouncer(postgres, pool_mode, dict(settings)).start()
    try:
        yield bouncer
    finally:
        bouncer.stop()

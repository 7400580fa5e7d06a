"""One stack per data directory: the lock ``up`` (and ``serve`` with embedded servers) hold.

Without it, a second ``up`` on the same data directory took the first one's running
PostgreSQL and Redis for the leftovers of a killed stack and stopped them. The lock is an
exclusive ``flock`` on ``<data_dir>/up.lock``, held for the whole life of the process; the
kernel drops it when the process ends however it ends (``kill -9`` too), so the leftovers of
a dead stack are still found free and cleaned up. The file holds the holder's pid, and a
refused start names it and the URLs of the running stack (its ``endpoints.json``).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path

from tradebridge.errors import ConfigError
from tradebridge.obs.logging import mask_url
from tradebridge.runtime.endpoints import read_endpoints

LOCK_FILE = "up.lock"


@contextlib.contextmanager
def hold_data_dir(data_dir: Path, command: str) -> Iterator[None]:
    """Hold ``data_dir``'s lock while inside; ``ConfigError`` names the holder if taken."""
    path = data_dir / LOCK_FILE
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ConfigError(_refusal(data_dir, _holder(fd), command)) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()} {command}\n".encode(), 0)
        yield
    finally:
        os.close(fd)  # releases the lock; the file stays (unlinking it would race a taker)


def _holder(fd: int) -> tuple[int | None, str]:
    try:
        pid, _, command = os.pread(fd, 200, 0).decode().strip().partition(" ")
        return int(pid), command or "tradebridge"
    except (OSError, ValueError):
        return None, "tradebridge"  # taken a moment ago, pid not written yet


def _refusal(data_dir: Path, holder: tuple[int | None, str], command: str) -> str:
    pid, what = holder
    who = f"`tradebridge {what}` (pid {pid})" if pid else "another tradebridge process"
    found = read_endpoints(data_dir)
    if found and found.get("http_url"):
        urls = [f"http {found['http_url']}"]
        if found.get("simulator_url"):
            urls.append(f"simulator {found['simulator_url']}")
        urls += [f"database {mask_url(str(found.get('database_url')))}",
                 f"redis {mask_url(str(found.get('redis_url')))}"]  # fmt: skip
        where = f": {', '.join(urls)}"
    else:
        where = " (still starting: no endpoints.json yet)"
    stop = f"stop it first (kill {pid})" if pid else "stop it first"
    return (
        f"{data_dir} is in use by {who}{where}; {stop}, or give this {command} another --data-dir"
    )

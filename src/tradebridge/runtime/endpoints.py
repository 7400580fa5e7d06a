"""Where a running stack is found: endpoints.json and the local webhook secret in the data
directory, written owner-only; URLs shown with their passwords masked.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tradebridge.obs.logging import mask_url

ENDPOINTS_FILE = "endpoints.json"


WEBHOOK_SECRET_FILE = "webhook_secret"  # noqa: S105 - a file name, not a secret
DASHBOARD_PASSWORD_FILE = "dashboard_password"  # noqa: S105 - a file name, not a secret


@dataclass(frozen=True, slots=True)
class Endpoints:
    """Where a running stack answers. ``database_url`` and ``redis_url`` carry passwords."""

    http_url: str
    database_url: str = field(repr=False)
    redis_url: str = field(repr=False)
    simulator_url: str | None = None
    data_dir: Path | None = None
    webhook_secret_file: Path | None = None
    accounts: tuple[str, ...] = ()
    dashboard: bool = False  # /ui is on (a password is configured)
    dashboard_password_file: Path | None = None  # where `up` keeps the one it made
    # The kill switches when the stack started (the banner's line; never in endpoints.json:
    # it changes while the stack runs, /healthz has it live).
    kill_switch: str = field(default="off", compare=False)
    # Each account's risk standing then (account, one line: P&L, room under each limit).
    risk: tuple[tuple[str, str], ...] = field(default=(), compare=False)

    @property
    def healthz_url(self) -> str:
        """Return the health check URL."""
        return f"{self.http_url}/healthz"

    @property
    def metrics_url(self) -> str:
        """Return the Prometheus metrics URL."""
        return f"{self.http_url}/metrics"

    @property
    def webhook_url(self) -> str:
        """Return the TradingView webhook URL."""
        return f"{self.http_url}/webhook"

    def as_json(self, *, with_secrets: bool = False) -> dict[str, Any]:
        """Return the endpoints as JSON-ready data; passwords masked unless ``with_secrets``."""
        return {
            "pid": os.getpid(),
            "data_dir": str(self.data_dir) if self.data_dir else None,
            "http_url": self.http_url,
            "webhook_url": self.webhook_url,
            "webhook_secret_file": (
                str(self.webhook_secret_file) if self.webhook_secret_file else None
            ),
            "healthz_url": self.healthz_url,
            "metrics_url": self.metrics_url,
            "dashboard_url": f"{self.http_url}/ui" if self.dashboard else None,
            "dashboard_password_file": (
                str(self.dashboard_password_file) if self.dashboard_password_file else None
            ),
            "database_url": self.database_url if with_secrets else mask_url(self.database_url),
            "redis_url": self.redis_url if with_secrets else mask_url(self.redis_url),
            "simulator_url": self.simulator_url,
            "simulator_native_url": f"{self.simulator_url}/v1" if self.simulator_url else None,
            "accounts": list(self.accounts),
        }


def load_or_create_secret(path: Path) -> str:
    """Return the secret stored in ``path`` (mode 0600), creating it on first use."""
    with contextlib.suppress(FileNotFoundError):
        existing = path.read_text(encoding="utf-8").strip()
        if existing:
            return existing
    value = secrets.token_urlsafe(24)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(value + "\n")
    return value


def write_private_json(path: Path, data: dict[str, Any]) -> None:
    """Write ``data`` to ``path`` atomically, readable by its owner only."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        json.dump(data, handle, indent=2)
        handle.write("\n")
    tmp.replace(path)


def read_endpoints(data_dir: Path) -> dict[str, Any] | None:
    """Return the ``endpoints.json`` of a running ``up`` stack, or ``None`` if none runs."""
    path = data_dir / ENDPOINTS_FILE
    try:
        data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    pid = data.get("pid")
    if isinstance(pid, int) and not Path(f"/proc/{pid}").exists():
        return None  # left behind by a stack that was killed
    return data

"""Notifications: what kinds there are, and one message as the notifier hands it to channels.

A notice is either about a **condition** (a state that holds for a while: a lockout, a kill
switch, a WebSocket down) with a key naming it (``lockout:alice``), raised once, reminded at
most once per window while it holds, and resolved when it clears; or about **rows** (signals
denied or rejected), announced once each, several in one message when they come in a burst.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class NoticeKind(StrEnum):
    """What a notification is about (docs/notifications.md has one section each)."""

    DENIED = "denied"  # our own checks refused signals; nothing was sent
    REJECTED = "rejected"  # the broker refused orders
    UNKNOWN_UNRESOLVED = "unknown_unresolved"  # outcomes still unknown past the bound
    AUTH_FAILED = "auth_failed"  # a login failed, a token was refused, missing or expired
    LOCKOUT = "lockout"  # Tradovate locked a user out (captcha penalty, 423, 429)
    TOKEN_EXPIRING = "token_expiring"  # noqa: S105 - a kind's name: a token close to expiry, not renewed
    WEBSOCKET_DOWN = "websocket_down"  # a user-sync WebSocket down past the bound
    QUEUE_BACKLOG = "queue_backlog"  # pending rows piling up or waiting too long
    KILL_SWITCH = "kill_switch"  # a kill switch is on
    RISK_LIMIT = "risk_limit"  # a risk limit stops an account's entries
    RECONCILE_DIVERGENCE = "reconcile_divergence"  # reconcile found the broker disagreeing
    TEST = "test"  # `tradebridge notify test`


class Phase(StrEnum):
    """Where a notice stands in its condition's life."""

    RAISED = "raised"  # the condition began (or began again after a quiet window)
    CHANGED = "changed"  # still on, but what it is about changed (new rows, new users)
    REMINDER = "reminder"  # still on, a window later
    RESOLVED = "resolved"  # the condition cleared
    ROWS = "rows"  # signals denied or rejected, announced once each
    TEST = "test"


# Severity as apprise understands it (notify_type): failure, warning, success, info.
SEVERITY: dict[NoticeKind, str] = {
    NoticeKind.DENIED: "warning",
    NoticeKind.REJECTED: "failure",
    NoticeKind.UNKNOWN_UNRESOLVED: "failure",
    NoticeKind.AUTH_FAILED: "failure",
    NoticeKind.LOCKOUT: "failure",
    NoticeKind.TOKEN_EXPIRING: "warning",
    NoticeKind.WEBSOCKET_DOWN: "warning",
    NoticeKind.QUEUE_BACKLOG: "warning",
    NoticeKind.KILL_SWITCH: "warning",
    NoticeKind.RISK_LIMIT: "warning",
    NoticeKind.RECONCILE_DIVERGENCE: "warning",
    NoticeKind.TEST: "info",
}


@dataclass(frozen=True, slots=True)
class Observation:
    """One condition as a watcher sees it now: ``key`` is on, about ``summary``."""

    kind: NoticeKind
    key: str  # names the condition: kind and subject, e.g. "lockout:alice"
    summary: str  # one line: what holds
    detail: str = ""  # more lines: ids, reasons, what to look at
    # Changes when what the condition is about changes (a new row, another rule reached).
    fingerprint: str = ""


@dataclass(frozen=True, slots=True)
class Notice:
    """One message, ready for the channels."""

    kind: NoticeKind
    key: str
    phase: Phase
    title: str
    body: str

    @property
    def severity(self) -> str:
        """Return the apprise notify type of this notice."""
        if self.phase is Phase.RESOLVED:
            return "success"
        return SEVERITY[self.kind]

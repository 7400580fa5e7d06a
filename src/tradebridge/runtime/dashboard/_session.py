"""The dashboard's login: signed session cookies, CSRF tokens and a login rate limit.

A session is a cookie ``<payload>.<mac>``: the payload (base64url JSON) holds its expiry and
a random id, the mac is HMAC-SHA256 under a key derived from the dashboard password with
PBKDF2 (so a stolen cookie does not make guessing the password cheap). Sessions therefore
survive a restart and work on every process sharing the password, and changing the password
ends them all. Each form carries a CSRF token, the HMAC of the session id: a POST without
the token of its own session is refused. Every comparison is constant-time.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

SESSION_COOKIE = "tb_session"
LOGIN_COOKIE = "tb_login"  # the login form's own CSRF nonce, before any session exists
_KDF_ROUNDS = 200_000
_KDF_SALT = b"tradebridge-dashboard-session-v1"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@dataclass(frozen=True, slots=True)
class Session:
    """A logged-in browser: its random id and when it ends (epoch seconds)."""

    id: str
    expires: float


class Sessions:
    """Issue and check session cookies and CSRF tokens under one password."""

    def __init__(self, password: str, ttl_s: float, clock: Callable[[], float] = time.time) -> None:
        self._password = password.encode("utf-8", "surrogatepass")
        self._key = hashlib.pbkdf2_hmac("sha256", self._password, _KDF_SALT, _KDF_ROUNDS)
        self.ttl_s = ttl_s
        self._clock = clock

    def __repr__(self) -> str:
        return "Sessions(***)"

    def now(self) -> float:
        """Return the sessions' clock (epoch seconds)."""
        return self._clock()

    def password_matches(self, given: str) -> bool:
        """Return whether ``given`` is the password (constant time for equal lengths)."""
        return hmac.compare_digest(given.encode("utf-8", "surrogatepass"), self._password)

    def _mac(self, purpose: str, value: str) -> str:
        return _b64(hmac.new(self._key, f"{purpose}:{value}".encode(), "sha256").digest())

    def issue(self) -> tuple[str, Session]:
        """Return a new session and its cookie value."""
        session = Session(secrets.token_urlsafe(18), self._clock() + self.ttl_s)
        payload = _b64(json.dumps({"id": session.id, "exp": session.expires}).encode())
        return f"{payload}.{self._mac('session', payload)}", session

    def read(self, cookie: str | None) -> Session | None:
        """Return the session of ``cookie`` if it is ours and not expired, else None."""
        if not cookie or cookie.count(".") != 1:
            return None
        payload, mac = cookie.split(".")
        if not hmac.compare_digest(mac.encode(), self._mac("session", payload).encode()):
            return None
        try:
            data = json.loads(_unb64(payload))
            session = Session(str(data["id"]), float(data["exp"]))
        except (ValueError, KeyError, TypeError):
            return None
        return session if session.expires > self._clock() else None

    def csrf(self, nonce: str) -> str:
        """Return the CSRF token of a session id (or of the login form's nonce)."""
        return self._mac("csrf", nonce)

    def csrf_matches(self, nonce: str | None, given: str | None) -> bool:
        """Return whether ``given`` is the CSRF token of ``nonce``."""
        if not nonce or not given:
            return False
        return hmac.compare_digest(given.encode(), self.csrf(nonce).encode())


@dataclass
class LoginLimiter:
    """At most ``per_minute`` login attempts per client address in any 60 seconds."""

    per_minute: int
    clock: Callable[[], float] = time.monotonic
    _seen: dict[str, deque[float]] = field(default_factory=dict)

    def allow(self, address: str) -> float | None:
        """Count an attempt from ``address``; return None if allowed, else the seconds to wait."""
        now = self.clock()
        if len(self._seen) > 10_000:  # forget idle addresses; a flood cannot grow this forever
            self._seen = {a: q for a, q in self._seen.items() if q and now - q[-1] < 60}
        seen = self._seen.setdefault(address, deque())
        while seen and now - seen[0] >= 60:
            seen.popleft()
        if len(seen) >= self.per_minute:
            return 60 - (now - seen[0])
        seen.append(now)
        return None

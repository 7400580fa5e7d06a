"""Users, logins and JWT-shaped access tokens of the simulator.

Tokens look like Tradovate's (three base64url parts, a real ``exp``) and are signed with a
key of this process, so a token from another simulator run is refused with 401.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Literal

from tradebridge.sim.clock import Clock
from tradebridge.sim.config import SimConfig, SimUserConfig

TokenKind = Literal["native", "tv"]


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@dataclass(frozen=True, slots=True)
class IssuedToken:
    """A token and when it stops working."""

    token: str
    expires: datetime
    session_id: str


@dataclass
class Session:
    """One login session; renewing extends it instead of opening a new one."""

    session_id: str
    user: SimUserConfig
    kind: TokenKind
    expires: datetime
    renewals: int = 0


@dataclass
class TokenAuthority:
    """Issues, verifies and renews the simulator's tokens, and counts logins."""

    config: SimConfig
    clock: Clock
    _key: bytes = field(default_factory=lambda: secrets.token_bytes(32))
    _sessions: dict[str, Session] = field(default_factory=dict)
    logins: int = 0  # successful logins, to catch clients that log in instead of renewing
    failed_logins: dict[str, int] = field(default_factory=dict)

    def user_by_credentials(self, name: str, password: str) -> SimUserConfig | None:
        """Return the user with these credentials, or None."""
        for user in self.config.users:
            if user.name == name and hmac.compare_digest(user.password, password):
                return user
        return None

    def lifetime(self) -> timedelta:
        """Return how long a new or renewed token lives (a fault may shorten it)."""
        seconds = self.config.faults.token_lifetime_s or self.config.token_lifetime_s
        return timedelta(seconds=seconds)

    def issue(self, user: SimUserConfig, kind: TokenKind) -> IssuedToken:
        """Open a session for ``user`` and return its token."""
        self.logins += 1
        session = Session(secrets.token_hex(8), user, kind, self.clock.now() + self.lifetime())
        self._sessions[session.session_id] = session
        return self._token_for(session)

    def renew(self, token: str) -> IssuedToken | None:
        """Extend the session of a valid ``token``; None if the token is not valid."""
        session = self.verify(token)
        if session is None:
            return None
        session.expires = self.clock.now() + self.lifetime()
        session.renewals += 1
        return self._token_for(session)

    def verify(self, token: str) -> Session | None:
        """Return the live session of ``token``, or None if it is forged, unknown or expired."""
        parts = token.strip().strip('"').split(".")
        if len(parts) != 3:
            return None
        head, body, signature = parts
        expected = _b64(hmac.new(self._key, f"{head}.{body}".encode(), hashlib.sha256).digest())
        if not hmac.compare_digest(expected, signature):
            return None
        try:
            claims = json.loads(_unb64(body))
        except ValueError:
            return None
        session = self._sessions.get(str(claims.get("sid")))
        now = self.clock.now()
        if session is None or int(claims.get("exp", 0)) <= now.timestamp():
            return None
        return session if session.expires > now else None

    def expire_all(self) -> int:
        """End every live session now (its tokens answer 401 from here on); return how many.

        Plays Tradovate ending all sessions at once (tokens expired or revoked): clients must
        take the fresh tokens a token service writes, never keep using the old ones.
        """
        now = self.clock.now()
        live = [s for s in self._sessions.values() if s.expires > now]
        for session in live:
            session.expires = now
        return len(live)

    def live_sessions(self) -> int:
        """Return how many sessions have not expired."""
        now = self.clock.now()
        return sum(1 for s in self._sessions.values() if s.expires > now)

    def _token_for(self, session: Session) -> IssuedToken:
        head = _b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
        claims = {
            "sub": str(session.user.id),
            "name": session.user.name,
            "kind": session.kind,
            "sid": session.session_id,
            "iat": int(self.clock.now().timestamp()),
            "exp": int(session.expires.timestamp()),
            "jti": secrets.token_hex(6),
        }
        body = _b64(json.dumps(claims, separators=(",", ":")).encode())
        signature = _b64(hmac.new(self._key, f"{head}.{body}".encode(), hashlib.sha256).digest())
        return IssuedToken(f"{head}.{body}.{signature}", session.expires, session.session_id)

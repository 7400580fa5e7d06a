"""The one exception tree of tradebridge.

Every library exception is translated into this tree at an adapter boundary
(``raise ... from e``), so callers decide by class, never by message::

    BridgeError
    ├── SendFenced ............. an order not sent: this worker's liveness lapsed meanwhile
    ├── KilledBeforeSend ....... an order not sent: a kill switch was thrown before it left
    ├── ConfigError ............ bad settings; the process stops
    ├── InvalidInput ........... a signal, row, payload or CLI call is wrong; nothing was sent
    │   ├── InvalidSymbol ...... unknown root, malformed or expired contract
    │   └── InvalidOrder ....... impossible order shape (no price on a limit, qty <= 0, ...)
    ├── IllegalTransition ...... an order event that its state machine refuses (a bug or a race)
    │   └── OrderOwned ......... the broker order already belongs to another ledger row
    ├── StoreError ............. the ledger database failed us
    │   ├── DatabaseUnavailable  cannot connect (refused, timeout, bad password, no database)
    │   ├── ContentRefused ..... the database refused the contents (NUL in text, over a limit)
    │   └── MigrationFailed .... a schema migration could not be applied; nothing half-done
    ├── RedisUnavailable ....... Redis (tokens, locks) does not answer at start or in the CLI
    └── BrokerError ............ anything Tradovate (or the simulator) said or failed to say
        ├── TransientError ..... resolves itself; retried where safe (reads, cancels, logins)
        │   ├── BrokerUnavailable   5xx or refused connection *before* anything was executed
        │   ├── ConnectionLost      socket dropped; reconnect
        │   └── RateLimited         penalty with a known wait (p-ticket without captcha)
        ├── AuthError .......... token missing, malformed, expired or refused; refresh once
        │   └── LoginFailed .... credentials refused; final, never looped
        ├── Lockout ............ 423, 429 or captcha penalty: stop this user until ``until``
        ├── NotFound ........... 404: unknown id or route (run ``tradebridge doctor``)
        ├── BrokerRejected ..... the broker said no in so many words; final for this intent
        └── OutcomeUnknown ..... a submit was sent and its fate is unknown; look it up,
            │                    never resend blindly
            └── LookupAmbiguous  the lookup found orders that may be ours and cannot tell
                                 which: escalate to a human, never guess

Only ``TransientError`` (and ``AuthError``, once, after a token refresh) is retried
automatically, and never for a submit: see ``OutcomeUnknown``.
"""

from __future__ import annotations

from datetime import datetime


class BridgeError(Exception):
    """Root of every error tradebridge raises on purpose."""


class SendFenced(BridgeError):
    """An order request was not sent: this process's liveness lapsed after the row's
    write-ahead and the row moved on meanwhile (another process recovers it)."""


class KilledBeforeSend(BridgeError):
    """An order request was not sent: a kill switch that stops it was thrown after the row's
    write-ahead, while the request waited to leave (the request budget, a liveness wait)."""


class ConfigError(BridgeError):
    """Settings are missing or inconsistent; the process cannot go on."""


class InvalidInput(BridgeError):
    """A signal, row, payload or command is wrong; nothing was sent to the broker."""

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


class InvalidSymbol(InvalidInput):
    """A symbol is malformed, of an unknown root, not listed, or expired."""


class InvalidOrder(InvalidInput):
    """An order's shape is impossible (missing price, bad quantity, bad bracket side)."""


class IllegalTransition(BridgeError):
    """An order event that the order's current status does not allow."""


class OrderOwned(IllegalTransition):
    """A row would point at a broker order another row owns (one row per order)."""

    def __init__(self, message: str, *, owner: str | None) -> None:
        super().__init__(message)
        self.owner = owner


class StoreError(BridgeError):
    """The ledger database failed us."""


class DatabaseUnavailable(StoreError):
    """The database cannot be reached or refused the login; the message names no secret.

    Where the connection was refused, ``where`` is the URL with its password masked and
    ``reason`` says why in a few words (``connection refused``, ``timed out``, ...).
    """

    def __init__(
        self, message: str, *, where: str | None = None, reason: str | None = None
    ) -> None:
        super().__init__(message)
        self.where = where
        self.reason = reason


class RedisUnavailable(BridgeError):
    """Redis does not answer; ``where`` is its URL with the password masked, ``reason`` why.

    Raised where Redis is checked up front (``serve`` at start, the CLI's commands); while
    running, a token read that fails is a ``ConnectionLost`` and retried.
    """

    def __init__(self, message: str, *, where: str, reason: str) -> None:
        super().__init__(message)
        self.where = where
        self.reason = reason


class ContentRefused(StoreError):
    """The database refused what it was given (a NUL in text, a value over its limits).

    The input's fault, not an outage: retrying the same contents fails the same way.
    """


class MigrationFailed(StoreError):
    """A schema migration could not be applied; its transaction was rolled back."""


class BrokerError(BridgeError):
    """Anything the broker said or failed to say."""


class TransientError(BrokerError):
    """A failure that resolves itself; safe to retry for reads, cancels and logins."""


class BrokerUnavailable(TransientError):
    """The broker answered 5xx or refused the connection before executing anything."""


class ConnectionLost(TransientError):
    """A connection or socket dropped."""


class RateLimited(TransientError):
    """The broker asked us to wait ``retry_after`` seconds (a penalty without captcha)."""

    def __init__(self, message: str, *, retry_after: float) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class AuthError(BrokerError):
    """The token is missing, malformed, expired or refused."""


class LoginFailed(AuthError):
    """The credentials were refused. Final: a wrong password is never retried in a loop."""


class Lockout(BrokerError):
    """The broker locked us out (423, 429, captcha); no calls for this user until ``until``."""

    def __init__(self, message: str, *, until: datetime) -> None:
        super().__init__(message)
        self.until = until


class NotFound(BrokerError):
    """HTTP 404: an unknown entity id or an undefined route."""


class BrokerRejected(BrokerError):
    """The broker refused an order or command in so many words; final for that intent."""

    def __init__(self, message: str, *, reason: str, text: str = "") -> None:
        super().__init__(message)
        self.reason = reason
        self.text = text


class OutcomeUnknown(BrokerError):
    """A submit was sent and its fate is unknown; look it up by client order id first."""

    def __init__(self, message: str, *, client_order_id: str) -> None:
        super().__init__(message)
        self.client_order_id = client_order_id


class LookupAmbiguous(OutcomeUnknown):
    """The broker shows orders that may be this submit's and none provably is: escalate."""

    def __init__(
        self,
        message: str,
        *,
        client_order_id: str,
        candidates: tuple[str, ...] = (),
        evidence: tuple[str, ...] = (),
    ) -> None:
        super().__init__(message, client_order_id=client_order_id)
        self.candidates = candidates
        self.evidence = evidence

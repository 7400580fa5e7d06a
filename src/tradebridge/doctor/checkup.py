"""One account's checkup (``Doctor``, the checks so far) and the checks every checkup starts
with: Redis answers, the account's token is there, well-formed and not expired.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from tradebridge.config import AccountConfig, Settings
from tradebridge.doctor.report import Check, Status, Verdict
from tradebridge.domain.contracts import ContractSymbol, resolve_symbol
from tradebridge.domain.enums import Dialect
from tradebridge.errors import BridgeError, InvalidSymbol
from tradebridge.store.tokens import StoredToken, TokenStore, how_to_fill


def _human(delta: timedelta) -> str:
    seconds = int(delta.total_seconds())
    if seconds < 0:
        return f"{-seconds // 60} min ago"
    hours, rest = divmod(seconds, 3600)
    return f"{hours} h {rest // 60} min" if hours else f"{rest // 60} min {rest % 60} s"


@dataclass
class Doctor:
    """Runs the checks for one account; every collaborator is passed in."""

    settings: Settings
    store: TokenStore
    now: datetime = field(default_factory=lambda: datetime.now(UTC))
    symbol: str | None = None
    checks: list[Check] = field(default_factory=list)

    def add(self, check: Check) -> Check:
        """Record one check."""
        self.checks.append(check)
        return check

    def resolve_contract(self, text: str, fix: str) -> ContractSymbol | None:
        """Return the contract ``text`` names today, or None after adding the failed check."""
        try:
            calendar = self.settings.contracts.calendar()
            return resolve_symbol(text, self.now.date(), calendar=calendar)
        except InvalidSymbol as e:
            self.add(
                Check(
                    "contract",
                    Status.FAIL,
                    str(e),
                    fix,
                    Verdict.INSTRUMENT_UNKNOWN_OR_EXPIRED,
                )
            )
            return None


async def check_redis(doctor: Doctor) -> bool:
    """Check that Redis answers PING."""
    try:
        await doctor.store.redis.ping()
    except Exception as e:  # noqa: BLE001 - any failure here is the finding itself
        doctor.add(
            Check(
                "redis",
                Status.FAIL,
                f"Redis does not answer ({type(e).__name__})",
                "start Redis or set REDIS_URL / --redis-url to a reachable one",
            )
        )
        return False
    doctor.add(Check("redis", Status.PASS, "Redis answers PING"))
    return True


async def check_token(doctor: Doctor, account: AccountConfig) -> StoredToken | None:
    """Check that the account's token is present, well-formed and not expired."""
    key = doctor.settings.token_key(account.name)
    try:
        stored = await doctor.store.read(key)
    except BridgeError as e:
        doctor.add(
            Check(
                "token",
                Status.FAIL,
                f"{key}: {e}",
                "store the token as the JSON of reference §2.9 or a bare JWT",
            )
        )
        return None
    if stored is None:
        doctor.add(
            Check(
                "token",
                Status.FAIL,
                f"no token under {key}",
                how_to_fill(key),
            )
        )
        return None
    left = stored.remaining(doctor.now)
    if left <= timedelta(0):
        doctor.add(
            Check(
                "token",
                Status.FAIL,
                f"{key}: expired {_human(left)}",
                how_to_fill(key),
            )
        )
        return None
    kind_note = ""
    if account.dialect is Dialect.TVBRIDGE and stored.kind == "native":
        kind_note = " (kind native: whether the bridge accepts it is unverified, §9.3)"
    if account.dialect is Dialect.NATIVE and stored.kind == "tv":
        doctor.add(
            Check(
                "token",
                Status.WARN,
                f"{key}: a bridge token (kind tv, from /authorize) for the native account "
                f"{account.name}, expires in {_human(left)}; whether /v1 accepts it is "
                "unverified (§9.3)",
                f"store a native token (auth/accesstokenrequest) under {key}, or set "
                f'dialect = "tvbridge" for {account.name}',
            )
        )
        return stored
    doctor.add(
        Check(
            "token",
            Status.PASS,
            f"{key}: {stored.kind} token, expires in {_human(left)}{kind_note}",
        )
    )
    return stored


async def check_database(doctor: Doctor) -> None:
    """Check that the configured database answers and keeps a session (no transaction
    pooler); nothing to check without a ``DATABASE_URL`` (the embedded one is direct)."""
    from tradebridge.store.pooling import lost_sessions, transaction_pooler_advice

    url = doctor.settings.database.url
    if url is None:
        return
    dsn = url.get_secret_value()
    try:
        why = await lost_sessions(dsn)
    except BridgeError as e:  # DatabaseUnavailable: its text names the host, never a secret
        doctor.add(
            Check(
                "database",
                Status.FAIL,
                str(e),
                "start the database or correct DATABASE_URL / [database] url",
            )
        )
        return
    if why is not None:
        finding, fix = transaction_pooler_advice(dsn, why)
        doctor.add(Check("database", Status.FAIL, finding, fix))
        return
    doctor.add(Check("database", Status.PASS, "the database answers and keeps a session"))

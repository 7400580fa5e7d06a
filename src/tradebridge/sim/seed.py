"""Write the simulator's tokens into Redis, as a token service would for the real broker.

For every account of every user, the key ``token:<account name>`` (the template is
configurable) holds the JSON value of reference §2.9, with a TTL that ends slightly before
the token does. One native login per user covers all its accounts (§2.9: the key is only a
label). While the simulator runs, the tokens are renewed (``renewaccesstoken`` semantics:
same session, no new login) before they expire and the keys are rewritten, and every
``check_s`` (1 s) the seeder checks that Redis still holds the keys: after Redis restarted
empty (or was flushed) it writes the current tokens back within that time. While it runs, the
seeder also answers ``POST /_sim/tokens/expire``: after every session was ended, it logs in
afresh and rewrites the keys at once, as a token service would.
Tokens are never logged or printed.
"""

from __future__ import annotations

import asyncio
import json
import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from redis.asyncio import Redis
from redis.exceptions import RedisError

from tradebridge.sim.auth import IssuedToken
from tradebridge.sim.config import SimAccountConfig, SimUserConfig
from tradebridge.sim.context import SimContext

DEFAULT_KEY_TEMPLATE = "token:{account_name}"
_CHECK_S = 1.0
_log = logging.getLogger(__name__)
# Keys vanish this share of the lifetime before the token does (at most a minute early).
_TTL_MARGIN_SHARE = 0.1
_TTL_MARGIN_MAX = timedelta(seconds=60)
# Renew when this share of the lifetime has passed (reference §2.5 suggests about 80 %).
_RENEW_AT_SHARE = 0.8
# The token's ``exp`` claim is whole seconds, so it can end up to a second before the
# session does: keys expire, and renewals happen, at least this much earlier.
_CLAIM_SLACK = timedelta(seconds=1)


def _iso(value: datetime) -> str:
    return value.strftime("%Y-%m-%dT%H:%M:%S.") + f"{value.microsecond // 1000:03d}Z"


def key_for(template: str, user: SimUserConfig, account: SimAccountConfig) -> str:
    """Return the Redis key of one account from a template such as ``token:{account_name}``."""
    return template.format(
        account_name=account.name,
        account_id=account.id,
        bridge_id=account.bridge_id,
        user=user.name,
        user_id=user.id,
    )


def check_template(template: str) -> None:
    """Raise ``ValueError`` if the key template uses an unknown field."""
    probe_user = SimUserConfig(id=1, name="u", password="p", accounts=[])  # noqa: S106 - probe
    probe = SimAccountConfig(id=1, name="n", bridge_id="D1")
    try:
        key_for(template, probe_user, probe)
    except (KeyError, IndexError, ValueError) as exc:
        raise ValueError(
            f"bad key template {template!r}: use {{account_name}}, {{account_id}}, "
            f"{{bridge_id}}, {{user}} or {{user_id}}"
        ) from exc


@dataclass
class TokenSeeder:
    """Keeps one native token per simulator user in Redis under every account's key."""

    ctx: SimContext
    redis: Redis
    key_template: str = DEFAULT_KEY_TEMPLATE
    env: str = "demo"
    # How often ``run`` checks that Redis still holds the keys (and retries after an error).
    check_s: float = _CHECK_S
    # Times ``run`` found keys missing and wrote them back.
    reseeds: int = 0
    _tokens: dict[int, IssuedToken] = field(default_factory=dict)
    _obtained: dict[int, datetime] = field(default_factory=dict)
    # One seeding at a time: a renewal still being written must not land after the fresh
    # tokens an expiry asked for (Redis would end up holding a dead token).
    _seeding: asyncio.Lock = field(default_factory=asyncio.Lock)

    async def seed(self) -> list[str]:
        """Log every user in (or renew its token) and write its keys; return the keys."""
        async with self._seeding:
            return await self._seed()

    async def _seed(self) -> list[str]:
        keys: list[str] = []
        for user in self.ctx.config.users:
            current = self._tokens.get(user.id)
            renewed = self.ctx.auth.renew(current.token) if current is not None else None
            issued = renewed or self.ctx.auth.issue(user, "native")
            self._tokens[user.id] = issued
            self._obtained[user.id] = self.ctx.clock.now()
            keys.extend(await self._write(user, issued))
        return keys

    async def _write(self, user: SimUserConfig, issued: IssuedToken) -> list[str]:
        now = self.ctx.clock.now()
        lifetime = issued.expires - now
        margin = max(_CLAIM_SLACK, min(lifetime * _TTL_MARGIN_SHARE, _TTL_MARGIN_MAX))
        ttl_ms = max(1, int((lifetime - margin).total_seconds() * 1000))
        value = json.dumps(
            {
                "kind": "native",
                "env": self.env,
                "accessToken": issued.token,
                # The simulator serves market data on the same token.
                "mdAccessToken": issued.token,
                "expirationTime": _iso(issued.expires),
                "userId": user.id,
                "obtainedAt": _iso(now),
            }
        )
        keys = [key_for(self.key_template, user, a) for a in user.accounts]
        async with self.redis.pipeline(transaction=True) as pipe:
            for key in keys:
                pipe.set(key, value, px=ttl_ms)
            await pipe.execute()
        return keys

    def _due_in_s(self) -> float:
        """Return the seconds until the earliest token needs renewing (negative: overdue)."""
        now = self.ctx.clock.now()
        waits = []
        for user_id, issued in self._tokens.items():
            obtained = self._obtained[user_id]
            due = min(
                obtained + (issued.expires - obtained) * _RENEW_AT_SHARE,
                issued.expires - 2 * _CLAIM_SLACK,
            )
            waits.append((due - now).total_seconds())
        return min(waits, default=60.0)

    def next_refresh_s(self) -> float:
        """Return how many seconds to wait before the earliest token needs renewing."""
        return max(0.05, self._due_in_s())

    async def reseed_missing(self) -> list[str]:
        """Write the current tokens back under the keys Redis lost; return those keys.

        Redis restarted empty, or flushed: without this the keys would only come back at
        the next renewal, and a process started meanwhile would find no token.
        """
        async with self._seeding:
            written: list[str] = []
            for user in self.ctx.config.users:
                issued = self._tokens.get(user.id)
                if issued is None or issued.expires <= self.ctx.clock.now():
                    continue
                keys = [key_for(self.key_template, user, a) for a in user.accounts]
                if not keys or await self.redis.exists(*keys) == len(keys):
                    continue
                written.extend(await self._write(user, issued))
            if written:
                self.reseeds += 1
                _log.warning("simulator tokens were missing in Redis; written again: %s",
                             ", ".join(written))  # fmt: skip
            return written

    async def run(self) -> None:
        """Seed now; renew and rewrite before the tokens expire, and write back keys Redis
        lost within ``check_s``, until cancelled."""
        await self.seed()
        self.ctx.token_writers.append(self.seed)
        try:
            while True:
                await asyncio.sleep(max(0.05, min(self._due_in_s(), self.check_s)))
                try:
                    if self._due_in_s() <= 0.05:
                        await self.seed()
                    else:
                        await self.reseed_missing()
                except RedisError as exc:
                    # Redis may come back: the next check writes the keys again.
                    _log.warning("writing simulator tokens to Redis failed: %s", type(exc).__name__)
        finally:
            self.ctx.token_writers.remove(self.seed)

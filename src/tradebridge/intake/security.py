"""The webhook's gatekeeping: secret, source address, client certificate, rate, redaction.

TradingView sends no custom headers, so the secret travels in the URL path or the body; the
source addresses and the TLS client certificate are its other proofs of identity
(reference §1). Everything here is cheap and runs before any database work.
"""

from __future__ import annotations

import hmac
import ipaddress
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from tradebridge.config import Settings, WebhookConfig
from tradebridge.errors import ConfigError
from tradebridge.intake.formats.body import SECRET_FIELDS

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Address = ipaddress.IPv4Address | ipaddress.IPv6Address


def validate_webhook_settings(settings: Settings) -> None:
    """Refuse to start a webhook without a secret (unless a local test says so) or with bad lists.

    ``ConfigError`` names the setting; the application calls this before it listens.
    """
    hook = settings.webhook
    secret = hook.secret.get_secret_value() if hook.secret is not None else ""
    if not secret and not hook.allow_no_secret_for_local_tests:
        raise ConfigError(
            "webhook.secret is not set: the webhook would take orders from anyone. Set "
            "TRADEBRIDGE_WEBHOOK__SECRET (a long random string), or "
            "webhook.allow_no_secret_for_local_tests = true for a local test"
        )
    if not secret and not is_loopback_host(settings.serve.host):
        raise ConfigError(
            "webhook.allow_no_secret_for_local_tests works only on a loopback bind address, "
            f"and serve.host is {settings.serve.host!r}: anyone who can reach it could place "
            "orders. Set TRADEBRIDGE_WEBHOOK__SECRET (a long random string), or bind "
            "serve.host = 127.0.0.1 for a local test"
        )
    if secret and len(secret) < 12:
        raise ConfigError("webhook.secret is too short: use at least 12 characters")
    parse_networks(hook.allowed_ips, "webhook.allowed_ips")
    parse_networks(hook.trusted_proxies, "webhook.trusted_proxies")
    if hook.ip_allowlist and not hook.allowed_ips:
        raise ConfigError("webhook.ip_allowlist is on but webhook.allowed_ips is empty")
    if hook.client_cert and not hook.trusted_proxies:
        raise ConfigError(
            "webhook.client_cert needs webhook.trusted_proxies: the verified subject comes "
            "from the TLS proxy's header, believed only from the proxy (docs/tradingview.md)"
        )
    for name, entries in hook.groups.items():
        if not entries:
            raise ConfigError(f"webhook.groups.{name} is empty")


def is_loopback_host(host: str) -> bool:
    """Return whether a bind address only listens on this machine (127.0.0.0/8, ::1)."""
    text = host.strip().strip("[]")
    if text.lower() == "localhost":
        return True
    address = _address(text)
    return address is not None and address.is_loopback


def parse_networks(entries: Iterable[str], setting: str) -> tuple[Network, ...]:
    """Parse addresses or CIDR networks; ``ConfigError`` names the bad entry."""
    out: list[Network] = []
    for entry in entries:
        try:
            out.append(ipaddress.ip_network(entry.strip(), strict=False))
        except ValueError:
            raise ConfigError(f"{setting}: {entry!r} is not an IP address or network") from None
    return tuple(out)


def secret_matches(given: str, expected: str) -> bool:
    """Compare secrets in constant time (for equal lengths; the length is not a secret).

    Any string compares: a lone surrogate (JSON's ``"\\ud800"``) has no UTF-8 form, so it is
    encoded with ``surrogatepass``, which no real secret's encoding can equal.
    """
    return hmac.compare_digest(
        given.encode("utf-8", "surrogatepass"), expected.encode("utf-8", "surrogatepass")
    )


def _address(text: str) -> Address | None:
    try:
        return ipaddress.ip_address(text.strip())
    except ValueError:
        return None


def _in(address: Address | None, networks: tuple[Network, ...]) -> bool:
    return address is not None and any(address in net for net in networks)


@dataclass(frozen=True, slots=True)
class Gate:
    """The parsed address lists of one ``WebhookConfig``."""

    allowed: tuple[Network, ...]
    proxies: tuple[Network, ...]

    @classmethod
    def from_config(cls, hook: WebhookConfig) -> Gate:
        """Parse the lists once."""
        return cls(
            allowed=parse_networks(hook.allowed_ips, "webhook.allowed_ips"),
            proxies=parse_networks(hook.trusted_proxies, "webhook.trusted_proxies"),
        )

    def client_address(self, peer: str | None, forwarded_for: str | None) -> str:
        """Return the caller's address: the peer, or X-Forwarded-For from a trusted proxy.

        The header is read from the right, skipping our own proxies, so a client cannot
        forge its address by sending an X-Forwarded-For of its own.
        """
        peer_text = peer or "unknown"
        if not forwarded_for or not _in(_address(peer_text), self.proxies):
            return peer_text
        hops = [h.strip() for h in forwarded_for.split(",") if h.strip()]
        for hop in reversed(hops):
            if not _in(_address(hop), self.proxies):
                return hop
        return hops[0] if hops else peer_text

    def peer_is_proxy(self, peer: str | None) -> bool:
        """Return whether the TCP peer is one of our trusted proxies."""
        return peer is not None and _in(_address(peer), self.proxies)

    def allows(self, address: str) -> bool:
        """Return whether ``address`` is on the allow-list."""
        return _in(_address(address), self.allowed)


def client_cert_ok(hook: WebhookConfig, headers: Mapping[str, str]) -> bool:
    """Check the proxy's verdict and the subject it passed (RFC 4514 or OpenSSL style)."""
    verdict = headers.get(hook.client_cert_verify_header.lower(), "")
    if verdict.strip().upper() != "SUCCESS":
        return False
    subject = parse_subject(headers.get(hook.client_cert_header.lower(), ""))
    return all(subject.get(k.upper()) == v for k, v in hook.client_cert_subject.items())


def parse_subject(text: str) -> dict[str, str]:
    """Parse ``CN=TradingView Webhooks,O=TradingView\\, Inc.,...`` or ``/C=US/O=.../CN=...``."""
    text = text.strip()
    if text.startswith("/"):
        parts = [p for p in text.split("/") if p]
    else:
        parts, current, escaped = [], "", False
        for ch in text:
            if escaped:
                current += ch
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == ",":
                parts.append(current)
                current = ""
            else:
                current += ch
        parts.append(current)
    out: dict[str, str] = {}
    for part in parts:
        key, sep, value = part.partition("=")
        if sep:
            out[key.strip().upper()] = value.strip()
    return out


@dataclass(slots=True)
class RateLimiter:
    """Token buckets per address, in this process only (two processes allow twice as much)."""

    per_minute: int
    burst: int
    max_tracked: int = 10_000
    _buckets: dict[str, tuple[float, float]] = field(default_factory=dict)

    def allow(self, address: str, now: float | None = None) -> bool:
        """Take one token for ``address``; ``False`` when its bucket is empty."""
        if self.per_minute <= 0:
            return True
        now = time.monotonic() if now is None else now
        rate = self.per_minute / 60.0
        tokens, last = self._buckets.get(address, (float(self.burst), now))
        tokens = min(float(self.burst), tokens + (now - last) * rate)
        if tokens < 1.0:
            self._buckets[address] = (tokens, now)
            return False
        if address not in self._buckets and len(self._buckets) >= self.max_tracked:
            self._forget_full(now, rate)
        self._buckets[address] = (tokens - 1.0, now)
        return True

    def _forget_full(self, now: float, rate: float) -> None:
        # Buckets that have refilled carry no state worth keeping: drop them.
        full = [a for a, (t, last) in self._buckets.items()
                if t + (now - last) * rate >= self.burst]  # fmt: skip
        for address in full or list(self._buckets)[: self.max_tracked // 2]:
            del self._buckets[address]


def redact(value: Any) -> Any:
    """Return ``value`` with every secret-carrying field masked, at any depth."""
    if isinstance(value, dict):
        return {
            k: ("***" if k.lower() in SECRET_FIELDS and v is not None else redact(v))
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [redact(v) for v in value]
    return value


def body_secrets(body: Mapping[str, Any]) -> list[Any]:
    """Return every secret the body carries (top level, and PickMyTrade's per-account tokens)."""
    found = [body[k] for k in body if k.lower() in SECRET_FIELDS and body[k] is not None]
    entries = body.get("multiple_accounts")
    if isinstance(entries, list):
        found += [e["token"] for e in entries if isinstance(e, dict) and e.get("token")]
    return found

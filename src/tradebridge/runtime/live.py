"""Live trading is deliberate: ``environment = "live"`` also needs ``tradovate.confirm_live``.

``serve``, ``up`` and the workers call ``require_live_confirmed`` before they start anything,
and ``tradebridge config check`` reports the same message.
"""

from __future__ import annotations

from tradebridge.config import Settings
from tradebridge.domain.enums import Environment
from tradebridge.errors import ConfigError

LIVE_NOT_CONFIRMED = (
    'tradovate.confirm_live is not true but tradovate.environment is "live": orders would '
    "trade real money. Set tradovate.confirm_live = true in [tradovate] (or "
    'TRADEBRIDGE_TRADOVATE__CONFIRM_LIVE=true) to trade live, or environment = "demo"'
)


def is_live(settings: Settings) -> bool:
    """Return whether ``settings`` trade on Tradovate's live environment (real money)."""
    return settings.tradovate.environment is Environment.LIVE


def require_live_confirmed(settings: Settings) -> None:
    """Refuse live settings without ``tradovate.confirm_live`` (``ConfigError`` naming it)."""
    if is_live(settings) and not settings.tradovate.confirm_live:
        raise ConfigError(LIVE_NOT_CONFIRMED)

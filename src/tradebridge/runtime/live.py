"""Live trading is deliberate: ``environment = "live"`` also needs ``tradovate.confirm_live``,
and every risk rail defined for every account (docs/risk.md).

``serve``, ``up`` and the workers call ``require_live_confirmed`` before they start anything,
and ``tradebridge config check`` reports the same message.
"""

from __future__ import annotations

from tradebridge.config import Settings
from tradebridge.domain.enums import Environment
from tradebridge.errors import ConfigError
from tradebridge.pipeline.risk import rules_for

LIVE_NOT_CONFIRMED = (
    'tradovate.confirm_live is not true but tradovate.environment is "live": orders would '
    "trade real money. Set tradovate.confirm_live = true in [tradovate] (or "
    'TRADEBRIDGE_TRADOVATE__CONFIRM_LIVE=true) to trade live, or environment = "demo"'
)


def is_live(settings: Settings) -> bool:
    """Return whether ``settings`` trade on Tradovate's live environment (real money)."""
    return settings.tradovate.environment is Environment.LIVE


def undefined_rails(settings: Settings) -> list[str]:
    """Return, per account (and strategy of ``[risk.strategies]``), the risk rails nobody set.

    A rail (``config.RISK_RAILS``) has no value safe for every account: the allowed roots,
    the daily loss limit, the trailing drawdown. Each is "account: rail, rail" text.
    """
    found: list[str] = []
    for account in settings.accounts:
        for strategy in (None, *sorted(settings.risk.strategies)):
            missing = rules_for(settings, account.name, strategy).undefined
            if missing:
                who = account.name + (f" (strategy {strategy})" if strategy else "")
                found.append(f"{who}: {', '.join(sorted(missing))}")
    return found


def require_live_confirmed(settings: Settings) -> None:
    """Refuse live settings without ``tradovate.confirm_live``, or with a risk rail left
    undefined for an account (``ConfigError`` naming each)."""
    if not is_live(settings):
        return
    if not settings.tradovate.confirm_live:
        raise ConfigError(LIVE_NOT_CONFIRMED)
    missing = undefined_rails(settings)
    if missing:
        raise ConfigError(
            "live accounts need every risk rail defined, and these are not: "
            + "; ".join(missing)
            + '. Set each in [risk] or the account\'s risk table, to a value or to "off" on '
            "purpose (docs/risk.md)"
        )

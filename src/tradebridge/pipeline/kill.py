"""The kill switch as a risk limit: the database's switches folded into ``RiskLimits``.

The one seam between the kill switch (``domain/kill.py``; read by ``store/kill.py``) and the
risk checks: the dispatcher and intake call ``with_kill_switch`` for a row's account, and
``check_risk`` denies what may open a position while it is on, naming the switch, who threw
it, when and why. Exits and flattens pass (``risk.reduces_only``, and they are no new order).
"""

from __future__ import annotations

from dataclasses import replace

from tradebridge.domain.kill import KillSwitches
from tradebridge.pipeline.risk import RiskLimits


def with_kill_switch(limits: RiskLimits, switches: KillSwitches, account: str | None) -> RiskLimits:
    """Return ``limits`` with the kill switch on if a switch stops ``account``.

    ``limits.kill_switch`` (the settings' ``risk.kill_switch``) stays on whatever the
    database says: the settings force it.
    """
    stopping = switches.stopping(account)
    if stopping is None:
        return limits
    return replace(limits, kill_switch=True, kill_switch_source=stopping)

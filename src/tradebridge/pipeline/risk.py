"""Risk: basic pre-trade limits on a routed order; a breach is a ``Denied``.

Pure: the broker position is an argument. Limits guard exposure, so an order that only
reduces the position (an exit, a flatten) passes every limit, the kill switch included:
a trader who switched trading off must still be able to get out.
"""

from __future__ import annotations

from dataclasses import dataclass

from tradebridge.config import RiskConfig
from tradebridge.domain.commands import SubmitOrder
from tradebridge.pipeline.validate import Denied


@dataclass(frozen=True, slots=True)
class RiskLimits:
    """The limits in force (``[risk]`` settings)."""

    kill_switch: bool = False
    max_order_qty: int | None = None
    max_position: int | None = None
    # Which switch is on, who threw it, when and why (pipeline/kill.py), for the denial.
    kill_switch_source: str = "risk.kill_switch"

    @classmethod
    def from_config(cls, config: RiskConfig) -> RiskLimits:
        """Build the limits from the settings section."""
        return cls(config.kill_switch, config.max_order_qty, config.max_position)

    @property
    def needs_position(self) -> bool:
        """Return whether checking an order needs the broker position."""
        return self.max_position is not None


def reduces_only(command: SubmitOrder, position: int | None) -> bool:
    """Return whether ``command`` can only shrink the position toward flat."""
    if position is None or position == 0:
        return False
    after = position + command.side.sign * command.quantity
    return abs(after) < abs(position) and (after == 0 or (after > 0) == (position > 0))


def check_risk(command: SubmitOrder, *, position: int | None, limits: RiskLimits) -> Denied | None:
    """Return why ``command`` breaks a limit, or ``None`` if it may be sent."""
    if reduces_only(command, position):
        return None
    if limits.kill_switch:
        return Denied(
            f"kill switch is on: new orders are refused ({limits.kill_switch_source})", "risk"
        )
    if limits.max_order_qty is not None and command.quantity > limits.max_order_qty:
        return Denied(
            f"quantity {command.quantity} exceeds the limit of {limits.max_order_qty} "
            "contracts per order (risk.max_order_qty)",
            "quantity",
        )
    if limits.max_position is not None:
        current = position or 0
        after = current + command.side.sign * command.quantity
        if abs(after) > limits.max_position:
            return Denied(
                f"the position in {command.contract.name} would be {after:+d} (now "
                f"{current:+d}), beyond the limit of {limits.max_position} "
                "(risk.max_position)",
                "quantity",
            )
    return None

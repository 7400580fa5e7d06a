"""SQL text made from the lifecycle's statuses (``domain/lifecycle.py``).

The ledger's statements name statuses through ``SignalStatus``, never by a literal of their
own, so a statement cannot ask for a status the state machine does not have. No input ever
reaches this text: only the enum's values do (hence the ``S608`` exemptions where it is used).
"""

from __future__ import annotations

from tradebridge.domain.lifecycle import SignalStatus


def status_list(*statuses: SignalStatus) -> str:
    """Return ``statuses`` as an SQL list of literals, ``('a', 'b')``, in the order given."""
    return "(" + ", ".join(f"'{status.value}'" for status in statuses) + ")"

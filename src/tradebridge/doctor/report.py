"""The doctor's report: the verdicts of reference §10.1, one line per check, the report as JSON.

The model every check writes and the CLI prints (``tradebridge doctor``, table or ``--json``).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any


class Verdict(StrEnum):
    """The verdicts of reference §10.1 ("What doctor must automate")."""

    OK = "OK"
    MALFORMED_URL = "MALFORMED_URL"
    ACCOUNT_NAME_USED_AS_ID = "ACCOUNT_NAME_USED_AS_ID"
    ACCOUNT_ID_NOT_FOUND = "ACCOUNT_ID_NOT_FOUND"
    TOKEN_INVALID_OR_WRONG_ENV = "TOKEN_INVALID_OR_WRONG_ENV"  # noqa: S105 - a verdict name
    INSTRUMENT_UNKNOWN_OR_EXPIRED = "INSTRUMENT_UNKNOWN_OR_EXPIRED"
    DURATION_NOT_SUPPORTED = "DURATION_NOT_SUPPORTED"
    ENUM_CASE = "ENUM_CASE"
    MISSING_BID_ASK = "MISSING_BID_ASK"
    FORM_INVALID = "FORM_INVALID"  # qty, prices, unknown enum values (not a case problem)


class Status(StrEnum):
    """How one check came out."""

    PASS = "pass"  # noqa: S105 - a check status
    FAIL = "fail"
    WARN = "warn"
    SKIP = "skip"


@dataclass(frozen=True, slots=True)
class Finding:
    """One problem the bridge differential found."""

    verdict: Verdict
    message: str
    fix: str = ""


@dataclass(frozen=True, slots=True)
class Check:
    """One line of the doctor's report."""

    name: str
    status: Status
    detail: str
    fix: str = ""
    verdict: Verdict | None = None


@dataclass(frozen=True, slots=True)
class DoctorReport:
    """Every check, in order, and the verdict of the bridge differential (if it ran)."""

    account: str | None
    checks: tuple[Check, ...]
    findings: tuple[Finding, ...] = ()

    @property
    def verdict(self) -> Verdict | None:
        """Return the first finding's verdict, ``OK`` when the differential found nothing."""
        if self.findings:
            return self.findings[0].verdict
        return Verdict.OK if any(c.verdict is Verdict.OK for c in self.checks) else None

    @property
    def ok(self) -> bool:
        """Return whether nothing failed."""
        return all(c.status is not Status.FAIL for c in self.checks)

    def to_json(self) -> dict[str, Any]:
        """Return the report as JSON-ready data."""
        return {
            "account": self.account,
            "ok": self.ok,
            "verdict": self.verdict.value if self.verdict else None,
            "checks": [
                {
                    "name": c.name,
                    "status": c.status.value,
                    "detail": c.detail,
                    "fix": c.fix,
                    "verdict": c.verdict.value if c.verdict else None,
                }
                for c in self.checks
            ],
            "findings": [
                {"verdict": f.verdict.value, "message": f.message, "fix": f.fix}
                for f in self.findings
            ],
        }

"""The webhook's answers: the body of a 200 and of a refusal (4xx, 503), and their OpenAPI."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field


class AcceptedAnswer(BaseModel):
    """200: the alert is stored; workers place it."""

    status: Literal["accepted", "duplicate", "rejected", "killed"]
    signal_ids: list[str]
    group_id: str | None = None
    instrument: str | None = None
    format: str | None = None
    reason: str | None = Field(None, description="why a stored alert is not traded (stale)")
    detail: str | None = None
    ignored_fields: list[str] = Field(default_factory=list)
    notes: list[str] = Field(default_factory=list, description="e.g. rounding of brackets")
    original_status: str | None = Field(None, description="for a duplicate: the first answer")


class ErrorAnswer(BaseModel):
    """4xx / 503: nothing was stored."""

    status: Literal["invalid", "unauthorized", "forbidden", "too_large", "rate_limited",
                    "unavailable"]  # fmt: skip
    error: str
    field: str | None = None
    expected: str | None = None

"""What the payload formats' OpenAPI models share (documentation only: the parsers rule)."""

from __future__ import annotations

from decimal import Decimal

from pydantic import BaseModel, ConfigDict

Number = Decimal | str


class OpenApiModel(BaseModel):
    """An alert shape as OpenAPI documents it: unknown fields are not part of it."""

    model_config = ConfigDict(extra="forbid")

"""The base of every configuration model."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class Strict(BaseModel):
    """Base for config models: immutable, unknown keys are errors."""

    model_config = ConfigDict(frozen=True, extra="forbid")

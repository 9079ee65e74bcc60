"""Budget: how long one trial trains. Its own module so that workloads and the spec can both use it
without importing each other."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, model_validator

__all__ = ["Budget"]


class Budget(BaseModel):
    """How long one trial trains: exactly one of {"epochs": n} or {"steps": n}."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    epochs: Annotated[int, Field(strict=True, ge=1, le=100_000)] | None = None
    steps: Annotated[int, Field(strict=True, ge=1, le=100_000_000)] | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> Budget:
        if (self.epochs is None) == (self.steps is None):
            raise ValueError("budget needs exactly one of 'epochs' or 'steps'")
        return self

    def total_steps(self, steps_per_epoch: int) -> int:
        """Optimizer steps this budget allows for a problem with `steps_per_epoch`."""
        if self.steps is not None:
            return self.steps
        assert self.epochs is not None
        return self.epochs * steps_per_epoch

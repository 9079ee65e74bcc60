"""Budget: how long one trial trains, and how long it may take. Its own module so that
workloads and the spec can both use it without importing each other."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, model_validator

__all__ = ["MAX_TRIAL_SECONDS", "Budget"]

MAX_TRIAL_SECONDS = 30 * 24 * 3600.0  # a month: beyond it, a limit is a typo


class Budget(BaseModel):
    """How long one trial trains: exactly one of {"epochs": n} or {"steps": n}; optionally
    `max_seconds`, a wall-clock limit per trial that the worker enforces by killing its trainer
    process (a trial past it is `failed`, "timed out", and not retried: a rerun would time out
    again). The limit does not change a completed trial's result, so it is no part of the reuse
    key (studies/reuse.py)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    epochs: Annotated[int, Field(strict=True, ge=1, le=100_000)] | None = None
    steps: Annotated[int, Field(strict=True, ge=1, le=100_000_000)] | None = None
    max_seconds: (
        Annotated[float, Field(strict=True, gt=0, le=MAX_TRIAL_SECONDS, allow_inf_nan=False)] | None
    ) = None

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

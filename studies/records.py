"""TrialRecord: the few facts about one finished trial that the robustness analysis reads."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from studies.spec import TrialConfig
    from studies.trial import TrialResult

__all__ = ["TrialRecord"]


def _finite(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) else None


@dataclass(frozen=True)
class TrialRecord:
    """One trial as the analysis sees it: grid coordinates, state, final and initial loss."""

    optimizer: str
    lr: float
    beta3: float | None
    warmup_steps: int
    seed: int
    state: str  # "completed" | "diverged"; anything else is ignored by the analysis
    loss: float | None
    loss0: float | None

    @property
    def capped_loss(self) -> float | None:
        """min(loss, loss0); loss0 when diverged or the loss is not finite; None if unknown."""
        loss, loss0 = _finite(self.loss), _finite(self.loss0)
        if self.state == "diverged" or loss is None:
            return loss0
        return loss if loss0 is None else min(loss, loss0)

    @classmethod
    def from_result(cls, config: TrialConfig, result: TrialResult) -> TrialRecord:
        """The record of a trial run locally (the database builds the same from its rows)."""
        return cls(
            optimizer=config.optimizer,
            lr=config.lr,
            beta3=config.beta3,
            warmup_steps=config.warmup_steps,
            seed=config.seed,
            state=result.state,
            loss=result.loss,
            loss0=result.loss0,
        )

    @classmethod
    def from_params(
        cls, params: dict[str, Any], *, state: str, loss: float | None, loss0: float | None
    ) -> TrialRecord:
        """Build a record from TrialConfig.params() plus the stored outcome."""
        return cls(
            optimizer=str(params["optimizer"]),
            lr=float(params["lr"]),
            beta3=None if params.get("beta3") is None else float(params["beta3"]),
            warmup_steps=int(params.get("warmup_steps", 0)),
            seed=int(params.get("seed", 0)),
            state=state,
            loss=loss,
            loss0=loss0,
        )

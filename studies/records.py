"""TrialRecord: the facts about one trial that the robustness analysis reads."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from studies.spec import TrialConfig
    from studies.trial import TrialResult

__all__ = ["RESULT_STATES", "TrialRecord"]

#: States that are results (a diverged trial is a result: its capped loss is loss0).
RESULT_STATES = ("completed", "diverged")


def _finite(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) else None


@dataclass(frozen=True)
class TrialRecord:
    """One trial as the analysis sees it: grid coordinates, state, losses, and its curve.

    Every trial of a study is a record, whatever its state: the report counts failed, cancelled,
    queued and running ones (they are the missing cells of a comparison) and lists the errors of
    failed ones, but only `RESULT_STATES` enter a statistic.
    """

    optimizer: str
    lr: float
    beta3: float | None
    warmup_steps: int
    seed: int
    state: str  # completed | diverged | failed | cancelled | queued | running
    loss: float | None  # final validation loss
    loss0: float | None  # validation loss of the untrained model (same seed)
    schedule: str = "constant"
    test_loss: float | None = None  # final test loss, None without a test split
    # The stored validation curve: evaluation steps and their losses (same length).
    curve_steps: Sequence[int] = ()
    curve_losses: Sequence[float] = ()
    trial_id: int | None = None
    error: str | None = None
    # AdaMod/DiffMod telemetry: first step at which fewer than half the elements are bounded.
    bound_release_step: float | None = None
    # Where it ran: torch version, device, and the data hashes the workload reported.
    torch_version: str | None = None
    device: str | None = None
    # How many trials trained together in one vectorized model (1: alone): not part of a result.
    pack_size: int = field(default=1, compare=False)
    data: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)

    @property
    def capped_loss(self) -> float | None:
        """min(loss, loss0); loss0 when diverged or the loss is not finite; None if unknown."""
        loss, loss0 = _finite(self.loss), _finite(self.loss0)
        if self.state == "diverged" or loss is None:
            return loss0
        return loss if loss0 is None else min(loss, loss0)

    def steps_to(self, target: float) -> int | None:
        """The first evaluation step whose validation loss is <= target; None when never."""
        for step, loss in zip(self.curve_steps, self.curve_losses, strict=False):
            if loss is not None and math.isfinite(loss) and loss <= target:
                return int(step)
        return None

    @classmethod
    def from_result(
        cls, config: TrialConfig, result: TrialResult, *, trial_id: int | None = None
    ) -> TrialRecord:
        """The record of a trial run locally (the database builds the same from its rows)."""
        return cls.from_params(
            config.params(),
            state=result.state,
            loss=result.loss,
            loss0=result.loss0,
            result=result.to_dict(),
            curve=[{"step": p.step, "val_loss": p.val_loss} for p in result.curve],
            bound_stats=result.bound_stats,
            trial_id=trial_id,
        )

    @classmethod
    def from_params(
        cls,
        params: dict[str, Any],
        *,
        state: str,
        loss: float | None,
        loss0: float | None,
        result: dict[str, Any] | None = None,
        curve: Sequence[dict[str, Any]] | None = None,
        bound_stats: dict[str, Any] | None = None,
        trial_id: int | None = None,
        error: str | None = None,
    ) -> TrialRecord:
        """Build a record from TrialConfig.params() plus what was stored of the outcome.

        `result` is TrialResult.to_dict() (for test_loss), `curve` the list of stored evaluation
        points ({"step", "val_loss", ...}), `bound_stats` the telemetry summary.
        """
        points = [p for p in curve or () if isinstance(p, dict) and "step" in p]
        release = None
        if isinstance(bound_stats, dict):
            release = (bound_stats.get("summary") or {}).get("bound_half_release_step")
        result = result if isinstance(result, dict) else {}
        test_loss = result.get("test_loss")
        extras = result.get("extras") if isinstance(result.get("extras"), dict) else {}
        data = {k: v for k, v in extras.items() if "hash" in k or "sha" in k or k == "source"}
        return cls(
            optimizer=str(params["optimizer"]),
            lr=float(params["lr"]),
            beta3=None if params.get("beta3") is None else float(params["beta3"]),
            warmup_steps=int(params.get("warmup_steps", 0)),
            seed=int(params.get("seed", 0)),
            state=state,
            loss=loss,
            loss0=loss0,
            schedule=str(params.get("schedule") or "constant"),
            test_loss=_finite(test_loss) if isinstance(test_loss, int | float) else None,
            curve_steps=tuple(int(p["step"]) for p in points),
            curve_losses=tuple(
                float(p["val_loss"]) if p.get("val_loss") is not None else math.nan
                for p in points
            ),
            trial_id=trial_id,
            error=error,
            bound_release_step=float(release) if isinstance(release, int | float) else None,
            torch_version=result.get("torch_version"),
            device=result.get("device"),
            pack_size=int(result.get("pack_size") or 1),
            data=data,
        )

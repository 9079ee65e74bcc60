"""What a trial produces, and the bookkeeping that produces it, shared by every training loop.

`run_trial` (one model) and `run_pack` (many members in one vectorized model) differ in how they
compute losses; what they record must not differ. A TrialLog per trial holds the rules: when a
trial diverges, what an evaluation point contains, how the training loss is averaged between
evaluations, and how the final TrialResult is assembled.
"""

from __future__ import annotations

import math
from collections.abc import Collection
from dataclasses import asdict, dataclass, field, fields, is_dataclass
from typing import Any, Literal

import numpy as np

__all__ = [
    "MAX_BOUND_POINTS",
    "EvalPoint",
    "TrialLog",
    "TrialResult",
    "TrialState",
    "eval_due",
    "initial_loss",
    "summarize_bounds",
]

MAX_BOUND_POINTS = 200  # the per-step bound series is downsampled to at most this many points

TrialState = Literal["completed", "diverged", "cancelled"]


@dataclass
class EvalPoint:
    """One evaluation on validation data during a trial."""

    step: int
    epoch: float
    val_loss: float
    train_loss: float | None  # mean training loss since the previous evaluation
    accuracy: float | None


@dataclass
class TrialResult:
    """The outcome of one trial, JSON-able through to_dict()."""

    state: TrialState
    loss: float | None  # final validation loss; None when diverged, or cancelled before any
    loss0: float  # validation loss before step 1
    accuracy: float | None
    curve: list[EvalPoint]
    bound_stats: dict[str, Any] | None
    steps: int
    duration_s: float  # in a pack: the pack's time divided by its members
    device: str
    torch_version: str
    # On the workload's held-out test split, once at the end of a completed trial; None when the
    # workload has no test split, or the trial diverged or was cancelled.
    test_loss: float | None = None
    test_accuracy: float | None = None
    extras: dict[str, Any] = field(default_factory=dict)  # facts from the workload (data, sizes)
    pack_size: int = 1  # how many trials trained together in one vectorized model (1: alone)
    # The trial (its id in the queue) whose identical result this one copied instead of training
    # (studies/reuse.py); None: trained.
    reused_from: int | None = None
    # The step of the checkpoint this attempt resumed from (studies/checkpoints.py); None: the
    # trial trained from step 0 in one attempt.
    resumed_from_step: int | None = None

    def to_dict(self, *, exclude: Collection[str] = ()) -> dict[str, Any]:
        """A JSON-able dict (no NaN or infinity anywhere), without the fields in `exclude`
        (the queue stores the curve and bound_stats in their own columns: converting them only
        to drop them was most of a pack member's completion time)."""
        unknown = set(exclude) - {f.name for f in fields(self)}
        if unknown:
            raise ValueError(f"exclude: unknown TrialResult fields {sorted(unknown)}")
        return {
            f.name: _json_safe(getattr(self, f.name)) for f in fields(self) if f.name not in exclude
        }


def _json_safe(value: Any) -> Any:
    """`value` with every non-finite float as None, dataclasses as dicts, tuples as lists.

    Plain floats, ints and strings are handled inline (a pack of 64 results holds ~80,000 of
    them in curves and bound series; one call each was ~0.2 s of the pack)."""
    kind = type(value)
    if kind is float:
        return value if math.isfinite(value) else None
    if kind is int or kind is str or value is None:
        return value
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [
            (v if math.isfinite(v) else None) if type(v) is float else _json_safe(v)
            for v in value
        ]
    if isinstance(value, float):  # a float subclass (numpy.float64)
        return float(value) if math.isfinite(value) else None
    if is_dataclass(value) and not isinstance(value, type):
        return _json_safe(asdict(value))
    return value


def initial_loss(workload: str, metrics: dict[str, float]) -> float:
    """The validation loss before step 1; a ValueError when it is not finite (a broken
    workload: no optimizer could be blamed for it)."""
    loss0 = float(metrics["loss"])
    if not math.isfinite(loss0):
        raise ValueError(f"workload {workload!r} gave a non-finite loss before training ({loss0})")
    return loss0


def eval_due(step: int, *, eval_every: int, total_steps: int) -> bool:
    """Whether optimizer step `step` is followed by an evaluation (the cadence, and the end)."""
    return step % eval_every == 0 or step == total_steps


class TrialLog:
    """One trial's record while it trains: its state, steps, curve and running training loss.

    Divergence rule (ROBUSTNESS.md): a non-finite training loss ends the trial at that step,
    before the optimizer step; a non-finite validation loss ends it at that evaluation.
    """

    def __init__(self, steps_per_epoch: int) -> None:
        self.steps_per_epoch = steps_per_epoch
        self.state: TrialState = "completed"
        self.steps = 0  # the last step begun
        self.updates = 0  # optimizer steps applied (steps, less one when the loss diverged)
        self.curve: list[EvalPoint] = []
        self._train_sum = 0.0
        self._train_count = 0

    @property
    def running(self) -> bool:
        """True until the trial diverged or was cancelled."""
        return self.state == "completed"

    def train_loss(self, step: int, value: float) -> bool:
        """Record the training loss of `step`; False (the trial diverged) when it is not finite,
        in which case no optimizer step may follow."""
        self.steps = step
        if not math.isfinite(value):
            self.state = "diverged"
            return False
        self._train_sum += value
        self._train_count += 1
        self.updates = step
        return True

    def evaluation(self, step: int, metrics: dict[str, float]) -> EvalPoint | None:
        """Record an evaluation after `step`; None (the trial diverged) when its loss is not
        finite."""
        val_loss = float(metrics["loss"])
        if not math.isfinite(val_loss):
            self.state = "diverged"
            return None
        accuracy = metrics.get("accuracy")
        point = EvalPoint(
            step=step,
            epoch=step / self.steps_per_epoch,
            val_loss=val_loss,
            train_loss=self._train_sum / self._train_count if self._train_count else None,
            accuracy=None if accuracy is None else float(accuracy),
        )
        self._train_sum, self._train_count = 0.0, 0
        self.curve.append(point)
        return point

    def state_dict(self) -> dict[str, Any]:
        """Everything this log holds, as plain values (the curve as dicts), for a checkpoint: a
        log restored from it records the rest of the trial as if it had never stopped."""
        return {
            "steps_per_epoch": self.steps_per_epoch,
            "state": self.state,
            "steps": self.steps,
            "updates": self.updates,
            "curve": [asdict(point) for point in self.curve],
            "train_sum": self._train_sum,
            "train_count": self._train_count,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from a `state_dict()`; a ValueError if it was taken with another epoch size."""
        if state["steps_per_epoch"] != self.steps_per_epoch:
            raise ValueError(
                f"state: a log of {state['steps_per_epoch']} steps per epoch cannot continue one "
                f"of {self.steps_per_epoch}"
            )
        self.state = state["state"]
        self.steps = int(state["steps"])
        self.updates = int(state["updates"])
        self.curve = [EvalPoint(**point) for point in state["curve"]]
        self._train_sum = state["train_sum"]
        self._train_count = int(state["train_count"])

    def cancel(self) -> None:
        """The trial was told to stop (its study cancelled, its worker stopping)."""
        self.state = "cancelled"

    def result(
        self,
        *,
        loss0: float,
        test: dict[str, float] | None,
        bound_stats: dict[str, Any] | None,
        duration_s: float,
        device: str,
        torch_version: str,
        extras: dict[str, Any],
        pack_size: int = 1,
        resumed_from_step: int | None = None,
    ) -> TrialResult:
        """The TrialResult; `test` is the test split's metrics (completed trials only)."""
        last = self.curve[-1] if self.curve else None
        final = None if self.state == "diverged" else last
        test_loss = test_accuracy = None
        if test is not None and self.state == "completed":
            test_loss = float(test["loss"])
            if test.get("accuracy") is not None:
                test_accuracy = float(test["accuracy"])
        return TrialResult(
            state=self.state,
            loss=None if final is None else final.val_loss,
            loss0=loss0,
            accuracy=None if final is None else final.accuracy,
            curve=self.curve,
            bound_stats=bound_stats,
            steps=self.steps,
            duration_s=duration_s,
            device=device,
            torch_version=torch_version,
            test_loss=test_loss,
            test_accuracy=test_accuracy,
            extras=extras,
            pack_size=pack_size,
            resumed_from_step=resumed_from_step,
        )


def summarize_bounds(stats: dict[str, list[float]]) -> dict[str, Any]:
    """A compact summary plus the per-step series downsampled to MAX_BOUND_POINTS."""
    steps = stats.get("step", [])
    n = len(steps)
    if n == 0:
        return {"summary": {}, "series": {}, "n_steps": 0}
    idx = np.unique(np.linspace(0, n - 1, min(n, MAX_BOUND_POINTS)).round().astype(int))
    series = {key: [float(values[i]) for i in idx] for key, values in stats.items()}
    summary: dict[str, float] = {}
    for key, values in stats.items():
        if key == "step" or not values:
            continue
        arr = np.asarray(values, dtype=float)
        finite = arr[np.isfinite(arr)]
        summary[f"{key}_final"] = float(arr[-1])
        if finite.size:
            summary[f"{key}_mean"] = float(finite.mean())
            summary[f"{key}_max"] = float(finite.max())
    frac = np.asarray(stats.get("bound_active_frac", []), dtype=float)
    if frac.size:
        # How long the bound acts as a warmup: the first step where fewer than half the
        # elements are clipped by the moving average.
        below = np.nonzero(frac < 0.5)[0]
        summary["bound_half_release_step"] = float(steps[int(below[0])]) if below.size else None  # type: ignore[assignment]
    return _json_safe({"summary": summary, "series": series, "n_steps": n})

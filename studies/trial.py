"""One trial: build the problem, train it for its budget, evaluate on a fixed cadence, report.

The same function serves the local CLI and the workers, so a result means the same thing wherever
it was produced. On CPU, the same config and seed give the same result bit for bit.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from studies.optimizers import build_optimizer
from studies.spec import TrialConfig
from studies.workloads.base import Problem
from studies.workloads.registry import get_workload

__all__ = [
    "MAX_BOUND_POINTS",
    "EvalPoint",
    "PreparedTrial",
    "TrialResult",
    "lr_multiplier",
    "prepare_trial",
    "resolve_device",
    "run_trial",
]

MAX_BOUND_POINTS = 200  # the per-step bound series is downsampled to at most this many points

TrialState = Literal["completed", "diverged", "cancelled"]


def lr_multiplier(step: int, *, warmup_steps: int, total_steps: int, schedule: str) -> float:
    """The factor on the base lr at optimizer step `step` (1-based: step 1 is the first update).

    Linear warmup first: step / warmup_steps for steps 1 .. warmup_steps (so the last warmup step
    trains at the full lr). Then `constant` keeps 1; `cosine` decays as
    0.5 * (1 + cos(pi * (step - warmup_steps) / (total_steps - warmup_steps))), continuous with
    the end of warmup and exactly 0 at the budget's last step, `total_steps` (ROBUSTNESS.md:
    "cosine decay to 0 over the budget, after any warmup"). A pure function of plain numbers, so
    that every training loop (one trial, or a pack of trials with different warmups and
    schedules) computes the same lr at the same step.

    Worked case, warmup 2 of 6 steps, cosine: 0.5, 1, 0.854, 0.5, 0.146, 0.
    """
    if warmup_steps and step <= warmup_steps:
        return step / warmup_steps  # exactly the v1 warmup, so stored results stay comparable
    if schedule == "constant":
        return 1.0
    if schedule == "cosine":
        span = total_steps - warmup_steps
        if span <= 0:
            return 1.0  # the budget is all warmup: nothing left to decay over
        progress = min(1.0, max(0.0, (step - warmup_steps) / span))
        return 0.5 * (1.0 + math.cos(math.pi * progress))
    raise ValueError(f"unknown schedule {schedule!r}; expected constant or cosine")


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
    duration_s: float
    device: str
    torch_version: str
    # On the workload's held-out test split, once at the end of a completed trial; None when the
    # workload has no test split, or the trial diverged or was cancelled.
    test_loss: float | None = None
    test_accuracy: float | None = None
    extras: dict[str, Any] = field(default_factory=dict)  # facts from the workload (data, sizes)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able dict (no NaN or infinity anywhere)."""
        return _json_safe(asdict(self))


def _json_safe(value: Any) -> Any:
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    return value


def resolve_device(device: str | torch.device) -> torch.device:
    """A torch.device from 'cpu', 'cuda', 'cuda:N' or 'auto' (CUDA when available)."""
    if isinstance(device, torch.device):
        return device
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise ValueError(f"device: not a torch device: {device!r}") from exc
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device: {device!r} requested but CUDA is not available")
    return resolved


def _seed_everything(seed: int, device: torch.device) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    # torch.manual_seed would also queue a lazy seeding of every CUDA device, which records a
    # stack trace (milliseconds) even on CPU-only machines; seed only what the trial uses.
    torch.random.default_generator.manual_seed(seed)
    if device.type == "cuda":
        torch.cuda.manual_seed_all(seed)


def _summarize_bounds(stats: dict[str, list[float]]) -> dict[str, Any]:
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


@dataclass
class PreparedTrial:
    """A trial set up and not yet trained: what a seed gives, before the first step.

    The report pairs trials by seed (seed s: the same initial parameters and data order for every
    optimizer, lr, warmup and schedule); this is the object a test inspects to prove it.
    """

    config: TrialConfig
    device: torch.device
    problem: Problem
    model: nn.Module
    optimizer: torch.optim.Optimizer
    total_steps: int


def prepare_trial(config: TrialConfig, device: str | torch.device = "cpu") -> PreparedTrial:
    """Seed every generator, build the workload's problem, the optimizer and the step budget.

    Order matters for pairing: seeding, then the problem (model initialization draws from the
    seeded generator), then the optimizer (which draws nothing), so nothing that differs between
    the configs of one seed runs before the model and the data exist.
    """
    dev = resolve_device(device)
    workload = get_workload(config.workload)
    workload_config = workload.config_model.model_validate(config.workload_config)
    _seed_everything(config.seed, dev)
    problem = workload.build(workload_config, config.seed, dev)
    model = problem.model
    total_steps = config.budget.total_steps(problem.steps_per_epoch)
    optimizer = build_optimizer(config, model.parameters())
    return PreparedTrial(
        config=config,
        device=dev,
        problem=problem,
        model=model,
        optimizer=optimizer,
        total_steps=total_steps,
    )


def run_trial(
    config: TrialConfig,
    device: str | torch.device = "cpu",
    report: Callable[[EvalPoint], bool | None] | None = None,
) -> TrialResult:
    """Train one grid point; report each evaluation; stop on divergence or when report says so."""
    started = time.perf_counter()
    prepared = prepare_trial(config, device)
    dev, problem, model = prepared.device, prepared.problem, prepared.model
    optimizer, total_steps = prepared.optimizer, prepared.total_steps

    model.eval()
    first = problem.evaluate(model)
    loss0 = float(first["loss"])
    if not math.isfinite(loss0):
        raise ValueError(
            f"workload {config.workload!r} gave a non-finite loss before training ({loss0})"
        )

    base_lrs = [group["lr"] for group in optimizer.param_groups]
    applied = 1.0  # the multiplier the param groups hold now
    curve: list[EvalPoint] = []
    state: TrialState = "completed"
    step, epoch = 0, 0
    train_sum, train_count = 0.0, 0
    model.train()
    while step < total_steps and state == "completed":
        for batch in problem.train_batches(epoch):
            step += 1
            scale = lr_multiplier(
                step,
                warmup_steps=config.warmup_steps,
                total_steps=total_steps,
                schedule=config.schedule,
            )
            if scale != applied:
                for group, base in zip(optimizer.param_groups, base_lrs, strict=True):
                    group["lr"] = base * scale
                applied = scale
            optimizer.zero_grad(set_to_none=True)
            loss = problem.loss_fn(model, batch)
            loss_value = float(loss.detach())  # one host sync per step: divergence stops here
            if not math.isfinite(loss_value):
                state = "diverged"
                break
            loss.backward()
            optimizer.step()
            train_sum += loss_value
            train_count += 1
            if step % problem.eval_every == 0 or step == total_steps:
                model.eval()
                metrics = problem.evaluate(model)
                model.train()
                val_loss = float(metrics["loss"])
                if not math.isfinite(val_loss):
                    state = "diverged"
                    break
                accuracy = metrics.get("accuracy")
                point = EvalPoint(
                    step=step,
                    epoch=step / problem.steps_per_epoch,
                    val_loss=val_loss,
                    train_loss=train_sum / train_count if train_count else None,
                    accuracy=None if accuracy is None else float(accuracy),
                )
                train_sum, train_count = 0.0, 0
                curve.append(point)
                if report is not None and report(point):
                    state = "cancelled"
                    break
            if step >= total_steps:
                break
        epoch += 1

    test_loss = test_accuracy = None
    if state == "completed" and problem.evaluate_test is not None:
        # Once, at the end, and never for selection: the report picks the best lr on validation
        # loss and shows the test loss there (ROBUSTNESS.md, "Per trial").
        model.eval()
        test = problem.evaluate_test(model)
        test_loss = float(test["loss"])
        if test.get("accuracy") is not None:
            test_accuracy = float(test["accuracy"])

    bound_stats = None
    if hasattr(optimizer, "bound_stats"):
        bound_stats = _summarize_bounds(optimizer.bound_stats())
    last = curve[-1] if curve else None
    final_loss = None if state == "diverged" or last is None else last.val_loss
    final_acc = None if state == "diverged" or last is None else last.accuracy
    return TrialResult(
        state=state,
        loss=final_loss,
        loss0=loss0,
        accuracy=final_acc,
        curve=curve,
        bound_stats=bound_stats,
        steps=step,
        duration_s=time.perf_counter() - started,
        device=str(dev),
        torch_version=torch.__version__,
        test_loss=test_loss,
        test_accuracy=test_accuracy,
        extras=dict(problem.extras),
    )

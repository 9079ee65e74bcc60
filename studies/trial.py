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

from studies.optimizers import build_optimizer
from studies.spec import TrialConfig
from studies.workloads.registry import get_workload

__all__ = ["MAX_BOUND_POINTS", "EvalPoint", "TrialResult", "resolve_device", "run_trial"]

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
    duration_s: float
    device: str
    torch_version: str
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


def run_trial(
    config: TrialConfig,
    device: str | torch.device = "cpu",
    report: Callable[[EvalPoint], bool | None] | None = None,
) -> TrialResult:
    """Train one grid point; report each evaluation; stop on divergence or when report says so."""
    started = time.perf_counter()
    dev = resolve_device(device)
    workload = get_workload(config.workload)
    workload_config = workload.config_model.model_validate(config.workload_config)
    _seed_everything(config.seed, dev)
    problem = workload.build(workload_config, config.seed, dev)
    model = problem.model
    total_steps = config.budget.total_steps(problem.steps_per_epoch)
    optimizer = build_optimizer(config, model.parameters())

    model.eval()
    first = problem.evaluate(model)
    loss0 = float(first["loss"])
    if not math.isfinite(loss0):
        raise ValueError(
            f"workload {config.workload!r} gave a non-finite loss before training ({loss0})"
        )

    base_lrs = [group["lr"] for group in optimizer.param_groups]
    warmup = config.warmup_steps
    curve: list[EvalPoint] = []
    state: TrialState = "completed"
    step, epoch = 0, 0
    train_sum, train_count = 0.0, 0
    model.train()
    while step < total_steps and state == "completed":
        for batch in problem.train_batches(epoch):
            step += 1
            if warmup and step <= warmup + 1:
                # Linear warmup: lr * step / warmup for steps 1..warmup, then the base lr.
                scale = min(1.0, step / warmup)
                for group, base in zip(optimizer.param_groups, base_lrs, strict=True):
                    group["lr"] = base * scale
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
        extras=dict(problem.extras),
    )

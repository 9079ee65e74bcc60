"""One trial: build the problem, train it for its budget, evaluate on a fixed cadence, report.

The same function serves the local CLI and the workers, so a result means the same thing wherever
it was produced. On CPU, the same config and seed give the same result bit for bit.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from studies.optimizers import build_optimizer
from studies.spec import TrialConfig
from studies.trial_result import (
    MAX_BOUND_POINTS,
    EvalPoint,
    TrialLog,
    TrialResult,
    eval_due,
    initial_loss,
    summarize_bounds,
)
from studies.workloads.base import Problem
from studies.workloads.registry import get_workload

__all__ = [
    "MAX_BOUND_POINTS",
    "EvalPoint",
    "PreparedTrial",
    "TrialResult",
    "lr_multiplier",
    "prepare_problem",
    "prepare_trial",
    "resolve_device",
    "run_trial",
]


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


def prepare_problem(config: TrialConfig, device: torch.device) -> tuple[Problem, int]:
    """Seed every generator, then build the workload's problem; returns it and the step budget.

    The one place where a config and a seed become a model and its data, for one trial and for
    every member of a pack alike: a packed member starts from exactly the weights and batches
    its unfused trial would.
    """
    workload = get_workload(config.workload)
    workload_config = workload.config_model.model_validate(config.workload_config)
    _seed_everything(config.seed, device)
    problem = workload.build(workload_config, config.seed, device)
    return problem, config.budget.total_steps(problem.steps_per_epoch)


def prepare_trial(config: TrialConfig, device: str | torch.device = "cpu") -> PreparedTrial:
    """Seed every generator, build the workload's problem, the optimizer and the step budget.

    Order matters for pairing: seeding, then the problem (model initialization draws from the
    seeded generator), then the optimizer (which draws nothing), so nothing that differs between
    the configs of one seed runs before the model and the data exist.
    """
    dev = resolve_device(device)
    problem, total_steps = prepare_problem(config, dev)
    optimizer = build_optimizer(config, problem.model.parameters())
    return PreparedTrial(
        config=config,
        device=dev,
        problem=problem,
        model=problem.model,
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
    loss0 = initial_loss(config.workload, problem.evaluate(model))
    base_lrs = [group["lr"] for group in optimizer.param_groups]
    applied = 1.0  # the multiplier the param groups hold now
    log = TrialLog(problem.steps_per_epoch)
    step, epoch = 0, 0
    model.train()
    while step < total_steps and log.running:
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
            # one host sync per step: divergence stops here
            if not log.train_loss(step, float(loss.detach())):
                break
            loss.backward()
            optimizer.step()
            if eval_due(step, eval_every=problem.eval_every, total_steps=total_steps):
                model.eval()
                point = log.evaluation(step, problem.evaluate(model))
                model.train()
                if point is None:
                    break
                if report is not None and report(point):
                    log.cancel()
                    break
            if step >= total_steps:
                break
        epoch += 1

    test = None
    if log.state == "completed" and problem.evaluate_test is not None:
        # Once, at the end, and never for selection: the report picks the best lr on validation
        # loss and shows the test loss there (ROBUSTNESS.md, "Per trial").
        model.eval()
        test = problem.evaluate_test(model)
    bound_stats = None
    if hasattr(optimizer, "bound_stats"):
        bound_stats = summarize_bounds(optimizer.bound_stats())
    return log.result(
        loss0=loss0,
        test=test,
        bound_stats=bound_stats,
        duration_s=time.perf_counter() - started,
        device=str(dev),
        torch_version=torch.__version__,
        extras=dict(problem.extras),
    )

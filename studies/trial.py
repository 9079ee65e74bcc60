"""One trial: build the problem, train it for its budget, evaluate on a fixed cadence, report.

The same function serves the local CLI and the workers, so a result means the same thing wherever
it was produced. On CPU, the same config and seed give the same result bit for bit.
"""

from __future__ import annotations

import itertools
import logging
import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from studies.checkpoints import Checkpointing
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

logger = logging.getLogger(__name__)

__all__ = [
    "CHECKPOINT_FORMAT",
    "MAX_BOUND_POINTS",
    "Checkpointing",
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
    *,
    checkpoint: Checkpointing | None = None,
) -> TrialResult:
    """Train one grid point; report each evaluation; stop on divergence or when report says so.

    With `checkpoint`, the training state is saved at the evaluations the policy picks (and at
    the one where report says stop, so a handed-back trial loses nothing), an attempt resumes
    from the saved state of the same config (and reports only the evaluations after it), and
    the checkpoint is deleted once the trial completed or diverged (a cancelled trial keeps it
    for its re-run). On CPU a resumed trial's result equals an uninterrupted one's to the bit,
    but for `duration_s` (the attempts' training time, summed) and `resumed_from_step`.
    """
    started = time.perf_counter()
    prepared = prepare_trial(config, device)
    base_lrs = [group["lr"] for group in prepared.optimizer.param_groups]  # the config's lr
    log = TrialLog(prepared.problem.steps_per_epoch)
    resumed = None
    if checkpoint is not None:
        saved = _matching_checkpoint(checkpoint, config)
        if saved is not None:
            try:
                resumed = _restore(saved, prepared, log)
            except Exception as exc:  # a state this code cannot continue: start over, cleanly
                logger.warning(
                    "ignoring checkpoint %r of trial %s: it cannot be restored (%s: %s)",
                    checkpoint.name,
                    config.key()[:12],
                    type(exc).__name__,
                    exc,
                )
                prepared = prepare_trial(config, device)
                log = TrialLog(prepared.problem.steps_per_epoch)
    dev, problem, model = prepared.device, prepared.problem, prepared.model
    optimizer, total_steps = prepared.optimizer, prepared.total_steps

    if resumed is None:
        model.eval()
        loss0 = initial_loss(config.workload, problem.evaluate(model))
        position = _Position()
    else:
        loss0, position = resumed.loss0, resumed.position
    applied = position.lr_multiplier  # the multiplier the param groups hold now
    step, epoch = position.step, position.epoch
    skip = position.in_epoch  # batches of this epoch consumed before the checkpoint
    earlier_s = position.elapsed_s  # training time of the attempts before this one
    since_save, last_save = 0, time.perf_counter()
    model.train()
    while step < total_steps and log.running:
        batches = problem.train_batches(epoch)
        # Batches are a function of (seed, epoch) (Problem.train_batches): skipping the first
        # `skip` of them, drawn as before, gives the batches an uninterrupted run trains on next.
        for in_epoch, batch in enumerate(itertools.islice(batches, skip, None), start=skip + 1):
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
                stop = report is not None and bool(report(point))
                since_save += 1
                now = time.perf_counter()
                if (
                    checkpoint is not None
                    and step < total_steps  # the last evaluation ends the trial: nothing to resume
                    and (stop or checkpoint.due(since_save, now - last_save))
                ):
                    here = _Position(step, epoch, in_epoch, applied, earlier_s + now - started)
                    checkpoint.save(_training_state(config, prepared, log, loss0, here))
                    since_save, last_save = 0, time.perf_counter()
                if stop:
                    log.cancel()
                    break
            if step >= total_steps:
                break
        epoch += 1
        skip = 0

    test = None
    if log.state == "completed" and problem.evaluate_test is not None:
        # Once, at the end, and never for selection: the report picks the best lr on validation
        # loss and shows the test loss there (ROBUSTNESS.md, "Per trial").
        model.eval()
        test = problem.evaluate_test(model)
    bound_stats = None
    if hasattr(optimizer, "bound_stats"):
        bound_stats = summarize_bounds(optimizer.bound_stats())
    if checkpoint is not None and log.state != "cancelled":
        checkpoint.delete()  # the trial is over: nothing left to resume
    return log.result(
        loss0=loss0,
        test=test,
        bound_stats=bound_stats,
        duration_s=earlier_s + time.perf_counter() - started,
        device=str(dev),
        torch_version=torch.__version__,
        extras=dict(problem.extras),
        resumed_from_step=None if resumed is None else resumed.position.step,
    )


# Bumped when the checkpoint's content changes meaning: an older checkpoint is then ignored.
CHECKPOINT_FORMAT = 1


@dataclass(frozen=True)
class _Position:
    """Where a trial stands in its training loop, between two steps."""

    step: int = 0  # optimizer steps begun
    epoch: int = 0
    in_epoch: int = 0  # batches of `epoch` consumed
    lr_multiplier: float = 1.0  # the multiplier the param groups hold
    elapsed_s: float = 0.0  # training time spent so far, over every attempt


@dataclass(frozen=True)
class _Resumed:
    """What a restored checkpoint gives the loop besides the restored objects."""

    loss0: float
    position: _Position


def _matching_checkpoint(checkpoint: Checkpointing, config: TrialConfig) -> dict[str, Any] | None:
    """The stored checkpoint when it is one of this code's format for this very config."""
    saved = checkpoint.load()
    if saved is None:
        return None
    if saved.get("format") != CHECKPOINT_FORMAT:
        logger.warning(
            "ignoring checkpoint %r: format %r, this code writes %r",
            checkpoint.name,
            saved.get("format"),
            CHECKPOINT_FORMAT,
        )
        return None
    if saved.get("config_key") != config.key():
        logger.warning(
            "ignoring checkpoint %r: it was saved for another trial config", checkpoint.name
        )
        return None
    return saved


def _training_state(
    config: TrialConfig,
    prepared: PreparedTrial,
    log: TrialLog,
    loss0: float,
    position: _Position,
) -> dict[str, Any]:
    """Everything a later attempt needs to continue exactly here: tensors and plain values only
    (the store reads with weights_only=True)."""
    optimizer = prepared.optimizer
    telemetry = None
    if hasattr(optimizer, "telemetry_state_dict"):
        # AdaMod's bound telemetry lives outside its state_dict; bound_stats spans the trial
        telemetry = optimizer.telemetry_state_dict()
    return {
        "format": CHECKPOINT_FORMAT,
        "config_key": config.key(),
        "step": position.step,
        "epoch": position.epoch,
        "in_epoch": position.in_epoch,
        "lr_multiplier": position.lr_multiplier,
        "elapsed_s": position.elapsed_s,
        "loss0": loss0,
        "model": prepared.model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "telemetry": telemetry,
        "log": log.state_dict(),
        "rng": _rng_state(prepared.device),
    }


def _restore(saved: dict[str, Any], prepared: PreparedTrial, log: TrialLog) -> _Resumed:
    """Load a checkpoint into a freshly prepared trial and its log (RNG states last, so nothing
    after them draws before training resumes)."""
    prepared.model.load_state_dict(saved["model"])
    optimizer = prepared.optimizer
    optimizer.load_state_dict(saved["optimizer"])
    if hasattr(optimizer, "load_telemetry_state_dict"):
        optimizer.load_telemetry_state_dict(saved["telemetry"])
    log.load_state_dict(saved["log"])
    position = _Position(
        step=int(saved["step"]),
        epoch=int(saved["epoch"]),
        in_epoch=int(saved["in_epoch"]),
        lr_multiplier=float(saved["lr_multiplier"]),
        elapsed_s=float(saved["elapsed_s"]),
    )
    if log.steps != position.step or not log.running:
        raise ValueError(f"the log is at step {log.steps} ({log.state}), not {position.step}")
    _set_rng_state(saved["rng"], prepared.device)
    return _Resumed(loss0=float(saved["loss0"]), position=position)


def _rng_state(device: torch.device) -> dict[str, Any]:
    """Every generator a training step may draw from (dropout, a workload's own sampling), as
    tensors and plain values."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state(legacy=True)  # type: ignore[misc]
    version, internal, gauss_next = random.getstate()
    state: dict[str, Any] = {
        "torch": torch.random.get_rng_state(),
        "numpy": [kind, torch.from_numpy(np.asarray(keys).astype(np.int64)), pos, has_gauss, gauss],
        "python": [version, list(internal), gauss_next],
        "cuda": None,
    }
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def _set_rng_state(state: dict[str, Any], device: torch.device) -> None:
    torch.random.set_rng_state(state["torch"])
    kind, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
    version, internal, gauss_next = state["python"]
    random.setstate((version, tuple(internal), gauss_next))
    if device.type == "cuda" and state["cuda"] is not None:
        torch.cuda.set_rng_state(state["cuda"], device)

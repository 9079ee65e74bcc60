"""`noop`: one scalar parameter and an optional sleep per step, for queue tests and benchmarks.

No data, so no splits and no test set (`evaluate_test` is None). Nothing in it is random: the
parameter starts at 0 and the seed moves the target, so seeds still give different results.
"""

from __future__ import annotations

import os
import signal
import time
from typing import Any

import torch
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    model_serializer,
)
from torch import Tensor, nn

from studies.budget import Budget
from studies.workloads.base import Problem, Workload
from studies.workloads.common import float_metrics

__all__ = ["WORKLOAD", "NoopConfig"]

PROCESS_FAULTS = ("hang_at_step", "crash_at_step")


class NoopConfig(BaseModel):
    """How long a noop trial lasts and, for failure-path tests, where it breaks."""

    model_config = ConfigDict(extra="forbid")

    steps_per_epoch: int = Field(default=10, ge=1, le=10_000_000)
    sleep_s: float = Field(default=0.0, ge=0.0, le=3600.0, description="sleep per training step")
    eval_every: int | None = Field(
        default=None, ge=1, description="steps between evaluations (default: once per epoch)"
    )
    fail_at_step: int | None = Field(
        default=None, ge=1, description="raise RuntimeError at this step (tests the failure path)"
    )
    fail_seeds: list[int] | None = Field(
        default=None, description="seeds that fail_at_step applies to (default: every seed)"
    )
    diverge_at_step: int | None = Field(
        default=None, ge=1, description="return a NaN loss at this step (tests divergence)"
    )
    hang_at_step: int | None = Field(
        default=None, ge=1, description="never return from this step (tests trial timeouts)"
    )
    crash_at_step: int | None = Field(
        default=None,
        ge=1,
        description="kill the training process with SIGSEGV at this step (tests crash handling)",
    )

    @model_serializer(mode="wrap")
    def _without_unset_process_faults(self, handler: SerializerFunctionWrapHandler) -> Any:
        """Leaves hang_at_step and crash_at_step out when unset: they came after trials were
        stored, and a normalized config that gained two nulls would change every noop trial's
        key (TrialConfig.key, the reuse key)."""
        data = handler(self)
        if isinstance(data, dict):
            for name in PROCESS_FAULTS:
                if data.get(name) is None:
                    data.pop(name, None)
        return data


class _Scalar(nn.Module):
    """One trainable number and its target (a buffer, so that a trial pack stacks it per member)."""

    def __init__(self, target: float) -> None:
        super().__init__()
        self.p = nn.Parameter(torch.zeros(1))
        self.register_buffer("target", torch.tensor(target))


def _refuse_seed_faults(config: NoopConfig) -> str | None:
    if config.fail_seeds is not None:
        return "noop with fail_seeds fails some seeds only: its trials cannot share a pack"
    return None


def _build(config: NoopConfig, seed: int, device: torch.device) -> Problem:
    # seeds differ a little, so results are not all identical
    model = _Scalar(1.0 + 0.01 * seed).to(device)
    counter = {"step": 0}  # in a pack, one call per step for all members: the same count

    def loss_fn(m: nn.Module, _batch: Any) -> Tensor:
        counter["step"] += 1
        if config.sleep_s:
            time.sleep(config.sleep_s)
        if counter["step"] == config.hang_at_step:
            while True:  # code that never returns: only killing its process ends it
                time.sleep(3600)
        if counter["step"] == config.crash_at_step:
            os.kill(os.getpid(), signal.SIGSEGV)  # as a segfault in native code would
        if counter["step"] == config.fail_at_step and (
            config.fail_seeds is None or seed in config.fail_seeds
        ):
            raise RuntimeError(f"noop workload: failing on purpose at step {counter['step']}")
        loss = ((m.p - m.target) ** 2).sum()
        if config.diverge_at_step is not None and counter["step"] >= config.diverge_at_step:
            loss = loss * float("nan")
        return loss

    def metrics(m: nn.Module) -> dict[str, Tensor]:
        with torch.no_grad():
            return {"loss": ((m.p - m.target) ** 2).sum()}

    def train_batches(_epoch: int) -> range:
        return range(config.steps_per_epoch)

    return Problem(
        model=model,
        train_batches=train_batches,
        loss_fn=loss_fn,
        evaluate=float_metrics(metrics),
        metrics=metrics,
        steps_per_epoch=config.steps_per_epoch,
        eval_every=config.eval_every or config.steps_per_epoch,
    )


def _build_any(config: Any, seed: int, device: torch.device) -> Problem:
    return _build(config, seed, device)


WORKLOAD = Workload(
    name="noop",
    description=(
        "One scalar parameter pulled towards 1; `sleep_s` per step sets the trial length. "
        "For queue tests and benchmarks, not for science."
    ),
    config_model=NoopConfig,
    default_budget=Budget(epochs=1),
    build=_build_any,
    packable=True,
    pack_refusal=_refuse_seed_faults,
)

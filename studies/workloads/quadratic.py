"""`quadratic`: a noisy, ill-conditioned quadratic; a trial takes milliseconds (for tests).

There is no data here, so no train/validation/test split: the noise is in the gradients only, and
`evaluate` is the exact, noise-free objective, which is also what a test set would estimate. A
"test loss" would repeat the validation loss, so `evaluate_test` is None and the report says
"no test split". The instance (rotation, curvatures, optimum) comes from `problem_seed`; its
content hash is recorded as `problem_sha256`, since it depends on torch's generator.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import Tensor, nn

from studies.budget import Budget
from studies.workloads.base import Problem, Workload
from studies.workloads.common import batch_generator, content_sha256, float_metrics

__all__ = ["WORKLOAD", "QuadraticConfig"]


class QuadraticConfig(BaseModel):
    """Size, conditioning and gradient noise of the quadratic."""

    model_config = ConfigDict(extra="forbid")

    dim: int = Field(default=32, ge=1, le=100_000, description="number of coordinates")
    condition: float = Field(
        default=100.0, ge=1.0, le=1e8, description="ratio of largest to smallest curvature"
    )
    noise: float = Field(default=0.3, ge=0.0, le=100.0, description="std of gradient noise")
    steps_per_epoch: int = Field(default=50, ge=1, le=100_000)
    eval_every: int = Field(default=25, ge=1, le=100_000, description="steps between evaluations")
    problem_seed: int = Field(
        default=0, ge=0, description="seed of the problem instance (the trial seed moves the start)"
    )


class _Point(nn.Module):
    """The parameter vector being optimized."""

    def __init__(self, start: Tensor) -> None:
        super().__init__()
        self.x = nn.Parameter(start.clone())


def _build(config: QuadraticConfig, seed: int, device: torch.device) -> Problem:
    instance = torch.Generator().manual_seed(config.problem_seed)
    q, _ = torch.linalg.qr(torch.randn(config.dim, config.dim, generator=instance))
    curvature = torch.logspace(0.0, -math.log10(config.condition), config.dim)
    optimum = torch.randn(config.dim, generator=instance)
    problem_sha = content_sha256(q.numpy(), curvature.numpy(), optimum.numpy())
    start_gen = torch.Generator().manual_seed(seed)  # the start: the trial seed only
    start = optimum + torch.randn(config.dim, generator=start_gen)

    q, sqrt_curv, optimum = q.to(device), curvature.sqrt().to(device), optimum.to(device)
    model = _Point(start.to(device))

    def rotated_error(m: nn.Module) -> Tensor:
        return (m.x - optimum) @ q  # coordinates along the curvature directions

    def loss_fn(m: nn.Module, noise: Tensor) -> Tensor:
        # The noise shifts the optimum per step, so gradients are noisy but unbiased.
        return 0.5 * ((sqrt_curv * (rotated_error(m) + noise)) ** 2).sum()

    def metrics(m: nn.Module) -> dict[str, Tensor]:
        with torch.no_grad():
            return {"loss": 0.5 * ((sqrt_curv * rotated_error(m)) ** 2).sum()}

    def train_batches(epoch: int) -> list[Tensor]:
        gen = batch_generator(seed, epoch)
        noise = config.noise * torch.randn(config.steps_per_epoch, config.dim, generator=gen)
        return list(noise.to(device).unbind(0))

    return Problem(
        model=model,
        train_batches=train_batches,
        loss_fn=loss_fn,
        evaluate=float_metrics(metrics),
        metrics=metrics,
        steps_per_epoch=config.steps_per_epoch,
        eval_every=config.eval_every,
        extras={"problem_sha256": problem_sha},
    )


def _build_any(config: Any, seed: int, device: torch.device) -> Problem:
    return _build(config, seed, device)


WORKLOAD = Workload(
    name="quadratic",
    description=(
        "Noisy ill-conditioned quadratic 0.5 (x-x*)ᵀA(x-x*) with rotated curvatures spanning "
        "`condition`; milliseconds per trial. For tests and quick sanity checks."
    ),
    config_model=QuadraticConfig,
    default_budget=Budget(steps=300),
    build=_build_any,
    packable=True,  # the instance depends on problem_seed only; the trial seed moves the start
)

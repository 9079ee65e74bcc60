"""What a workload is: a named recipe building model, data and loss for one seed on one device."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import torch
from pydantic import BaseModel
from torch import Tensor, nn

from studies.budget import Budget

__all__ = ["Problem", "Workload"]


@dataclass
class Problem:
    """What a workload builds for one seed on one device: everything the training loop touches."""

    model: nn.Module
    train_batches: Callable[[int], Iterable[Any]]  # epoch -> batches, deterministic per seed
    loss_fn: Callable[[nn.Module, Any], Tensor]  # training loss of one batch (a scalar tensor)
    evaluate: Callable[[nn.Module], dict[str, float]]  # {"loss": ..., optional "accuracy": ...}
    steps_per_epoch: int
    eval_every: int  # optimizer steps between evaluations
    extras: dict[str, Any] = field(default_factory=dict)  # free-form facts (dataset sizes, ...)
    # Held-out test data, evaluated once at the end of a trial ({"loss": ..., "accuracy": ...});
    # None for a workload without a test split (the report then says "no test split").
    evaluate_test: Callable[[nn.Module], dict[str, float]] | None = None

    def __post_init__(self) -> None:
        if self.steps_per_epoch < 1:
            raise ValueError(f"steps_per_epoch must be >= 1, got {self.steps_per_epoch}")
        if self.eval_every < 1:
            raise ValueError(f"eval_every must be >= 1, got {self.eval_every}")


@dataclass(frozen=True)
class Workload:
    """A registered workload: name, description, config schema, default budget and builder."""

    name: str
    description: str
    config_model: type[BaseModel]
    default_budget: Budget
    build: Callable[[Any, int, torch.device], Problem]  # (validated config, seed, device)

    def config_schema(self) -> dict[str, Any]:
        """The JSON schema of this workload's `workload_config` (for GET /workloads)."""
        return self.config_model.model_json_schema()

    def default_config(self) -> dict[str, Any]:
        """The normalized config when a spec gives none."""
        return self.config_model().model_dump(mode="json")

"""What a workload is: a named recipe building model, data and loss for one seed on one device."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import torch
from pydantic import BaseModel
from torch import Tensor, nn

from studies.budget import Budget

__all__ = ["MetricsFn", "Problem", "Workload"]

# Validation or test metrics as 0-dim tensors ({"loss": ..., optional "accuracy": ...}), written
# without host syncs, in-place updates of outside tensors or data-dependent Python control flow,
# so that torch.func.vmap can evaluate every member of a trial pack in one pass.
MetricsFn = Callable[[nn.Module], dict[str, Tensor]]


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
    # The tensor forms of evaluate / evaluate_test (see MetricsFn), which the pack runner
    # vectorizes over members; a packable workload gives them (evaluate is then usually
    # float_metrics(metrics)). Without them a pack evaluates its members one at a time.
    metrics: MetricsFn | None = None
    test_metrics: MetricsFn | None = None
    # A pack's fast path (studies/workloads/stacked.py): every member's training loss, shape
    # [K], from the stacked parameters ({name: [K, ...]}) and a stacked batch (each tensor
    # [K, ...]), without vmap. It must equal loss_fn member by member. None: the pack runs
    # loss_fn through vmap, which works for any model but is slower for small ones.
    pack_loss: Callable[[dict[str, Tensor], Any], Tensor] | None = None
    # The same fast path for evaluation: every member's `metrics` / `test_metrics` from the
    # stacked parameters ({"loss": [K], "accuracy": [K]}, float64), equal to them member by
    # member (e.g. stacked.stacked_classifier_metrics). They close over the split of this
    # problem, which every member of a pack shares (the split is not the trial seed's). None:
    # the pack vmaps `metrics` / `test_metrics`; pack_test_metrics is None without test_metrics.
    pack_metrics: Callable[[dict[str, Tensor]], dict[str, Tensor]] | None = None
    pack_test_metrics: Callable[[dict[str, Tensor]], dict[str, Tensor]] | None = None

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
    # Whether members of a trial pack can share one vectorized model (studies/pack.py): true
    # when the problems of different seeds differ only in the model's parameters and buffers and
    # in the batches, and the loss has no state across steps or members. Batch norm's running
    # statistics are module state that functional_call does not carry: such workloads say False.
    packable: bool = False
    # For a packable workload whose configs are not all packable: a config -> reason (None: ok).
    pack_refusal: Callable[[Any], str | None] | None = None
    # Bumped whenever the same config would train differently (new data, model or metric code):
    # results are reused across studies only between equal versions (studies/reuse.py).
    version: str = "1"

    def config_schema(self) -> dict[str, Any]:
        """The JSON schema of this workload's `workload_config` (for GET /workloads)."""
        return self.config_model.model_json_schema()

    def why_not_packable(self, config: Any) -> str | None:
        """None when trials of this (validated) config can train in a pack, else the reason."""
        if not self.packable:
            return f"workload {self.name!r} cannot be trained in a pack"
        return None if self.pack_refusal is None else self.pack_refusal(config)

    def default_config(self) -> dict[str, Any]:
        """The normalized config when a spec gives none."""
        return self.config_model().model_dump(mode="json")

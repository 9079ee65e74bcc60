"""The table that drives the generic tests: optimizers × valid inputs × error inputs × paths."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from adamod import AdaMod, DiffMod


@dataclass(frozen=True)
class ErrorInput:
    """Constructor kwargs that must raise `error` with a message matching `message` (regex)."""

    kwargs: dict[str, Any]
    error: type[Exception]
    message: str


@dataclass(frozen=True)
class OptimizerInfo:
    """One optimizer as the generic tests see it."""

    name: str
    cls: type[torch.optim.Optimizer]
    kind: str  # Reference kind
    defaults: dict[str, Any]
    valid_inputs: tuple[dict[str, Any], ...]
    error_inputs: tuple[ErrorInput, ...]
    fused_variants: tuple[dict[str, Any], ...] = field(default=())

    def reference_hyper(self, kwargs: dict[str, Any]) -> dict[str, Any]:
        """The hyperparameters the reference needs, defaults filled in."""
        hyper = {**self.defaults, **kwargs}
        for key in ("foreach", "fused", "track_bounds"):
            hyper.pop(key, None)
        return hyper


SHARED_ERRORS = (
    ErrorInput({"lr": -1e-3}, ValueError, r"^Invalid lr: -0\.001 \(must be >= 0\)$"),
    ErrorInput({"lr": float("nan")}, ValueError, r"^Invalid lr: nan \(must be >= 0\)$"),
    ErrorInput({"lr": "fast"}, ValueError, r"^Invalid lr: 'fast' \(must be a number\)$"),
    ErrorInput({"eps": -1e-8}, ValueError, r"^Invalid eps: -1e-08 \(must be >= 0\)$"),
    ErrorInput(
        {"weight_decay": -0.1}, ValueError, r"^Invalid weight_decay: -0\.1 \(must be >= 0\)$"
    ),
    ErrorInput(
        {"betas": (1.0, 0.999)}, ValueError, r"^Invalid betas\[0\]: 1\.0 \(must be in \[0, 1\)\)$"
    ),
    ErrorInput(
        {"betas": (-0.1, 0.999)}, ValueError, r"^Invalid betas\[0\]: -0\.1 \(must be in \[0, 1\)\)$"
    ),
    ErrorInput(
        {"betas": (0.9, 1.5)}, ValueError, r"^Invalid betas\[1\]: 1\.5 \(must be in \[0, 1\)\)$"
    ),
    ErrorInput({"betas": (0.9,)}, ValueError, r"^Invalid betas: \(0\.9,\) \(must be a pair"),
    ErrorInput(
        {"foreach": True, "fused": True},
        ValueError,
        r"^Invalid foreach and fused: both True \(choose at most one\)$",
    ),
)

ADAMOD = OptimizerInfo(
    name="AdaMod",
    cls=AdaMod,
    kind="adamod",
    defaults={
        "lr": 1e-3,
        "betas": (0.9, 0.999),
        "beta3": 0.999,
        "eps": 1e-8,
        "weight_decay": 0.0,
        "maximize": False,
        "form": "code",
    },
    valid_inputs=(
        {},
        {"lr": 1e-2, "beta3": 0.9, "weight_decay": 0.1},
        {"lr": 3e-3, "betas": (0.0, 0.99), "beta3": 0.0, "maximize": True},
        {"lr": 1e-2, "form": "paper", "weight_decay": 1e-2},
        {"lr": 1e-2, "foreach": True, "beta3": 0.99},
    ),
    error_inputs=(
        *SHARED_ERRORS,
        ErrorInput({"beta3": 1.0}, ValueError, r"^Invalid beta3: 1\.0 \(must be in \[0, 1\)\)$"),
        ErrorInput({"beta3": -0.5}, ValueError, r"^Invalid beta3: -0\.5 \(must be in \[0, 1\)\)$"),
        ErrorInput(
            {"form": "printed"},
            ValueError,
            r"^Invalid form: 'printed' \(must be 'code' or 'paper'\)$",
        ),
    ),
)

DIFFMOD = OptimizerInfo(
    name="DiffMod",
    cls=DiffMod,
    kind="diffmod",
    defaults={
        "lr": 1e-3,
        "betas": (0.9, 0.999),
        "len_memory": 1000,
        "version": 0,
        "eps": 1e-8,
        "weight_decay": 0.0,
        "maximize": False,
    },
    valid_inputs=(
        {},
        {"lr": 1e-2, "len_memory": 10, "version": 1, "weight_decay": 0.1},
        {"lr": 3e-3, "len_memory": 1, "version": 2, "maximize": True},
        {"lr": 1e-2, "foreach": True, "len_memory": 100},
    ),
    error_inputs=(
        *SHARED_ERRORS,
        ErrorInput({"len_memory": 0.5}, ValueError, r"^Invalid len_memory: 0\.5 \(must be >= 1\)$"),
        ErrorInput({"len_memory": 0}, ValueError, r"^Invalid len_memory: 0 \(must be >= 1\)$"),
        ErrorInput({"version": 3}, ValueError, r"^Invalid version: 3 \(must be 0, 1 or 2\)$"),
        ErrorInput({"version": True}, ValueError, r"^Invalid version: True \(must be 0, 1 or 2\)$"),
    ),
)

OPTIMIZERS = (ADAMOD, DIFFMOD)

# constructor switches selecting each implementation path
PATHS = {"single": {"foreach": False}, "multi": {"foreach": True}, "fused": {"fused": True}}


def make_problem(
    seed: int, n_groups: int, dtype: torch.dtype = torch.float32
) -> tuple[list[list[np.ndarray]], list[list[torch.Tensor]], list[list[np.ndarray]]]:
    """Random diagonal quadratics: (float64 arrays, torch params of `dtype`, curvatures).

    Every group has a few tensors of different shapes; gradients come from the reference's own
    parameters (plus noise), so both sides always see the same gradient.
    """
    rng = np.random.default_rng(seed)
    shapes = [(3,), (4, 5), (2, 3, 2), (7,)]
    arrays, tensors, curvatures = [], [], []
    for g in range(n_groups):
        group_shapes = shapes[g % len(shapes) :] + shapes[: g % len(shapes)]
        group_arrays = [rng.normal(size=s) for s in group_shapes[:3]]
        arrays.append(group_arrays)
        tensors.append([torch.tensor(a, dtype=dtype) for a in group_arrays])
        curvatures.append([rng.uniform(0.1, 3.0, size=a.shape) for a in group_arrays])
    return arrays, tensors, curvatures

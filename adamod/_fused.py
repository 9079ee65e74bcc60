"""Fused per-tensor update compiled with torch.compile: one read and write per state tensor."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

_COMPILED: dict[bool, Callable[..., Any]] = {}


# DiffMod's friction ξ = a · sigmoid(k · d) + b with d = |Δg| or Δg, as numbers rather than
# branches so that every version shares one compiled graph
_FRICTION = {0: (1.0, 1.0, 1.0, 0.0), 1: (0.0, 1.0, 1.0, 0.0), 2: (1.0, 9.0, 0.5, -4.0)}


def _update_kernel(
    param: Tensor,
    grad: Tensor,
    exp_avg: Tensor,
    exp_avg_sq: Tensor,
    exp_avg_lr: Tensor,
    prev_grad: Tensor | None,
    hyper: Tensor,
    with_stats: bool,
) -> Tensor | None:
    """The whole update of one tensor as pure tensor maths, for the compiler to fuse."""
    beta1, beta2, beta3, c, eps, scale, decay, sign, use_abs, a, k, b = hyper.unbind()
    grad = grad * sign  # sign = -1 maximizes
    exp_avg_new = exp_avg * beta1 + grad * (1 - beta1)  # m_t
    exp_avg_sq_new = exp_avg_sq * beta2 + grad * grad * (1 - beta2)  # v_t
    eta = c / (exp_avg_sq_new.sqrt() + eps)  # Adam's step size η_t
    exp_avg_lr_new = exp_avg_lr * beta3 + eta * (1 - beta3)  # s_t
    eff = torch.minimum(eta, exp_avg_lr_new)  # bounded step size
    direction = exp_avg_new
    if prev_grad is not None:  # DiffMod
        diff = prev_grad - grad
        diff = diff.abs() * use_abs + diff * (1 - use_abs)  # exact for use_abs in {0, 1}
        direction = direction * (a * torch.sigmoid(k * diff) + b)
        prev_grad.copy_(grad)
    param.copy_(param * decay - scale * eff * direction)
    exp_avg.copy_(exp_avg_new)
    exp_avg_sq.copy_(exp_avg_sq_new)
    exp_avg_lr.copy_(exp_avg_lr_new)
    if not with_stats:
        return None
    return torch.stack(
        [
            (exp_avg_lr_new < eta).sum().to(torch.float64),
            eta.sum(dtype=torch.float64),
            eta.amax().to(torch.float64),
            eff.sum(dtype=torch.float64),
            eff.amax().to(torch.float64),
        ]
    )


def _compiled() -> Callable[..., Any]:
    """The compiled kernel, built on first use (dynamic shapes: one graph for every size)."""
    if True not in _COMPILED:
        try:
            compiled = torch.compile(_update_kernel, dynamic=True, fullgraph=True)
        except Exception as error:  # pragma: no cover - depends on the platform
            raise ImportError(f"fused=True needs a working torch.compile: {error}") from error
        _COMPILED[True] = compiled
    return _COMPILED[True]


def fused_tensor_update(
    param: Tensor,
    grad: Tensor,
    exp_avg: Tensor,
    exp_avg_sq: Tensor,
    exp_avg_lr: Tensor,
    prev_grad: Tensor | None,
    *,
    hyper: tuple[float, ...],
    version: int | None,
    maximize: bool,
    with_stats: bool,
) -> Tensor | None:
    """Update one tensor in one compiled pass; return its partial bound statistics if asked."""
    # hyperparameters travel as one tensor so that new values (lr schedules, bias corrections)
    # never trigger a recompilation
    sign = -1.0 if maximize else 1.0
    friction = _FRICTION[0 if version is None else version]
    hyper_t = torch.tensor((*hyper, sign, *friction), dtype=param.dtype, device=param.device)
    return _compiled()(param, grad, exp_avg, exp_avg_sq, exp_avg_lr, prev_grad, hyper_t, with_stats)

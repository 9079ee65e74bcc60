"""Fused per-tensor update compiled with torch.compile: one read and write per state tensor."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

_COMPILED: dict[bool, Callable[..., Any]] = {}


def _update_kernel(
    param: Tensor,
    grad: Tensor,
    exp_avg: Tensor,
    exp_avg_sq: Tensor,
    exp_avg_lr: Tensor,
    prev_grad: Tensor | None,
    hyper: Tensor,
    version: int | None,
    maximize: bool,
    with_stats: bool,
) -> Tensor | None:
    """The whole update of one tensor as pure tensor maths, for the compiler to fuse."""
    beta1, beta2, beta3, c, eps, scale, decay = hyper.unbind()
    grad = -grad if maximize else grad
    exp_avg_new = exp_avg * beta1 + grad * (1 - beta1)  # m_t
    exp_avg_sq_new = exp_avg_sq * beta2 + grad * grad * (1 - beta2)  # v_t
    eta = c / (exp_avg_sq_new.sqrt() + eps)  # Adam's step size η_t
    exp_avg_lr_new = exp_avg_lr * beta3 + eta * (1 - beta3)  # s_t
    eff = torch.minimum(eta, exp_avg_lr_new)  # bounded step size
    direction = exp_avg_new
    if version is not None:
        assert prev_grad is not None
        diff = prev_grad - grad
        if version == 0:
            direction = direction * torch.sigmoid(diff.abs())
        elif version == 1:
            direction = direction * torch.sigmoid(diff)
        else:
            direction = direction * (9 * torch.sigmoid(0.5 * diff.abs()) - 4)
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
    hyper_t = torch.tensor(hyper, dtype=param.dtype, device=param.device)
    return _compiled()(
        param,
        grad,
        exp_avg,
        exp_avg_sq,
        exp_avg_lr,
        prev_grad,
        hyper_t,
        version,
        maximize,
        with_stats,
    )

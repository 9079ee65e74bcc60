"""Run an optimizer and the float64 reference side by side on the same gradients."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from tests.adamod.optim_infos import OptimizerInfo, make_problem
from tests.adamod.reference import Reference


def lr_factor(step: int, steps: int) -> float:
    """A cosine schedule with a short linear warm-up: lr changes every step."""
    warm = min(1.0, (step + 1) / 10)
    return warm * (0.55 + 0.45 * math.cos(math.pi * step / steps))


def run_side_by_side(
    info: OptimizerInfo,
    group_hypers: list[dict[str, Any]],
    *,
    path: dict[str, Any],
    seed: int,
    steps: int,
    dtype: torch.dtype = torch.float32,
    track_bounds: bool = False,
) -> tuple[torch.optim.Optimizer, Reference, list[list[torch.Tensor]], list[list[np.ndarray]]]:
    """Train both for `steps` steps; one parameter gets a gradient only every third step."""
    arrays, tensors, curvatures = make_problem(seed, len(group_hypers), dtype)
    opt = info.cls(
        [{"params": ts, **h} for ts, h in zip(tensors, group_hypers, strict=True)],
        **path,
        track_bounds=track_bounds,
    )
    ref = Reference(
        info.kind,
        [
            {"params": arrs, **info.reference_hyper(h)}
            for arrs, h in zip(arrays, group_hypers, strict=True)
        ],
    )
    base_lrs = [info.reference_hyper(h)["lr"] for h in group_hypers]
    rng = np.random.default_rng(seed + 1)
    for step in range(steps):
        factor = lr_factor(step, steps)
        for group, ref_group, base in zip(opt.param_groups, ref.groups, base_lrs, strict=True):
            group["lr"] = base * factor  # what an LR scheduler does
            ref_group["lr"] = base * factor
        grads: list[list[np.ndarray | None]] = []
        for g, (arrs, curvs) in enumerate(zip(arrays, curvatures, strict=True)):
            row: list[np.ndarray | None] = []
            for j, (a, c) in enumerate(zip(arrs, curvs, strict=True)):
                skipped = g == 0 and j == 2 and step % 3 != 0
                row.append(None if skipped else c * (a - 0.5) + 0.1 * rng.normal(size=a.shape))
            grads.append(row)
        for ts, row in zip(tensors, grads, strict=True):
            for t, grad in zip(ts, row, strict=True):
                t.grad = None if grad is None else torch.tensor(grad, dtype=dtype)
        opt.step()
        ref.step(grads)
    return opt, ref, tensors, arrays


def assert_close_to_reference(
    opt: torch.optim.Optimizer,
    ref: Reference,
    tensors: list[list[torch.Tensor]],
    arrays: list[list[np.ndarray]],
    *,
    rtol: float,
) -> None:
    """Parameters and every state tensor agree with the reference within rtol (scaled atol)."""
    for ts, arrs in zip(tensors, arrays, strict=True):
        for t, a in zip(ts, arrs, strict=True):
            scale = 1.0 + float(np.abs(a).max())
            np.testing.assert_allclose(t.double().numpy(), a, rtol=rtol, atol=rtol * scale)
            st, rst = opt.state[t], ref.state_of(a)
            assert int(st["step"].item()) == rst.t
            for key, expected in (("exp_avg", rst.m), ("exp_avg_sq", rst.v), ("exp_avg_lr", rst.s)):
                got = st[key].double().numpy()
                atol = rtol * (float(np.abs(expected).max()) + 1e-30)
                np.testing.assert_allclose(got, expected, rtol=rtol, atol=atol, err_msg=key)
            if "previous_grad" in st:
                np.testing.assert_allclose(
                    st["previous_grad"].double().numpy(), rst.prev, rtol=rtol, atol=rtol
                )

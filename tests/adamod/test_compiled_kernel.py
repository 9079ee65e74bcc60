"""The torch.compile kernel (the fused path on CUDA), checked on CPU against the eager path."""

from __future__ import annotations

import pytest
import torch

from adamod._fused import fused_tensor_update
from adamod._telemetry import BoundTracker, partial_bound_stats
from adamod._update import _single_tensor_update, coefficients


@pytest.mark.parametrize(("version", "with_stats"), [(None, False), (2, True)])
def test_compiled_kernel_matches_single_tensor_path(version: int | None, with_stats: bool) -> None:
    """Ten steps of the compiled per-tensor kernel equal the eager single-tensor update."""
    gen = torch.Generator().manual_seed(0)
    hyper = {"beta1": 0.9, "beta2": 0.99, "beta3": 0.9, "lr": 1e-2, "eps": 1e-8}
    eager = [torch.randn(257, generator=gen) for _ in range(5)]  # p, m, v, s, prev
    eager[2].abs_()
    eager[3].abs_()
    compiled = [t.clone() for t in eager]
    step_e, step_c = torch.tensor(0.0), torch.tensor(0.0)
    tracker = BoundTracker()
    for _ in range(10):
        grad = torch.randn(257, generator=gen)
        p, m, v, s, prev = eager
        _single_tensor_update(
            [p], [grad], [m], [v], [s], None if version is None else [prev], [step_e],
            weight_decay=0.1, maximize=True, form="code", version=version, tracker=tracker,
            **hyper,
        )  # fmt: skip
        step_c += 1
        c, eps, scale = coefficients(
            step_c.item(), beta1=0.9, beta2=0.99, lr=1e-2, eps=1e-8, form="code"
        )
        p, m, v, s, prev = compiled
        partial = fused_tensor_update(
            p, grad, m, v, s, None if version is None else prev,
            hyper=(0.9, 0.99, 0.9, c, eps, scale, 1.0 - 1e-2 * 0.1), version=version,
            maximize=True, with_stats=with_stats,
        )  # fmt: skip
        if with_stats:
            expected = partial_bound_stats(*_eta_and_s(eager, c, eps))
            torch.testing.assert_close(partial, expected, rtol=1e-4, atol=1e-6)
    for a, b in zip(eager, compiled, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def _eta_and_s(state: list[torch.Tensor], c: float, eps: float) -> tuple[torch.Tensor, ...]:
    """η and s after the step, recomputed from the eager state."""
    _, _, v, s, _ = state
    return c / (v.sqrt() + eps), s

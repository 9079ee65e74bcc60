"""CUDA paths against the CPU reference path; skipped where there is no GPU."""

from __future__ import annotations

import pytest
import torch

from tests.adamod.optim_infos import OPTIMIZERS, PATHS, OptimizerInfo

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]


def _run(info: OptimizerInfo, device: str, path: str, track: bool) -> torch.optim.Optimizer:
    gen = torch.Generator().manual_seed(0)
    params = [torch.nn.Parameter(torch.randn(s, generator=gen).to(device)) for s in (7, 300, 4096)]
    opt = info.cls(params, **info.valid_inputs[1], **PATHS[path], track_bounds=track)
    for _ in range(50):
        for p in params:
            p.grad = torch.randn(p.shape, generator=gen).to(device)
        opt.step()
    opt.params_for_test = params  # type: ignore[attr-defined]
    return opt


@pytest.mark.parametrize("info", OPTIMIZERS, ids=lambda i: i.name)
@pytest.mark.parametrize("path", ["single", "multi", "fused"])
def test_cuda_path_matches_cpu_single_tensor(info: OptimizerInfo, path: str) -> None:
    """Every path on CUDA agrees with the CPU single-tensor path to float32 rounding."""
    cpu = _run(info, "cpu", "single", track=True)
    gpu = _run(info, "cuda", path, track=True)
    for a, b in zip(cpu.params_for_test, gpu.params_for_test, strict=True):  # type: ignore
        torch.testing.assert_close(a.detach(), b.detach().cpu(), rtol=1e-4, atol=1e-5)
    for key, values in cpu.bound_stats().items():
        torch.testing.assert_close(
            torch.tensor(values, dtype=torch.float64),
            torch.tensor(gpu.bound_stats()[key], dtype=torch.float64),
            rtol=1e-3,
            atol=0.02 if key == "bound_active_frac" else 1e-6,
        )


@pytest.mark.parametrize("info", OPTIMIZERS, ids=lambda i: i.name)
@pytest.mark.parametrize("path", ["single", "multi"])
def test_tracked_step_never_synchronises(info: OptimizerInfo, path: str) -> None:
    """With track_bounds=True a CUDA step makes no host sync (sync debug mode raises)."""
    params = [torch.nn.Parameter(torch.randn(1000, device="cuda")) for _ in range(3)]
    opt = info.cls(params, **PATHS[path], track_bounds=True)
    for p in params:
        p.grad = torch.randn_like(p)
    opt.step()  # state creation may sync; the steady state must not
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        for _ in range(3):
            opt.step()
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert len(opt.bound_stats()["step"]) == 4

"""members.Adam/AdamW on CPU go through AdaMod's C kernel with β3 = 0 (adamod/_adam_kernel.py):
each member must still be torch.optim's Adam/AdamW on that member, maximize and L2 included,
and the foreach path (tensors the kernel cannot take) must agree with it."""

from __future__ import annotations

import pytest
import torch

from adamod import _cpu_kernel
from adamod.members import Adam, AdamW

pytestmark = pytest.mark.skipif(not _cpu_kernel.available(), reason="no C compiler")

F64 = torch.float64
K, STEPS = 3, 60
LR = torch.tensor([1e-3, 3e-2, 1e-1], dtype=F64)
BETA1 = torch.tensor([0.9, 0.8, 0.95], dtype=F64)
BETA2 = torch.tensor([0.999, 0.99, 0.9], dtype=F64)
EPS = torch.tensor([1e-8, 1e-6, 1e-3], dtype=F64)
WD = torch.tensor([0.0, 0.1, 0.02], dtype=F64)
SHAPES = [(K, 4, 5), (K, 7)]
CLASSES = {"Adam": (Adam, torch.optim.Adam), "AdamW": (AdamW, torch.optim.AdamW)}


def _grads(dtype: torch.dtype) -> list[list[torch.Tensor]]:
    gen = torch.Generator().manual_seed(11)
    return [
        [torch.randn(s, generator=gen, dtype=F64).to(dtype) for s in SHAPES] for _ in range(STEPS)
    ]


def _init(dtype: torch.dtype) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(3)
    return [torch.randn(s, generator=gen, dtype=F64).to(dtype) for s in SHAPES]


def _train_members(name: str, maximize: bool, params: list[torch.Tensor], dtype: torch.dtype):
    cls, _ = CLASSES[name]
    opt = cls(params, lr=LR.clone(), betas=(BETA1, BETA2), eps=EPS, weight_decay=WD,
              maximize=maximize)  # fmt: skip
    for step_grads in _grads(dtype):
        for p, g in zip(params, step_grads, strict=True):
            p.grad = g.clone()
        opt.step()
    return params


def _train_reference(name: str, maximize: bool, k: int, dtype: torch.dtype):
    _, reference = CLASSES[name]
    params = [torch.nn.Parameter(t[k].clone()) for t in _init(dtype)]
    opt = reference(params, lr=LR[k].item(), betas=(BETA1[k].item(), BETA2[k].item()),
                    eps=EPS[k].item(), weight_decay=WD[k].item(), maximize=maximize,
                    foreach=False)  # fmt: skip
    for step_grads in _grads(dtype):
        for p, g in zip(params, step_grads, strict=True):
            p.grad = g[k].clone()
        opt.step()
    return params


@pytest.mark.parametrize("maximize", [False, True])
@pytest.mark.parametrize("name", sorted(CLASSES))
def test_each_member_is_torchs_optimizer_on_that_member(name: str, maximize: bool) -> None:
    packed = _train_members(
        name, maximize, [torch.nn.Parameter(t) for t in _init(F64)], F64
    )
    for k in range(K):
        for got, want in zip(packed, _train_reference(name, maximize, k, F64), strict=True):
            torch.testing.assert_close(got.detach()[k], want.detach(), rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("name", sorted(CLASSES))
def test_float32_members_are_torchs_optimizer_to_float32_rounding(name: str) -> None:
    f32 = torch.float32
    packed = _train_members(name, False, [torch.nn.Parameter(t) for t in _init(f32)], f32)
    for k in range(K):
        for got, want in zip(packed, _train_reference(name, False, k, f32), strict=True):
            assert got.dtype == f32
            torch.testing.assert_close(got.detach()[k], want.detach(), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", sorted(CLASSES))
def test_tensors_the_kernel_cannot_take_follow_the_foreach_path_to_the_same_result(
    name: str,
) -> None:
    """Transposed (non-contiguous) params skip the kernel; the result is the same maths."""
    contiguous = [torch.nn.Parameter(t) for t in _init(F64)]
    strided = []
    for t in _init(F64):
        flipped = torch.empty(tuple(reversed(t.shape)), dtype=F64).permute(
            *reversed(range(t.dim()))
        )
        flipped.copy_(t)
        assert not flipped.is_contiguous()
        strided.append(torch.nn.Parameter(flipped))
    a = _train_members(name, True, contiguous, F64)
    b = _train_members(name, True, strided, F64)
    for x, y in zip(a, b, strict=True):
        torch.testing.assert_close(x.detach(), y.detach(), rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("dtype", [torch.float32, F64])
def test_adam_mode_is_the_kernel_with_beta3_zero_bit_for_bit(dtype: torch.dtype) -> None:
    """The kernel's Adam mode (no s_t array) against the same kernel with β3 = 0 and an s_t
    array, one holding zeros and one holding NaN and inf: with β3 = 0, min(η, s_t) is η itself
    whatever s_{t-1} was, so all three must agree to the bit, for float32 and float64."""
    gen = torch.Generator().manual_seed(5)
    init = [torch.randn(s, generator=gen, dtype=F64).to(dtype) for s in SHAPES]
    grads = [[torch.randn(s, generator=gen, dtype=F64).to(dtype) for s in SHAPES] for _ in range(5)]
    k = SHAPES[0][0]
    values = {
        "c": [[1e-3 * (j + 1) for j in range(k)]] * len(SHAPES),
        "eps": [[1e-8 * (j + 1) for j in range(k)]] * len(SHAPES),
        "scale": [[1.0 + 0.1 * j for j in range(k)]] * len(SHAPES),
        "beta1": BETA1.tolist(),
        "beta2": BETA2.tolist(),
        "beta3": [0.0] * k,
        "decay": [1.0 - 1e-3 * j for j in range(k)],
    }
    runs = []
    for bounds in (None, 0.0, float("nan"), float("inf")):
        params = [t.clone() for t in init]
        m = [torch.zeros_like(t) for t in init]
        v = [torch.zeros_like(t) for t in init]
        s = None if bounds is None else [torch.full_like(t, bounds) for t in init]
        for step in grads:
            _cpu_kernel.member_cpu_update(
                params, step, m, v, s, None, members=k, **values, maximize=False,
                version=None, with_stats=False,
            )  # fmt: skip
        runs.append((params, m, v))
    first = runs[0]
    assert all(torch.isfinite(p).all() for p in first[0])
    for other in runs[1:]:
        for a, b in zip(first, other, strict=True):
            for x, y in zip(a, b, strict=True):
                assert torch.equal(x, y)


def test_adam_mode_takes_no_friction_and_no_stats() -> None:
    params = [torch.zeros(2, 3)]
    with pytest.raises(ValueError, match="exp_avg_lrs"):
        _cpu_kernel.member_cpu_update(
            params, params, params, params, None, None, members=2, c=[[1.0, 1.0]],
            eps=[[1.0, 1.0]], scale=[[1.0, 1.0]], beta1=[0.9] * 2, beta2=[0.9] * 2,
            beta3=[0.0] * 2, decay=[1.0] * 2, maximize=False, version=None, with_stats=True,
        )  # fmt: skip

"""Adam and AdamW packs through the member C kernel: AdaMod with β3 = 0 is Adam.

With β3 = 0 AdaMod's bound is the current step size itself (s_t = η_t), so min(η_t, s_t) = η_t
and the update is Adam's (Ding et al. 2019, §3): with the printed form's coefficients
c = lr·√bc2, ε' = ε·√bc2 and scale = 1/bc1, θ ← θ - (lr/bc1)·m / (√v/√bc2 + ε), torch's Adam
rearranged. The kernel's Adam mode (exp_avg_lrs None) takes that step with no s_t array to
read or write (a pack's step once allocated and zeroed one per param). One pass over every
member's elements replaces the ~10 broadcast foreach passes of members.adam, which made the
optimizer half of a digits Adam pack's step.

Rounding differs from torch's order of operations (float64: ~1e-16 per step); members.adam
and this path are both checked against torch.optim.Adam per member in tests/adamod.
"""

from __future__ import annotations

import torch
from torch import Tensor

from adamod import _cpu_kernel
from adamod._member_kernel import kernel_fits, kernel_update
from adamod._member_types import MemberHyper, Tensors


def adam_by_kernel(
    params: list[Tensor],
    grads: list[Tensor],
    exp_avgs: list[Tensor],
    exp_avg_sqs: list[Tensor],
    state_steps: list[Tensor],
    h: dict[str, Tensor],
    *,
    decoupled_weight_decay: bool,
) -> bool:
    """One Adam step of every member through the C kernel, steps counted; False, and nothing
    changed, when the kernel cannot take these tensors (not CPU, not contiguous float32/64 of
    one dtype, or no compiler): the caller's foreach path then runs.

    `grads` are the gradients Adam steps along: already negated for maximize, with L2 weight
    decay already added (Adam); AdamW's decoupled decay (θ ← (1 - lr·wd) θ) is the kernel's.
    `h` holds float64 (K,) or (1,) tensors: lr, beta1, beta2, eps, weight_decay."""
    if not params or not all(p.device.type == "cpu" for p in params):
        return False
    if len({p.dtype for p in params}) != 1 or not _cpu_kernel.available():
        return False
    tensors = Tensors(params, grads, exp_avgs, exp_avg_sqs, None, None, state_steps)
    if not all(kernel_fits(tensors, i) for i in range(len(params))):
        return False
    zero = torch.zeros(1, dtype=torch.float64)
    hyper = MemberHyper(
        members=max(t.numel() for t in h.values()),
        beta1=h["beta1"],
        beta2=h["beta2"],
        beta3=zero,
        lr=h["lr"],
        eps=h["eps"],
        weight_decay=h["weight_decay"] if decoupled_weight_decay else zero,
        form="paper",
        version=None,
        maximize=False,
    )
    kernel_update(tensors, hyper, None)
    return True

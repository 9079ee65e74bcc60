"""Member mode through the C kernel: every member of a group of tensors in one call per step.

The fast path of member mode on CPU. The kernel takes each member's scalars as arrays of K
doubles and derives an element's member from its position (a contiguous tensor with leading dim
K is K contiguous slices), so nothing is sliced or broadcast in Python. The scalars are Python
floats computed exactly as the scalar optimizer computes its own (`coefficients`, 1 - lr·wd),
which makes member k's update the scalar fused optimizer's on param[k], bit for bit.
"""

from __future__ import annotations

import torch

from adamod import _cpu_kernel
from adamod._member_types import MemberHyper, Tensors
from adamod._telemetry import BoundTracker
from adamod._update import coefficients

MemberScalars = tuple[list[float], list[float], list[float]]


def member_scalars(
    step: float,
    *,
    beta1: list[float],
    beta2: list[float],
    lr: list[float],
    eps: list[float],
    form: str,
) -> MemberScalars:
    """(c, ε', scale) of every member at one step count, as K floats each.

    `member_coefficients` computes the same formulas with float64 tensors; here they go through
    the scalar path's own `coefficients`, so that no rounding can differ from a scalar step.
    """
    # Members of a sensitivity study share most hyperparameters (64 members: a handful of
    # distinct lrs), so each distinct tuple is computed once; every member still gets exactly
    # the scalar path's floats.
    memo: dict[tuple[float, float, float, float], tuple[float, float, float]] = {}
    rows = []
    for key in zip(beta1, beta2, lr, eps, strict=True):
        row = memo.get(key)
        if row is None:
            b1, b2, lr_k, eps_k = key
            row = memo[key] = coefficients(step, beta1=b1, beta2=b2, lr=lr_k, eps=eps_k, form=form)
        rows.append(row)
    c, eps_, scale = (list(column) for column in zip(*rows, strict=True))
    return c, eps_, scale


def kernel_fits(tensors: Tensors, i: int) -> bool:
    """Whether the kernel can update tensor i in place (contiguous CPU float32/float64)."""
    prev, bounds = tensors.prev_grads, tensors.exp_avg_lrs
    return _cpu_kernel.eligible(
        tensors.params[i],
        tensors.exp_avgs[i],
        tensors.exp_avg_sqs[i],
        None if bounds is None else bounds[i],
        None if prev is None else prev[i],
    )


def kernel_update(tensors: Tensors, h: MemberHyper, tracker: BoundTracker | None) -> None:
    """Update same-dtype kernel-eligible tensors, all members, in one kernel call.

    A pack calls this once per step, between its backward passes: every Python operation here
    runs with cold caches, so the scalars are built from plain lists (one host read per
    hyperparameter) and only the step-dependent ones are recomputed."""
    params, grads, exp_avgs, exp_avg_sqs, exp_avg_lrs, prev_grads, state_steps = tensors
    torch._foreach_add_(state_steps, 1.0)
    steps = torch.stack(state_steps).tolist()  # CPU step tensors: one call, no device sync
    beta1, beta2, beta3, lr, eps, wd = h.lists()
    by_step = {
        st: member_scalars(st, beta1=beta1, beta2=beta2, lr=lr, eps=eps, form=h.form)
        for st in set(steps)
    }
    per_tensor = [by_step[st] for st in steps]  # tensors of one step count share the lists
    if any(wd):
        decay = [1.0 - lr_k * wd_k for lr_k, wd_k in zip(lr, wd, strict=True)]
    else:
        decay = [1.0] * h.members  # 1 - lr·0 is 1.0 exactly
    stats = _cpu_kernel.member_cpu_update(
        params,
        grads,
        exp_avgs,
        exp_avg_sqs,
        exp_avg_lrs,
        prev_grads,
        members=h.members,
        c=[x[0] for x in per_tensor],
        eps=[x[1] for x in per_tensor],
        scale=[x[2] for x in per_tensor],
        beta1=beta1,
        beta2=beta2,
        beta3=beta3,
        decay=decay,
        maximize=h.maximize,
        version=h.version,
        with_stats=tracker is not None,
    )
    if tracker is not None:
        assert stats is not None
        numel = sum(p.numel() for p in params) // h.members
        tracker.add_members(stats, numel, int(max(steps)))

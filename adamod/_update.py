"""The AdaMod/DiffMod update on lists of tensors: one dispatcher and three implementations.

All three implementations share one keyword-only signature and compute, per element,

    m ← β1 m + (1-β1) g                       v ← β2 v + (1-β2) g²
    η ← c / (sqrt(v) + ε')                    s ← β3 s + (1-β3) η
    θ ← (1 - lr·wd) θ - scale · min(η, s) · m · ξ

with (c, ε', scale) from `coefficients` (the authors' code form or the paper's printed form) and
ξ = 1 for AdaMod or DiffMod's friction coefficient of (g_{t-1} - g_t).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor
from torch.utils._foreach_utils import _group_tensors_by_device_and_dtype

from adamod._members_hyper import is_member_value
from adamod._telemetry import BoundTracker, partial_bound_stats

REDUCED_PRECISION = (torch.bfloat16, torch.float16)
IMPLEMENTATIONS = ("single", "multi", "fused")
# elements per block of the eager CPU paths: 7 streams of 256 KiB stay in the L2/L3 caches
CACHE_BLOCK = 1 << 17


def coefficients(
    step: float, *, beta1: float, beta2: float, lr: float, eps: float, form: str
) -> tuple[float, float, float]:
    """Return (c, ε', scale) with η = c / (sqrt(v) + ε') and θ -= scale · min(η, s) · m."""
    bias_correction1 = 1.0 - beta1**step
    bias_correction2_sqrt = math.sqrt(1.0 - beta2**step)
    if form == "code":
        # released code: the bias corrections live inside η, so s averages them too
        return lr * bias_correction2_sqrt / bias_correction1, eps, 1.0
    # printed Algorithm 1: η = lr / (sqrt(v / bc2) + ε), θ -= min(η, s) · m / bc1
    return lr * bias_correction2_sqrt, eps * bias_correction2_sqrt, 1.0 / bias_correction1


def friction_(diff: Tensor, version: int) -> Tensor:
    """Turn diff = g_{t-1} - g_t into DiffMod's friction coefficient ξ, in place."""
    if version == 0:
        return diff.abs_().sigmoid_()
    if version == 1:
        return diff.sigmoid_()
    return diff.abs_().mul_(0.5).sigmoid_().mul_(9.0).sub_(4.0)


def choose_impl(
    params: list[Tensor], foreach: bool | None, fused: bool | None, *, member_mode: bool = False
) -> str:
    """Pick "single", "multi", "fused" or, in member mode, "auto": the one place where the
    implementation is chosen.

    "auto" is member mode's default where not every param is on CUDA: the member C kernel where
    it compiles, the single-tensor member path elsewhere (adamod._member_update). A pack's step
    is small per member and the kernel does it in one call; the scalar default stays eager.
    """
    if foreach and fused:
        raise ValueError("Invalid foreach and fused: both True (choose at most one)")
    if fused:
        return "fused"
    if foreach:
        return "multi"
    if foreach is None and params and all(p.device.type == "cuda" for p in params):
        # horizontal fusion across tensors only pays on accelerators, as in torch.optim
        return "multi"
    if member_mode and foreach is None and fused is None:
        return "auto"
    return "single"


def _single_tensor_update(
    params: list[Tensor],
    grads: list[Tensor],
    exp_avgs: list[Tensor],
    exp_avg_sqs: list[Tensor],
    exp_avg_lrs: list[Tensor],
    prev_grads: list[Tensor] | None,
    state_steps: list[Tensor],
    *,
    beta1: float,
    beta2: float,
    beta3: float,
    lr: float,
    eps: float,
    weight_decay: float,
    maximize: bool,
    form: str,
    version: int | None,
    tracker: BoundTracker | None,
) -> None:
    """Reference implementation: one tensor at a time, in-place ops, one temporary per tensor.

    Large contiguous CPU tensors are updated in cache-sized blocks (views), so that the
    temporaries and the repeated passes of the eager ops hit the cache instead of memory.
    """
    for i, param in enumerate(params):
        grad = -grads[i] if maximize else grads[i]
        state_steps[i] += 1
        step = state_steps[i].item()  # CPU tensor: no device sync
        c, eps_, scale = coefficients(step, beta1=beta1, beta2=beta2, lr=lr, eps=eps, form=form)
        tensors = [param, grad, exp_avgs[i], exp_avg_sqs[i], exp_avg_lrs[i]]
        if version is not None:
            assert prev_grads is not None
            tensors.append(prev_grads[i])
        for block in _cache_blocks(tensors):
            _update_block(
                *block[:5],
                block[5] if version is not None else None,
                beta1=beta1,
                beta2=beta2,
                beta3=beta3,
                decay=1.0 - lr * weight_decay,
                c=c,
                eps=eps_,
                scale=scale,
                version=version,
                tracker=tracker,
                step=int(step),
            )


def _cache_blocks(tensors: list[Tensor]) -> list[list[Tensor]]:
    """Split same-sized contiguous CPU tensors into aligned blocks of CACHE_BLOCK elements."""
    first = tensors[0]
    if (
        first.device.type != "cpu"
        or first.numel() <= 2 * CACHE_BLOCK
        or not all(t.is_contiguous() for t in tensors)
    ):
        return [tensors]
    flat = [t.view(-1).split(CACHE_BLOCK) for t in tensors]
    return [list(parts) for parts in zip(*flat, strict=True)]


def _update_block(
    param: Tensor,
    grad: Tensor,
    exp_avg: Tensor,
    exp_avg_sq: Tensor,
    exp_avg_lr: Tensor,
    prev_grad: Tensor | None,
    *,
    beta1: float,
    beta2: float,
    beta3: float,
    decay: float,
    c: float,
    eps: float,
    scale: float,
    version: int | None,
    tracker: BoundTracker | None,
    step: int,
) -> None:
    """The update of one tensor (or block), one eager op per line of maths."""
    if decay != 1.0:
        param.mul_(decay)  # decoupled weight decay first
    exp_avg.lerp_(grad, 1.0 - beta1)  # m_t
    exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1.0 - beta2)  # v_t
    eta = torch.sqrt(exp_avg_sq).add_(eps)
    # η_t = c / (sqrt(v_t) + ε'), in one pass (x.reciprocal_().mul_(c) would be two)
    torch.div(torch.tensor(c, dtype=torch.float64), eta, out=eta)
    exp_avg_lr.lerp_(eta, 1.0 - beta3)  # s_t
    if tracker is not None:
        tracker.add(partial_bound_stats(eta, exp_avg_lr), eta.numel(), step)
    eff = torch.minimum(eta, exp_avg_lr, out=eta)  # min(η_t, s_t)
    if prev_grad is not None:
        assert version is not None
        eff.mul_(friction_(torch.sub(prev_grad, grad), version))  # DiffMod: ξ_t
        prev_grad.copy_(grad)
    param.addcmul_(eff, exp_avg, value=-scale)


def _multi_tensor_update(
    params: list[Tensor],
    grads: list[Tensor],
    exp_avgs: list[Tensor],
    exp_avg_sqs: list[Tensor],
    exp_avg_lrs: list[Tensor],
    prev_grads: list[Tensor] | None,
    state_steps: list[Tensor],
    *,
    beta1: float,
    beta2: float,
    beta3: float,
    lr: float,
    eps: float,
    weight_decay: float,
    maximize: bool,
    form: str,
    version: int | None,
    tracker: BoundTracker | None,
) -> None:
    """torch._foreach_* implementation: one op per line of maths over all tensors of a device.

    On CPU, where foreach ops are loops over tensors, the tensors are regrouped into batches of
    cache-sized blocks so that the passes over memory hit the cache.
    """
    lists: list[list[Tensor]] = [params, grads, exp_avgs, exp_avg_sqs, exp_avg_lrs, state_steps]
    if version is not None:
        assert prev_grads is not None
        lists.append(prev_grads)
    grouped = _group_tensors_by_device_and_dtype(lists)  # type: ignore[arg-type]
    for (device, _), (group_lists, _) in grouped.items():
        d_params, d_grads, d_avgs, d_sqs, d_lrs, d_steps = group_lists[:6]
        if maximize:
            d_grads = torch._foreach_neg(d_grads)
        torch._foreach_add_(d_steps, 1.0)
        steps = [t.item() for t in d_steps]
        coeffs = [
            coefficients(st, beta1=beta1, beta2=beta2, lr=lr, eps=eps, form=form) for st in steps
        ]
        tensors = [d_params, d_grads, d_avgs, d_sqs, d_lrs, *group_lists[6:]]
        if device.type == "cpu":
            batches = _cpu_batches(tensors, coeffs, steps)
        else:
            batches = [(tensors, coeffs, steps)]
        for batch, batch_coeffs, batch_steps in batches:
            _foreach_block(
                *batch[:5],
                batch[5] if version is not None else None,
                coeffs=batch_coeffs,
                steps=batch_steps,
                beta1=beta1,
                beta2=beta2,
                beta3=beta3,
                decay=1.0 - lr * weight_decay,
                version=version,
                tracker=tracker,
                cpu=device.type == "cpu",
            )


Coeffs = list[tuple[float, float, float]]


def _cpu_batches(
    tensors: list[list[Tensor]], coeffs: Coeffs, steps: list[float]
) -> list[tuple[list[list[Tensor]], Coeffs, list[float]]]:
    """Regroup tensors into batches of about CACHE_BLOCK elements (big ones split in blocks)."""
    batches: list[tuple[list[list[Tensor]], Coeffs, list[float]]] = []
    current: list[list[Tensor]] = [[] for _ in tensors]
    current_coeffs: Coeffs = []
    current_steps: list[float] = []
    size = 0
    for i in range(len(tensors[0])):
        for block in _cache_blocks([lst[i] for lst in tensors]):
            for column, t in zip(current, block, strict=True):
                column.append(t)
            current_coeffs.append(coeffs[i])
            current_steps.append(steps[i])
            size += block[0].numel()
            if size >= CACHE_BLOCK:
                batches.append((current, current_coeffs, current_steps))
                current, current_coeffs, current_steps = [[] for _ in tensors], [], []
                size = 0
    if current_coeffs:
        batches.append((current, current_coeffs, current_steps))
    return batches


def _foreach_block(
    params: list[Tensor],
    grads: list[Tensor],
    exp_avgs: list[Tensor],
    exp_avg_sqs: list[Tensor],
    exp_avg_lrs: list[Tensor],
    prev_grads: list[Tensor] | None,
    *,
    coeffs: Coeffs,
    steps: list[float],
    beta1: float,
    beta2: float,
    beta3: float,
    decay: float,
    version: int | None,
    tracker: BoundTracker | None,
    cpu: bool,
) -> None:
    """The update of a list of same-device tensors, one foreach op per line of maths."""
    if decay != 1.0:
        torch._foreach_mul_(params, decay)  # decoupled weight decay first
    torch._foreach_lerp_(exp_avgs, grads, 1.0 - beta1)  # m_t
    torch._foreach_mul_(exp_avg_sqs, beta2)  # v_t
    torch._foreach_addcmul_(exp_avg_sqs, grads, grads, 1.0 - beta2)
    etas = torch._foreach_sqrt(exp_avg_sqs)
    torch._foreach_add_(etas, [e for _, e, _ in coeffs])
    if cpu:
        # η_t = c / x: CPU foreach ops loop over tensors and broadcast, so this is one pass
        scalars = [torch.tensor(c, dtype=torch.float64) for c, _, _ in coeffs]
        torch.ops.aten._foreach_div.List_out(scalars, etas, out=etas)
    else:
        torch._foreach_reciprocal_(etas)
        torch._foreach_mul_(etas, [c for c, _, _ in coeffs])
    torch._foreach_lerp_(exp_avg_lrs, etas, 1.0 - beta3)  # s_t
    if tracker is not None:
        for eta, lr_avg, step in zip(etas, exp_avg_lrs, steps, strict=True):
            tracker.add(partial_bound_stats(eta, lr_avg), eta.numel(), int(step))
    torch._foreach_minimum_(etas, exp_avg_lrs)  # min(η_t, s_t)
    if prev_grads is not None:  # DiffMod: ξ_t from g_{t-1} - g_t
        diffs = torch._foreach_sub(prev_grads, grads)
        if version != 1:
            torch._foreach_abs_(diffs)
        if version == 2:
            torch._foreach_mul_(diffs, 0.5)
        torch._foreach_sigmoid_(diffs)
        if version == 2:
            torch._foreach_mul_(diffs, 9.0)
            torch._foreach_sub_(diffs, 4.0)
        torch._foreach_mul_(etas, diffs)
        torch._foreach_copy_(prev_grads, grads)
    torch._foreach_addcmul_(params, etas, exp_avgs, [-scale for _, _, scale in coeffs])


def _fused_update(
    params: list[Tensor],
    grads: list[Tensor],
    exp_avgs: list[Tensor],
    exp_avg_sqs: list[Tensor],
    exp_avg_lrs: list[Tensor],
    prev_grads: list[Tensor] | None,
    state_steps: list[Tensor],
    *,
    beta1: float,
    beta2: float,
    beta3: float,
    lr: float,
    eps: float,
    weight_decay: float,
    maximize: bool,
    form: str,
    version: int | None,
    tracker: BoundTracker | None,
) -> None:
    """Single pass over memory: the C kernel on CPU, one torch.compile kernel per tensor elsewhere.

    CPU tensors that are not contiguous float32/float64 take the single-tensor path instead.
    """
    options = {
        "beta1": beta1,
        "beta2": beta2,
        "beta3": beta3,
        "lr": lr,
        "eps": eps,
        "weight_decay": weight_decay,
        "maximize": maximize,
        "form": form,
        "version": version,
        "tracker": tracker,
    }
    on_cpu = [i for i, p in enumerate(params) if p.device.type == "cpu"]
    if on_cpu:
        from adamod import _cpu_kernel

        _cpu_kernel.load_library()  # compiles on first use; fails before anything changes

        def pick(indices: list[int]) -> list[list[Tensor]]:
            lists = [params, grads, exp_avgs, exp_avg_sqs, exp_avg_lrs, state_steps]
            if prev_grads is not None:
                lists.append(prev_grads)
            return [[lst[i] for i in indices] for lst in lists]

        fits = [
            i
            for i in on_cpu
            if _cpu_kernel.eligible(
                params[i],
                exp_avgs[i],
                exp_avg_sqs[i],
                exp_avg_lrs[i],
                None if prev_grads is None else prev_grads[i],
            )
        ]
        fit_set = set(fits)
        rest = [i for i in on_cpu if i not in fit_set]
        if rest:
            p_, g_, m_, v_, s_, st_, *prev_ = pick(rest)
            _single_tensor_update(p_, g_, m_, v_, s_, prev_[0] if prev_ else None, st_, **options)
        for dtype in (torch.float32, torch.float64):
            chosen = [i for i in fits if params[i].dtype == dtype]
            if not chosen:
                continue
            p_, g_, m_, v_, s_, st_, *prev_ = pick(chosen)
            torch._foreach_add_(st_, 1.0)
            steps = torch.stack(st_).tolist()  # CPU step tensors: one call, no device sync
            by_step = {
                st: coefficients(st, beta1=beta1, beta2=beta2, lr=lr, eps=eps, form=form)
                for st in set(steps)
            }
            coeffs = [by_step[st] for st in steps]
            partial = _cpu_kernel.fused_cpu_update(
                p_,
                g_,
                m_,
                v_,
                s_,
                prev_[0] if prev_ else None,
                c=[x[0] for x in coeffs],
                eps=[x[1] for x in coeffs],
                scale=[x[2] for x in coeffs],
                beta1=beta1,
                beta2=beta2,
                beta3=beta3,
                decay=1.0 - lr * weight_decay,
                maximize=maximize,
                version=version,
                with_stats=tracker is not None,
            )
            if tracker is not None:
                assert partial is not None
                tracker.add(partial, sum(p.numel() for p in p_), int(max(steps)))

    others = [i for i, p in enumerate(params) if p.device.type != "cpu"]
    if not others:
        return
    from adamod._fused import fused_tensor_update  # lazy: imports torch._dynamo

    for i in others:
        param = params[i]
        state_steps[i] += 1
        step = state_steps[i].item()
        c, eps_, scale = coefficients(step, beta1=beta1, beta2=beta2, lr=lr, eps=eps, form=form)
        partial = fused_tensor_update(
            param,
            grads[i],
            exp_avgs[i],
            exp_avg_sqs[i],
            exp_avg_lrs[i],
            None if prev_grads is None else prev_grads[i],
            hyper=(beta1, beta2, beta3, c, eps_, scale, 1.0 - lr * weight_decay),
            version=version,
            maximize=maximize,
            with_stats=tracker is not None,
        )
        if tracker is not None:
            assert partial is not None
            tracker.add(partial, param.numel(), int(step))


_IMPLS = {"single": _single_tensor_update, "multi": _multi_tensor_update, "fused": _fused_update}


def bounded_update(
    params: list[Tensor],
    grads: list[Tensor],
    exp_avgs: list[Tensor],
    exp_avg_sqs: list[Tensor],
    exp_avg_lrs: list[Tensor],
    prev_grads: list[Tensor] | None,
    state_steps: list[Tensor],
    *,
    foreach: bool | None,
    fused: bool | None,
    beta1: float | Tensor,
    beta2: float | Tensor,
    beta3: float | Tensor,
    lr: float | Tensor,
    eps: float | Tensor,
    weight_decay: float | Tensor,
    maximize: bool,
    form: str,
    version: int | None,
    tracker: BoundTracker | None,
) -> None:
    """Dispatch once to an implementation; reduced-precision params are updated in float32.

    Hyperparameters given as 1-D tensors (one value per member of a pack) select member mode
    (adamod._member_update), with the same three implementations and, by default on CPU, the
    member C kernel.
    """
    member_mode = any(map(is_member_value, (lr, beta1, beta2, beta3, eps, weight_decay)))
    name = choose_impl(params, foreach, fused, member_mode=member_mode)
    low = [i for i, p in enumerate(params) if p.dtype in REDUCED_PRECISION]
    work_params, work_grads = params, grads
    if low:
        # state is float32 for these params (see AdaMod's docstring); compute in float32 and
        # round the parameter once at the end
        work_params, work_grads = list(params), list(grads)
        for i in low:
            work_params[i] = params[i].float()
            work_grads[i] = grads[i].float()
    if member_mode:
        from adamod._member_update import MEMBER_IMPLS  # lazy: it imports this module

        impl = MEMBER_IMPLS[name]
    else:
        impl = _IMPLS[name]
    impl(
        work_params,
        work_grads,
        exp_avgs,
        exp_avg_sqs,
        exp_avg_lrs,
        prev_grads,
        state_steps,
        beta1=beta1,
        beta2=beta2,
        beta3=beta3,
        lr=lr,
        eps=eps,
        weight_decay=weight_decay,
        maximize=maximize,
        form=form,
        version=version,
        tracker=tracker,
    )
    for i in low:
        params[i].copy_(work_params[i])

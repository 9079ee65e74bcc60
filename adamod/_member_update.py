"""The AdaMod/DiffMod update in member mode: K models stacked on a leading dim, own hypers each.

The maths of adamod._update with every hyperparameter a (K,) tensor, broadcast over the other
dims as (K, 1, ..., 1). Every op is element-wise, so nothing of member k reaches member j, and
the telemetry reduces each member's slice on its own. `member_update` checks the values against
the params once, before anything changes, and runs one of four implementations:

- "auto" (foreach and fused left at None): on CPU the member C kernel (adamod._member_kernel:
  every member of every tensor in one call per step and dtype) where it compiles and the
  tensors are contiguous float32/float64; everything else takes "single";
- "single": one tensor at a time, the single-tensor path's eager ops;
- "multi": torch._foreach_* ops over the tensors of each device and dtype (also CUDA's fused:
  the compiled CUDA kernel takes scalars);
- "fused": the member C kernel on CPU, raising ImportError where it cannot compile; CPU tensors
  it cannot update take "single", tensors on other devices "multi".
"""

from __future__ import annotations

import typing
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor
from torch.utils._foreach_utils import _group_tensors_by_device_and_dtype

from adamod._member_types import MemberHyper, Tensors
from adamod._members_hyper import Broadcast, check_member_params, member_count, member_values
from adamod._telemetry import (
    BoundTracker,
    member_eff_stats,
    member_eta_stats,
    member_partials,
)
from adamod._update import friction_

Hyper = float | Tensor


@dataclass(frozen=True)
class MemberCoefficients:
    """`coefficients` of every member for one step count: η = c / (sqrt(v) + ε').

    θ -= scale · min(η, s) · m; scale is 1 in the code form, where it is not applied.
    """

    c: Tensor
    eps: Tensor
    scale: Tensor


def member_coefficients(step: float, h: MemberHyper) -> MemberCoefficients:
    """The scalar path's `coefficients`, member by member, as float64 CPU tensors."""
    bias_correction1 = 1.0 - h.beta1**step
    bias_correction2_sqrt = torch.sqrt(1.0 - h.beta2**step)
    if h.form == "code":
        c = h.lr * bias_correction2_sqrt / bias_correction1
        return MemberCoefficients(c, h.eps, torch.ones_like(c))
    return MemberCoefficients(
        h.lr * bias_correction2_sqrt, h.eps * bias_correction2_sqrt, 1.0 / bias_correction1
    )


def member_update(
    impl: str,
    tensors: Tensors,
    *,
    beta1: Hyper,
    beta2: Hyper,
    beta3: Hyper,
    lr: Hyper,
    eps: Hyper,
    weight_decay: Hyper,
    maximize: bool,
    form: str,
    version: int | None,
    tracker: BoundTracker | None,
) -> None:
    """Check the member values against the params (before any change), then run `impl`."""
    named = {
        "lr": lr,
        "beta1": beta1,
        "beta2": beta2,
        "beta3": beta3,
        "eps": eps,
        "weight_decay": weight_decay,
    }
    members = member_count(named)
    if members is None:
        raise ValueError("member mode needs at least one hyperparameter given as a 1-D tensor")
    tensor_names = [name for name, value in named.items() if isinstance(value, Tensor)]
    check_member_params(tensors.params, members, tensor_names)
    if tracker is not None:
        tracker.expect_members(members)
    h = MemberHyper(
        members,
        beta1=member_values(beta1),
        beta2=member_values(beta2),
        beta3=member_values(beta3),
        lr=member_values(lr),
        eps=member_values(eps),
        weight_decay=member_values(weight_decay),
        form=form,
        version=version,
        maximize=maximize,
    )
    _IMPLS[impl](tensors, h, tracker)


def _single(tensors: Tensors, h: MemberHyper, tracker: BoundTracker | None) -> None:
    """One tensor at a time: the single-tensor path's ops with (K, 1, ..., 1) hyperparameters."""
    params, grads, exp_avgs, exp_avg_sqs, exp_avg_lrs, prev_grads, state_steps = tensors
    cast = Broadcast()
    one_minus_beta1, one_minus_beta2, one_minus_beta3 = 1.0 - h.beta1, 1.0 - h.beta2, 1.0 - h.beta3
    decay = h.decay()
    by_step: dict[float, MemberCoefficients] = {}
    for i, param in enumerate(params):
        grad = -grads[i] if h.maximize else grads[i]
        state_steps[i] += 1
        step = state_steps[i].item()  # CPU tensor: no device sync
        if step not in by_step:
            by_step[step] = member_coefficients(step, h)
        co = by_step[step]
        exp_avg, exp_avg_sq, exp_avg_lr = exp_avgs[i], exp_avg_sqs[i], exp_avg_lrs[i]
        if decay is not None:
            param.mul_(cast.like(decay, param))  # decoupled weight decay first
        exp_avg.lerp_(grad, cast.like(one_minus_beta1, param))  # m_t
        exp_avg_sq.mul_(cast.like(h.beta2, param))  # v_t
        exp_avg_sq.addcmul_(grad, grad * cast.like(one_minus_beta2, param))
        eta = torch.sqrt(exp_avg_sq).add_(cast.like(co.eps, param))
        torch.div(cast.like(co.c, param), eta, out=eta)  # η_t = c / (sqrt(v_t) + ε')
        exp_avg_lr.lerp_(eta, cast.like(one_minus_beta3, param))  # s_t
        columns = [] if tracker is None else member_eta_stats(eta, exp_avg_lr, h.members)
        eff = torch.minimum(eta, exp_avg_lr, out=eta)  # min(η_t, s_t), shared with the telemetry
        if tracker is not None:
            partial = member_partials(columns + member_eff_stats(eff, h.members))
            tracker.add_members(partial, eta.numel() // h.members, int(step))
        if prev_grads is not None:
            assert h.version is not None
            eff.mul_(friction_(torch.sub(prev_grads[i], grad), h.version))  # DiffMod: ξ_t
            prev_grads[i].copy_(grad)
        if h.form != "code":
            eff.mul_(cast.like(co.scale, param))
        param.addcmul_(eff, exp_avg, value=-1.0)


def _multi(tensors: Tensors, h: MemberHyper, tracker: BoundTracker | None) -> None:
    """torch._foreach_* ops over the tensors of each device and dtype, hyperparameters as lists.

    Unlike the scalar foreach path, CPU tensors are not split into cache-sized blocks: a block
    of a flattened tensor would no longer line up with the (K, 1, ..., 1) hyperparameters.
    """
    lists = [t for t in tensors if t is not None]
    grouped = _group_tensors_by_device_and_dtype(lists)  # type: ignore[arg-type]
    cast = Broadcast()
    decay = h.decay()
    for grouped_lists, _ in grouped.values():
        # every entry is a tensor here (torch types them as optional)
        group_lists = typing.cast(list[list[Tensor]], grouped_lists)
        if tensors.prev_grads is None:
            d_params, d_grads, d_avgs, d_sqs, d_lrs, d_steps = group_lists
            d_prev = None
        else:
            d_params, d_grads, d_avgs, d_sqs, d_lrs, d_prev, d_steps = group_lists
        if h.maximize:
            d_grads = list(torch._foreach_neg(d_grads))
        torch._foreach_add_(d_steps, 1.0)
        steps = [t.item() for t in d_steps]
        by_step = {st: member_coefficients(st, h) for st in set(steps)}
        coeffs = [by_step[st] for st in steps]
        if decay is not None:
            torch._foreach_mul_(d_params, cast.each(decay, d_params))  # decoupled weight decay
        torch._foreach_lerp_(d_avgs, d_grads, cast.each(1.0 - h.beta1, d_params))  # m_t
        torch._foreach_mul_(d_sqs, cast.each(h.beta2, d_params))  # v_t
        scaled = torch._foreach_mul(d_grads, cast.each(1.0 - h.beta2, d_params))
        torch._foreach_addcmul_(d_sqs, d_grads, scaled)
        etas = torch._foreach_sqrt(d_sqs)
        torch._foreach_add_(etas, _per_tensor(cast, coeffs, "eps", d_params))
        etas = torch._foreach_div(
            _per_tensor(cast, coeffs, "c", d_params), etas
        )  # η_t = c / (sqrt(v_t) + ε')
        torch._foreach_lerp_(d_lrs, etas, cast.each(1.0 - h.beta3, d_params))  # s_t
        heads: list[list[Tensor]] = []  # η columns of the telemetry, before η becomes min(η, s)
        if tracker is not None:
            heads = [member_eta_stats(e, s, h.members) for e, s in zip(etas, d_lrs, strict=True)]
        torch._foreach_minimum_(etas, d_lrs)  # min(η_t, s_t), shared with the telemetry
        if tracker is not None:
            for eta, head, step in zip(etas, heads, steps, strict=True):
                partial = member_partials(head + member_eff_stats(eta, h.members))
                tracker.add_members(partial, eta.numel() // h.members, int(step))
        if d_prev is not None:  # DiffMod: ξ_t from g_{t-1} - g_t
            diffs = torch._foreach_sub(d_prev, d_grads)
            if h.version != 1:
                torch._foreach_abs_(diffs)
            if h.version == 2:
                torch._foreach_mul_(diffs, 0.5)
            torch._foreach_sigmoid_(diffs)
            if h.version == 2:
                torch._foreach_mul_(diffs, 9.0)
                torch._foreach_sub_(diffs, 4.0)
            torch._foreach_mul_(etas, diffs)
            torch._foreach_copy_(d_prev, d_grads)
        if h.form != "code":
            torch._foreach_mul_(etas, _per_tensor(cast, coeffs, "scale", d_params))
        torch._foreach_addcmul_(d_params, etas, d_avgs, value=-1.0)


def _per_tensor(
    cast: Broadcast, coeffs: list[MemberCoefficients], name: str, params: list[Tensor]
) -> list[Tensor]:
    """One coefficient (c, eps or scale) per tensor, from that tensor's step count."""
    return [cast.like(getattr(co, name), p) for co, p in zip(coeffs, params, strict=True)]


def _fused(tensors: Tensors, h: MemberHyper, tracker: BoundTracker | None) -> None:
    """The member C kernel on CPU (ImportError before any change where it cannot compile)."""
    if any(p.device.type == "cpu" for p in tensors.params):
        from adamod import _cpu_kernel

        _cpu_kernel.load_library()  # compiles on first use; fails before anything changes
    _with_kernel(tensors, h, tracker, on_device=_multi)


def _auto(tensors: Tensors, h: MemberHyper, tracker: BoundTracker | None) -> None:
    """The default: the member C kernel where it is available, silently "single" elsewhere."""
    from adamod import _cpu_kernel

    if any(p.device.type == "cpu" for p in tensors.params) and _cpu_kernel.available():
        _with_kernel(tensors, h, tracker, on_device=_single)
    else:
        _single(tensors, h, tracker)


def _with_kernel(
    tensors: Tensors,
    h: MemberHyper,
    tracker: BoundTracker | None,
    *,
    on_device: Callable[[Tensors, MemberHyper, BoundTracker | None], None],
) -> None:
    """CPU tensors the kernel fits: one kernel call per dtype; other CPU tensors: "single";
    tensors on other devices: `on_device`. The library is loaded already."""
    from adamod._member_kernel import kernel_fits, kernel_update

    params = tensors.params
    on_cpu = [i for i, p in enumerate(params) if p.device.type == "cpu"]
    fits = [i for i in on_cpu if kernel_fits(tensors, i)]
    fit_set = set(fits)
    others = [i for i in on_cpu if i not in fit_set]
    if others:
        _single(tensors.pick(others), h, tracker)
    for dtype in (torch.float32, torch.float64):
        chosen = [i for i in fits if params[i].dtype == dtype]
        if chosen:
            kernel_update(
                tensors if len(chosen) == len(params) else tensors.pick(chosen), h, tracker
            )
    on_device_indices = [i for i, p in enumerate(params) if p.device.type != "cpu"]
    if on_device_indices:
        on_device(tensors.pick(on_device_indices), h, tracker)


_IMPLS = {"auto": _auto, "single": _single, "multi": _multi, "fused": _fused}


def _entry(impl: str) -> Callable[..., None]:
    """`member_update(impl, ...)` with the scalar implementations' signature (lists first)."""

    def update(
        params: list[Tensor],
        grads: list[Tensor],
        exp_avgs: list[Tensor],
        exp_avg_sqs: list[Tensor],
        exp_avg_lrs: list[Tensor],
        prev_grads: list[Tensor] | None,
        state_steps: list[Tensor],
        **options: Any,
    ) -> None:
        tensors = Tensors(
            params, grads, exp_avgs, exp_avg_sqs, exp_avg_lrs, prev_grads, state_steps
        )
        member_update(impl, tensors, **options)

    return update


# what adamod._update.bounded_update dispatches to in member mode
MEMBER_IMPLS = {name: _entry(name) for name in _IMPLS}

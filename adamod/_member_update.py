"""The AdaMod/DiffMod update in member mode: K models stacked on a leading dim, own hypers each.

The maths of adamod._update with every hyperparameter a (K,) tensor, broadcast over the other
dims as (K, 1, ..., 1). Every op is element-wise, so nothing of member k reaches member j, and
the telemetry reduces each member's slice on its own. `member_update` checks the values against
the params once, before anything changes, and runs one of three implementations:

- "single": one tensor at a time, the single-tensor path's eager ops;
- "multi": torch._foreach_* ops over the tensors of each device and dtype (also CUDA's fused:
  the compiled CUDA kernel takes scalars);
- "fused": on CPU the C kernel once per member on the contiguous slices param[k], with that
  member's scalars (read with one .tolist() per step: CPU tensors, no device sync).
"""

from __future__ import annotations

import typing
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NamedTuple

import torch
from torch import Tensor
from torch.utils._foreach_utils import _group_tensors_by_device_and_dtype

from adamod._members_hyper import Broadcast, check_member_params, member_count, member_values
from adamod._telemetry import BoundTracker, member_partial_bound_stats
from adamod._update import coefficients, friction_

Hyper = float | Tensor


class Tensors(NamedTuple):
    """The lists one update works on; prev_grads is None for AdaMod."""

    params: list[Tensor]
    grads: list[Tensor]
    exp_avgs: list[Tensor]
    exp_avg_sqs: list[Tensor]
    exp_avg_lrs: list[Tensor]
    prev_grads: list[Tensor] | None
    state_steps: list[Tensor]

    def pick(self, indices: list[int]) -> Tensors:
        """The same lists restricted to `indices`."""
        return Tensors(
            *(None if lst is None else [lst[i] for i in indices] for lst in self)  # type: ignore[arg-type]
        )


@dataclass(frozen=True)
class MemberHyper:
    """One step's hyperparameters of K members as float64 CPU tensors of shape (K,) or (1,)."""

    members: int
    beta1: Tensor
    beta2: Tensor
    beta3: Tensor
    lr: Tensor
    eps: Tensor
    weight_decay: Tensor
    form: str
    version: int | None
    maximize: bool

    def decay(self) -> Tensor | None:
        """1 - lr·wd per member, or None when no member decays (CPU tensors: no device sync)."""
        return 1.0 - self.lr * self.weight_decay if bool((self.weight_decay != 0).any()) else None


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
        if tracker is not None:
            partial = member_partial_bound_stats(eta, exp_avg_lr, h.members)
            tracker.add_members(partial, eta.numel() // h.members, int(step))
        eff = torch.minimum(eta, exp_avg_lr, out=eta)  # min(η_t, s_t)
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
        if tracker is not None:
            for eta, lr_avg, step in zip(etas, d_lrs, steps, strict=True):
                partial = member_partial_bound_stats(eta, lr_avg, h.members)
                tracker.add_members(partial, eta.numel() // h.members, int(step))
        torch._foreach_minimum_(etas, d_lrs)  # min(η_t, s_t)
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
    """The C kernel once per member on contiguous CPU slices; the rest through the eager paths.

    CPU tensors the kernel cannot update in place take the single-tensor member path; tensors
    on other devices take the foreach member path.
    """
    params = tensors.params
    on_cpu = [i for i, p in enumerate(params) if p.device.type == "cpu"]
    fits: list[int] = []
    if on_cpu:
        from adamod import _cpu_kernel

        _cpu_kernel.load_library()  # compiles on first use; fails before anything changes
        prev = tensors.prev_grads
        fits = [
            i
            for i in on_cpu
            if _cpu_kernel.eligible(
                params[i],
                tensors.exp_avgs[i],
                tensors.exp_avg_sqs[i],
                tensors.exp_avg_lrs[i],
                None if prev is None else prev[i],
            )
        ]
    fit_set = set(fits)
    others = [i for i in on_cpu if i not in fit_set]
    if others:
        _single(tensors.pick(others), h, tracker)
    for dtype in (torch.float32, torch.float64):
        chosen = [i for i in fits if params[i].dtype == dtype]
        if chosen:
            _fused_cpu_members(tensors.pick(chosen), h, tracker)
    on_device = [i for i, p in enumerate(params) if p.device.type != "cpu"]
    if on_device:
        _multi(tensors.pick(on_device), h, tracker)


def _fused_cpu_members(tensors: Tensors, h: MemberHyper, tracker: BoundTracker | None) -> None:
    """The C kernel for each member k on the slices t[k], with member k's scalars.

    The scalars are computed as the scalar fused path computes them (Python floats through
    `coefficients`), so member k's update is the scalar optimizer's, bit for bit.
    """
    from adamod import _cpu_kernel

    params, grads, exp_avgs, exp_avg_sqs, exp_avg_lrs, prev_grads, state_steps = tensors
    torch._foreach_add_(state_steps, 1.0)
    steps = torch.stack(state_steps).tolist()  # CPU step tensors: one call, no device sync
    values = torch.broadcast_tensors(h.beta1, h.beta2, h.beta3, h.lr, h.eps, h.weight_decay)
    beta1, beta2, beta3, lr, eps, wd = torch.stack(values).tolist()  # one read of every member
    coeffs = []  # [member][tensor] -> (c, eps, scale)
    for k in range(len(beta1)):
        by_step = {
            st: coefficients(st, beta1=beta1[k], beta2=beta2[k], lr=lr[k], eps=eps[k], form=h.form)
            for st in set(steps)
        }
        coeffs.append([by_step[st] for st in steps])
    stats = _cpu_kernel.fused_cpu_update_members(
        params,
        grads,
        exp_avgs,
        exp_avg_sqs,
        exp_avg_lrs,
        prev_grads,
        c=[[x[0] for x in row] for row in coeffs],
        eps=[[x[1] for x in row] for row in coeffs],
        scale=[[x[2] for x in row] for row in coeffs],
        beta1=beta1,
        beta2=beta2,
        beta3=beta3,
        decay=[1.0 - lr_k * wd_k for lr_k, wd_k in zip(lr, wd, strict=True)],
        maximize=h.maximize,
        version=h.version,
        with_stats=tracker is not None,
    )
    if tracker is not None:
        assert stats is not None
        tracker.add_members(stats, sum(p[0].numel() for p in params), int(max(steps)))


_IMPLS = {"single": _single, "multi": _multi, "fused": _fused}


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

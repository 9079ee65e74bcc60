"""torch.optim's Adam, AdamW, SGD, RAdam and NAdamW for packs: K models, own hyperparameters each.

Every param has a leading member dim of size K (param[k] is member k's tensor). lr, betas, eps,
weight_decay (and SGD's momentum, NAdamW's momentum_decay) may each be a float or a 1-D CPU
tensor of K values; a tensor's value k applies to slice k of every param, broadcast as
(K, 1, ..., 1), so one step updates every member with no interaction between members. Change
lr between steps with ``group["lr"].copy_(values)`` or by assigning a new tensor: nothing is
rebuilt.

Each optimizer is one update function over lists of stacked tensors (torch._foreach_* ops, on
CPU and CUDA) whose maths follows torch's single-tensor implementation line by line. State is
``optimizer.state[p]`` as in torch: per-element tensors shaped like p (leading K), a 0-d
``step`` tensor, and NAdamW's ``mu_product`` with one value per member (shape (K,)).
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import Tensor
from torch.optim.optimizer import ParamsT

from adamod._adam_kernel import adam_by_kernel
from adamod._members_base import (
    MemberOptimizer,
    by_step,
    read_members,
    scalar_state_dtype,
    step_tensor,
    zeros_like_param,
)
from adamod._members_hyper import Broadcast, collect_member_values, member_count
from adamod._validation import check_betas, check_non_negative

__all__ = ["SGD", "Adam", "AdamW", "NAdamW", "RAdam", "adam", "nadam", "radam", "sgd"]

Hyper = float | Tensor


def _check_adam_like(options: dict[str, Any]) -> None:
    """lr, eps, weight_decay >= 0 and betas in [0, 1), member values element by element."""
    check_non_negative("lr", options["lr"])
    check_non_negative("eps", options["eps"])
    check_non_negative("weight_decay", options["weight_decay"])
    options["betas"] = check_betas(options["betas"])


def _reject(name: str, value: Any, allowed: Any) -> None:
    """Raise ValueError for an option torch has but the member optimizers do not implement."""
    if value != allowed:
        raise ValueError(f"Invalid {name}: {value!r} (only {allowed!r} is supported)")


def _pick(indices: list[int], *lists: list[Tensor]) -> list[list[Tensor]]:
    return [[lst[i] for i in indices] for lst in lists]


def _weight_decay(
    cast: Broadcast,
    params: list[Tensor],
    grads: list[Tensor],
    h: dict[str, Tensor],
    *,
    decoupled: bool,
) -> list[Tensor]:
    """Apply weight decay: decoupled (θ ← (1 - lr·wd) θ) or L2 (g + wd·θ, returned)."""
    if not bool((h["weight_decay"] != 0).any()):  # CPU tensor: no device sync
        return grads
    if decoupled:
        torch._foreach_mul_(params, cast.each(1.0 - h["lr"] * h["weight_decay"], params))
        return grads
    decayed = torch._foreach_mul(params, cast.each(h["weight_decay"], params))
    return list(torch._foreach_add(grads, decayed))


def _moments(
    cast: Broadcast,
    params: list[Tensor],
    grads: list[Tensor],
    exp_avgs: list[Tensor],
    exp_avg_sqs: list[Tensor],
    h: dict[str, Tensor],
) -> None:
    """m ← lerp(m, g, 1-β1) and v ← β2 v + (1-β2) g², as torch's Adam family does."""
    torch._foreach_lerp_(exp_avgs, grads, cast.each(1.0 - h["beta1"], params))
    torch._foreach_mul_(exp_avg_sqs, cast.each(h["beta2"], params))
    scaled = torch._foreach_mul(grads, cast.each(1.0 - h["beta2"], params))
    torch._foreach_addcmul_(exp_avg_sqs, grads, scaled)


def adam(
    params: list[Tensor],
    grads: list[Tensor],
    exp_avgs: list[Tensor],
    exp_avg_sqs: list[Tensor],
    state_steps: list[Tensor],
    *,
    lr: Hyper,
    beta1: Hyper,
    beta2: Hyper,
    eps: Hyper,
    weight_decay: Hyper,
    decoupled_weight_decay: bool = False,
    maximize: bool = False,
) -> None:
    """Functional Adam (AdamW with decoupled_weight_decay=True), member values broadcast."""
    h = read_members(
        params,
        {"lr": lr, "beta1": beta1, "beta2": beta2, "eps": eps, "weight_decay": weight_decay},
    )
    cast = Broadcast()
    if maximize:
        grads = list(torch._foreach_neg(grads))
    along = grads
    if not decoupled_weight_decay:
        along = _weight_decay(cast, params, grads, h, decoupled=False)
    if adam_by_kernel(
        params, along, exp_avgs, exp_avg_sqs, state_steps, h,
        decoupled_weight_decay=decoupled_weight_decay,
    ):  # fmt: skip
        return  # CPU tensors: AdaMod's C kernel with β3 = 0 did the step in one pass
    torch._foreach_add_(state_steps, 1.0)
    for step, indices in by_step(state_steps).items():
        p, g, m, v = _pick(indices, params, grads, exp_avgs, exp_avg_sqs)
        g = _weight_decay(cast, p, g, h, decoupled=decoupled_weight_decay)
        _moments(cast, p, g, m, v, h)
        bias_correction1 = 1.0 - h["beta1"] ** step
        bias_correction2_sqrt = torch.sqrt(1.0 - h["beta2"] ** step)
        denom = torch._foreach_sqrt(v)
        torch._foreach_div_(denom, cast.each(bias_correction2_sqrt, p))
        torch._foreach_add_(denom, cast.each(h["eps"], p))
        update = torch._foreach_div(m, denom)
        torch._foreach_mul_(update, cast.each(-(h["lr"] / bias_correction1), p))
        torch._foreach_add_(p, update)


class Adam(MemberOptimizer):
    """torch.optim.Adam for packs: weight_decay is L2 added to the gradient (amsgrad: False).

    Args:
        params: packs of parameters (leading member dim K) or param-group dicts.
        lr, betas, eps, weight_decay: floats or 1-D CPU tensors of K values.
        amsgrad: only False is supported.
        maximize: maximize the objective instead of minimizing it.
    """

    _name = "Adam"
    _decoupled: ClassVar[bool] = False

    def __init__(
        self,
        params: ParamsT,
        lr: Hyper = 1e-3,
        betas: tuple[Hyper, Hyper] = (0.9, 0.999),
        eps: Hyper = 1e-8,
        weight_decay: Hyper = 0.0,
        amsgrad: bool = False,
        *,
        maximize: bool = False,
    ) -> None:
        _reject("amsgrad", amsgrad, False)
        defaults = {
            "lr": lr,
            "betas": betas,
            "eps": eps,
            "weight_decay": weight_decay,
            "amsgrad": False,
            "maximize": maximize,
        }
        super().__init__(params, defaults)

    def _check_group(self, options: dict[str, Any]) -> None:
        _check_adam_like(options)
        _reject("amsgrad", options["amsgrad"], False)

    def _new_state(self, p: Tensor, group: dict[str, Any]) -> dict[str, Tensor]:
        return {
            "step": step_tensor(),
            "exp_avg": zeros_like_param(p),
            "exp_avg_sq": zeros_like_param(p),
        }

    def _update(
        self, group: dict[str, Any], params: list[Tensor], grads: list[Tensor], states: list[dict]
    ) -> None:
        beta1, beta2 = group["betas"]
        adam(
            params,
            grads,
            [s["exp_avg"] for s in states],
            [s["exp_avg_sq"] for s in states],
            [s["step"] for s in states],
            lr=group["lr"],
            beta1=beta1,
            beta2=beta2,
            eps=group["eps"],
            weight_decay=group["weight_decay"],
            decoupled_weight_decay=self._decoupled,
            maximize=group["maximize"],
        )


class AdamW(Adam):
    """torch.optim.AdamW for packs: decoupled weight decay θ ← (1 - lr·wd) θ, default 1e-2."""

    _name = "AdamW"
    _decoupled = True

    def __init__(
        self,
        params: ParamsT,
        lr: Hyper = 1e-3,
        betas: tuple[Hyper, Hyper] = (0.9, 0.999),
        eps: Hyper = 1e-8,
        weight_decay: Hyper = 1e-2,
        amsgrad: bool = False,
        *,
        maximize: bool = False,
    ) -> None:
        super().__init__(params, lr, betas, eps, weight_decay, amsgrad, maximize=maximize)


def sgd(
    params: list[Tensor],
    grads: list[Tensor],
    momentum_buffers: list[Tensor] | None,
    *,
    lr: Hyper,
    momentum: Hyper,
    weight_decay: Hyper,
    maximize: bool = False,
) -> None:
    """Functional SGD with momentum (dampening 0, no Nesterov), member values broadcast.

    Buffers start at zero, so the first step's buffer is the gradient, as torch's clone is.
    """
    h = read_members(params, {"lr": lr, "momentum": momentum, "weight_decay": weight_decay})
    cast = Broadcast()
    if maximize:
        grads = list(torch._foreach_neg(grads))
    grads = _weight_decay(cast, params, grads, h, decoupled=False)
    if momentum_buffers is not None:
        torch._foreach_mul_(momentum_buffers, cast.each(h["momentum"], params))
        torch._foreach_add_(momentum_buffers, grads)
        grads = momentum_buffers
    torch._foreach_add_(params, torch._foreach_mul(grads, cast.each(-h["lr"], params)))


class SGD(MemberOptimizer):
    """torch.optim.SGD for packs: momentum, L2 weight decay added to the gradient.

    Args:
        params: packs of parameters (leading member dim K) or param-group dicts.
        lr, momentum, weight_decay: floats or 1-D CPU tensors of K values. A member with
            momentum 0 moves as plain SGD; the buffer exists when any momentum is not 0.
        dampening, nesterov: only 0 and False are supported.
        maximize: maximize the objective instead of minimizing it.
    """

    _name = "SGD"

    def __init__(
        self,
        params: ParamsT,
        lr: Hyper = 1e-3,
        momentum: Hyper = 0.0,
        dampening: float = 0.0,
        weight_decay: Hyper = 0.0,
        nesterov: bool = False,
        *,
        maximize: bool = False,
    ) -> None:
        _reject("dampening", dampening, 0.0)
        _reject("nesterov", nesterov, False)
        defaults = {
            "lr": lr,
            "momentum": momentum,
            "dampening": 0.0,
            "weight_decay": weight_decay,
            "nesterov": False,
            "maximize": maximize,
        }
        super().__init__(params, defaults)

    def _check_group(self, options: dict[str, Any]) -> None:
        check_non_negative("lr", options["lr"])
        check_non_negative("momentum", options["momentum"])
        check_non_negative("weight_decay", options["weight_decay"])
        _reject("dampening", options["dampening"], 0.0)
        _reject("nesterov", options["nesterov"], False)

    @staticmethod
    def _uses_momentum(group: dict[str, Any]) -> bool:
        momentum = group["momentum"]
        return isinstance(momentum, Tensor) or float(momentum) != 0.0

    def _new_state(self, p: Tensor, group: dict[str, Any]) -> dict[str, Tensor]:
        return {"momentum_buffer": zeros_like_param(p)} if self._uses_momentum(group) else {}

    def _update(
        self, group: dict[str, Any], params: list[Tensor], grads: list[Tensor], states: list[dict]
    ) -> None:
        buffers = None
        if self._uses_momentum(group):
            for state, p in zip(states, params, strict=True):
                state.setdefault("momentum_buffer", zeros_like_param(p))  # momentum set later
            buffers = [s["momentum_buffer"] for s in states]
        sgd(
            params,
            grads,
            buffers,
            lr=group["lr"],
            momentum=group["momentum"],
            weight_decay=group["weight_decay"],
            maximize=group["maximize"],
        )


def radam(
    params: list[Tensor],
    grads: list[Tensor],
    exp_avgs: list[Tensor],
    exp_avg_sqs: list[Tensor],
    state_steps: list[Tensor],
    *,
    lr: Hyper,
    beta1: Hyper,
    beta2: Hyper,
    eps: Hyper,
    weight_decay: Hyper,
    decoupled_weight_decay: bool = False,
    maximize: bool = False,
) -> None:
    """Functional RAdam, member values broadcast; rectified per member where ρ_t > 5.

    As torch: θ -= lr · m/(1-β1^t) · [ρ_t > 5: sqrt(1-β2^t)/(sqrt(v)+ε) · r_t, else 1], in
    that order of products, with the rectification r_t and ρ_t of each member's β2.
    """
    h = read_members(
        params,
        {"lr": lr, "beta1": beta1, "beta2": beta2, "eps": eps, "weight_decay": weight_decay},
    )
    cast = Broadcast()
    if maximize:
        grads = list(torch._foreach_neg(grads))
    torch._foreach_add_(state_steps, 1.0)
    beta2_ = h["beta2"]
    rho_inf = 2.0 / (1.0 - beta2_) - 1.0
    for step, indices in by_step(state_steps).items():
        p, g, m, v = _pick(indices, params, grads, exp_avgs, exp_avg_sqs)
        g = _weight_decay(cast, p, g, h, decoupled=decoupled_weight_decay)
        _moments(cast, p, g, m, v, h)
        bias_correction1 = 1.0 - h["beta1"] ** step
        bias_correction2 = 1.0 - beta2_**step
        rho_t = rho_inf - 2.0 * step * (beta2_**step) / bias_correction2
        rectified = rho_t > 5.0
        update = torch._foreach_div(m, cast.each(bias_correction1, p))
        torch._foreach_mul_(update, cast.each(h["lr"], p))
        if bool(rectified.any()):
            ratio = (rho_t - 4) * (rho_t - 2) * rho_inf / ((rho_inf - 4) * (rho_inf - 2) * rho_t)
            rect = torch.where(rectified, ratio.clamp(min=0.0).sqrt(), 1.0)
            root = torch._foreach_sqrt(v)
            torch._foreach_add_(root, cast.each(h["eps"], p))
            adaptive = list(torch._foreach_div(cast.each(bias_correction2.sqrt(), p), root))
            if not bool(rectified.all()):  # members not yet rectified take a factor of 1
                masks = cast.each(rectified.to(torch.float64), p)
                adaptive = [
                    torch.where(k != 0, a, 1.0) for k, a in zip(masks, adaptive, strict=True)
                ]
            torch._foreach_mul_(update, adaptive)
            torch._foreach_mul_(update, cast.each(rect, p))
        torch._foreach_sub_(p, update)


class RAdam(MemberOptimizer):
    """torch.optim.RAdam for packs (decoupled_weight_decay=False: L2 added to the gradient).

    Args:
        params: packs of parameters (leading member dim K) or param-group dicts.
        lr, betas, eps, weight_decay: floats or 1-D CPU tensors of K values.
        decoupled_weight_decay: θ ← (1 - lr·wd) θ instead of the L2 term, as in torch.
        maximize: maximize the objective instead of minimizing it.
    """

    _name = "RAdam"

    def __init__(
        self,
        params: ParamsT,
        lr: Hyper = 1e-3,
        betas: tuple[Hyper, Hyper] = (0.9, 0.999),
        eps: Hyper = 1e-8,
        weight_decay: Hyper = 0.0,
        decoupled_weight_decay: bool = False,
        *,
        maximize: bool = False,
    ) -> None:
        defaults = {
            "lr": lr,
            "betas": betas,
            "eps": eps,
            "weight_decay": weight_decay,
            "decoupled_weight_decay": bool(decoupled_weight_decay),
            "maximize": maximize,
        }
        super().__init__(params, defaults)

    def _check_group(self, options: dict[str, Any]) -> None:
        _check_adam_like(options)

    def _new_state(self, p: Tensor, group: dict[str, Any]) -> dict[str, Tensor]:
        return {
            "step": step_tensor(),
            "exp_avg": zeros_like_param(p),
            "exp_avg_sq": zeros_like_param(p),
        }

    def _update(
        self, group: dict[str, Any], params: list[Tensor], grads: list[Tensor], states: list[dict]
    ) -> None:
        beta1, beta2 = group["betas"]
        radam(
            params,
            grads,
            [s["exp_avg"] for s in states],
            [s["exp_avg_sq"] for s in states],
            [s["step"] for s in states],
            lr=group["lr"],
            beta1=beta1,
            beta2=beta2,
            eps=group["eps"],
            weight_decay=group["weight_decay"],
            decoupled_weight_decay=group["decoupled_weight_decay"],
            maximize=group["maximize"],
        )


def nadam(
    params: list[Tensor],
    grads: list[Tensor],
    exp_avgs: list[Tensor],
    exp_avg_sqs: list[Tensor],
    mu_products: list[Tensor],
    state_steps: list[Tensor],
    *,
    lr: Hyper,
    beta1: Hyper,
    beta2: Hyper,
    eps: Hyper,
    weight_decay: Hyper,
    momentum_decay: Hyper,
    decoupled_weight_decay: bool = True,
    maximize: bool = False,
) -> None:
    """Functional NAdam (NAdamW by default), member values broadcast.

    mu_products[i] holds Π μ_t of each member (shape (K,) or (1,)) in torch's scalar dtype:
    torch multiplies its float32 mu_product by μ_t rounded to float32, and so does this.
    """
    h = read_members(
        params,
        {
            "lr": lr,
            "beta1": beta1,
            "beta2": beta2,
            "eps": eps,
            "weight_decay": weight_decay,
            "momentum_decay": momentum_decay,
        },
    )
    cast = Broadcast()
    if maximize:
        grads = list(torch._foreach_neg(grads))
    torch._foreach_add_(state_steps, 1.0)
    for step, indices in by_step(state_steps).items():
        p, g, m, v, mu_prods = _pick(indices, params, grads, exp_avgs, exp_avg_sqs, mu_products)
        bias_correction2 = 1.0 - h["beta2"] ** step
        g = _weight_decay(cast, p, g, h, decoupled=decoupled_weight_decay)
        mu = h["beta1"] * (1.0 - 0.5 * (0.96 ** (step * h["momentum_decay"])))
        mu_next = h["beta1"] * (1.0 - 0.5 * (0.96 ** ((step + 1) * h["momentum_decay"])))
        grad_coeffs, avg_coeffs = [], []
        for mu_prod, param in zip(mu_prods, p, strict=True):
            mu_prod.mul_(mu.to(mu_prod.dtype))
            product = mu_prod.to(torch.float64)
            grad_coeffs.append(cast.like(-h["lr"] * (1.0 - mu) / (1.0 - product), param))
            avg_coeffs.append(cast.like((-h["lr"] * mu_next) / (1.0 - product * mu_next), param))
        _moments(cast, p, g, m, v, h)
        denom = torch._foreach_div(v, cast.each(bias_correction2, p))
        torch._foreach_sqrt_(denom)
        torch._foreach_add_(denom, cast.each(h["eps"], p))
        torch._foreach_addcmul_(p, torch._foreach_div(g, denom), grad_coeffs)
        torch._foreach_addcmul_(p, torch._foreach_div(m, denom), avg_coeffs)


class NAdamW(MemberOptimizer):
    """torch.optim.NAdam(decoupled_weight_decay=True) for packs, with torch's defaults.

    Args:
        params: packs of parameters (leading member dim K) or param-group dicts.
        lr, betas, eps, weight_decay, momentum_decay: floats or 1-D CPU tensors of K values.
        maximize: maximize the objective instead of minimizing it.
    """

    _name = "NAdamW"
    _per_member_state = ("mu_product",)

    def __init__(
        self,
        params: ParamsT,
        lr: Hyper = 2e-3,
        betas: tuple[Hyper, Hyper] = (0.9, 0.999),
        eps: Hyper = 1e-8,
        weight_decay: Hyper = 0.0,
        momentum_decay: Hyper = 4e-3,
        *,
        maximize: bool = False,
    ) -> None:
        defaults = {
            "lr": lr,
            "betas": betas,
            "eps": eps,
            "weight_decay": weight_decay,
            "momentum_decay": momentum_decay,
            "maximize": maximize,
        }
        super().__init__(params, defaults)

    def _check_group(self, options: dict[str, Any]) -> None:
        _check_adam_like(options)
        check_non_negative("momentum_decay", options["momentum_decay"])

    def _new_state(self, p: Tensor, group: dict[str, Any]) -> dict[str, Tensor]:
        members = member_count(collect_member_values(group))
        return {
            "step": step_tensor(),
            "mu_product": torch.ones(members or 1, dtype=scalar_state_dtype()),
            "exp_avg": zeros_like_param(p),
            "exp_avg_sq": zeros_like_param(p),
        }

    def _update(
        self, group: dict[str, Any], params: list[Tensor], grads: list[Tensor], states: list[dict]
    ) -> None:
        beta1, beta2 = group["betas"]
        nadam(
            params,
            grads,
            [s["exp_avg"] for s in states],
            [s["exp_avg_sq"] for s in states],
            [s["mu_product"] for s in states],
            [s["step"] for s in states],
            lr=group["lr"],
            beta1=beta1,
            beta2=beta2,
            eps=group["eps"],
            weight_decay=group["weight_decay"],
            momentum_decay=group["momentum_decay"],
            decoupled_weight_decay=True,
            maximize=group["maximize"],
        )

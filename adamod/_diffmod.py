"""DiffMod: AdaMod whose momentum is scaled by DiffGrad's friction coefficient."""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import Tensor
from torch.optim.optimizer import ParamsT

from adamod._base import BoundedAdamBase
from adamod._members_hyper import is_member_value
from adamod._telemetry import BoundTracker
from adamod._update import bounded_update
from adamod._validation import (
    check_betas,
    check_foreach_fused,
    check_len_memory,
    check_non_negative,
    check_version,
)

__all__ = ["DiffMod", "diffmod"]


def beta3_from_len_memory(len_memory: float | Tensor) -> float | Tensor:
    """β3 = 1 - 1/len_memory: the bound averages about len_memory past step sizes.

    Member values (a 1-D tensor) give one β3 per member, computed in float64 like the floats.
    """
    if is_member_value(len_memory):
        assert isinstance(len_memory, Tensor)
        return 1.0 - 1.0 / len_memory.to(torch.float64)
    return 1.0 - 1.0 / float(len_memory)


class DiffMod(BoundedAdamBase):
    r"""DiffMod optimizer: DiffGrad (Dubey et al. 2019) × AdaMod.

    The AdaMod update (see :class:`AdaMod`, authors' code form, decoupled weight decay) with the
    momentum scaled element-wise by the friction coefficient ξ_t of Δg = g_{t-1} - g_t::

        version 0: ξ = sigmoid(|Δg|)
        version 1: ξ = sigmoid(Δg)
        version 2: ξ = 9 · sigmoid(0.5 |Δg|) - 4
        θ_t = θ_{t-1} - min(η_t, s_t) · ξ_t · m_t,     β3 = 1 - 1/len_memory

    The previous gradient is a copy (state ``previous_grad``), never a reference to ``p.grad``;
    it starts at 0 as in DiffGrad, so the first friction is ξ(g_1). With ``maximize=True`` the
    negated gradient is the one remembered. State precision as in :class:`AdaMod`.

    Member mode as in :class:`AdaMod`: lr, betas, len_memory (so β3 = 1 - 1/len_memory per
    member), eps and weight_decay may each be a 1-D tensor of one value per member.

    Args:
        params: iterable of parameters or param-group dicts.
        lr: learning rate (>= 0).
        betas: (β1, β2), each in [0, 1).
        len_memory: memory of the step-size bound in steps (>= 1); β3 = 1 - 1/len_memory.
        version: friction variant, 0, 1 or 2.
        eps: added to sqrt(v_t) (>= 0).
        weight_decay: decoupled weight decay (>= 0).
        maximize, foreach, fused, track_bounds: as in :class:`AdaMod`.
    """

    _name = "DiffMod"
    _keeps_previous_grad = True
    _group_defaults: ClassVar[dict[str, Any]] = {"version": 0}

    def __init__(
        self,
        params: ParamsT,
        lr: float | Tensor = 1e-3,
        betas: tuple[float | Tensor, float | Tensor] = (0.9, 0.999),
        len_memory: float | Tensor = 1000,
        version: int = 0,
        eps: float | Tensor = 1e-8,
        weight_decay: float | Tensor = 0.0,
        *,
        maximize: bool = False,
        foreach: bool | None = None,
        fused: bool | None = None,
        track_bounds: bool = False,
    ) -> None:
        check_non_negative("lr", lr)
        check_non_negative("eps", eps)
        check_non_negative("weight_decay", weight_decay)
        betas = check_betas(betas)
        check_len_memory(len_memory)
        check_version(version)
        check_foreach_fused(foreach, fused)
        defaults = {
            "lr": lr,
            "betas": betas,
            "len_memory": len_memory,
            "version": version,
            "eps": eps,
            "weight_decay": weight_decay,
            "maximize": maximize,
            "foreach": foreach,
            "fused": fused,
        }
        super().__init__(params, defaults, track_bounds=track_bounds)

    def _check_group(self, options: dict[str, Any]) -> None:
        _check_group(options)

    def _fill_group_defaults(self, group: dict[str, Any]) -> None:
        # the authors' diffMod stores beta3, not len_memory
        if "len_memory" not in group and "beta3" in group:
            group["len_memory"] = 1.0 / (1.0 - group["beta3"])
        super()._fill_group_defaults(group)

    def _group_update_options(self, group: dict[str, Any]) -> dict[str, Any]:
        return {
            "beta3": beta3_from_len_memory(group["len_memory"]),
            "form": "code",
            "version": group["version"],
        }


def _check_group(group: dict[str, Any]) -> None:
    """Validate one param group's options (groups may override the defaults)."""
    check_non_negative("lr", group["lr"])
    check_non_negative("eps", group["eps"])
    check_non_negative("weight_decay", group["weight_decay"])
    group["betas"] = check_betas(group["betas"])
    check_len_memory(group["len_memory"])
    check_version(group["version"])
    check_foreach_fused(group["foreach"], group["fused"])


def diffmod(
    params: list[Tensor],
    grads: list[Tensor],
    exp_avgs: list[Tensor],
    exp_avg_sqs: list[Tensor],
    exp_avg_lrs: list[Tensor],
    previous_grads: list[Tensor],
    state_steps: list[Tensor],
    *,
    foreach: bool | None = None,
    fused: bool | None = None,
    beta1: float | Tensor,
    beta2: float | Tensor,
    len_memory: float | Tensor,
    version: int = 0,
    lr: float | Tensor,
    eps: float | Tensor,
    weight_decay: float | Tensor,
    maximize: bool = False,
    tracker: BoundTracker | None = None,
) -> None:
    """Functional DiffMod: update params and state in place (see :class:`DiffMod`).

    Hyperparameters given as 1-D tensors select member mode (see :class:`AdaMod`).
    """
    bounded_update(
        params,
        grads,
        exp_avgs,
        exp_avg_sqs,
        exp_avg_lrs,
        previous_grads,
        state_steps,
        foreach=foreach,
        fused=fused,
        beta1=beta1,
        beta2=beta2,
        beta3=beta3_from_len_memory(check_len_memory(len_memory)),
        lr=lr,
        eps=eps,
        weight_decay=weight_decay,
        maximize=maximize,
        form="code",
        version=check_version(version),
        tracker=tracker,
    )

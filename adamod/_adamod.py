"""AdaMod: Adam whose per-element step size is bounded by its own exponential moving average."""

from __future__ import annotations

from typing import Any, ClassVar

from torch import Tensor
from torch.optim.optimizer import ParamsT

from adamod._base import BoundedAdamBase
from adamod._telemetry import BoundTracker
from adamod._update import bounded_update
from adamod._validation import (
    check_betas,
    check_foreach_fused,
    check_form,
    check_non_negative,
    check_unit_interval,
)

__all__ = ["AdaMod", "adamod"]


class AdaMod(BoundedAdamBase):
    r"""AdaMod optimizer (Ding, Ren, Luo, Sun 2019, arXiv:1910.12249).

    Per element, with decoupled weight decay applied first (θ ← θ - lr·wd·θ) and s_0 = 0::

        m_t = β1 m_{t-1} + (1-β1) g_t
        v_t = β2 v_{t-1} + (1-β2) g_t²
        η_t = lr · sqrt(1-β2^t) / (1-β1^t) / (sqrt(v_t) + ε)
        s_t = β3 s_{t-1} + (1-β3) η_t
        θ_t = θ_{t-1} - min(η_t, s_t) · m_t

    ``form="code"`` (default) is the authors' released code, which every public implementation
    follows. ``form="paper"`` is the printed Algorithm 1, which bias-corrects m and v instead:
    η_t = lr / (sqrt(v_t / (1-β2^t)) + ε), θ_t = θ_{t-1} - min(η_t, s_t) · m_t / (1-β1^t).
    The two differ while 1/(1-β1^t) is far from 1 (the code's s averages that factor in), by up
    to about a quarter of the distance travelled in the first few hundred steps.

    β3 = 0 is Adam with ε added before the bias correction (torch's Adam adds it after).
    Since s starts at 0, min(η, s) acts as a per-element warmup of about 1/(1-β3) steps.

    Precision: state (exp_avg, exp_avg_sq, exp_avg_lr) has the parameter's dtype for float32 and
    float64 parameters and is float32 for bfloat16/float16 ones; those are updated in float32 and
    rounded once per step. ``step`` is a float32 CPU tensor per parameter.

    torch.compile: a compiled function that calls ``step()`` works on every path. Dynamo
    graph-breaks where the step count becomes a Python float (``step.item()``: the bias
    corrections are host scalars, which keeps the eager path free of extra kernels) and, with
    ``fused=True`` on CPU, around the C kernel (a ctypes call, which it cannot trace); those
    parts run eagerly, so results equal the eager step's.

    Member mode (packs): lr, betas[0], betas[1], beta3, eps and weight_decay may each be a 1-D
    CPU tensor (float32 or float64) of K values. Every param of the group then needs a leading
    member dim of K, and value k applies to the slice param[k] only: K independent models train
    in one step, member k exactly as this optimizer with member k's values would train
    param[k]. Change lr between steps with ``group["lr"].copy_(values)`` or by assigning a new
    tensor; nothing is recompiled. Every path supports it. By default (and with ``fused=True``)
    a CPU step is one call of a C kernel for all members of all contiguous float32/float64
    params, bit for bit the scalar ``fused=True`` step of each member; without a C compiler the
    default silently takes the single-tensor path (``foreach=False`` selects it). On CUDA
    ``fused`` is the foreach path. With ``track_bounds=True``, :meth:`member_bound_stats` gives
    each member's telemetry.

    Args:
        params: iterable of parameters or param-group dicts.
        lr: learning rate (>= 0); may be changed between steps (LR schedulers).
        betas: (β1, β2), each in [0, 1).
        beta3: smoothing of the step-size bound, in [0, 1).
        eps: added to sqrt(v_t) (>= 0).
        weight_decay: decoupled weight decay (>= 0).
        maximize: maximize the objective instead of minimizing it.
        foreach: use the torch._foreach_* implementation (default: on CUDA only).
        fused: use the single-pass implementation: on CPU a C kernel compiled on first use
            (about 0.2 s, needs a C compiler, cached in ~/.cache/adamod or $ADAMOD_KERNEL_DIR);
            on CUDA a torch.compile kernel. Non-contiguous CPU tensors take the default path.
        track_bounds: record per-step bound telemetry, read with :meth:`bound_stats`.
        form: "code" (authors' released code) or "paper" (printed Algorithm 1).
    """

    _name = "AdaMod"
    _group_defaults: ClassVar[dict[str, Any]] = {"form": "code"}

    def __init__(
        self,
        params: ParamsT,
        lr: float | Tensor = 1e-3,
        betas: tuple[float | Tensor, float | Tensor] = (0.9, 0.999),
        beta3: float | Tensor = 0.999,
        eps: float | Tensor = 1e-8,
        weight_decay: float | Tensor = 0.0,
        *,
        maximize: bool = False,
        foreach: bool | None = None,
        fused: bool | None = None,
        track_bounds: bool = False,
        form: str = "code",
    ) -> None:
        check_non_negative("lr", lr)
        check_non_negative("eps", eps)
        check_non_negative("weight_decay", weight_decay)
        betas = check_betas(betas)
        check_unit_interval("beta3", beta3)
        check_form(form)
        check_foreach_fused(foreach, fused)
        defaults = {
            "lr": lr,
            "betas": betas,
            "beta3": beta3,
            "eps": eps,
            "weight_decay": weight_decay,
            "maximize": maximize,
            "foreach": foreach,
            "fused": fused,
            "form": form,
        }
        super().__init__(params, defaults, track_bounds=track_bounds)

    def _check_group(self, options: dict[str, Any]) -> None:
        _check_group(options)

    def _group_update_options(self, group: dict[str, Any]) -> dict[str, Any]:
        return {"beta3": group["beta3"], "form": group["form"], "version": None}


def _check_group(group: dict[str, Any]) -> None:
    """Validate one param group's options (groups may override the defaults)."""
    check_non_negative("lr", group["lr"])
    check_non_negative("eps", group["eps"])
    check_non_negative("weight_decay", group["weight_decay"])
    group["betas"] = check_betas(group["betas"])
    check_unit_interval("beta3", group["beta3"])
    check_form(group["form"])
    check_foreach_fused(group["foreach"], group["fused"])


def adamod(
    params: list[Tensor],
    grads: list[Tensor],
    exp_avgs: list[Tensor],
    exp_avg_sqs: list[Tensor],
    exp_avg_lrs: list[Tensor],
    state_steps: list[Tensor],
    *,
    foreach: bool | None = None,
    fused: bool | None = None,
    beta1: float | Tensor,
    beta2: float | Tensor,
    beta3: float | Tensor,
    lr: float | Tensor,
    eps: float | Tensor,
    weight_decay: float | Tensor,
    maximize: bool = False,
    form: str = "code",
    tracker: BoundTracker | None = None,
) -> None:
    """Functional AdaMod: update params and state in place (see :class:`AdaMod` for the maths).

    Hyperparameters given as 1-D tensors select member mode (see :class:`AdaMod`).
    """
    check_form(form)
    bounded_update(
        params,
        grads,
        exp_avgs,
        exp_avg_sqs,
        exp_avg_lrs,
        None,
        state_steps,
        foreach=foreach,
        fused=fused,
        beta1=beta1,
        beta2=beta2,
        beta3=beta3,
        lr=lr,
        eps=eps,
        weight_decay=weight_decay,
        maximize=maximize,
        form=form,
        version=None,
        tracker=tracker,
    )

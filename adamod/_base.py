"""Shared torch.optim machinery of AdaMod and DiffMod: state, steps, telemetry, state_dict."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar

import torch
from torch import Tensor
from torch.optim.optimizer import Optimizer, ParamsT

from adamod._members_hyper import (
    check_member_group,
    collect_member_values,
    hyper_value,
    member_count,
)
from adamod._telemetry import BoundTracker
from adamod._update import REDUCED_PRECISION, bounded_update


def state_dtype(param: Tensor) -> torch.dtype:
    """Optimizer state precision: float32 for bfloat16/float16 params, else the param's dtype."""
    return torch.float32 if param.dtype in REDUCED_PRECISION else param.dtype


class BoundedAdamBase(Optimizer):
    """Base class for Adam-style optimizers whose step size is bounded by its running average."""

    _name = "AdaMod"
    _keeps_previous_grad = False
    _group_defaults: ClassVar[dict[str, Any]] = {}

    def __init__(
        self, params: ParamsT, defaults: dict[str, Any], *, track_bounds: bool = False
    ) -> None:
        # set first: add_param_group checks member groups against each other when tracking
        self.track_bounds = bool(track_bounds)
        self._tracker: BoundTracker | None = BoundTracker() if self.track_bounds else None
        super().__init__(params, defaults)

    def __getstate__(self) -> dict[str, Any]:
        """Pickle/deepcopy state: torch.optim's three keys plus our optimizer-wide options.

        torch.optim.Optimizer.__getstate__ keeps only defaults, state and param_groups, so a
        copy would silently lose track_bounds and the telemetry recorded so far.
        """
        state = super().__getstate__()
        state["track_bounds"] = self.track_bounds
        state["_tracker"] = self._tracker
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        """Fill options added later and accept the authors' state (integer `step`).

        load_state_dict also calls this, with only state and param_groups: the optimizer-wide
        options then stay as they are.
        """
        super().__setstate__(state)
        for group in self.param_groups:
            self._fill_group_defaults(group)
            for p in group["params"]:
                p_state = self.state.get(p, {})
                step = p_state.get("step")
                if step is not None and not torch.is_tensor(step):
                    p_state["step"] = torch.tensor(float(step), dtype=torch.float32)
                elif step is not None and step.device.type != "cpu":
                    p_state["step"] = step.detach().to("cpu", torch.float32)
        if not hasattr(self, "track_bounds"):  # pickled before track_bounds existed
            self.track_bounds = False
        if not self.track_bounds:
            self._tracker = None
        elif getattr(self, "_tracker", None) is None:
            self._tracker = BoundTracker()

    def _fill_group_defaults(self, group: dict[str, Any]) -> None:
        """Give a param group every option this version knows, with its default."""
        group.setdefault("maximize", False)
        group.setdefault("foreach", None)
        group.setdefault("fused", None)
        for key, value in self._group_defaults.items():
            group.setdefault(key, value)

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        """Add a param group, validating its options like the constructor does.

        The options are checked before torch.optim stores the group, so that a group that is
        rejected (bad option, parameter already in another group) leaves the optimizer as it was.
        """
        if isinstance(param_group, dict):
            options = {**self.defaults, **param_group}
            options.pop("params", None)
            self._check_group(options)
            self._check_members(param_group, options)
            super().add_param_group(param_group)
            param_group["betas"] = options["betas"]  # normalised by the check
        else:
            super().add_param_group(param_group)  # raises torch's TypeError

    def _check_members(self, param_group: dict[str, Any], options: dict[str, Any]) -> None:
        """In member mode: equal lengths, and params with the leading member dim of that length.

        With track_bounds every member group must have the same K, as the telemetry keeps one
        series per member.
        """
        members = check_member_group(param_group, options)
        if members is None or not self.track_bounds:
            return
        for group in getattr(self, "param_groups", []):
            other = member_count(collect_member_values(group))
            if other is not None and other != members:
                raise ValueError(
                    f"Invalid param group: {members} members, but another param group has "
                    f"{other} (track_bounds keeps one series per member: use the same K)"
                )

    def _check_group(self, options: dict[str, Any]) -> None:
        """Validate one group's options in place (subclasses define the checks)."""
        raise NotImplementedError

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Load like torch.optim, then keep float32 state for reduced-precision params."""
        super().load_state_dict(state_dict)
        # torch casts floating state to the param's dtype; bfloat16 state would lose the moments
        saved_groups = state_dict["param_groups"]
        for saved, group in zip(saved_groups, self.param_groups, strict=True):
            for saved_id, param in zip(saved["params"], group["params"], strict=True):
                saved_state = state_dict["state"].get(saved_id)
                if param.dtype not in REDUCED_PRECISION or not saved_state:
                    continue
                for key, value in saved_state.items():
                    if key != "step" and torch.is_tensor(value) and value.is_floating_point():
                        self.state[param][key] = value.to(param.device, torch.float32, copy=True)

    def _init_group(
        self,
        group: dict[str, Any],
        params: list[Tensor],
        grads: list[Tensor],
        exp_avgs: list[Tensor],
        exp_avg_sqs: list[Tensor],
        exp_avg_lrs: list[Tensor],
        previous_grads: list[Tensor],
        state_steps: list[Tensor],
    ) -> bool:
        """Fill the lists with the params of a group that have a gradient, creating state lazily.

        This follows torch.optim.Adam's `_init_group` contract on purpose: TorchDynamo runs a
        method of this name eagerly instead of tracing it, appends the tensors it put into the
        list arguments (passed positionally) to the traced lists, and turns the return value into
        a graph constant. So the lists are filled in place and the return value is a plain bool
        (whether the group holds complex params, always False: those are rejected).
        """
        for index, p in enumerate(group["params"]):
            if p.grad is None:
                continue
            if p.grad.is_sparse:
                raise RuntimeError(
                    f"{self._name} does not support sparse gradients (param {index} of its group)"
                )
            state = self.state[p]
            if len(state) == 0:
                if torch.is_complex(p):
                    raise RuntimeError(
                        f"{self._name} does not support complex parameters "
                        f"(param {index} of its group)"
                    )
                dtype = state_dtype(p)
                state["step"] = torch.tensor(0.0, dtype=torch.float32)
                state["exp_avg"] = torch.zeros_like(
                    p, dtype=dtype, memory_format=torch.preserve_format
                )
                state["exp_avg_sq"] = torch.zeros_like(
                    p, dtype=dtype, memory_format=torch.preserve_format
                )
                state["exp_avg_lr"] = torch.zeros_like(
                    p, dtype=dtype, memory_format=torch.preserve_format
                )
            if self._keeps_previous_grad and "previous_grad" not in state:
                # g_0 = 0, as in DiffGrad: the first friction is sigmoid(|g_1|)
                state["previous_grad"] = torch.zeros_like(
                    p, dtype=state_dtype(p), memory_format=torch.preserve_format
                )
            params.append(p)
            grads.append(p.grad)
            exp_avgs.append(state["exp_avg"])
            exp_avg_sqs.append(state["exp_avg_sq"])
            exp_avg_lrs.append(state["exp_avg_lr"])
            state_steps.append(state["step"])
            if self._keeps_previous_grad:
                previous_grads.append(state["previous_grad"])
        return False

    def _group_update_options(self, group: dict[str, Any]) -> dict[str, Any]:
        """Return beta3, form and version for one group (subclasses define them)."""
        raise NotImplementedError

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:  # type: ignore[override]
        """Perform one optimization step; `closure` re-evaluates the model and returns the loss."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            params: list[Tensor] = []
            grads: list[Tensor] = []
            avgs: list[Tensor] = []
            sqs: list[Tensor] = []
            lrs: list[Tensor] = []
            prevs: list[Tensor] = []
            steps: list[Tensor] = []
            self._init_group(group, params, grads, avgs, sqs, lrs, prevs, steps)
            if not params:
                continue
            beta1, beta2 = group["betas"]
            bounded_update(
                params,
                grads,
                avgs,
                sqs,
                lrs,
                prevs if self._keeps_previous_grad else None,
                steps,
                foreach=group["foreach"],
                fused=group["fused"],
                beta1=beta1,
                beta2=beta2,
                lr=hyper_value(group["lr"]),
                eps=group["eps"],
                weight_decay=group["weight_decay"],
                maximize=group["maximize"],
                tracker=self._tracker,
                **self._group_update_options(group),
            )
        if self._tracker is not None:
            self._tracker.end_step()
        return loss

    def bound_stats(self) -> dict[str, list[float]]:
        """Return the per-step bound telemetry series (keys in docs); one host sync per call."""
        if self._tracker is None:
            raise ValueError(
                f"bound_stats() needs track_bounds=True when the {self._name} optimizer is built"
            )
        return self._tracker.series()

    def member_bound_stats(self) -> list[dict[str, list[float]]]:
        """Member mode: `bound_stats()` of each member, reduced over its own elements only.

        Member k's series is what a scalar optimizer with member k's hyperparameters would
        record on the slices param[k]; one host sync per call.
        """
        counts = [member_count(collect_member_values(g)) for g in self.param_groups]
        if any(k is None for k in counts):
            raise ValueError(
                "member_bound_stats() needs tensor hyperparameters (member mode) in every "
                f"param group of the {self._name} optimizer"
            )
        if self._tracker is None:
            raise ValueError(
                "member_bound_stats() needs track_bounds=True when the "
                f"{self._name} optimizer is built"
            )
        return self._tracker.member_series(counts[0] or 0)

    def telemetry_state_dict(self) -> dict[str, Any] | None:
        """The bound telemetry recorded so far (None without track_bounds), for a training
        checkpoint: `state_dict()` leaves it out, as torch.optim's format has no place for it."""
        return None if self._tracker is None else self._tracker.state_dict()

    def load_telemetry_state_dict(self, state: dict[str, Any] | None) -> None:
        """Restore a `telemetry_state_dict()`, on the device of the first parameter; with
        track_bounds, None forgets the telemetry; without it, a ValueError for a non-None state."""
        if self._tracker is None:
            if state is not None:
                raise ValueError(
                    f"load_telemetry_state_dict: this {self._name} was built without "
                    "track_bounds, so it cannot take recorded telemetry"
                )
            return
        if state is None:
            self._tracker.reset()
            return
        params = [p for group in self.param_groups for p in group["params"]]
        self._tracker.load_state_dict(state, params[0].device if params else None)

    def reset_bound_stats(self) -> None:
        """Forget the recorded telemetry (e.g. after a warm-up phase)."""
        if self._tracker is not None:
            self._tracker.reset()

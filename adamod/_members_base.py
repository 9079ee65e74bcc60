"""Shared machinery of adamod.members: validation, lazy state and the member hyperparameters.

Each optimizer of adamod.members is a torch.optim.Optimizer whose params are packs (a leading
member dim of size K) and whose hyperparameters may be 1-D tensors of K values. The subclasses
only say which options they check, which state a param gets, and call their update function.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Mapping
from typing import Any, ClassVar

import torch
from torch import Tensor
from torch.optim.optimizer import Optimizer

from adamod._members_hyper import (
    check_member_group,
    check_member_params,
    member_count,
    member_values,
)


def scalar_state_dtype() -> torch.dtype:
    """The dtype torch.optim gives scalar state (step, NAdam's mu_product): float32 unless the
    default dtype is float64 (torch.optim.optimizer._get_scalar_dtype)."""
    return torch.float64 if torch.get_default_dtype() == torch.float64 else torch.float32


def read_members(params: list[Tensor], named: Mapping[str, float | Tensor]) -> dict[str, Tensor]:
    """Check member values against the params (before any change); return them as float64
    CPU tensors of shape (K,) (member values) or (1,) (scalars), by name."""
    members = member_count(named)
    if members is not None:
        tensor_names = [name for name, value in named.items() if isinstance(value, Tensor)]
        check_member_params(params, members, tensor_names)
    return {name: member_values(value) for name, value in named.items()}


def by_step(state_steps: list[Tensor]) -> dict[float, list[int]]:
    """Indices of the tensors by step count: bias corrections are per step count, and the
    tensors of one count share one broadcast coefficient each (CPU steps: no device sync)."""
    groups: dict[float, list[int]] = defaultdict(list)
    for index, step in enumerate(state_steps):
        groups[step.item()].append(index)
    return groups


class MemberOptimizer(Optimizer):
    """Base of the member-mode optimizers: torch.optim semantics, one value per member."""

    _name: ClassVar[str] = "optimizer"
    # state of one value per member (shape (K,)) kept in its saved dtype through load_state_dict
    _per_member_state: ClassVar[tuple[str, ...]] = ()

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        """Add a param group, validating its options and member dims before anything changes."""
        if isinstance(param_group, dict):
            options = {**self.defaults, **param_group}
            options.pop("params", None)
            self._check_group(options)
            check_member_group(param_group, options)
            super().add_param_group(param_group)
            if "betas" in options:
                param_group["betas"] = options["betas"]  # normalised by the check
        else:
            super().add_param_group(param_group)  # raises torch's TypeError

    def _check_group(self, options: dict[str, Any]) -> None:
        """Validate one group's options in place (subclasses define the checks)."""
        raise NotImplementedError

    def _new_state(self, p: Tensor, group: dict[str, Any]) -> dict[str, Tensor]:
        """The state of a param at its first step (subclasses define it)."""
        raise NotImplementedError

    def _update(
        self, group: dict[str, Any], params: list[Tensor], grads: list[Tensor], states: list[dict]
    ) -> None:
        """Update the params of one group that have a gradient (subclasses call their update)."""
        raise NotImplementedError

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Load like torch.optim, then give per-member state back the dtype it was saved with.

        torch casts floating state to the param's dtype; NAdam's mu_product is float32 in torch
        and rounding it differently would change the trajectory.
        """
        super().load_state_dict(state_dict)
        saved_groups = state_dict["param_groups"]
        for saved, group in zip(saved_groups, self.param_groups, strict=True):
            for saved_id, param in zip(saved["params"], group["params"], strict=True):
                saved_state = state_dict["state"].get(saved_id, {})
                for key in self._per_member_state:
                    value = saved_state.get(key)
                    if torch.is_tensor(value):
                        self.state[param][key] = self.state[param][key].to(value.dtype)

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
            states: list[dict] = []
            for index, p in enumerate(group["params"]):
                if p.grad is None:
                    continue
                if p.grad.is_sparse or torch.is_complex(p):
                    kind = "sparse gradients" if p.grad.is_sparse else "complex parameters"
                    raise RuntimeError(
                        f"{self._name} does not support {kind} (param {index} of its group)"
                    )
                state = self.state[p]
                if len(state) == 0:
                    state.update(self._new_state(p, group))
                params.append(p)
                grads.append(p.grad)
                states.append(state)
            if params:
                self._update(group, params, grads, states)
        return loss


def zeros_like_param(p: Tensor) -> Tensor:
    """A per-element state tensor: the param's shape (leading K), dtype and memory format."""
    return torch.zeros_like(p, memory_format=torch.preserve_format)


def step_tensor() -> Tensor:
    """A step count as torch.optim keeps it: a 0-d CPU tensor of the scalar state dtype."""
    return torch.tensor(0.0, dtype=scalar_state_dtype())

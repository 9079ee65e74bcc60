"""The data of one member-mode update: its tensor lists and one step's member hyperparameters.

Kept apart from the implementations so that the kernel path (adamod._member_kernel) and the
torch paths (adamod._member_update) share them without importing each other.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

from torch import Tensor


class Tensors(NamedTuple):
    """The lists one update works on; prev_grads is None for AdaMod, exp_avg_lrs None only for
    Adam through the member kernel (adamod._adam_kernel)."""

    params: list[Tensor]
    grads: list[Tensor]
    exp_avgs: list[Tensor]
    exp_avg_sqs: list[Tensor]
    exp_avg_lrs: list[Tensor] | None  # None: Adam through the kernel (no bound state)
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

    def lists(self) -> tuple[list[float], ...]:
        """beta1, beta2, beta3, lr, eps and weight_decay as K Python floats each (a (1,) value
        repeated): the kernel path's scalars, read from the host in one conversion per value."""
        k = self.members
        values = (self.beta1, self.beta2, self.beta3, self.lr, self.eps, self.weight_decay)
        out = []
        for value in values:
            floats = value.tolist()
            out.append(floats * k if len(floats) == 1 else floats)
        return tuple(out)

    def decay(self) -> Tensor | None:
        """1 - lr·wd per member, or None when no member decays (CPU tensors: no device sync)."""
        return 1.0 - self.lr * self.weight_decay if bool((self.weight_decay != 0).any()) else None

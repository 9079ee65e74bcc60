"""Member-mode hyperparameters: one value per member of a pack, as 1-D tensors of K values.

A pack trains K models at once, every parameter stacked on a leading member dim of size K. A
hyperparameter given as a 1-D tensor of K values ("member mode") applies value k to slice k of
every parameter. This module validates such values, checks them against the parameters, and
broadcasts them to (K, 1, ..., 1) tensors of each parameter's dtype and device inside a step.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import torch
from torch import Tensor

MEMBER_DTYPES = (torch.float32, torch.float64)

Check = Callable[[str, Any], float]


def is_member_value(value: Any) -> bool:
    """Whether a hyperparameter is given per member (a tensor with dims; 0-d ones are scalars)."""
    return isinstance(value, Tensor) and value.dim() >= 1


def hyper_value(value: Any) -> float | Tensor:
    """A group option as the update takes it: member tensors as they are, the rest as float.

    Only the scalar path converts (float(0-d tensor) is what the optimizers always did).
    """
    return value if is_member_value(value) else float(value)


def check_member_tensor(name: str, value: Tensor) -> Tensor:
    """Return value if it is a usable member tensor (1-D, float32/float64, CPU, not empty).

    CPU only: the update reads member values on the host (bias corrections, the fused kernel's
    scalars) and casts them to each parameter's device itself, so a GPU tensor here would make
    every step wait for the device.
    """
    if value.dim() != 1:
        raise ValueError(
            f"Invalid {name}: a tensor of shape {tuple(value.shape)} "
            "(must be a number or a 1-D tensor of one value per member)"
        )
    if value.dtype not in MEMBER_DTYPES:
        raise ValueError(f"Invalid {name}: dtype {value.dtype} (must be float32 or float64)")
    if value.device.type != "cpu":
        raise ValueError(f"Invalid {name}: a tensor on {value.device} (must be on the CPU)")
    if value.numel() == 0:
        raise ValueError(f"Invalid {name}: an empty tensor (needs one value per member)")
    return value


def per_member(check: Check) -> Callable[[str, Any], float | Tensor]:
    """Extend a scalar check to member tensors: every element is checked as `name[i]`."""

    @functools.wraps(check)
    def checked(name: str, value: Any) -> float | Tensor:
        if not is_member_value(value):
            return check(name, value)
        tensor = check_member_tensor(name, value)
        for index, element in enumerate(tensor.tolist()):
            check(f"{name}[{index}]", element)
        return tensor

    return checked


def collect_member_values(options: Mapping[str, Any]) -> dict[str, Tensor]:
    """The member tensors of a group's options by argument name (pairs as `betas[0]`)."""
    found: dict[str, Tensor] = {}
    for key, value in options.items():
        if key == "params":
            continue
        if is_member_value(value):
            found[key] = value
        elif isinstance(value, tuple | list):
            for index, item in enumerate(value):
                if is_member_value(item):
                    found[f"{key}[{index}]"] = item
    return found


def member_count(values: Mapping[str, Any]) -> int | None:
    """K, the number of members, or None when every value is a scalar; lengths must agree."""
    count: int | None = None
    first = ""
    for name, value in values.items():
        if not is_member_value(value):
            continue
        length = check_member_tensor(name, value).shape[0]
        if count is None:
            count, first = length, name
        elif length != count:
            raise ValueError(
                f"Invalid {name}: {length} values, but {first} has {count} "
                "(tensor hyperparameters need one value per member)"
            )
    return count


def check_member_params(params: Iterable[Tensor], count: int, names: Sequence[str]) -> None:
    """Raise ValueError unless every param has the leading member dim `count`."""
    for index, p in enumerate(params):
        if p.dim() == 0 or p.shape[0] != count:
            raise ValueError(
                f"Invalid {', '.join(names)}: {count} member values, but param {index} of its "
                f"group has shape {tuple(p.shape)} (member mode needs param.shape[0] == {count})"
            )


def check_member_group(param_group: dict[str, Any], options: Mapping[str, Any]) -> int | None:
    """K of a param group in member mode (lengths agree, params lead with K), else None.

    options are the group's options with the defaults filled in. The group's params are read
    into a list first (torch.optim does the same), since they may come as a generator.
    """
    values = collect_member_values(options)
    members = member_count(values)
    if members is None:
        return None
    params = param_group["params"]
    if isinstance(params, Tensor):
        params = [params]
    elif not isinstance(params, set):  # a set: torch.optim raises its TypeError
        params = list(params)
    param_group["params"] = params
    check_member_params([p for p in params if isinstance(p, Tensor)], members, list(values))
    return members


def member_values(value: float | Tensor) -> Tensor:
    """A hyperparameter as a float64 CPU tensor: (K,) for member values, (1,) for a scalar.

    float64 so that what is derived from it on the host (bias corrections, 1 - β) is computed
    as exactly as the scalar path's Python floats. The result is only read, never written:
    a value that is one already is returned as it is, and scalars come from a cache (a pack's
    step asks for six of these, and each new tensor costs more than its maths).
    """
    if isinstance(value, Tensor):
        if (
            value.dtype == torch.float64
            and value.dim() == 1
            and value.device.type == "cpu"
            and not value.requires_grad
        ):
            return value
        return value.detach().to("cpu", torch.float64).reshape(-1)
    return _scalar_values(float(value).hex())


@functools.lru_cache(maxsize=256)
def _scalar_values(value_hex: str) -> Tensor:
    """A (1,) float64 tensor of the float written `value_hex`, shared by every caller (never
    written to). Keyed by the hex form, which tells -0.0 from 0.0 (equal as cache keys)."""
    return torch.tensor([float.fromhex(value_hex)], dtype=torch.float64)


def member_shape(values: Tensor, param: Tensor) -> tuple[int, ...]:
    """(K, 1, ..., 1) with the param's number of dims; () for a 0-d param and one value."""
    if param.dim() == 0:
        return ()
    return (values.numel(), *([1] * (param.dim() - 1)))


class Broadcast:
    """Casts float64 CPU member values to each param's dtype and device, viewed (K, 1, ..., 1).

    One instance serves one step: each value is cast once per (dtype, device) and then only
    viewed, so a step adds a few tiny copies, never a recompilation. The cast never promotes a
    float32 param (a float64 hyperparameter times a float32 tensor would give float64), and it
    is non-blocking, so a CUDA step does not wait for the host.
    """

    def __init__(self) -> None:
        self._cast: dict[tuple[int, torch.dtype, torch.device], Tensor] = {}
        self._alive: list[Tensor] = []  # keeps the keys' ids unique for the step

    def like(self, values: Tensor, param: Tensor) -> Tensor:
        """values for one param: its dtype and device, shaped to broadcast over its dims."""
        key = (id(values), param.dtype, param.device)
        cast = self._cast.get(key)
        if cast is None:
            cast = values.to(param.dtype).to(param.device, non_blocking=True)
            self._cast[key] = cast
            self._alive.append(values)
        return cast.view(member_shape(values, param))

    def each(self, values: Tensor, params: Sequence[Tensor]) -> list[Tensor]:
        """values for every param of a list (for torch._foreach_* ops)."""
        return [self.like(values, p) for p in params]

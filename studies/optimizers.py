"""build_optimizer: the one place where a TrialConfig becomes a torch optimizer.

Choices (the interface is in docs/DESIGN.md; these are the details a result depends on):
- adam, adamw: torch's own (AdamW's weight decay is decoupled; Adam's is L2 in the gradient).
- adamod: adamod.AdaMod with the config's beta3 and track_bounds=True.
- diffmod: adamod.DiffMod with len_memory = 1 / (1 - beta3) (a float, so β3 is exact), version 0,
  track_bounds=True; beta3 is the grid axis for both bounded optimizers.
- sgd: torch SGD with heavy-ball momentum 0.9 (the usual CIFAR setting), no Nesterov; weight
  decay as L2. betas and eps are not used.
- radam: torch RAdam (Liu et al. 2020), torch's defaults otherwise: weight decay as L2, like
  `adam` (the name carries no W); its rectification is the warmup that `warmup_steps: auto`
  imitates for Adam.
- nadamw: torch NAdam with decoupled_weight_decay=True (NAdam with AdamW's decay, the variant
  AlgoPerf's baselines use), momentum_decay at torch's default 4e-3.
Adam-family optimizers (all but sgd) share betas and eps, so their lr means the same thing.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import torch
from torch import Tensor

from studies.spec import OPTIMIZERS, TrialConfig

__all__ = ["SGD_MOMENTUM", "build_optimizer", "build_pack_optimizer", "diffmod_len_memory"]

SGD_MOMENTUM = 0.9


def diffmod_len_memory(beta3: float) -> float:
    """DiffMod's memory length for a given β3 (β3 = 1 - 1/len_memory, kept exact: no rounding)."""
    if not 0.0 <= beta3 < 1.0:
        raise ValueError(f"beta3 must be in [0, 1), got {beta3}")
    return 1.0 / (1.0 - beta3)


def build_optimizer(config: TrialConfig, params: Iterable[Any]) -> torch.optim.Optimizer:
    """The optimizer a trial trains with, built from its config."""
    name = config.optimizer
    common = {"lr": config.lr, "weight_decay": config.weight_decay}
    if name == "adam":
        return torch.optim.Adam(params, betas=config.betas, eps=config.eps, **common)
    if name == "adamw":
        return torch.optim.AdamW(params, betas=config.betas, eps=config.eps, **common)
    if name == "sgd":
        return torch.optim.SGD(params, momentum=SGD_MOMENTUM, **common)
    if name == "radam":
        return torch.optim.RAdam(params, betas=config.betas, eps=config.eps, **common)
    if name == "nadamw":
        return torch.optim.NAdam(
            params, betas=config.betas, eps=config.eps, decoupled_weight_decay=True, **common
        )
    if name in ("adamod", "diffmod"):
        if config.beta3 is None:
            raise ValueError(f"optimizer {name!r} needs beta3")
        try:
            from adamod import AdaMod, DiffMod
        except ImportError as exc:  # the adamod package is part of this project
            raise ImportError(f"optimizer {name!r} needs the adamod package: {exc}") from exc
        if name == "adamod":
            return AdaMod(
                params,
                betas=config.betas,
                beta3=config.beta3,
                eps=config.eps,
                track_bounds=True,
                **common,
            )
        return DiffMod(
            params,
            betas=config.betas,
            len_memory=diffmod_len_memory(config.beta3),
            eps=config.eps,
            track_bounds=True,
            **common,
        )
    raise ValueError(f"unknown optimizer {name!r}; expected one of {', '.join(OPTIMIZERS)}")


def build_pack_optimizer(
    configs: Sequence[TrialConfig], params: Iterable[Tensor]
) -> torch.optim.Optimizer:
    """The optimizer of a trial pack: `build_optimizer`'s choices, member by member.

    `params` have a leading member dimension (member k is configs[k]); lr and β3 are 1-D
    tensors of the members' values (adamod's member mode), so one step updates every member
    with its own hyperparameters. The pack runner rescales `param_groups[i]["lr"]` in place
    for warmup and schedules. The other hyperparameters are shared by a pack (pack_key).
    """
    first = configs[0]
    name = first.optimizer
    from adamod import AdaMod, DiffMod, members

    lr = torch.tensor([c.lr for c in configs], dtype=torch.float64)
    common: dict[str, Any] = {"lr": lr, "weight_decay": first.weight_decay}
    adam_like: dict[str, Any] = {"betas": first.betas, "eps": first.eps, **common}
    if name == "adam":
        return members.Adam(params, **adam_like)
    if name == "adamw":
        return members.AdamW(params, **adam_like)
    if name == "sgd":
        return members.SGD(params, momentum=SGD_MOMENTUM, **common)
    if name == "radam":
        return members.RAdam(params, **adam_like)
    if name == "nadamw":
        return members.NAdamW(params, **adam_like)
    if name in ("adamod", "diffmod"):
        beta3s = [c.beta3 for c in configs]
        if any(b is None for b in beta3s):
            raise ValueError(f"optimizer {name!r} needs beta3 for every member")
        if name == "adamod":
            beta3 = torch.tensor(beta3s, dtype=torch.float64)
            return AdaMod(params, beta3=beta3, track_bounds=True, **adam_like)
        len_memory = torch.tensor(
            [diffmod_len_memory(b) for b in beta3s if b is not None], dtype=torch.float64
        )
        return DiffMod(params, len_memory=len_memory, track_bounds=True, **adam_like)
    raise ValueError(f"unknown optimizer {name!r}; expected one of {', '.join(OPTIMIZERS)}")

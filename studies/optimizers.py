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

from collections.abc import Iterable
from typing import Any

import torch

from studies.spec import OPTIMIZERS, TrialConfig

__all__ = ["SGD_MOMENTUM", "build_optimizer", "diffmod_len_memory"]

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

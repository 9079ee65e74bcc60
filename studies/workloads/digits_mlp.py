"""`digits_mlp`: an MLP on scikit-learn's bundled 8×8 digits with a fixed train/validation split."""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import Tensor, nn
from torch.nn import functional as F

from studies.budget import Budget
from studies.workloads.base import Problem, Workload

__all__ = ["WORKLOAD", "DigitsConfig", "load_digits_split"]


class DigitsConfig(BaseModel):
    """Size of the MLP, batch size and the (fixed) validation split."""

    model_config = ConfigDict(extra="forbid")

    hidden: int = Field(default=64, ge=1, le=8192, description="width of each hidden layer")
    depth: int = Field(default=2, ge=1, le=16, description="number of hidden layers")
    batch_size: int = Field(default=32, ge=1, le=1437)
    val_fraction: float = Field(default=0.2, gt=0.0, lt=1.0)
    split_seed: int = Field(
        default=0, ge=0, description="seed of the train/validation split (not the trial seed)"
    )


@lru_cache(maxsize=4)
def load_digits_split(
    val_fraction: float, split_seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(x_train, y_train, x_val, y_val) of the digits data, features scaled to [0, 1]."""
    from sklearn.datasets import load_digits  # imported here: sklearn is slow to import

    data = load_digits()
    x = (data.data / 16.0).astype(np.float32)
    y = data.target.astype(np.int64)
    order = np.random.default_rng(split_seed).permutation(len(y))
    n_val = max(1, round(len(y) * val_fraction))
    val, train = order[:n_val], order[n_val:]
    return x[train], y[train], x[val], y[val]


def _mlp(config: DigitsConfig) -> nn.Sequential:
    layers: list[nn.Module] = []
    width = 64
    for _ in range(config.depth):
        layers += [nn.Linear(width, config.hidden), nn.ReLU()]
        width = config.hidden
    layers.append(nn.Linear(width, 10))
    return nn.Sequential(*layers)


def _build(config: DigitsConfig, seed: int, device: torch.device) -> Problem:
    x_tr, y_tr, x_va, y_va = load_digits_split(config.val_fraction, config.split_seed)
    x_train, y_train = torch.from_numpy(x_tr).to(device), torch.from_numpy(y_tr).to(device)
    x_val, y_val = torch.from_numpy(x_va).to(device), torch.from_numpy(y_va).to(device)
    model = _mlp(config).to(device)  # initialized from the trial seed (run_trial seeds torch)
    n = len(y_train)
    steps_per_epoch = -(-n // config.batch_size)

    def train_batches(epoch: int) -> list[tuple[Tensor, Tensor]]:
        gen = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
        order = torch.randperm(n, generator=gen).to(device)
        return [(x_train[idx], y_train[idx]) for idx in order.split(config.batch_size)]

    def loss_fn(m: nn.Module, batch: tuple[Tensor, Tensor]) -> Tensor:
        x, y = batch
        return F.cross_entropy(m(x), y)

    def evaluate(m: nn.Module) -> dict[str, float]:
        with torch.no_grad():
            logits = m(x_val)
            return {
                "loss": float(F.cross_entropy(logits, y_val)),
                "accuracy": float((logits.argmax(1) == y_val).float().mean()),
            }

    return Problem(
        model=model,
        train_batches=train_batches,
        loss_fn=loss_fn,
        evaluate=evaluate,
        steps_per_epoch=steps_per_epoch,
        eval_every=steps_per_epoch,
        extras={"n_train": n, "n_val": len(y_val)},
    )


def _build_any(config: Any, seed: int, device: torch.device) -> Problem:
    return _build(config, seed, device)


WORKLOAD = Workload(
    name="digits_mlp",
    description=(
        "ReLU MLP on scikit-learn's bundled 8×8 handwritten digits (1797 images, fixed 80/20 "
        "train/validation split); cross-entropy and accuracy. A few seconds per trial on a CPU."
    ),
    config_model=DigitsConfig,
    default_budget=Budget(epochs=30),
    build=_build_any,
)

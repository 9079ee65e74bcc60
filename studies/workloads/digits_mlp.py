"""`digits_mlp`: an MLP on scikit-learn's bundled 8×8 digits, fixed train/validation/test split.

The 1797 images are split once by `split_seed` (not the trial seed, so every trial of a study sees
the same split): `val_fraction` of them for validation (what the report selects on),
`test_fraction` held out for the test loss reported beside the selected point, the rest for
training. `test_fraction: 0` gives no test split (the report then says so).
"""

from __future__ import annotations

import gzip
import importlib.util
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator
from torch import Tensor, nn
from torch.nn import functional as F

from studies.budget import Budget
from studies.workloads.base import Problem, Workload
from studies.workloads.common import (
    ShuffledBatches,
    classifier_metrics,
    content_sha256,
    float_metrics,
    seeded_init,
    split_indices,
)
from studies.workloads.stacked import (
    PackMetrics,
    StackedForward,
    stacked_classifier_loss,
    stacked_classifier_metrics,
    stacked_sequential,
)

__all__ = ["N_IMAGES", "WORKLOAD", "DigitsConfig", "data_splits", "load_digits_data"]

N_IMAGES = 1797  # scikit-learn's copy of the UCI optical digits test set


class DigitsConfig(BaseModel):
    """Size of the MLP, batch size and the (fixed) validation and test splits."""

    model_config = ConfigDict(extra="forbid")

    hidden: int = Field(default=64, ge=1, le=8192, description="width of each hidden layer")
    depth: int = Field(default=2, ge=1, le=16, description="number of hidden layers")
    batch_size: int = Field(
        default=32, ge=1, le=N_IMAGES, description="one batch per epoch when above the train size"
    )
    val_fraction: float = Field(
        default=0.2, gt=0.0, lt=1.0, description="share of the images used for validation"
    )
    test_fraction: float = Field(
        default=0.2,
        ge=0.0,
        lt=1.0,
        description="share of the images held out for the test loss (0: no test split)",
    )
    split_seed: int = Field(
        default=0, ge=0, description="seed of the train/validation/test split (not the trial seed)"
    )

    @field_validator("test_fraction")
    @classmethod
    def _leaves_training_data(cls, value: float, info: ValidationInfo) -> float:
        val = info.data.get("val_fraction")
        if val is not None and val + value >= 1.0:
            raise ValueError(
                f"val_fraction + test_fraction must be < 1 (there must be training images); "
                f"got val_fraction={val} + test_fraction={value}"
            )
        return value


def _digits_csv() -> Path:
    """scikit-learn's bundled digits.csv.gz, found without importing scikit-learn.

    `import sklearn` costs ~2 s of a worker's first trial (scipy and more come with it), while
    the 1797 images are one small gzip file inside the package: locating the package does not
    execute it. FileNotFoundError (naming the path) if the install lacks the file.
    """
    spec = importlib.util.find_spec("sklearn")
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError("digits_mlp needs scikit-learn (its bundled digits data)")
    path = Path(next(iter(spec.submodule_search_locations))) / "datasets" / "data" / "digits.csv.gz"
    if not path.is_file():
        raise FileNotFoundError(f"scikit-learn's digits data is missing: {path}")
    return path


@lru_cache(maxsize=1)
def load_digits_data() -> tuple[np.ndarray, np.ndarray, str]:
    """(x, y, data_sha256) of all 1797 images, features scaled to [0, 1] (cached, read-only).

    Parsed as `sklearn.datasets.load_digits` parses the same file (np.loadtxt, comma-separated,
    the last column the label), so the arrays are the same to the bit; the data hash in every
    result says so too.
    """
    with gzip.open(_digits_csv(), "rt", encoding="utf-8") as f:
        table = np.loadtxt(f, delimiter=",")
    x = (table[:, :-1] / 16.0).astype(np.float32)
    y = table[:, -1].astype(np.int64)
    if x.shape != (N_IMAGES, 64) or len(y) != N_IMAGES:
        raise ValueError(f"scikit-learn's digits have shape {x.shape}, expected ({N_IMAGES}, 64)")
    x.setflags(write=False)
    y.setflags(write=False)
    return x, y, content_sha256(x, y)


def data_splits(config: DigitsConfig) -> dict[str, np.ndarray]:
    """The sorted image indices (into the 1797) of each part: "train", "val", "test"."""
    n_val = max(1, round(N_IMAGES * config.val_fraction))
    n_test = round(N_IMAGES * config.test_fraction)
    if N_IMAGES - n_val - n_test < 1:
        raise ValueError(
            f"val_fraction={config.val_fraction} and test_fraction={config.test_fraction} leave "
            f"no training images out of {N_IMAGES}"
        )
    val, test, train = split_indices(N_IMAGES, (n_val, n_test), config.split_seed)
    return {"train": train, "val": val, "test": test}


def _mlp(config: DigitsConfig) -> nn.Sequential:
    layers: list[nn.Module] = []
    width = 64
    for _ in range(config.depth):
        layers += [nn.Linear(width, config.hidden), nn.ReLU()]
        width = config.hidden
    layers.append(nn.Linear(width, 10))
    return nn.Sequential(*layers)


def _pack_metrics(forward: StackedForward | None, x: Tensor, y: Tensor) -> PackMetrics | None:
    """The stacked form of classifier_metrics(x, y) for a pack, when the model has one."""
    return None if forward is None else stacked_classifier_metrics(forward, x, y)


def _build(config: DigitsConfig, seed: int, device: torch.device) -> Problem:
    x, y, sha = load_digits_data()
    parts = data_splits(config)

    def on_device(a: np.ndarray, part: str) -> Tensor:
        return torch.from_numpy(a[parts[part]]).to(device)  # fancy indexing copies

    x_train, y_train = on_device(x, "train"), on_device(y, "train")
    with seeded_init(seed):  # the weights depend on the trial seed only
        model = _mlp(config)
    model = model.to(device)
    stacked_forward = stacked_sequential(model)
    n = len(y_train)
    steps_per_epoch = -(-n // config.batch_size)

    def loss_fn(m: nn.Module, batch: tuple[Tensor, Tensor]) -> Tensor:
        x, y = batch
        return F.cross_entropy(m(x), y)

    x_val, y_val = on_device(x, "val"), on_device(y, "val")
    metrics = classifier_metrics(x_val, y_val)
    pack_metrics = _pack_metrics(stacked_forward, x_val, y_val)
    test_metrics = pack_test_metrics = None
    if len(parts["test"]):
        x_test, y_test = on_device(x, "test"), on_device(y, "test")
        test_metrics = classifier_metrics(x_test, y_test)
        pack_test_metrics = _pack_metrics(stacked_forward, x_test, y_test)
    return Problem(
        model=model,
        train_batches=ShuffledBatches((x_train, y_train), config.batch_size, seed),
        loss_fn=loss_fn,
        evaluate=float_metrics(metrics),
        evaluate_test=None if test_metrics is None else float_metrics(test_metrics),
        metrics=metrics,
        test_metrics=test_metrics,
        steps_per_epoch=steps_per_epoch,
        eval_every=steps_per_epoch,
        pack_loss=None if stacked_forward is None else stacked_classifier_loss(stacked_forward),
        pack_metrics=pack_metrics,
        pack_test_metrics=pack_test_metrics,
        extras={
            "n_train": n,
            "n_val": len(parts["val"]),
            "n_test": len(parts["test"]),
            "data_sha256": sha,
            "source": "sklearn.datasets.load_digits",
        },
    )


def _build_any(config: Any, seed: int, device: torch.device) -> Problem:
    return _build(config, seed, device)


WORKLOAD = Workload(
    name="digits_mlp",
    description=(
        "ReLU MLP on scikit-learn's bundled 8×8 handwritten digits (1797 images, fixed "
        "60/20/20 train/validation/test split by split_seed); cross-entropy and accuracy. "
        "A few seconds per trial on a CPU."
    ),
    config_model=DigitsConfig,
    default_budget=Budget(epochs=30),
    build=_build_any,
    packable=True,
)

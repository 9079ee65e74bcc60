"""`mnist1d`: MNIST-1D (Greydanus 2020, "Scaling down deep learning"), generated here.

MNIST-1D is a procedurally generated 10-class task of 1-D signals of length 40: each digit's
template is padded, scaled, translated, sheared and noised. It is small enough for a trial to take
seconds on one CPU core, yet it separates models (a linear model, an MLP and a CNN differ clearly
in accuracy), which the 8×8 digits barely do. The data come from the `mnist1d` package's own
generator, `mnist1d.data.make_dataset`; nothing is downloaded (its `get_dataset` may fetch a
pickle from the web and is never called). With the defaults (5,000 samples, generator seed 42)
this is the standard MNIST-1D: its test set is the package's 1,000 test signals exactly.

Generation takes a second or two, so the arrays are cached per generator arguments in the process
and on disk, under $ADAMOD_LAB_CACHE_DIR or ~/.cache/adamod-lab (mnist1d/<key>.npz, written
atomically; a cache that cannot be read or written is skipped). The generator seeds Python's and
NumPy's global generators; their states are put back afterwards, so building this workload
consumes no global randomness. The content hash of the arrays is recorded as `data_sha256`: it
shows whether two machines (other NumPy or SciPy versions) generated the same data.

Splits: the package's train/test split (the last `test_fraction` of its shuffled samples is the
test set); validation is carved out of the training part with `split_seed`. Defaults: 3,200
train, 800 validation, 1,000 test.

Models, as in the MNIST-1D repository's reference code: `mlp` (input 40 → 100 → 100 → 10, ReLU,
with the repository's residual connection around the second hidden layer) and `cnn` (three 1-D
convolutions of 25 channels, kernel 5/3/3, stride 2, padding 1, ReLU, then a linear layer).

Default budget: 2,000 steps of batch 100 (62.5 epochs of 3,200). Measured on one CPU core (torch
2.13, CPU build, one thread, a busy 2-core machine): an MLP trial takes 1.3-2.2 s (Adam; AdaMod
about 2.2 s), a CNN trial 4-5 s. Data excluded: the first trial of a process also loads them from
the disk cache (milliseconds) or generates them (about 3 s with the package's import).
"""

from __future__ import annotations

import json
import os
import random
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field
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
    stacked_classifier_loss,
    stacked_classifier_metrics,
    stacked_linear,
)

__all__ = [
    "CACHE_DIR_ENV",
    "WORKLOAD",
    "Mnist1dCNN",
    "Mnist1dConfig",
    "Mnist1dMLP",
    "data_splits",
    "generate_mnist1d",
]

CACHE_DIR_ENV = "ADAMOD_LAB_CACHE_DIR"
SEQ_LEN = 40  # the package's final_seq_length
N_CLASSES = 10


class Mnist1dConfig(BaseModel):
    """Model, batch size, the generator's arguments and the splits."""

    model_config = ConfigDict(extra="forbid")

    model: Literal["mlp", "cnn"] = Field(
        default="mlp", description="the reference MLP or the reference 3-layer CNN"
    )
    hidden: int = Field(default=100, ge=1, le=65536, description="MLP width (paper: 100)")
    channels: int = Field(default=25, ge=1, le=4096, description="CNN channels (paper: 25)")
    batch_size: int = Field(default=100, ge=1, le=100_000, description="paper: 100")
    num_samples: int = Field(
        default=5000,
        ge=100,
        le=200_000,
        multiple_of=N_CLASSES,
        description="signals generated, train and test together (the package's default: 5000)",
    )
    data_seed: int = Field(
        default=42, ge=0, le=2**32 - 1, description="generator seed (the package's default: 42)"
    )
    shuffle_seq: bool = Field(
        default=False,
        description="permute the 40 positions (the paper's test of a CNN's spatial prior)",
    )
    test_fraction: float = Field(
        default=0.2, gt=0.0, lt=1.0, description="share of the samples held out for test"
    )
    val_fraction: float = Field(
        default=0.2,
        gt=0.0,
        lt=1.0,
        description="share of the training part (not of all samples) held out for validation",
    )
    split_seed: int = Field(
        default=0, ge=0, description="seed of the train/validation split (not the trial seed)"
    )
    eval_every: int = Field(
        default=100, ge=1, le=1_000_000, description="optimizer steps between evaluations"
    )


def _package_version() -> str:
    try:
        return version("mnist1d")
    except PackageNotFoundError:
        return "not installed"


@contextmanager
def _global_rng_kept() -> Iterator[None]:
    """Put Python's and NumPy's global generators back after the block (make_dataset seeds
    them), so that generating data changes nothing for whatever draws from them next."""
    py_state, np_state = random.getstate(), np.random.get_state()
    try:
        yield
    finally:
        random.setstate(py_state)
        np.random.set_state(np_state)


def _cache_file(key: str) -> Path:
    root = os.environ.get(CACHE_DIR_ENV) or Path.home() / ".cache" / "adamod-lab"
    return Path(root).expanduser() / "mnist1d" / f"{key}.npz"


def _valid(x: Any, y: Any, n: int) -> bool:
    return (
        isinstance(x, np.ndarray)
        and isinstance(y, np.ndarray)
        and x.shape == (n, SEQ_LEN)
        and y.shape == (n,)
        and x.dtype == np.float32
        and y.dtype == np.int64
        and bool(np.isfinite(x).all())
        and bool(((y >= 0) & (y < N_CLASSES)).all())
    )


def _read_cache(path: Path, n: int) -> tuple[np.ndarray, np.ndarray] | None:
    try:
        with np.load(path, allow_pickle=False) as stored:
            x, y = stored["x"], stored["y"]
    except (OSError, KeyError, ValueError):
        return None
    return (x, y) if _valid(x, y, n) else None


def _write_cache(path: Path, x: np.ndarray, y: np.ndarray) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as handle:
                np.savez(handle, x=x, y=y)
            os.chmod(tmp, 0o644)  # mkstemp makes it private; the data are not secret
            os.replace(tmp, path)  # atomic: a concurrent reader sees the old file or the new
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
    except OSError:
        pass  # a read-only home or a full disk only costs the next process a regeneration


def _generate(num_samples: int, data_seed: int, shuffle_seq: bool) -> tuple[np.ndarray, np.ndarray]:
    try:
        from mnist1d.data import get_dataset_args, make_dataset
        from mnist1d.utils import ObjectView
    except ImportError as exc:
        raise ImportError(
            "the mnist1d workload needs the `mnist1d` package (pip install 'mnist1d>=0.0.2')"
        ) from exc

    args = get_dataset_args(as_dict=True)
    args.pop("url", None)  # only get_dataset's download uses it; never called here
    args.update(num_samples=num_samples, seed=data_seed, shuffle_seq=shuffle_seq)
    with _global_rng_kept():
        data = make_dataset(ObjectView(args))
    x = np.concatenate([data["x"], data["x_test"]]).astype(np.float32)
    y = np.concatenate([data["y"], data["y_test"]]).astype(np.int64)
    if not _valid(x, y, num_samples):
        raise ValueError(
            f"mnist1d {_package_version()} generated unexpected arrays: "
            f"x {x.shape} {x.dtype}, y {y.shape} {y.dtype}"
        )
    return x, y


@lru_cache(maxsize=4)
def generate_mnist1d(
    num_samples: int = 5000, data_seed: int = 42, shuffle_seq: bool = False
) -> tuple[np.ndarray, np.ndarray, str]:
    """(x, y, data_sha256): all `num_samples` signals as float32 (N, 40) and int64 labels, in the
    generator's shuffled order (its train part first, its test part last), and their content hash.

    Cached in the process and on disk; the arrays are read-only (they are shared).
    """
    # The key: our arguments and the package version (which fixes every other default), so that
    # a cache hit does not import the package (it imports matplotlib.pyplot: about a second).
    installed = _package_version()
    key = {"mnist1d": installed, "num_samples": num_samples, "seed": data_seed}
    key["shuffle_seq"] = shuffle_seq
    path = _cache_file(content_sha256(json.dumps(key, sort_keys=True).encode()))
    cached = _read_cache(path, num_samples) if installed != "not installed" else None
    if cached is not None:
        x, y = cached
    else:
        x, y = _generate(num_samples, data_seed, shuffle_seq)
        _write_cache(path, x, y)
    x.setflags(write=False)
    y.setflags(write=False)
    return x, y, content_sha256(x, y)


class Mnist1dMLP(nn.Module):
    """The MNIST-1D reference MLP: two hidden ReLU layers, the second with a residual add."""

    def __init__(self, hidden: int = 100) -> None:
        super().__init__()
        self.linear1 = nn.Linear(SEQ_LEN, hidden)
        self.linear2 = nn.Linear(hidden, hidden)
        self.linear3 = nn.Linear(hidden, N_CLASSES)

    def forward(self, x: Tensor) -> Tensor:
        """Class logits of a batch of signals (N, 40)."""
        h = self.linear1(x).relu()
        h = h + self.linear2(h).relu()
        return self.linear3(h)

    @staticmethod
    def stacked_forward(params: dict[str, Tensor], x_t: Tensor) -> Tensor:
        """`forward` of K stacked copies in one pass, feature-major (params {name: [K, ...]},
        x_t [K, 40, N] -> logits [K, 10, N]): a trial pack's fast path (studies/workloads/
        stacked.py)."""
        h = stacked_linear(x_t, params["linear1.weight"], params["linear1.bias"]).relu()
        h = h + stacked_linear(h, params["linear2.weight"], params["linear2.bias"]).relu()
        return stacked_linear(h, params["linear3.weight"], params["linear3.bias"])


class Mnist1dCNN(nn.Module):
    """The MNIST-1D reference CNN: three strided 1-D convolutions, then a linear classifier."""

    def __init__(self, channels: int = 25) -> None:
        super().__init__()
        self.conv1 = nn.Conv1d(1, channels, 5, stride=2, padding=1)
        self.conv2 = nn.Conv1d(channels, channels, 3, stride=2, padding=1)
        self.conv3 = nn.Conv1d(channels, channels, 3, stride=2, padding=1)
        length = SEQ_LEN
        for kernel in (5, 3, 3):
            length = (length + 2 - kernel) // 2 + 1  # 40 -> 19 -> 10 -> 5
        self.linear = nn.Linear(channels * length, N_CLASSES)

    def forward(self, x: Tensor) -> Tensor:
        """Class logits of a batch of signals (N, 40)."""
        h = x.unsqueeze(1)
        h = self.conv1(h).relu()
        h = self.conv2(h).relu()
        h = self.conv3(h).relu()
        return self.linear(h.flatten(1))


def data_splits(config: Mnist1dConfig) -> dict[str, np.ndarray]:
    """The sample indices (into the generated signals) of each part: "train", "val", "test".

    The test part is the generator's own (its last samples); validation is drawn out of the rest
    with `split_seed`. Needs no data: the sizes follow from the config.
    """
    n = config.num_samples
    n_test = round(n * config.test_fraction)
    n_rest = n - n_test
    n_val = round(n_rest * config.val_fraction)
    if n_test < 1 or n_val < 1 or n_rest - n_val < 1:
        raise ValueError(
            f"num_samples={n} with test_fraction={config.test_fraction} and "
            f"val_fraction={config.val_fraction} leaves an empty split "
            f"(train {n_rest - n_val}, validation {n_val}, test {n_test})"
        )
    val, train = split_indices(n_rest, (n_val,), config.split_seed)
    return {"train": train, "val": val, "test": np.arange(n_rest, n)}


def _build(config: Mnist1dConfig, seed: int, device: torch.device) -> Problem:
    x, y, sha = generate_mnist1d(config.num_samples, config.data_seed, config.shuffle_seq)
    parts = data_splits(config)
    train_idx, val_idx, test_idx = parts["train"], parts["val"], parts["test"]

    def on_device(a: np.ndarray, idx: np.ndarray) -> Tensor:
        return torch.from_numpy(a[idx]).to(device)  # fancy indexing copies: writable

    x_train, y_train = on_device(x, train_idx), on_device(y, train_idx)
    with seeded_init(seed):  # the weights depend on the trial seed only
        model: nn.Module = (
            Mnist1dMLP(config.hidden) if config.model == "mlp" else Mnist1dCNN(config.channels)
        )
    model = model.to(device)
    n_train = len(y_train)
    steps_per_epoch = -(-n_train // config.batch_size)

    def loss_fn(m: nn.Module, batch: tuple[Tensor, Tensor]) -> Tensor:
        xb, yb = batch
        return F.cross_entropy(m(xb), yb)

    x_val, y_val = on_device(x, val_idx), on_device(y, val_idx)
    x_test, y_test = on_device(x, test_idx), on_device(y, test_idx)
    metrics, test_metrics = classifier_metrics(x_val, y_val), classifier_metrics(x_test, y_test)
    stacked = config.model == "mlp"  # the CNN has no stacked forward: the pack vmaps it
    forward = Mnist1dMLP.stacked_forward
    return Problem(
        model=model,
        train_batches=ShuffledBatches((x_train, y_train), config.batch_size, seed),
        loss_fn=loss_fn,
        evaluate=float_metrics(metrics),
        evaluate_test=float_metrics(test_metrics),
        metrics=metrics,
        test_metrics=test_metrics,
        steps_per_epoch=steps_per_epoch,
        eval_every=config.eval_every,
        pack_loss=stacked_classifier_loss(forward) if stacked else None,
        pack_metrics=stacked_classifier_metrics(forward, x_val, y_val) if stacked else None,
        pack_test_metrics=stacked_classifier_metrics(forward, x_test, y_test) if stacked else None,
        extras={
            "n_train": n_train,
            "n_val": len(val_idx),
            "n_test": len(test_idx),
            "data_sha256": sha,
            "source": (
                f"mnist1d {_package_version()} make_dataset(num_samples={config.num_samples}, "
                f"seed={config.data_seed}, shuffle_seq={config.shuffle_seq})"
            ),
        },
    )


def _build_any(config: Any, seed: int, device: torch.device) -> Problem:
    return _build(config, seed, device)


WORKLOAD = Workload(
    name="mnist1d",
    description=(
        "MNIST-1D (Greydanus 2020): 10-class 1-D signals of length 40, generated locally by the "
        "mnist1d package (5,000 samples, seed 42 by default; no download). The reference MLP "
        "(default) or 3-layer CNN; 3,200/800/1,000 train/validation/test; cross-entropy and "
        "accuracy. A few seconds per trial on one CPU core."
    ),
    config_model=Mnist1dConfig,
    default_budget=Budget(steps=2000),
    build=_build_any,
    packable=True,
)

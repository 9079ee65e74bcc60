"""`cifar10_resnet`: a ResNet on CIFAR-10 read from a local directory in the python-pickle format.

The data directory holds `cifar-10-batches-py/` (data_batch_1..5, test_batch, batches.meta), as
unpacked from the official `cifar-10-python.tar.gz`; nothing is downloaded. Its path comes from
`workload_config.data_dir` or the environment variable ADAMOD_LAB_DATA_DIR (either the folder that
contains `cifar-10-batches-py` or that folder itself).

Splits: validation is a held-out part of the 50,000 training images (`val_fraction`, default 10% =
5,000, drawn once by `split_seed`), which the report selects on; the official `test_batch` is the
test set, evaluated once at the end of a trial and never used for selection. (The AdaMod paper,
like many optimizer papers, tuned on the test batch; that makes the reported loss optimistic.)
Training uses the usual augmentation (4-pixel padded random crop, horizontal flip), seeded per
trial and epoch; the whole dataset lives on the device as uint8.

Not packable: the ResNets have batch norm, whose running statistics are buffers updated in place
during the forward pass, which a vectorized pack of models does not support; its trials run one
per process.
"""

from __future__ import annotations

import os
import pickle
from collections.abc import Callable
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import Tensor, nn
from torch.nn import functional as F

from studies.budget import Budget
from studies.workloads.base import Problem, Workload
from studies.workloads.common import batch_generator, content_sha256, seeded_init, split_indices

__all__ = [
    "DATA_DIR_ENV",
    "WORKLOAD",
    "Cifar10Config",
    "ResNet",
    "cifar10_sha256",
    "data_splits",
    "find_cifar10",
    "load_cifar10",
]

DATA_DIR_ENV = "ADAMOD_LAB_DATA_DIR"
FOLDER = "cifar-10-batches-py"
TRAIN_FILES = tuple(f"data_batch_{i}" for i in range(1, 6))
TEST_FILE = "test_batch"
MEAN = (0.4914, 0.4822, 0.4465)
STD = (0.2470, 0.2435, 0.2616)

# (stage widths, blocks per stage) of each architecture. resnet20/32/56: He et al. 2016's CIFAR
# networks (0.27M-0.85M parameters); resnet18/34: the ImageNet layouts with a 3x3 stem and no
# max-pool, as in the AdaMod authors' CIFAR-10 code (11M / 21M parameters).
ARCHS: dict[str, tuple[tuple[int, ...], tuple[int, ...]]] = {
    "resnet20": ((16, 32, 64), (3, 3, 3)),
    "resnet32": ((16, 32, 64), (5, 5, 5)),
    "resnet56": ((16, 32, 64), (9, 9, 9)),
    "resnet18": ((64, 128, 256, 512), (2, 2, 2, 2)),
    "resnet34": ((64, 128, 256, 512), (3, 4, 6, 3)),
}


class Cifar10Config(BaseModel):
    """Where the data is, which ResNet, batch size, splits, subsets (for tests), augmentation."""

    model_config = ConfigDict(extra="forbid")

    data_dir: str | None = Field(
        default=None, description=f"folder with {FOLDER}/ (default: ${DATA_DIR_ENV})"
    )
    arch: Literal["resnet20", "resnet32", "resnet56", "resnet18", "resnet34"] = "resnet34"
    batch_size: int = Field(default=128, ge=1, le=8192)
    val_fraction: float = Field(
        default=0.1,
        gt=0.0,
        lt=1.0,
        description="share of the 50,000 training images held out for validation",
    )
    split_seed: int = Field(
        default=0, ge=0, description="seed of the train/validation split (not the trial seed)"
    )
    train_subset: int | None = Field(
        default=None, ge=1, description="use at most the first N images of the training part"
    )
    val_subset: int | None = Field(
        default=None, ge=1, description="use at most the first N images of the validation part"
    )
    test_subset: int | None = Field(
        default=None, ge=1, description="use at most the first N images of test_batch"
    )
    augment: bool = Field(default=True, description="random crop (padding 4) and horizontal flip")
    eval_every: int | None = Field(
        default=None, ge=1, description="steps between evaluations (default: once per epoch)"
    )
    bf16: bool = Field(default=True, description="bfloat16 autocast on CUDA (ignored on CPU)")


def find_cifar10(data_dir: str | None) -> Path:
    """The `cifar-10-batches-py` folder, from the config or $ADAMOD_LAB_DATA_DIR, else an error."""
    root = data_dir or os.environ.get(DATA_DIR_ENV)
    if not root:
        raise FileNotFoundError(
            f"cifar10_resnet needs the CIFAR-10 python files: set workload_config.data_dir or the "
            f"environment variable {DATA_DIR_ENV} to the folder that contains {FOLDER}/ "
            f"(unpacked from cifar-10-python.tar.gz)"
        )
    base = Path(root).expanduser()
    for candidate in (base / FOLDER, base):
        if all((candidate / name).is_file() for name in (*TRAIN_FILES, TEST_FILE)):
            return candidate
    source = "workload_config.data_dir" if data_dir else DATA_DIR_ENV
    raise FileNotFoundError(
        f"cifar10_resnet: no CIFAR-10 python files under {base} (from {source}); expected "
        f"{FOLDER}/data_batch_1..5 and {FOLDER}/test_batch there. Set workload_config.data_dir "
        f"or {DATA_DIR_ENV}."
    )


def _read_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    with path.open("rb") as handle:
        try:
            entry = pickle.load(handle, encoding="bytes")
        except Exception as exc:
            raise ValueError(f"{path} is not a CIFAR-10 python pickle: {exc}") from exc
    if not isinstance(entry, dict):
        raise ValueError(f"{path}: expected a dict, found {type(entry).__name__}")
    entry = {k.decode() if isinstance(k, bytes) else k: v for k, v in entry.items()}
    if "data" not in entry or "labels" not in entry:
        raise ValueError(f"{path}: missing 'data' or 'labels' (keys: {sorted(entry)})")
    data = np.asarray(entry["data"], dtype=np.uint8)
    labels = np.asarray(entry["labels"], dtype=np.int64)
    if data.ndim != 2 or data.shape[1] != 3 * 32 * 32 or len(labels) != len(data):
        raise ValueError(
            f"{path}: expected data of shape (N, 3072) and N labels, "
            f"got {data.shape} and {labels.shape}"
        )
    if labels.size and (labels.min() < 0 or labels.max() > 9):
        raise ValueError(f"{path}: labels must be 0..9")
    return data.reshape(-1, 3, 32, 32), labels


@lru_cache(maxsize=2)
def load_cifar10(folder: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(x_train, y_train, x_test, y_test) as uint8 NCHW images and int64 labels (cached)."""
    parts = [_read_batch(Path(folder) / name) for name in TRAIN_FILES]
    x_test, y_test = _read_batch(Path(folder) / TEST_FILE)
    x_train = np.concatenate([p[0] for p in parts])
    y_train = np.concatenate([p[1] for p in parts])
    return x_train, y_train, x_test, y_test


@lru_cache(maxsize=2)
def cifar10_sha256(folder: str) -> str:
    """A short content hash of the decoded images and labels of every file (cached per folder)."""
    return content_sha256(*load_cifar10(folder))


class BasicBlock(nn.Module):
    """Two 3x3 convolutions with batch norm and an identity (or 1x1 projection) shortcut."""

    def __init__(self, c_in: int, c_out: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(
                nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out)
            )

    def forward(self, x: Tensor) -> Tensor:
        """Residual block output."""
        out = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(out)) + self.shortcut(x))


class ResNet(nn.Module):
    """A CIFAR-sized ResNet of BasicBlocks (3x3 stem, no max-pool)."""

    def __init__(self, arch: str, n_classes: int = 10) -> None:
        super().__init__()
        widths, blocks = ARCHS[arch]
        self.stem = nn.Sequential(
            nn.Conv2d(3, widths[0], 3, 1, 1, bias=False), nn.BatchNorm2d(widths[0]), nn.ReLU()
        )
        layers: list[nn.Module] = []
        c_in = widths[0]
        for i, (width, n) in enumerate(zip(widths, blocks, strict=True)):
            for j in range(n):
                layers.append(BasicBlock(c_in, width, 2 if i > 0 and j == 0 else 1))
                c_in = width
        self.layers = nn.Sequential(*layers)
        self.fc = nn.Linear(c_in, n_classes)

    def forward(self, x: Tensor) -> Tensor:
        """Class logits."""
        x = self.layers(self.stem(x))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


def _augment(images: Tensor, gen: torch.Generator) -> Tensor:
    """Per-image random 32x32 crop of the 4-padded image and random horizontal flip."""
    n = images.shape[0]
    device = images.device
    padded = F.pad(images, (4, 4, 4, 4))
    dy = torch.randint(0, 9, (n,), generator=gen).to(device)
    dx = torch.randint(0, 9, (n,), generator=gen).to(device)
    flip = (torch.rand(n, generator=gen) < 0.5).to(device)
    ar = torch.arange(32, device=device)
    rows = (dy[:, None] + ar)[:, None, :, None]  # n,1,32,1
    cols = dx[:, None] + ar
    cols = torch.where(flip[:, None], cols.flip(1), cols)[:, None, None, :]  # n,1,1,32
    chans = torch.arange(images.shape[1], device=device)[None, :, None, None]
    batch = torch.arange(n, device=device)[:, None, None, None]
    return padded[batch, chans, rows, cols]


def data_splits(config: Cifar10Config) -> dict[str, np.ndarray]:
    """The image indices of each part: "train" and "val" into the 50,000 training images,
    "test" into test_batch counted after them (50,000 + i), so that all three are disjoint sets
    of one numbering. Subsets (train_subset, ...) are applied."""
    _, y_train, _, y_test = load_cifar10(str(find_cifar10(config.data_dir)))
    n = len(y_train)
    n_val = max(1, round(n * config.val_fraction))
    if n - n_val < 1:
        raise ValueError(f"val_fraction={config.val_fraction} leaves no training images of {n}")
    val, train = split_indices(n, (n_val,), config.split_seed)
    test = n + np.arange(len(y_test))
    return {
        "train": train[: config.train_subset],  # None: all of it
        "val": val[: config.val_subset],
        "test": test[: config.test_subset],
    }


def _build(config: Cifar10Config, seed: int, device: torch.device) -> Problem:
    folder = find_cifar10(config.data_dir)
    x_all, y_all, x_te, y_te = load_cifar10(str(folder))
    parts = data_splits(config)
    train_idx, val_idx = parts["train"], parts["val"]
    test_idx = parts["test"] - len(y_all)  # data_splits counts the test batch after training

    def on_device(a: np.ndarray) -> Tensor:
        return torch.from_numpy(np.ascontiguousarray(a)).to(device)

    x_train, y_train = on_device(x_all[train_idx]), on_device(y_all[train_idx])
    x_val, y_val = on_device(x_all[val_idx]), on_device(y_all[val_idx])
    x_test, y_test = on_device(x_te[test_idx]), on_device(y_te[test_idx])
    mean = torch.tensor(MEAN, device=device).view(1, 3, 1, 1)
    std = torch.tensor(STD, device=device).view(1, 3, 1, 1)
    autocast = device.type == "cuda" and config.bf16

    with seeded_init(seed):  # the weights depend on the trial seed only
        model = ResNet(config.arch)
    model = model.to(device)
    if device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    n = len(y_train)
    steps_per_epoch = -(-n // config.batch_size)

    def prepare(images: Tensor) -> Tensor:
        x = (images.float() / 255.0 - mean) / std
        return x.contiguous(memory_format=torch.channels_last) if device.type == "cuda" else x

    def train_batches(epoch: int) -> Any:
        gen = batch_generator(seed, epoch)  # order and augmentation: (seed, epoch) only
        order = torch.randperm(n, generator=gen).to(device)
        for idx in order.split(config.batch_size):
            images = x_train[idx]
            if config.augment:
                images = _augment(images, gen)
            yield prepare(images), y_train[idx]

    def loss_fn(m: nn.Module, batch: tuple[Tensor, Tensor]) -> Tensor:
        x, y = batch
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast):
            logits = m(x)
        return F.cross_entropy(logits.float(), y)

    def evaluator(x_eval: Tensor, y_eval: Tensor) -> Callable[[nn.Module], dict[str, float]]:
        def evaluate(m: nn.Module) -> dict[str, float]:
            total_loss = torch.zeros((), device=device)
            correct = torch.zeros((), device=device)
            with (
                torch.no_grad(),
                torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast),
            ):
                for xb, yb in zip(x_eval.split(500), y_eval.split(500), strict=True):
                    logits = m(prepare(xb)).float()
                    total_loss += F.cross_entropy(logits, yb, reduction="sum")
                    correct += (logits.argmax(1) == yb).sum()
            n_eval = len(y_eval)
            return {"loss": float(total_loss) / n_eval, "accuracy": float(correct) / n_eval}

        return evaluate

    return Problem(
        model=model,
        train_batches=train_batches,
        loss_fn=loss_fn,
        evaluate=evaluator(x_val, y_val),
        evaluate_test=evaluator(x_test, y_test),
        steps_per_epoch=steps_per_epoch,
        eval_every=config.eval_every or steps_per_epoch,
        extras={
            "data": str(folder),
            "data_sha256": cifar10_sha256(str(folder)),
            "n_train": n,
            "n_val": len(y_val),
            "n_test": len(y_test),
        },
    )


def _build_any(config: Any, seed: int, device: torch.device) -> Problem:
    return _build(config, seed, device)


WORKLOAD = Workload(
    name="cifar10_resnet",
    description=(
        "ResNet (default ResNet-34, as in the AdaMod paper) on CIFAR-10 read from a local "
        f"{FOLDER}/ directory (workload_config.data_dir or ${DATA_DIR_ENV}); random-crop and "
        "flip augmentation; validation = 5,000 images held out of the training batches, test = "
        "test_batch; accuracy reported. A GPU workload. Not packable (batch norm): one trial per "
        "process."
    ),
    config_model=Cifar10Config,
    default_budget=Budget(epochs=50),
    build=_build_any,
)

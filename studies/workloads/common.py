"""What the built-in workloads share: seeded streams, index splits and short content hashes.

Pairing by seed (ROBUSTNESS.md) needs a trial's initial weights and batch order to be a function
of its seed alone. `seeded_init` builds a model under a CPU generator seeded from the trial seed
and puts the global generator back afterwards, so whatever ran before `build` (another trial's
build in a pack, a data generator, a test) cannot move the weights; `batch_generator` gives the
per-epoch generator that `train_batches(epoch)` draws from, so batches depend on (seed, epoch) only.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn
from torch.nn import functional as F

from studies.workloads.base import MetricsFn

__all__ = [
    "ShuffledBatches",
    "batch_generator",
    "classifier_evaluator",
    "classifier_metrics",
    "content_sha256",
    "float_metrics",
    "seeded_init",
    "split_indices",
]

# The stride between the batch streams of consecutive seeds (a prime, so seed s epoch e never
# meets seed s' epoch e' for any realistic epoch count). Kept as it was when workloads seeded
# their batches inline, so that stored trials of unchanged workloads stay reproducible.
_SEED_STRIDE = 1_000_003


def batch_generator(seed: int, epoch: int) -> torch.Generator:
    """A fresh CPU generator for the batches of (seed, epoch): no global state involved."""
    return torch.Generator().manual_seed(seed * _SEED_STRIDE + epoch)


@dataclass(frozen=True)
class ShuffledBatches:
    """A Problem's `train_batches` for fixed training tensors shuffled each epoch by the seed:
    epoch e's batches are consecutive `batch_size` slices of a permutation drawn from
    batch_generator(seed, e), each batch a tuple with one indexed slice of every tensor.

    The pack runner recognises it: members whose tensors are equal (the same data, in different
    seeds' orders) are gathered for all members with one indexing per tensor and epoch, rather
    than one per member and batch; each member's batches are the same either way.
    """

    data: tuple[Tensor, ...]  # the training tensors, indexed along their first dimension
    batch_size: int
    seed: int

    def order(self, epoch: int) -> Tensor:
        """This epoch's permutation of the training rows, on the data's device."""
        n = len(self.data[0])
        return torch.randperm(n, generator=batch_generator(self.seed, epoch)).to(
            self.data[0].device
        )

    def __call__(self, epoch: int) -> list[tuple[Tensor, ...]]:
        return [
            tuple(t[idx] for t in self.data) for idx in self.order(epoch).split(self.batch_size)
        ]


@contextmanager
def seeded_init(seed: int) -> Iterator[None]:
    """Run a block (a model's construction) with torch's CPU generator seeded by `seed`, then
    restore the generator as it was, so the weights depend on the seed only and the caller's
    random stream is left untouched.

    Modules are initialized on the CPU (then moved), so the CPU generator is the only one used.
    The seed is the trial seed itself: the weights are those that `torch.manual_seed(seed)`
    followed by the same construction gives.
    """
    with torch.random.fork_rng(devices=[]):
        torch.random.default_generator.manual_seed(seed)
        yield


def split_indices(n: int, sizes: tuple[int, ...], seed: int) -> tuple[np.ndarray, ...]:
    """Disjoint index sets of the given sizes drawn by one permutation of range(n) seeded with
    `seed`, plus the rest as the last element; each set is sorted (the data keep their order).

    The split seed is a workload setting, not the trial seed: every trial of a study sees the
    same split, so that seeds vary the start and the batch order and nothing else.
    """
    if any(size < 0 for size in sizes) or sum(sizes) > n:
        raise ValueError(f"cannot take parts of sizes {sizes} out of {n} items")
    order = np.random.default_rng(seed).permutation(n)
    parts: list[np.ndarray] = []
    start = 0
    for size in sizes:
        parts.append(np.sort(order[start : start + size]))
        start += size
    parts.append(np.sort(order[start:]))
    return tuple(parts)


def content_sha256(*chunks: bytes | np.ndarray) -> str:
    """A short (16 hex digits) SHA-256 of the given bytes and arrays (dtype and shape included),
    for the data hashes of the report's environment section."""
    digest = hashlib.sha256()
    for chunk in chunks:
        if isinstance(chunk, np.ndarray):
            array = np.ascontiguousarray(chunk)
            digest.update(f"{array.dtype.str}{array.shape}".encode())
            digest.update(array.tobytes())
        else:
            digest.update(chunk)
    return digest.hexdigest()[:16]


def classifier_metrics(x: Tensor, y: Tensor, chunk: int = 4096) -> MetricsFn:
    """Mean cross-entropy and accuracy of a classifier on (x, y) as 0-dim float64 tensors, in
    chunks of `chunk` examples (so a large split never needs one huge forward pass).

    Written for torch.func.vmap (the pack runner evaluates every member at once): sums are
    out-of-place and nothing leaves the device.
    """
    if len(y) == 0:
        raise ValueError("cannot evaluate on an empty split")
    n = len(y)

    def metrics(m: nn.Module) -> dict[str, Tensor]:
        losses, hits = [], []
        with torch.no_grad():
            for xb, yb in zip(x.split(chunk), y.split(chunk), strict=True):
                logits = m(xb).float()
                losses.append(F.cross_entropy(logits, yb, reduction="sum").double())
                hits.append((logits.argmax(-1) == yb).sum())
        return {
            "loss": torch.stack(losses).sum() / n,
            "accuracy": torch.stack(hits).sum().double() / n,
        }

    return metrics


def float_metrics(metrics: MetricsFn) -> Callable[[nn.Module], dict[str, float]]:
    """The Problem.evaluate form of a MetricsFn: the same numbers as Python floats."""

    def evaluate(m: nn.Module) -> dict[str, float]:
        return {key: float(value) for key, value in metrics(m).items()}

    return evaluate


def classifier_evaluator(
    x: Tensor, y: Tensor, chunk: int = 4096
) -> Callable[[nn.Module], dict[str, float]]:
    """classifier_metrics as Python floats, for `evaluate` and `evaluate_test`."""
    return float_metrics(classifier_metrics(x, y, chunk))

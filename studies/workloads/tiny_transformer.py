"""`tiny_transformer`: a small post-LayerNorm Transformer LM on text shipped with Python.

Post-LN (LayerNorm after each residual add, as in the original Transformer) is the setting where
Adam is known to need learning-rate warmup; AdaMod's bound is meant to make warmup unnecessary.
The corpus is the source of a fixed list of standard-library modules, read from this Python's own
stdlib directory, byte-level (vocabulary 256). Where those files are absent (a stripped install),
or with `corpus: generated`, a deterministic synthetic language of arithmetic sentences is used.

The corpus is cut into three contiguous parts, in this order: training, validation
(`val_fraction`, default 10%) and test (`test_fraction`, default 10%; 0 for none). Contiguous, not
shuffled: neighbouring windows of text overlap and share context, so a random split would leak
training text into validation. Validation uses a fixed set of random windows (`eval_batches`
batches, the same for every seed and evaluation); the test loss, computed once per trial, covers
the whole test part in non-overlapping windows.
"""

from __future__ import annotations

import math
import random
import sysconfig
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator
from torch import Tensor, nn
from torch.nn import functional as F

from studies.budget import Budget
from studies.workloads.base import MetricsFn, Problem, Workload
from studies.workloads.common import batch_generator, content_sha256, float_metrics, seeded_init

__all__ = [
    "STDLIB_FILES",
    "WORKLOAD",
    "TinyTransformerConfig",
    "corpus_parts",
    "data_splits",
    "load_corpus",
]

STDLIB_FILES = (
    "argparse.py",
    "difflib.py",
    "fractions.py",
    "heapq.py",
    "shlex.py",
    "statistics.py",
    "string.py",
    "textwrap.py",
)
VOCAB = 256  # bytes


class TinyTransformerConfig(BaseModel):
    """Model size, context and batch; defaults are CPU-sized, raise them on a GPU."""

    model_config = ConfigDict(extra="forbid")

    corpus: Literal["stdlib", "generated"] = Field(
        default="stdlib", description="stdlib module source, or a generated arithmetic language"
    )
    d_model: int = Field(default=64, ge=8, le=8192)
    n_heads: int = Field(default=4, ge=1, le=128)
    n_layers: int = Field(default=2, ge=1, le=96)
    d_ff: int = Field(default=128, ge=8, le=65536)
    context: int = Field(default=32, ge=4, le=8192, description="tokens per training sequence")
    batch_size: int = Field(default=16, ge=1, le=4096)
    dropout: float = Field(default=0.0, ge=0.0, lt=1.0)
    steps_per_epoch: int = Field(default=100, ge=1, le=1_000_000)
    eval_every: int = Field(default=50, ge=1, le=1_000_000)
    eval_batches: int = Field(default=8, ge=1, le=1000, description="validation batches per eval")
    val_fraction: float = Field(
        default=0.1,
        gt=0.0,
        lt=1.0,
        description="share of the corpus (after training) for validation",
    )
    test_fraction: float = Field(
        default=0.1,
        ge=0.0,
        lt=1.0,
        description="share of the corpus (at its end) held out for test",
    )

    @field_validator("test_fraction")
    @classmethod
    def _leaves_training_text(cls, value: float, info: ValidationInfo) -> float:
        val = info.data.get("val_fraction")
        if val is not None and val + value >= 1.0:
            raise ValueError(
                f"val_fraction + test_fraction must be < 1 (there must be training text); "
                f"got val_fraction={val} + test_fraction={value}"
            )
        return value

    @model_validator(mode="after")
    def _heads_divide_width(self) -> TinyTransformerConfig:
        if self.d_model % self.n_heads:
            raise ValueError(
                f"d_model ({self.d_model}) must be divisible by n_heads ({self.n_heads})"
            )
        return self


def _generated_text(n_chars: int = 300_000) -> str:
    rng = random.Random(1234)
    parts: list[str] = []
    total = 0
    while total < n_chars:
        a, b = rng.randrange(1000), rng.randrange(1000)
        op = rng.choice("+-*")
        value = a + b if op == "+" else a - b if op == "-" else a * b
        sentence = f"{a}{op}{b}={value};\n" if rng.random() < 0.8 else f"let x{a % 10} = {b};\n"
        parts.append(sentence)
        total += len(sentence)
    return "".join(parts)


@lru_cache(maxsize=2)
def load_corpus(corpus: str) -> tuple[bytes, str]:
    """The training text as bytes and the name of its source (a description for the record)."""
    if corpus == "stdlib":
        stdlib = Path(sysconfig.get_paths()["stdlib"])
        files = [stdlib / name for name in STDLIB_FILES]
        if all(f.is_file() for f in files):
            data = b"".join(f.read_bytes() for f in files)
            return data, f"stdlib:{stdlib}"
    return _generated_text().encode(), "generated"


def corpus_parts(n: int, val_fraction: float, test_fraction: float) -> tuple[slice, slice, slice]:
    """The contiguous (train, validation, test) byte ranges of a corpus of n bytes."""
    n_test = round(n * test_fraction)
    n_val = round(n * val_fraction)
    n_train = n - n_val - n_test
    return slice(0, n_train), slice(n_train, n_train + n_val), slice(n_train + n_val, n)


def data_splits(config: TinyTransformerConfig) -> dict[str, np.ndarray]:
    """The byte positions (into the corpus) of each part: "train", "val", "test"."""
    text, _ = load_corpus(config.corpus)
    parts = corpus_parts(len(text), config.val_fraction, config.test_fraction)
    return {
        name: np.arange(len(text))[part]
        for name, part in zip(("train", "val", "test"), parts, strict=True)
    }


class PostLNLanguageModel(nn.Module):
    """Decoder-only Transformer with post-LayerNorm blocks and learned positions."""

    def __init__(self, config: TinyTransformerConfig) -> None:
        super().__init__()
        self.embed = nn.Embedding(VOCAB, config.d_model)
        self.position = nn.Embedding(config.context, config.d_model)
        self.blocks = nn.ModuleList(
            nn.TransformerEncoderLayer(
                config.d_model,
                config.n_heads,
                config.d_ff,
                dropout=config.dropout,
                activation="gelu",
                batch_first=True,
                norm_first=False,  # post-LN, on purpose
            )
            for _ in range(config.n_layers)
        )
        self.head = nn.Linear(config.d_model, VOCAB)
        mask = torch.triu(torch.full((config.context, config.context), -math.inf), diagonal=1)
        self.register_buffer("causal_mask", mask, persistent=False)

    def forward(self, tokens: Tensor) -> Tensor:
        """Next-byte logits for every position of a batch of token sequences."""
        length = tokens.shape[1]
        x = self.embed(tokens) + self.position.weight[:length]
        mask = self.causal_mask[:length, :length]
        for block in self.blocks:
            x = block(x, src_mask=mask, is_causal=True)
        return self.head(x)


def _build(config: TinyTransformerConfig, seed: int, device: torch.device) -> Problem:
    text, source = load_corpus(config.corpus)
    data = torch.frombuffer(bytearray(text), dtype=torch.uint8).long()
    parts = corpus_parts(len(data), config.val_fraction, config.test_fraction)
    train, val, test = data[parts[0]], data[parts[1]], data[parts[2]]
    span = config.context + 1
    too_short = [
        name
        for name, part in (("training", train), ("validation", val), ("test", test))
        if len(part) < span and (name != "test" or config.test_fraction > 0)
    ]
    if too_short:
        raise ValueError(
            f"context ({config.context}) is too long for the {' and '.join(too_short)} part of "
            f"the corpus ({len(data)} B; train/val/test {len(train)}/{len(val)}/{len(test)} B): "
            f"lower context or raise val_fraction/test_fraction"
        )
    with seeded_init(seed):  # the weights depend on the trial seed only
        model = PostLNLanguageModel(config)
    model = model.to(device)

    # A fixed set of validation windows, the same for every seed and every evaluation.
    val_gen = torch.Generator().manual_seed(0)
    n_val = config.eval_batches * config.batch_size
    starts = torch.randint(0, len(val) - span + 1, (n_val,), generator=val_gen)
    val_windows = torch.stack([val[s : s + span] for s in starts.tolist()]).to(device)
    train_dev = train.to(device)
    offsets = torch.arange(span, device=device)

    def train_batches(epoch: int) -> list[Tensor]:
        starts = torch.randint(
            0,
            len(train) - span + 1,
            (config.steps_per_epoch, config.batch_size),
            generator=batch_generator(seed, epoch),
        ).to(device)
        return [train_dev[s[:, None] + offsets] for s in starts]

    def lm_loss(m: nn.Module, windows: Tensor) -> Tensor:
        logits = m(windows[:, :-1])
        return F.cross_entropy(logits.reshape(-1, VOCAB), windows[:, 1:].reshape(-1))

    def mean_loss(windows: Tensor) -> MetricsFn:
        # Every window has `context` targets, so the mean of batch means weighted by batch size
        # is the mean loss per byte. Out-of-place sums: a pack vmaps this over its members.
        def metrics(m: nn.Module) -> dict[str, Tensor]:
            with torch.no_grad():
                sums = [lm_loss(m, w).double() * len(w) for w in windows.split(config.batch_size)]
            return {"loss": torch.stack(sums).sum() / len(windows)}

        return metrics

    metrics = mean_loss(val_windows)
    test_metrics = None
    n_test_windows = 0
    if config.test_fraction > 0:
        # The whole test part once, in non-overlapping windows (the tail shorter than a window
        # is left out).
        n_test_windows = len(test) // span
        test_windows = test[: n_test_windows * span].view(n_test_windows, span).to(device)
        test_metrics = mean_loss(test_windows)

    return Problem(
        model=model,
        train_batches=train_batches,
        loss_fn=lm_loss,
        evaluate=float_metrics(metrics),
        evaluate_test=None if test_metrics is None else float_metrics(test_metrics),
        metrics=metrics,
        test_metrics=test_metrics,
        steps_per_epoch=config.steps_per_epoch,
        eval_every=config.eval_every,
        extras={
            "corpus": source,
            "corpus_sha256": content_sha256(text),
            # sizes in bytes (= tokens) of the three contiguous parts
            "n_train": len(train),
            "n_val": len(val),
            "n_test": len(test),
            "n_val_windows": n_val,
            "n_test_windows": n_test_windows,
        },
    )


def _build_any(config: Any, seed: int, device: torch.device) -> Problem:
    return _build(config, seed, device)


WORKLOAD = Workload(
    name="tiny_transformer",
    description=(
        "Byte-level post-LayerNorm Transformer language model (2 layers, width 64 by default) on "
        "standard-library Python source shipped with the interpreter; validation cross-entropy in "
        "nats per byte on a contiguous 80/10/10 train/validation/test split. The setting where "
        "Adam needs warmup. CPU-sized by default."
    ),
    config_model=TinyTransformerConfig,
    default_budget=Budget(steps=400),
    build=_build_any,
    # With dropout > 0 a packed member draws its dropout masks from the pack's stream, not the
    # ones its unfused trial would draw: the same distribution, other numbers.
    packable=True,
)

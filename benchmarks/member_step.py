"""Member-mode step time: one step over K stacked members against K scalar steps.

For digits-MLP-sized params (64→64→64→10, weights and biases: 8,970 elements per member) and
each optimizer, one member-mode step over K stacked members (lr a tensor of K values) is timed
against K scalar steps (one scalar optimizer per member), both in the same run, interleaved,
on one thread. The ratio is member / scalar: below 1 the pack is faster. "adamod" is the default
member path (on CPU the member C kernel, one call per step), "adamod-torch" the pure-torch one
(foreach=False, the default before the kernel); "-tracked" rows record bound telemetry.

    python benchmarks/member_step.py                     # K = 1, 4, 16, 64; about 10 s
    python benchmarks/member_step.py --k 8 32 --optimizers adamod adamod-fused adam
"""

from __future__ import annotations

import sys
from pathlib import Path

# run as a script, this folder comes first on sys.path: sibling benchmarks (e.g. queue.py) must
# not shadow the standard library, and the checkout's adamod must be importable
_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]
sys.path.insert(0, str(_HERE.parent))

import argparse
import statistics
import time
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor

from adamod import AdaMod, DiffMod, members

# digits MLP: 64 inputs, two hidden layers of 64, 10 classes (torch.nn.Linear's weight layout)
SHAPES = [(64, 64), (64,), (64, 64), (64,), (10, 64), (10,)]

Factory = Callable[[list[Tensor], Any], torch.optim.Optimizer]


def _same(cls: type[torch.optim.Optimizer], **options: Any) -> tuple[Factory, Factory]:
    """cls with the same options on both sides (member mode gets a (K,) lr tensor)."""
    return (lambda ps, lr: cls(ps, lr=lr, **options), lambda ps, lr: cls(ps, lr=lr, **options))


# name -> (member-mode factory taking a (K,) lr tensor, scalar factory taking a float lr).
# "adamod" is the default path: on CPU the member C kernel (one call per step for all members);
# "-torch" is the pure-torch member path (foreach=False), the default before that kernel existed.
OPTIMIZERS: dict[str, tuple[Factory, Factory]] = {
    "adamod": _same(AdaMod),
    "adamod-tracked": _same(AdaMod, track_bounds=True),
    "adamod-torch": _same(AdaMod, foreach=False),
    "adamod-torch-tracked": _same(AdaMod, foreach=False, track_bounds=True),
    "adamod-foreach": _same(AdaMod, foreach=True),
    "adamod-fused": _same(AdaMod, fused=True),
    "diffmod-tracked": _same(DiffMod, track_bounds=True),
    "diffmod-torch-tracked": _same(DiffMod, foreach=False, track_bounds=True),
    "adam": (lambda ps, lr: members.Adam(ps, lr=lr), lambda ps, lr: torch.optim.Adam(ps, lr=lr)),
}
DEFAULT_OPTIMIZERS = ("adamod", "adamod-tracked", "adamod-torch", "adamod-torch-tracked", "adam")


def _with_grads(shapes: Sequence[tuple[int, ...]], gen: torch.Generator) -> list[Tensor]:
    params: list[Tensor] = [torch.nn.Parameter(torch.randn(s, generator=gen)) for s in shapes]
    for p in params:
        p.grad = torch.randn(p.shape, generator=gen)
    return params


def _time(fn: Callable[[], None], steps: int) -> float:
    start = time.perf_counter()
    for _ in range(steps):
        fn()
    return (time.perf_counter() - start) / steps


def measure_one(name: str, k: int, *, repeats: int, steps: int, warmup: int) -> dict[str, Any]:
    """Median ms of one member step over k members and of k scalar steps, and their ratio."""
    build_members, build_scalar = OPTIMIZERS[name]
    gen = torch.Generator().manual_seed(k)
    lrs = torch.logspace(-4, -2, k, dtype=torch.float64)
    stacked = build_members(_with_grads([(k, *s) for s in SHAPES], gen), lrs)
    scalars = [build_scalar(_with_grads(SHAPES, gen), float(lr)) for lr in lrs]

    def scalar_steps() -> None:
        for opt in scalars:
            opt.step()

    for _ in range(warmup):
        stacked.step()
        scalar_steps()
    member_s, scalar_s = [], []
    for _ in range(repeats):  # interleaved, so that load changes hit both alike
        member_s.append(_time(stacked.step, steps))
        scalar_s.append(_time(scalar_steps, steps))
    member_ms = 1e3 * statistics.median(member_s)
    scalar_ms = 1e3 * statistics.median(scalar_s)
    return {
        "optimizer": name,
        "k": k,
        "member_ms": member_ms,
        "scalar_ms": scalar_ms,
        "ratio": member_ms / scalar_ms,
    }


def measure(
    k_values: Sequence[int] = (1, 4, 16, 64),
    optimizers: Sequence[str] = DEFAULT_OPTIMIZERS,
    *,
    repeats: int = 7,
    steps: int = 5,
    warmup: int = 3,
    threads: int = 1,
) -> list[dict[str, Any]]:
    """One row per (optimizer, K): member_ms, scalar_ms (K scalar steps) and ratio."""
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        return [
            measure_one(name, k, repeats=repeats, steps=steps, warmup=warmup)
            for name in optimizers
            for k in k_values
        ]
    finally:
        torch.set_num_threads(before)


def main(argv: Sequence[str] | None = None) -> None:
    """Print the table of `measure`."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--k", type=int, nargs="+", default=[1, 4, 16, 64])
    parser.add_argument(
        "--optimizers", nargs="+", default=list(DEFAULT_OPTIMIZERS), choices=list(OPTIMIZERS)
    )
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--steps", type=int, default=5)
    args = parser.parse_args(argv)
    started = time.perf_counter()
    rows = measure(args.k, args.optimizers, repeats=args.repeats, steps=args.steps)
    print(f"torch {torch.__version__}, 1 thread, median of {args.repeats} × {args.steps} steps")
    print(f"{'optimizer':<24}{'K':>5}{'member step ms':>16}{'K scalar steps ms':>19}{'ratio':>8}")
    for row in rows:
        print(
            f"{row['optimizer']:<24}{row['k']:>5}{row['member_ms']:>16.2f}"
            f"{row['scalar_ms']:>19.2f}{row['ratio']:>8.3f}"
        )
    print(f"({time.perf_counter() - started:.0f} s)")


if __name__ == "__main__":
    main()

"""The compute floor of a digits_mlp pack: how fast K members could train at best on this CPU.

A pack's step is, at minimum, the forward and backward pass of K MLPs through batched matrix
multiplies (baddbmm; what vmap turns nn.Linear into). This measures exactly that, with nothing
else: no functorch, no optimizer, no data loading, no evaluation, no bookkeeping. Dividing by a
trial's steps gives an upper bound on a pack's trials per second, and against `run_trial` one by
one, an upper bound on what packing can gain for this workload on this machine, whatever the
queue or the pack runner does. (The quick preset's 126 trials at 340 steps each, in 2 workers.)

    .venv/bin/python benchmarks/pack_floor.py            # K = 64, the quick preset's sizes
"""

from __future__ import annotations

import sys
from pathlib import Path

# Run as a script, this folder is sys.path[0]: its queue.py would shadow the standard library's
# queue (imported by torch), so drop it.
_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]

import argparse
import itertools
import time

import torch
from torch.nn import functional as F

__all__ = ["floor_step_seconds"]


def floor_step_seconds(
    k: int, *, batch: int = 32, width: int = 64, depth: int = 2, repeats: int = 200
) -> float:
    """Seconds per forward+backward step of `k` stacked MLPs (64 -> width^depth -> 10) on one
    thread, the median of 5 timed runs of `repeats` steps."""
    generator = torch.Generator().manual_seed(0)
    sizes = [64] + [width] * depth + [10]
    weights = [
        torch.randn(k, a, b, generator=generator).mul_(a**-0.5).requires_grad_()
        for a, b in itertools.pairwise(sizes)
    ]
    biases = [torch.zeros(k, 1, b, requires_grad=True) for b in sizes[1:]]
    x = torch.rand(k, batch, 64, generator=generator)
    y = torch.randint(0, 10, (k, batch), generator=generator)
    leaves = weights + biases

    def step() -> None:
        h = x
        for i, (w, b) in enumerate(zip(weights, biases, strict=True)):
            h = torch.baddbmm(b, h, w)
            if i < len(weights) - 1:
                h = torch.relu(h)
        loss = F.cross_entropy(h.reshape(k * batch, 10), y.reshape(-1), reduction="none")
        torch.autograd.grad(loss.view(k, batch).mean(1).sum(), leaves)

    for _ in range(20):
        step()
    runs = []
    for _ in range(5):
        started = time.perf_counter()
        for _ in range(repeats):
            step()
        runs.append((time.perf_counter() - started) / repeats)
    return sorted(runs)[2]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--k", type=int, default=64)
    parser.add_argument("--steps", type=int, default=340, help="steps per trial (quick: 340)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    seconds = floor_step_seconds(args.k)
    print(
        f"floor: {seconds * 1e3:.2f} ms per step for {args.k} members = "
        f"{args.k / (seconds * args.steps):.1f} trials/s at most on one core"
    )


if __name__ == "__main__":
    main()

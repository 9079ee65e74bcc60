"""How much run_trial adds to torch's own work, measured on the `noop` workload.

Baseline (same process, same run): the bare torch work of a one-step noop trial: seed, create the
parameter and Adam, evaluate, one step, evaluate. Ours: run_trial on the same thing, through the
registry, config validation, warmup bookkeeping, curve and result. Prints both and their ratio.

    .venv/bin/python benchmarks/trial_overhead.py [--repeats 2000]
"""

from __future__ import annotations

import sys
from pathlib import Path

# Run as a script, this folder is sys.path[0]: its queue.py would shadow the standard library's
# queue (imported by torch), so drop it and put the checkout first instead.
_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]
sys.path.insert(0, str(_HERE.parent))

import argparse
import statistics
import time
import warnings

import torch
from torch import nn

from studies.spec import TrialConfig
from studies.trial import run_trial


def bare_torch_trial() -> float:
    """The torch work a one-step noop trial cannot avoid."""
    torch.random.default_generator.manual_seed(0)
    p = nn.Parameter(torch.zeros(1))
    opt = torch.optim.Adam([p], lr=0.1)
    with torch.no_grad():
        first = float(((p - 1.0) ** 2).sum())
    opt.zero_grad(set_to_none=True)
    loss = ((p - 1.0) ** 2).sum()
    float(loss.detach())
    loss.backward()
    opt.step()
    with torch.no_grad():
        return first - float(((p - 1.0) ** 2).sum())


def timed(fn, repeats: int) -> float:  # type: ignore[no-untyped-def]
    """Median seconds per call over `repeats` calls, in 5 blocks."""
    block = max(1, repeats // 5)
    samples = []
    for _ in range(5):
        start = time.perf_counter()
        for _ in range(block):
            fn()
        samples.append((time.perf_counter() - start) / block)
    return statistics.median(samples)


def main() -> None:
    """Print the per-trial cost of run_trial and of bare torch, and their difference."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=2000)
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    torch.set_num_threads(1)
    config = TrialConfig(
        workload="noop", workload_config={"steps_per_epoch": 1}, optimizer="adam", lr=0.1,
        budget={"steps": 1},
    )  # fmt: skip
    for _ in range(100):  # warm up imports and caches
        run_trial(config)
        bare_torch_trial()
    ours = timed(lambda: run_trial(config), args.repeats)
    base = timed(bare_torch_trial, args.repeats)
    print(f"bare torch one-step trial : {base * 1e6:8.1f} us")
    print(f"run_trial (noop, 1 step)  : {ours * 1e6:8.1f} us")
    print(f"overhead of run_trial     : {(ours - base) * 1e6:8.1f} us  (ratio {ours / base:.2f}x)")


if __name__ == "__main__":
    main()

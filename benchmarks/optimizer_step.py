"""Optimizer step time: torch Adam (foreach, fused) against AdaMod and DiffMod on every path.

Two cases, float32 on CPU (or --device cuda): (a) one tensor of --size elements and (b) --tensors
tensors of log-uniform sizes totalling --size. Optimizers are timed interleaved in one process
(each round visits them in a new random order); the table reports the median ms/step over
rounds and the ratios to torch's fused and foreach Adam measured in the same run.

    python benchmarks/optimizer_step.py                  # defaults: 10M elements, 200 tensors
    python benchmarks/optimizer_step.py --rounds 9 --steps 5 --no-fused
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
import os
import platform
import random
import statistics
import time
from collections.abc import Callable

import numpy as np
import torch

from adamod import AdaMod, DiffMod

Factory = Callable[[list[torch.Tensor]], torch.optim.Optimizer]


def optimizers(include_fused: bool) -> dict[str, Factory]:
    """Name -> constructor of every optimizer in the comparison."""
    table: dict[str, Factory] = {
        "torch Adam foreach": lambda p: torch.optim.Adam(p, foreach=True),
        "torch Adam fused": lambda p: torch.optim.Adam(p, fused=True),
        "AdaMod single (default)": lambda p: AdaMod(p, foreach=False),
        "AdaMod foreach": lambda p: AdaMod(p, foreach=True),
        "DiffMod single (default)": lambda p: DiffMod(p, foreach=False),
        "DiffMod foreach": lambda p: DiffMod(p, foreach=True),
    }
    if include_fused:
        table["AdaMod fused"] = lambda p: AdaMod(p, fused=True)
        table["DiffMod fused"] = lambda p: DiffMod(p, fused=True)
    return table


def tensor_sizes(case: str, total: int, n_tensors: int, seed: int) -> list[int]:
    """One tensor of `total` elements, or n_tensors log-uniform sizes summing to `total`."""
    if case == "one":
        return [total]
    rng = np.random.default_rng(seed)
    raw = np.exp(rng.uniform(np.log(1e2), np.log(1e6), size=n_tensors))
    sizes = np.maximum(1, np.floor(raw / raw.sum() * total)).astype(int)
    sizes[np.argmax(sizes)] += total - int(sizes.sum())
    return [int(s) for s in sizes]


def time_steps(opt: torch.optim.Optimizer, steps: int, device: torch.device) -> float:
    """Milliseconds per step over `steps` steps (0 steps: nothing to time)."""
    if steps <= 0:
        return 0.0
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(steps):
        opt.step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - start) * 1e3 / steps


def run_case(args: argparse.Namespace, case: str, device: torch.device) -> None:
    """Time every optimizer on one case and print the table."""
    sizes = tensor_sizes(case, args.size, args.tensors, args.seed)
    gen = torch.Generator().manual_seed(args.seed)
    # params and gradients are shared: each optimizer owns only its state
    params = [torch.randn(s, generator=gen).to(device) * 0.1 for s in sizes]
    for p in params:
        p.grad = torch.randn(p.shape, generator=gen).to(device)
    opts = {name: make(params) for name, make in optimizers(not args.no_fused).items()}
    first_step_ms = {}
    for name, opt in opts.items():  # first step: state allocation, compilation
        first_step_ms[name] = time_steps(opt, 1, device)
        time_steps(opt, args.warmup, device)
    results: dict[str, list[float]] = {name: [] for name in opts}
    order = list(opts)
    rng = random.Random(args.seed)
    for _ in range(args.rounds):
        rng.shuffle(order)
        for name in order:
            results[name].append(time_steps(opts[name], args.steps, device))
    median = {name: statistics.median(v) for name, v in results.items()}
    fused_adam, foreach_adam = median["torch Adam fused"], median["torch Adam foreach"]
    label = "one tensor" if case == "one" else f"{len(sizes)} tensors"
    print(f"\n## ({'a' if case == 'one' else 'b'}) {label}, {sum(sizes):,} float32 elements")
    print("| optimizer | ms/step (median) | min | × fused Adam | × foreach Adam | first step ms |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for name in opts:
        print(
            f"| {name} | {median[name]:.1f} | {min(results[name]):.1f} | "
            f"{median[name] / fused_adam:.2f} | {median[name] / foreach_adam:.2f} | "
            f"{first_step_ms[name]:.0f} |"
        )
    eager = min(median["AdaMod single (default)"], median["AdaMod foreach"])
    default = median["AdaMod single (default)"]
    fastest = min(v for k, v in median.items() if k.startswith("AdaMod"))
    print(
        f"\nAdaMod fastest path / fused Adam = {fastest / fused_adam:.2f} (target <= 1.4); "
        f"default eager path / foreach Adam = {default / foreach_adam:.2f}"
        f" (target <= 1.3); best eager / foreach Adam = {eager / foreach_adam:.2f}"
    )


def main() -> None:
    """Parse options, describe the machine, run both cases."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", type=int, default=10_000_000, help="total elements per case")
    parser.add_argument("--tensors", type=int, default=200, help="tensors in case (b)")
    parser.add_argument("--rounds", type=int, default=7, help="interleaved rounds (median)")
    parser.add_argument("--steps", type=int, default=3, help="steps timed per optimizer per round")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps after the first")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--no-fused", action="store_true", help="skip the compiled paths")
    parser.add_argument("--case", choices=["one", "many", "both"], default="both")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    load = os.getloadavg() if hasattr(os, "getloadavg") else ("?",)
    print(
        f"torch {torch.__version__}, {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} CPUs, {torch.get_num_threads()} torch threads, device {device}, "
        f"load average {load[0]:.2f} at start"
        if load[0] != "?"
        else ""
    )
    cases = ["one", "many"] if args.case == "both" else [args.case]
    for case in cases:
        run_case(args, case, device)


if __name__ == "__main__":
    main()

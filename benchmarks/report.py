"""Benchmark: report v2 of 5,000 synthetic trials, against grouping them (baseline).

Run: .venv/bin/python benchmarks/report.py [--records 5000] [--repeats 7]
Prints the median wall time of build_report, of its HTML page (with the figures the service
caches, and with all four drawn in the same call) and of the baseline, all measured in this
run. Targets (issue 7): the report ≤ 300 ms, the HTML page ≤ 1 s.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from studies.analysis.synthetic import synthetic_records
from studies.report import build_report


def records_for(n: int) -> list:
    """About n records: 5 optimizers, 3 β3 for the bounded ones, 2 warmups, 25 lrs, k seeds."""
    configs = (3 + 2 * 3) * 2 * 25  # (adam, adamw, sgd) + (adamod, diffmod) × 3 β3; × warmups × lrs
    seeds = max(1, round(n / configs))
    return synthetic_records(
        optimizers=("adam", "adamw", "adamod", "diffmod", "sgd"),
        lrs=list(np.geomspace(1e-5, 1.0, 25)),
        seeds=seeds,
    )


def group(records: list) -> dict:
    """Baseline: only group the records by configuration and lr, as any analysis must."""
    out: dict = {}
    for r in records:
        out.setdefault((r.optimizer, r.beta3, r.warmup_steps), {}).setdefault(r.lr, []).append(
            r.capped_loss
        )
    return out


def median_time(fn: Callable[[], object], repeats: int) -> float:
    """Median wall time of fn over `repeats` runs (after one warm-up run)."""
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    """Time both and print the numbers."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=5000)
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    records = records_for(args.records)
    baseline = median_time(lambda: group(records), args.repeats)
    from studies.html import render_html

    report = median_time(lambda: build_report(records), args.repeats)
    r = build_report(records)
    from studies.plots import PLOT_NAMES, render_plot

    cold = median_time(lambda: render_html(r, "benchmark"), max(1, args.repeats // 2))
    figures = {name: render_plot(r, name) for name in PLOT_NAMES}
    page = median_time(lambda: render_html(r, "benchmark", figures=figures), args.repeats)
    print(f"records: {len(records)} ({len(r.configs)} configurations, {len(r.comparisons)} "
          f"comparisons, 10,000 bootstrap resamples each)")  # fmt: skip
    print(f"baseline (group records by configuration and lr): {baseline * 1e3:8.1f} ms")
    print(f"build_report:                                     {report * 1e3:8.1f} ms")
    print(f"render_html (figures cached, as the service does): {page * 1e3:7.1f} ms")
    print(f"render_html (all four figures drawn too):         {cold * 1e3:8.1f} ms")
    print(f"ratio build_report / baseline: {report / baseline:.1f}x")
    print(f"target report <= 300 ms -> {'OK' if report <= 0.3 else 'SLOW'} ({report:.3f} s)")
    print(f"target page <= 1 s -> {'OK' if page <= 1.0 else 'SLOW'} ({page:.3f} s)")


if __name__ == "__main__":
    main()

"""Synthetic trial records with a known shape, for benchmarks, demos and figure checks."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from studies.records import TrialRecord

__all__ = ["synthetic_records"]

# How wide (in decades of lr) each optimizer's good basin is, and where it sits: Adam is made
# lr-sensitive and AdaMod / DiffMod less so, as the paper claims, so that figures have something
# to show. Numbers are invented; nothing is measured here.
# (log10 of the optimal lr, basin width in decades, log10 of the lr above which most seeds diverge)
_PROFILE = {
    "adam": (-3.0, 0.5, -1.2),
    "adamw": (-3.0, 0.55, -1.1),
    "adamod": (-2.7, 1.2, 0.5),
    "diffmod": (-2.7, 1.1, 0.5),
    "radam": (-3.0, 0.7, -0.9),
    "nadamw": (-3.0, 0.55, -1.1),
    "sgd": (-1.0, 0.7, 0.3),
}
#: Evaluation points of each synthetic curve (a trial evaluates every 100 steps).
_EVALS = 10


def _curve(loss0: float, final: float, steps: int) -> tuple[tuple[int, ...], tuple[float, ...]]:
    """A validation curve falling geometrically from loss0 to `final` over `steps` evaluations."""
    ts = np.arange(1, steps + 1) / _EVALS
    losses = final + (loss0 - final) * np.exp(-4.0 * ts)
    return tuple(int(100 * k) for k in range(1, steps + 1)), tuple(float(x) for x in losses)


def synthetic_records(
    *,
    optimizers: Sequence[str] = ("adam", "adamod"),
    lrs: Sequence[float] | None = None,
    beta3s: Sequence[float] = (0.99, 0.999, 0.9999),
    warmups: Sequence[int] = (0, 500),
    seeds: int = 3,
    loss0: float = 2.3,
    floor: float = 0.3,
    rng_seed: int = 0,
) -> list[TrialRecord]:
    """A full grid of records: a U-shaped capped-loss curve in log lr per optimizer, plus noise.

    Warmup widens each basin by 0.3 decades and moves the divergence point up by 0.5 decades;
    a larger β3 widens AdaMod's basin a little. Above the divergence lr most seeds diverge. Each
    record has a validation curve of 10 evaluations and a test loss near its final loss.
    """
    rng = np.random.default_rng(rng_seed)
    grid = list(lrs) if lrs is not None else list(np.geomspace(1e-5, 1.0, 11))
    out: list[TrialRecord] = []
    for opt in optimizers:
        center, width, blowup = _PROFILE.get(opt, (-3.0, 0.5, -1.0))
        for beta3 in beta3s if opt in ("adamod", "diffmod") else [None]:
            for warmup in warmups:
                w = width + (0.3 if warmup else 0.0)
                if beta3 is not None:
                    w += 0.15 * (-math.log10(1.0 - beta3) - 3.0)
                b = blowup + (0.5 if warmup else 0.0)
                for lr in grid:
                    x = math.log10(lr)
                    mean = floor + (loss0 - floor) * (
                        1.0 - math.exp(-(((x - center) / w) ** 2) / 2)
                    )
                    for s in range(seeds):
                        s0 = loss0 + 0.02 * rng.standard_normal()
                        if x > b and rng.random() < 0.8:
                            steps, losses = _curve(s0, s0, int(rng.integers(0, 4)))
                            out.append(
                                TrialRecord(
                                    opt,
                                    float(lr),
                                    beta3,
                                    warmup,
                                    s,
                                    "diverged",
                                    None,
                                    float(s0),
                                    curve_steps=steps,
                                    curve_losses=losses,
                                )
                            )
                            continue
                        loss = float(mean * (1.0 + 0.05 * rng.standard_normal()))
                        steps, losses = _curve(s0, loss, _EVALS)
                        out.append(
                            TrialRecord(
                                opt,
                                float(lr),
                                beta3,
                                warmup,
                                s,
                                "completed",
                                loss,
                                float(s0),
                                test_loss=loss * (1.0 + 0.02 * rng.standard_normal()),
                                curve_steps=steps,
                                curve_losses=losses,
                            )
                        )
    return out

"""Randomized synthetic studies (lists of TrialRecord) for the v2 report cross-check.

A study is drawn from a `random.Random(seed)`: optimizers (adam, adamw, adamod with 1–3 β3
values, diffmod, radam, sgd), an uneven log-spaced lr grid, a seed count with non-contiguous seed
ids, warmups {0} or {0, k}, schedules, and per-cell outcomes: completed (sometimes above loss0, so
capped), diverged (partial curve, loss None / nan / inf), failed, cancelled (sometimes with a final
loss that must not be used), queued, running or absent. Some challenger cells copy the reference's
loss exactly (ties), some configurations diverge everywhere (nothing learned), and `dyadic=True`
rounds every loss to a multiple of 1/256 so that medians, minima and ties are exact in any order;
`lr_jitter=True` perturbs every record's lr by a few 1e-15 (still one lr after 12-digit rounding);
`curve_nan=True` makes some curves start with a nan point (a stored evaluation without a loss);
`include_reference=False` leaves the reference optimizer out (no target, no comparison).

loss0 depends on the seed only (same initialization for every optimizer), as in the real workloads.
"""

from __future__ import annotations

import dataclasses
import math
import random
from dataclasses import dataclass, field
from typing import Any

from studies.records import TrialRecord

__all__ = ["Study", "make_study", "rec"]

EVAL_EVERY = 50
N_EVALS = 8


@dataclass
class Study:
    """A synthetic study: its records, the spec dict given to build_report, and what it holds."""

    records: list[TrialRecord]
    spec: dict[str, Any] | None
    seeds: list[int]
    lrs: list[float]
    info: dict[str, Any] = field(default_factory=dict)


def rec(
    optimizer: str,
    lr: float,
    seed: int,
    loss: float | None,
    *,
    loss0: float = 2.0,
    state: str = "completed",
    beta3: float | None = None,
    warmup: int = 0,
    schedule: str = "constant",
    curve: tuple[tuple[int, float], ...] = (),
    test_loss: float | None = None,
    trial_id: int | None = None,
    error: str | None = None,
    bound_release_step: float | None = None,
) -> TrialRecord:
    """One record, built with the dataclass constructor directly."""
    if beta3 is None and optimizer in ("adamod", "diffmod"):
        beta3 = 0.999
    return TrialRecord(
        optimizer=optimizer,
        lr=lr,
        beta3=beta3,
        warmup_steps=warmup,
        seed=seed,
        state=state,
        loss=loss,
        loss0=loss0,
        schedule=schedule,
        test_loss=test_loss,
        curve_steps=tuple(s for s, _ in curve),
        curve_losses=tuple(x for _, x in curve),
        trial_id=trial_id,
        error=error,
        bound_release_step=bound_release_step,
    )


def _q(x: float, dyadic: bool) -> float:
    return round(x * 256) / 256 if dyadic else x


def _curve(rnd: random.Random, loss0: float, final: float, n: int, dyadic: bool):
    """n evaluation points going from near loss0 to `final` (the last point is `final`)."""
    pts = []
    for i in range(1, n + 1):
        frac = i / n
        value = loss0 + (final - loss0) * (1 - (1 - frac) ** 2)
        if i < n:
            value += rnd.uniform(-0.02, 0.05) * abs(loss0 - final)
        pts.append((i * EVAL_EVERY, final if i == n else _q(value, dyadic)))
    return tuple(pts)


def make_study(
    seed: int,
    *,
    optimizers: list[str] | None = None,
    n_seeds: int | None = None,
    n_lrs: int | None = None,
    warmups: list[int] | None = None,
    schedules: list[str] | None = None,
    dyadic: bool | None = None,
    p_missing: float | None = None,
    p_tie: float | None = None,
    all_diverged: bool | None = None,
    non_result_states: tuple[str, ...] = ("failed", "cancelled", "absent"),
    weight_decay: float | None = None,
    reference: str | None = None,
    target_loss: float | None = None,
    test_split: bool | None = None,
    telemetry: bool | None = None,
    lr_jitter: bool = False,
    curve_nan: bool = False,
    include_reference: bool = True,
) -> Study:
    """A random study; every argument left None is drawn from `seed`."""
    rnd = random.Random(seed)
    if optimizers is None:
        optimizers = ["adam"]
        optimizers += [
            o for o in ("adamw", "adamod", "sgd", "diffmod", "radam") if rnd.random() < 0.5
        ]
        if "adamod" not in optimizers and rnd.random() < 0.7:
            optimizers.append("adamod")
    if n_seeds is None:
        n_seeds = rnd.choice([2, 7, 7, 3, 5, 6])
    if n_lrs is None:
        n_lrs = rnd.randint(2, 8)
    if warmups is None:
        warmups = [0] if rnd.random() < 0.5 else [0, rnd.choice([10, 100, 250])]
    if schedules is None:
        schedules = ["constant"] if rnd.random() < 0.75 else ["constant", "cosine"]
    dyadic = rnd.random() < 0.3 if dyadic is None else dyadic
    p_missing = rnd.choice([0.0, 0.05, 0.15]) if p_missing is None else p_missing
    p_tie = rnd.choice([0.0, 0.2, 0.5]) if p_tie is None else p_tie
    all_diverged = rnd.random() < 0.25 if all_diverged is None else all_diverged
    test_split = rnd.random() < 0.5 if test_split is None else test_split
    telemetry = rnd.random() < 0.7 if telemetry is None else telemetry

    seeds = sorted(rnd.sample(range(50), n_seeds))
    xs = sorted(rnd.sample(range(-500, 1), n_lrs))  # log10 lr in hundredths of a decade
    lrs = [float(f"{10.0 ** (x / 100):.6g}") for x in xs]  # far from a 12-digit rounding edge
    loss0 = {s: 2.0 + rnd.randint(0, 16) / 16 for s in seeds}

    spec: dict[str, Any] = {}
    if weight_decay is not None:
        spec["weight_decay"] = weight_decay
    if reference is not None:
        spec["reference"] = reference
    if target_loss is not None:
        spec["target_loss"] = target_loss
    ref_opt = reference or ("adamw" if (weight_decay or 0) > 0 else "adam")
    if ref_opt not in optimizers and include_reference:
        optimizers = [ref_opt, *optimizers]
    if not include_reference:
        optimizers = [o for o in optimizers if o != ref_opt] or ["adamod"]

    keys = []
    for opt in optimizers:
        if opt in ("adamod", "diffmod"):
            beta3s = sorted(rnd.sample([0.9, 0.99, 0.999, 0.9999], rnd.randint(1, 3)))
        else:
            beta3s = [None]
        for b3 in beta3s:
            for w in warmups:
                for sched in schedules:
                    keys.append((opt, b3, w, sched))
    keys.sort(key=lambda k: k[0] != ref_opt)  # the reference first: challengers may copy it
    dead = {rnd.choice(keys[1:])} if all_diverged and len(keys) > 1 else set()

    records: list[TrialRecord] = []
    ref_losses: dict[tuple[int, str, float, int], float] = {}
    next_id = iter(range(1, 10**6))
    for key in keys:
        opt, b3, w, sched = key
        x_best = rnd.uniform(xs[0] / 100 - 0.5, xs[-1] / 100 + 0.5)
        width = rnd.uniform(0.4, 2.5)
        floor = rnd.uniform(0.2, 1.2)
        x_diverge = x_best + rnd.uniform(0.3, 2.0)
        anchor = (rnd.choice(lrs), rnd.choice(seeds))  # never missing: every config has a result
        for lr, x in zip(lrs, xs, strict=True):
            for s in seeds:
                l0 = loss0[s]
                tid = next(next_id)
                bounded = opt in ("adamod", "diffmod")
                release = rnd.uniform(10, 900) if telemetry and bounded else None
                # Not a result: failed / cancelled / queued / running / absent.
                if (lr, s) != anchor and rnd.random() < p_missing:
                    state = rnd.choice(non_result_states)
                    if state == "absent":
                        continue
                    loss = _q(rnd.uniform(floor, l0), dyadic) if state == "cancelled" else None
                    records.append(
                        rec(opt, lr, s, loss, loss0=l0, state=state, beta3=b3, warmup=w,
                            schedule=sched, trial_id=tid,
                            error="RuntimeError: CUDA out of memory" if state == "failed" else None)
                    )  # fmt: skip
                    continue
                u = (x / 100 - x_best) / width
                diverge = key in dead or (x / 100 > x_diverge and rnd.random() < 0.6)
                if diverge:
                    n_pts = rnd.randint(0, 3)
                    curve = _curve(rnd, l0, _q(l0 * rnd.uniform(0.6, 0.95), dyadic), n_pts, dyadic)
                    loss = rnd.choice([None, math.nan, math.inf])
                    records.append(
                        rec(opt, lr, s, loss, loss0=l0, state="diverged", beta3=b3, warmup=w,
                            schedule=sched, curve=curve, trial_id=tid, bound_release_step=release)
                    )  # fmt: skip
                    continue
                final = floor + (l0 - floor) * min(1.2, u * u) + rnd.gauss(0, 0.05)
                if rnd.random() < 0.05:
                    final = l0 * rnd.uniform(1.0, 1.3)  # ended above loss0: capped
                final = _q(max(0.05, final), dyadic)
                tie_key = (s, sched, lr, w)
                if opt != ref_opt and tie_key in ref_losses and rnd.random() < p_tie:
                    final = ref_losses[tie_key]  # exactly the reference's loss: a tie
                if opt == ref_opt:
                    ref_losses[tie_key] = final
                test = _q(final + rnd.uniform(-0.05, 0.1), dyadic) if test_split else None
                records.append(
                    rec(opt, lr, s, final, loss0=l0, beta3=b3, warmup=w, schedule=sched,
                        curve=_curve(rnd, l0, final, rnd.randint(1, N_EVALS), dyadic),
                        test_loss=test, trial_id=tid, bound_release_step=release)
                )  # fmt: skip
        if opt not in ("adamod", "diffmod") and records[-1].optimizer == opt and rnd.random() < 0.3:
            # A β3 on an unbounded optimizer's records is ignored (its configuration has None).
            records[-1] = dataclasses.replace(records[-1], beta3=0.9)
    if curve_nan:
        # A stored evaluation without a validation loss reads as nan (TrialRecord.from_params).
        records = [
            dataclasses.replace(r, curve_losses=(math.nan, *r.curve_losses[1:]))
            if r.curve_losses and rnd.random() < 0.3 else r
            for r in records
        ]  # fmt: skip
    if lr_jitter:
        # The same lr written differently by each trial (1e-15 relative): still the same lr.
        records = [
            dataclasses.replace(r, lr=r.lr * (1 + rnd.randint(-5, 5) * 1e-15)) for r in records
        ]
    rnd.shuffle(records)
    return Study(
        records=records,
        spec=spec or None,
        seeds=seeds,
        lrs=lrs,
        info={
            "optimizers": optimizers,
            "reference": ref_opt,
            "dead": sorted(dead, key=repr),
            "dyadic": dyadic,
            "warmups": warmups,
            "schedules": schedules,
        },
    )

"""An independent float64 re-implementation of report v2, written from docs/REPORT.md only.

Nothing here imports or calls the code under test (`studies.report`, `studies.analysis`): records
are read by attribute (duck-typed `TrialRecord`s), and every quantity is computed with plain loops
over Python floats (`math.fsum` for sums, `itertools.product` for the exact sign-flip enumeration,
`math.comb` for the budget binomials, `scipy.stats.t` for the t quantile). numpy is used only where
REPORT.md prescribes numpy itself: the bootstrap indices (`default_rng(seed).integers`).

`reference_report(records, ...)` returns plain dicts keyed by configuration keys
`(optimizer, beta3, warmup_steps, schedule)` rather than by label, so that the tests can match
the report's entries without trusting its labels.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
from scipy import stats as sps

__all__ = [
    "ADAM_FAMILY",
    "BOUNDED",
    "Key",
    "budget_ks_exact",
    "capped",
    "expected_best",
    "expected_best_bruteforce",
    "good_interval",
    "holm",
    "is_result",
    "lr_key",
    "quantile",
    "reference_report",
    "sign_flip_p",
    "sign_flip_p_exact",
]

ADAM_FAMILY = ("adam", "adamw", "adamod", "diffmod", "radam", "nadamw")
BOUNDED = ("adamod", "diffmod")
STATES = ("completed", "diverged", "failed", "cancelled", "queued", "running")
Key = tuple[str, float | None, int, str]  # (optimizer, beta3, warmup_steps, schedule)

INF = math.inf
GOOD_BAND = 0.1
KNIFE = 1e-9  # |g - 0.1| or |h| below this: the two implementations may round either way


# ----------------------------------------------------------------------------- small helpers


def lr_key(lr: float) -> float:
    """The lr as matched: rounded to 12 significant digits."""
    return float(f"{float(lr):.12g}")


def _finite(x: Any) -> bool:
    return isinstance(x, int | float) and not isinstance(x, bool) and math.isfinite(x)


def capped(rec: Any) -> float | None:
    """L = min(loss, loss0); loss0 when diverged; None when the record is not a result."""
    if rec.state not in ("completed", "diverged") or not _finite(rec.loss0):
        return None
    if rec.state == "diverged":
        return float(rec.loss0)
    if not _finite(rec.loss):
        return None  # REPORT.md leaves a completed trial without a finite loss open
    return min(float(rec.loss), float(rec.loss0))


def is_result(rec: Any) -> bool:
    """A completed or diverged record with a finite capped loss."""
    return capped(rec) is not None


def config_key(rec: Any) -> Key:
    """(optimizer, β3, warmup, schedule); β3 is None except for the bounded optimizers."""
    beta3 = None
    if rec.optimizer in BOUNDED and rec.beta3 is not None:
        beta3 = float(rec.beta3)
    return (rec.optimizer, beta3, int(rec.warmup_steps), rec.schedule or "constant")


def quantile(values: Iterable[float], q: float) -> float:
    """numpy's default (linear) quantile, written out; +inf-aware (an inf neighbour gives inf)."""
    xs = sorted(values)
    n = len(xs)
    if n == 0:
        raise ValueError("quantile of nothing")
    h = (n - 1) * q
    lo = math.floor(h)
    frac = h - lo
    if frac == 0.0 or lo + 1 >= n:
        return xs[lo]
    a, b = xs[lo], xs[lo + 1]
    if math.isinf(a) or math.isinf(b):
        return INF
    return a + frac * (b - a)


def median(values: Iterable[float]) -> float:
    return quantile(values, 0.5)


def mean(values: Sequence[float]) -> float:
    return math.fsum(values) / len(values)


def _or_none(x: float) -> float | None:
    return x if math.isfinite(x) else None


# ----------------------------------------------------------------------------- statistics


def sign_flip_p_exact(d: Sequence[float]) -> float:
    """Share of all 2^n sign vectors (identity included) with |mean(ε·d)| ≥ |mean(d)| − tol."""
    n = len(d)
    observed = abs(math.fsum(d) / n)
    threshold = observed - 1e-12 * max(1.0, observed)
    hits = 0
    for signs in itertools.product((1.0, -1.0), repeat=n):
        m = abs(math.fsum(s * x for s, x in zip(signs, d, strict=True)) / n)
        if m >= threshold:
            hits += 1
    return hits / 2**n


def sign_flip_p(d: Sequence[float]) -> float | None:
    """The p of REPORT.md for n ≤ 16 (exact); None for n = 0; 1 when every d is 0.

    For n > 16 the report draws 100,000 random sign vectors in a way REPORT.md does not pin
    down, so this returns the exact p (to be compared within Monte Carlo error).
    """
    if not d:
        return None
    if all(x == 0 for x in d):
        return 1.0
    return sign_flip_p_exact(d)


def holm(ps: Sequence[float]) -> list[float]:
    """Holm's step-down adjustment: p̃_(i) = max_{j ≤ i} min(1, (m − j + 1)·p_(j))."""
    m = len(ps)
    order = sorted(range(m), key=lambda i: ps[i])
    out = [0.0] * m
    running = 0.0
    for rank, i in enumerate(order, start=1):
        running = max(running, min(1.0, (m - rank + 1) * ps[i]))
        out[i] = running
    return out


def _t_interval(d: Sequence[float]) -> dict[str, float] | None:
    n = len(d)
    if n < 5:
        return None
    m = mean(d)
    sd = math.sqrt(math.fsum((x - m) ** 2 for x in d) / (n - 1))
    half = float(sps.t.ppf(0.975, n - 1)) * sd / math.sqrt(n)
    return {"low": m - half, "high": m + half, "level": 0.95}


def _bootstrap_interval(d: Sequence[float], n_bootstrap: int, seed: int) -> dict[str, float] | None:
    n = len(d)
    if n < 5:
        return None
    idx = np.random.default_rng(seed).integers(0, n, (n_bootstrap, n))
    arr = np.asarray(d, dtype=np.float64)
    means = [math.fsum(row) / n for row in arr[idx].tolist()]
    return {"low": quantile(means, 0.025), "high": quantile(means, 0.975), "level": 0.95}


def paired_stats(d: Sequence[float], *, n_bootstrap: int, seed: int) -> dict[str, Any]:
    """mean_d, share_better, p, min_possible_p, underpowered, seeds_needed, ci_t, ci_bootstrap."""
    n = len(d)
    min_p = 2.0 / 2**n if n else 1.0
    under = min_p > 0.05
    return {
        "n_seeds": n,
        "mean_d": mean(d) if n else None,
        "share_better": sum(1 for x in d if x < 0) / n if n else None,
        "p": sign_flip_p(d),
        "p_is_monte_carlo": n > 16,
        "min_possible_p": min_p,
        "underpowered": under,
        "seeds_needed": 6 if under else None,
        "ci_t": _t_interval(d),
        "ci_bootstrap": _bootstrap_interval(d, n_bootstrap, seed),
    }


def expected_best(values: Sequence[float], k: int) -> float:
    """Σ_i L_(i)·C(N−i, k−1)/C(N, k), L ascending (Tang et al. 2020)."""
    xs = sorted(values)
    n = len(xs)
    total = math.comb(n, k)
    return math.fsum(x * (math.comb(n - i, k - 1) / total) for i, x in enumerate(xs, start=1))


def expected_best_bruteforce(values: Sequence[float], k: int) -> float:
    """The mean over all k-subsets of the minimum (for small N only)."""
    mins = [min(sub) for sub in itertools.combinations(values, k)]
    return math.fsum(mins) / len(mins)


def budget_ks_exact(n: int) -> list[int] | None:
    """k = 1 … N when N ≤ 256; None (REPORT.md: about 100 log-spaced integers) otherwise."""
    return list(range(1, n + 1)) if n <= 256 else None


def good_interval(
    xs: Sequence[float], g: Sequence[float], b: int, band: float
) -> tuple[float, float, bool, bool, bool]:
    """The walk of REPORT.md from index b over g (inside: g ≤ band), interpolating in x.

    Returns (left, right, open_low, open_high, knife_edge); knife_edge is True when some g that
    the walk compares is within KNIFE of the band (either rounding is then acceptable).
    """
    knife = False
    n = len(xs)
    right, open_high = xs[-1], True
    j = b + 1
    while j < n:
        knife = knife or abs(g[j] - band) < KNIFE
        if g[j] > band:
            frac = (band - g[j - 1]) / (g[j] - g[j - 1])
            right, open_high = xs[j - 1] + frac * (xs[j] - xs[j - 1]), False
            break
        j += 1
    left, open_low = xs[0], True
    j = b - 1
    while j >= 0:
        knife = knife or abs(g[j] - band) < KNIFE
        if g[j] > band:
            frac = (band - g[j + 1]) / (g[j] - g[j + 1])
            left, open_low = xs[j + 1] - frac * (xs[j + 1] - xs[j]), False
            break
        j -= 1
    return left, right, open_low, open_high, knife


def _steps_to(rec: Any, target: float) -> float:
    """First stored evaluation step with a finite validation loss ≤ target; +inf when never."""
    for step, loss in zip(rec.curve_steps, rec.curve_losses, strict=False):
        if _finite(loss) and loss <= target:
            return float(step)
    return INF


def _lowest_on_curve(rec: Any) -> float:
    """The lowest finite validation loss on the stored curve; loss0 for an empty curve."""
    finite = [float(x) for x in rec.curve_losses if _finite(x)]
    return min(finite) if finite else float(rec.loss0)


# ----------------------------------------------------------------------------- the report


def _derive_status(counts: dict[str, int]) -> str:
    if counts["queued"] + counts["running"] > 0:
        return "running"
    if counts["cancelled"] > 0:
        return "cancelled"
    if counts["failed"] > 0 and counts["completed"] + counts["diverged"] == 0:
        return "failed"
    return "completed"


def _config(key: Key, recs: list[Any]) -> dict[str, Any]:
    """Everything of one configuration that does not depend on the target."""
    results = [r for r in recs if is_result(r)]
    by_lr: dict[float, list[Any]] = {}
    for r in results:
        by_lr.setdefault(lr_key(r.lr), []).append(r)
    failed_by_lr: dict[float, int] = {}
    for r in recs:
        if r.state == "failed":
            failed_by_lr[lr_key(r.lr)] = failed_by_lr.get(lr_key(r.lr), 0) + 1
    curve = []
    for lr in sorted(by_lr):
        cell = sorted(by_lr[lr], key=lambda r: r.seed)
        ls = [capped(r) for r in cell]
        raw = [INF if r.state == "diverged" else float(r.loss) for r in cell]
        curve.append(
            {
                "lr": lr,
                "records": cell,
                "values": ls,
                "seed_values": [
                    {"seed": r.seed, "loss": capped(r), "diverged": r.state == "diverged"}
                    for r in cell
                ],
                "median": median(ls),
                "p25": quantile(ls, 0.25),
                "p75": quantile(ls, 0.75),
                "n_seeds": len(cell),
                "n_diverged": sum(1 for r in cell if r.state == "diverged"),
                "n_failed": failed_by_lr.get(lr, 0),
                "uncapped_median": _or_none(median(raw)),
            }
        )
    best = 0
    for i, point in enumerate(curve):
        if point["median"] < curve[best]["median"]:  # strict: ties keep the smaller lr
            best = i
    best_loss = curve[best]["median"]
    best_lr = curve[best]["lr"]
    tests = [float(r.test_loss) for r in curve[best]["records"] if _finite(r.test_loss)]
    loss0 = median([float(r.loss0) for r in results])
    sens = mean([p["median"] - best_loss for p in curve])
    span = loss0 - best_loss
    out: dict[str, Any] = {
        "key": key,
        "optimizer": key[0],
        "beta3": key[1],
        "warmup_steps": key[2],
        "schedule": key[3],
        "curve": curve,
        "best_index": best,
        "best_loss": best_loss,
        "best_lr": best_lr,
        "test_loss_at_best": median(tests) if tests else None,
        "loss0": loss0,
        "lr_sensitivity": sens,
        "lr_sensitivity_norm": None if span <= 0 else min(1.0, max(0.0, sens / span)),
        "divergence_rate": sum(1 for r in results if r.state == "diverged") / len(results),
        "seed_spread": median([p["p75"] - p["p25"] for p in curve]),
        "n_trials": len(results),
        "n_diverged": sum(1 for r in results if r.state == "diverged"),
        "n_failed": sum(1 for r in recs if r.state == "failed"),
        "good_knife_edge": False,
    }
    xs = [math.log10(p["lr"]) for p in curve]
    out["grid_spacing_decades"] = (
        max(xs[i + 1] - xs[i] for i in range(len(xs) - 1)) if len(xs) > 1 else None
    )
    if span <= 0:
        out.update(good_lr_decades=None, good_lr_range=None, good_lr_open=None)
    else:
        g = [(p["median"] - best_loss) / span for p in curve]
        left, right, open_low, open_high, knife = good_interval(xs, g, best, GOOD_BAND)
        out.update(
            good_lr_decades=right - left,
            good_lr_range=[10.0**left, 10.0**right],
            good_lr_open={"low": open_low, "high": open_high},
            good_knife_edge=knife,
        )
    if key[0] in BOUNDED:
        steps = [float(r.bound_release_step) for r in results if _finite(r.bound_release_step)]
        out["implicit_warmup_steps"] = median(steps) if steps else None
    else:
        out["implicit_warmup_steps"] = None
    return out


def _with_target(cfg: dict[str, Any], target: float | None) -> None:
    """Steps to target per seed and per lr, and target_lr_decades."""
    cfg["target_knife_edge"] = False
    for point in cfg["curve"]:
        if target is None:
            point["steps_to_target"] = None
            for sv in point["seed_values"]:
                sv["steps_to_target"] = None
            continue
        steps = [_steps_to(r, target) for r in point["records"]]
        for sv, s in zip(point["seed_values"], steps, strict=True):
            sv["steps_to_target"] = None if math.isinf(s) else int(s)
        point["steps_to_target"] = _or_none(median(steps))
        cfg["target_knife_edge"] = cfg["target_knife_edge"] or any(
            _finite(x) and abs(x - target) < KNIFE for r in point["records"] for x in r.curve_losses
        )
    if target is None:
        cfg["target_lr_decades"] = None
        cfg["target_lr_range"] = None
        return
    xs = [math.log10(p["lr"]) for p in cfg["curve"]]
    h = [median([_lowest_on_curve(r) for r in p["records"]]) - target for p in cfg["curve"]]
    b = cfg["best_index"]
    if abs(h[b]) < KNIFE:
        cfg["target_knife_edge"] = True
    if h[b] > 0:
        cfg["target_lr_decades"] = None
        cfg["target_lr_range"] = None
        return
    left, right, _, _, knife = good_interval(xs, h, b, 0.0)
    cfg["target_knife_edge"] = cfg["target_knife_edge"] or knife
    cfg["target_lr_decades"] = right - left
    cfg["target_lr_range"] = [10.0**left, 10.0**right]


def reference_optimizer(spec: dict[str, Any] | None) -> str:
    """The spec's reference; else adamw when weight_decay > 0; else adam."""
    spec = spec or {}
    if spec.get("reference"):
        return str(spec["reference"])
    wd = spec.get("weight_decay")
    return "adamw" if isinstance(wd, int | float) and wd > 0 else "adam"


def _cell_map(recs: list[Any]) -> dict[tuple[float, int], Any]:
    out: dict[tuple[float, int], Any] = {}
    for r in recs:
        out[(lr_key(r.lr), r.seed)] = r
    return out


def _comparison(ch: list[Any], ref: list[Any], *, n_bootstrap: int, seed: int) -> dict[str, Any]:
    """The lr-by-lr paired comparison on the common support (per_lr p_holm filled in later)."""
    cm, rm = _cell_map(ch), _cell_map(ref)
    cells = sorted(set(cm) | set(rm))
    common = [c for c in cells if c in cm and c in rm and is_result(cm[c]) and is_result(rm[c])]
    missing = [
        {
            "lr": lr,
            "seed": s,
            "challenger": cm[(lr, s)].state if (lr, s) in cm else "missing",
            "reference": rm[(lr, s)].state if (lr, s) in rm else "missing",
        }
        for (lr, s) in cells
        if (lr, s) not in common
    ]
    common_set = set(common)
    seeds_all = sorted({s for (_, s) in cells})
    per_seed, excluded, no_common = [], [], []
    for s in seeds_all:
        grid = sorted(lr for (lr, s2) in common_set if s2 == s)
        if not grid:
            no_common.append(s)
            continue
        if len(grid) < 2:
            excluded.append(s)
            continue
        sides = []
        for m in (cm, rm):
            ls = [capped(m[(lr, s)]) for lr in grid]
            best = min(ls)
            l0 = median([float(m[(lr, s)].loss0) for lr in grid])
            span = l0 - best
            if span <= 0:
                sides.append(None)
                continue
            sides.append(min(1.0, max(0.0, mean([(x - best) / span for x in ls]))))
        if sides[0] is None or sides[1] is None:
            excluded.append(s)
            continue
        per_seed.append({"seed": s, "d": sides[0] - sides[1]})
    out = paired_stats([x["d"] for x in per_seed], n_bootstrap=n_bootstrap, seed=seed)
    out.update(
        per_seed_d=per_seed,
        excluded_seeds=excluded,
        seeds_without_common_cells=no_common,
        missing_cells=missing,
        n_missing=len(missing),
    )
    per_lr = []
    for lr in sorted({lr for (lr, _) in common_set}):
        seeds = sorted(s for (lr2, s) in common_set if lr2 == lr)
        deltas, wins, ties, both_failed, losses = [], 0, 0, 0, 0
        for s in seeds:
            a, b = cm[(lr, s)], rm[(lr, s)]
            la, lb = capped(a), capped(b)
            delta = la - lb
            deltas.append(delta)
            no_progress = la == float(a.loss0) and lb == float(b.loss0)
            if (a.state == "diverged" and b.state == "diverged") or no_progress:
                both_failed += 1
            elif abs(delta) <= 1e-12 * max(1.0, abs(lb)):
                ties += 1
            elif delta < 0:
                wins += 1
            else:
                losses += 1
        per_lr.append(
            {
                "lr": lr,
                "n_seeds": len(seeds),
                "wins": wins,
                "ties": ties,
                "both_failed": both_failed,
                "losses": losses,
                "mean_delta": mean(deltas),
                "p": sign_flip_p(deltas),
                "deltas": deltas,
            }
        )
    out["per_lr"] = per_lr
    return out


def _best_vs_best(
    ch_cfg: dict[str, Any], ref_cfg: dict[str, Any], *, n_bootstrap: int, seed: int
) -> dict[str, Any]:
    ch_cell = {r.seed: r for r in ch_cfg["curve"][ch_cfg["best_index"]]["records"]}
    ref_cell = {r.seed: r for r in ref_cfg["curve"][ref_cfg["best_index"]]["records"]}
    seeds = sorted(set(ch_cell) & set(ref_cell))
    per_seed = [{"seed": s, "d": capped(ch_cell[s]) - capped(ref_cell[s])} for s in seeds]
    out = paired_stats([x["d"] for x in per_seed], n_bootstrap=n_bootstrap, seed=seed)
    tests = [
        float(ch_cell[s].test_loss) - float(ref_cell[s].test_loss)
        for s in seeds
        if _finite(ch_cell[s].test_loss) and _finite(ref_cell[s].test_loss)
    ]
    out.update(
        per_seed_d=per_seed,
        challenger_best_lr=ch_cfg["best_lr"],
        reference_best_lr=ref_cfg["best_lr"],
        mean_test_delta=mean(tests) if tests else None,
    )
    return out


def reference_report(
    records: Sequence[Any],
    *,
    spec: dict[str, Any] | None = None,
    status: str | None = None,
    n_bootstrap: int = 10_000,
    seed: int = 0,
    config_order: Sequence[Key] | None = None,
) -> dict[str, Any]:
    """Every v2 quantity of REPORT.md, keyed by configuration keys.

    `config_order` is the report's presentation order of configurations, which REPORT.md uses
    only to break ties between reference configurations with the same best_loss for the target.
    """
    spec = spec or {}
    counts = {s: 0 for s in STATES}
    for r in records:
        counts[r.state] = counts.get(r.state, 0) + 1
    counts["total"] = len(records)
    status_out = status if status is not None else _derive_status(counts)

    grouped: dict[Key, list[Any]] = {}
    for r in records:
        grouped.setdefault(config_key(r), []).append(r)
    configs = {
        k: _config(k, recs) for k, recs in grouped.items() if any(is_result(r) for r in recs)
    }

    ref_opt = reference_optimizer(spec)
    order = list(config_order) if config_order is not None else sorted(configs, key=repr)
    ref_candidates = [k for k in order if k in configs and k[0] == ref_opt]
    target: dict[str, Any]
    if _finite(spec.get("target_loss")):
        target = {"loss": float(spec["target_loss"]), "source": "spec", "config": None}
    elif ref_candidates:
        best_key = ref_candidates[0]
        for k in ref_candidates[1:]:
            if configs[k]["best_loss"] < configs[best_key]["best_loss"]:
                best_key = k
        c = configs[best_key]
        loss = c["best_loss"] + GOOD_BAND * (c["loss0"] - c["best_loss"])
        target = {"loss": loss, "source": "reference", "config": best_key}
    else:
        target = {"loss": None, "source": "none", "config": None}
    for cfg in configs.values():
        _with_target(cfg, target["loss"])

    comparisons: dict[tuple[str, Key, Key], dict[str, Any]] = {}
    best_vs_best: dict[tuple[Key, Key], dict[str, Any]] = {}
    refs = {(k[2], k[3]): k for k in configs if k[0] == ref_opt}
    for k in sorted(configs, key=repr):
        if k[0] == ref_opt:
            continue
        same = refs.get((k[2], k[3]))
        if same is not None:
            best_vs_best[(k, same)] = _best_vs_best(
                configs[k], configs[same], n_bootstrap=n_bootstrap, seed=seed
            )
        if k[0] not in ADAM_FAMILY:
            continue
        pairs = []
        if same is not None:
            pairs.append(("same_warmup", same))
        if k[0] in BOUNDED and k[2] == 0:
            for (w, sched), rk in sorted(refs.items()):
                if w > 0 and sched == k[3]:
                    pairs.append(("no_warmup_vs_warmup", rk))
        for kind, rk in pairs:
            comparisons[(kind, k, rk)] = _comparison(
                grouped[k], grouped[rk], n_bootstrap=n_bootstrap, seed=seed
            )

    slots = [(ck, i) for ck, c in comparisons.items() for i, x in enumerate(c["per_lr"])]
    slots = [(ck, i) for ck, i in slots if comparisons[ck]["per_lr"][i]["p"] is not None]
    adjusted = holm([comparisons[ck]["per_lr"][i]["p"] for ck, i in slots])
    for (ck, i), ph in zip(slots, adjusted, strict=True):
        comparisons[ck]["per_lr"][i]["p_holm"] = ph
    for c in comparisons.values():
        for x in c["per_lr"]:
            x.setdefault("p_holm", None)

    budget = {}
    for k, cfg in configs.items():
        values = [x for p in cfg["curve"] for x in p["values"]]
        budget[k] = {"values": values, "n_trials": len(values), "ks": budget_ks_exact(len(values))}

    surfaces = {}
    for k, cfg in configs.items():
        if k[0] not in BOUNDED or k[1] is None:
            continue
        surfaces.setdefault((k[0], k[2], k[3]), {})[k[1]] = {
            p["lr"]: p["median"] for p in cfg["curve"]
        }
    surface_out = {}
    for sk, rows in surfaces.items():
        beta3s = sorted(rows)
        lrs = sorted({lr for row in rows.values() for lr in row})
        grid = [[rows[b].get(lr) for lr in lrs] for b in beta3s]
        best = None
        for bi, b in enumerate(beta3s):
            for li, lr in enumerate(lrs):
                v = grid[bi][li]
                if v is not None and (best is None or v < best[0]):
                    best = (v, b, lr)
        assert best is not None
        surface_out[sk] = {
            "beta3s": beta3s,
            "lrs": lrs,
            "median_loss": grid,
            "best_loss": best[0],
            "best_beta3": best[1],
            "best_lr": best[2],
        }

    warmup = {}
    for k in configs:
        warmup.setdefault((k[0], k[1], k[3]), []).append(k)
    warmup = {wk: sorted(ks, key=lambda k: k[2]) for wk, ks in warmup.items() if len(ks) > 1}

    return {
        "status": status_out,
        "complete": status_out == "completed",
        "counts": counts,
        "failures": [
            {"trial_id": r.trial_id, "error": r.error} for r in records if r.state == "failed"
        ],
        "n_records": len(records),
        "n_used": sum(1 for r in records if is_result(r)),
        "test_split": any(_finite(r.test_loss) for r in records if is_result(r)),
        "reference": ref_opt,
        "target": target,
        "target_candidates": [
            k
            for k in ref_candidates
            if configs[k]["best_loss"] == min(configs[c]["best_loss"] for c in ref_candidates)
        ],
        "configs": configs,
        "comparisons": comparisons,
        "best_vs_best": best_vs_best,
        "budget": budget,
        "surfaces": surface_out,
        "warmup": warmup,
    }

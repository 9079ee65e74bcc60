"""Group trial records into per-configuration (lr × seed) matrices of capped loss."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = [
    "BOUNDED",
    "USED_STATES",
    "ConfigKey",
    "ConfigTable",
    "align_seeds",
    "group_records",
    "optimizer_rank",
]

# Mirrors studies.spec.OPTIMIZERS / BOUNDED_OPTIMIZERS; repeated here so that the analysis does not
# import spec (which pulls in torch through the workload registry).
_ORDER = ("adam", "adamw", "adamod", "diffmod", "sgd")
BOUNDED = ("adamod", "diffmod")
USED_STATES = ("completed", "diverged")
_FIELDS = ("optimizer", "lr", "beta3", "warmup_steps", "seed", "state", "loss", "loss0")


def optimizer_rank(name: str) -> tuple[int, str]:
    """Sort key: the project's optimizer order first, unknown names after, alphabetically."""
    return (_ORDER.index(name) if name in _ORDER else len(_ORDER), name)


@dataclass(frozen=True, order=True)
class ConfigKey:
    """One configuration: (optimizer, β3, warmup). β3 is None for optimizers that do not take it."""

    optimizer: str
    beta3: float | None
    warmup_steps: int

    def sort_key(self) -> tuple[Any, ...]:
        """Order of presentation: optimizer, then β3 (None first), then warmup."""
        b = -1.0 if self.beta3 is None else self.beta3
        return (optimizer_rank(self.optimizer), b, self.warmup_steps)


@dataclass(frozen=True)
class ConfigTable:
    """Capped losses of one configuration: rows are lrs (ascending), columns are seeds."""

    key: ConfigKey
    lrs: np.ndarray  # (n_lr,)
    seeds: np.ndarray  # (n_seeds,) ascending
    values: np.ndarray  # (n_lr, n_seeds) capped loss, mean of duplicates, NaN where missing
    n_diverged: np.ndarray  # (n_lr,) diverged records per lr
    n_trials: int
    loss0: float | None  # median loss0 over this configuration's records


def _lr_key(lr: float) -> float:
    """lr rounded to 12 significant digits, so grid values that went through text still match."""
    return float(f"{lr:.12g}")


def group_records(records: Iterable[Any]) -> tuple[list[ConfigTable], int]:
    """Build one ConfigTable per configuration; returns (tables in presentation order, n used).

    Records whose state is not completed/diverged, without a finite capped loss, or with a
    non-positive lr are ignored. Objects lacking a TrialRecord field raise ValueError('records').
    """
    cols: dict[ConfigKey, list[tuple[float, int, float, bool, float | None]]] = {}
    used = 0
    for i, r in enumerate(records):
        missing = [f for f in _FIELDS if not hasattr(r, f)]
        if missing:
            raise ValueError(f"records[{i}] is not a TrialRecord: missing {', '.join(missing)}")
        if r.state not in USED_STATES:
            continue
        capped = r.capped_loss
        lr = r.lr
        if capped is None or not math.isfinite(capped) or not (math.isfinite(lr) and lr > 0):
            continue
        beta3 = None if r.optimizer not in BOUNDED or r.beta3 is None else float(r.beta3)
        key = ConfigKey(str(r.optimizer), beta3, int(r.warmup_steps))
        loss0 = r.loss0 if r.loss0 is not None and math.isfinite(r.loss0) else None
        cols.setdefault(key, []).append(
            (_lr_key(lr), int(r.seed), float(capped), r.state == "diverged", loss0)
        )
        used += 1
    tables = [_table(k, rows) for k, rows in cols.items()]
    tables.sort(key=lambda t: t.key.sort_key())
    return tables, used


def _table(key: ConfigKey, rows: list[tuple[float, int, float, bool, float | None]]) -> ConfigTable:
    """Turn one configuration's rows into its lr × seed matrix."""
    lr = np.array([r[0] for r in rows])
    seed = np.array([r[1] for r in rows])
    capped = np.array([r[2] for r in rows])
    diverged = np.array([r[3] for r in rows], dtype=float)
    loss0s = [r[4] for r in rows if r[4] is not None]
    lrs, lr_idx = np.unique(lr, return_inverse=True)
    seeds, seed_idx = np.unique(seed, return_inverse=True)
    total = np.zeros((lrs.size, seeds.size))
    count = np.zeros((lrs.size, seeds.size))
    np.add.at(total, (lr_idx, seed_idx), capped)
    np.add.at(count, (lr_idx, seed_idx), 1.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        values = np.where(count > 0, total / count, np.nan)
    n_div = np.bincount(lr_idx, weights=diverged, minlength=lrs.size).astype(int)
    return ConfigTable(
        key=key,
        lrs=lrs,
        seeds=seeds,
        values=values,
        n_diverged=n_div,
        n_trials=len(rows),
        loss0=float(np.median(loss0s)) if loss0s else None,
    )


def align_seeds(table: ConfigTable, seeds: Sequence[int] | np.ndarray) -> np.ndarray:
    """The (n_lr, len(seeds)) matrix with columns in the order of `seeds`, NaN where absent."""
    seeds = np.asarray(seeds)
    out = np.full((table.lrs.size, seeds.size), np.nan)
    pos = np.searchsorted(table.seeds, seeds)
    pos = np.clip(pos, 0, max(table.seeds.size - 1, 0))
    hit = table.seeds.size > 0
    present = (table.seeds[pos] == seeds) if hit else np.zeros(seeds.size, dtype=bool)
    out[:, present] = table.values[:, pos[present]]
    return out

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


def _lr_keys(lrs: np.ndarray) -> np.ndarray:
    """lrs rounded to 12 significant digits, so grid values that went through text still match.

    Formatting runs once per distinct value, not once per record.
    """
    uniq, inverse = np.unique(lrs, return_inverse=True)
    rounded = np.array([float(f"{x:.12g}") for x in uniq.tolist()])
    return rounded[inverse]


def _attributes(records: Iterable[Any]) -> list[tuple[Any, ...]]:
    """The analysed fields of every record; ValueError('records[i] ...') for a non-record."""
    out = []
    for i, r in enumerate(records):
        try:
            out.append((r.state, r.optimizer, r.beta3, r.warmup_steps, r.seed, r.lr,
                        r.capped_loss, r.loss0))  # fmt: skip
        except AttributeError:
            missing = [f for f in _FIELDS if not hasattr(r, f)] or ["capped_loss"]
            raise ValueError(
                f"records[{i}] is not a TrialRecord: missing {', '.join(missing)}"
            ) from None
    return out


def group_records(records: Iterable[Any]) -> tuple[list[ConfigTable], int]:
    """Build one ConfigTable per configuration; returns (tables in presentation order, n used).

    Records whose state is not completed/diverged, without a finite capped loss, or with a
    non-positive lr are ignored. Objects lacking a TrialRecord field raise ValueError('records').
    """
    groups: dict[tuple[str, float | None, int], list[tuple[Any, ...]]] = {}
    isfinite = math.isfinite
    for state, opt, beta3, warmup, seed, lr, capped, loss0 in _attributes(records):
        if state not in USED_STATES or capped is None or not isfinite(capped):
            continue
        if not (isfinite(lr) and lr > 0):
            continue
        if opt not in BOUNDED:
            beta3 = None  # β3 means nothing to the other optimizers
        key = (opt, None if beta3 is None else float(beta3), int(warmup))
        loss0 = loss0 if loss0 is not None and isfinite(loss0) else None
        groups.setdefault(key, []).append((lr, seed, capped, state == "diverged", loss0))
    tables = [_table(ConfigKey(str(k[0]), k[1], k[2]), rows) for k, rows in groups.items()]
    tables.sort(key=lambda t: t.key.sort_key())
    return tables, sum(t.n_trials for t in tables)


def _table(key: ConfigKey, rows: list[tuple[Any, ...]]) -> ConfigTable:
    """Turn one configuration's rows into its lr × seed matrix."""
    lr_col, seed_col, capped_col, div_col, loss0_col = zip(*rows, strict=True)
    lr = _lr_keys(np.array(lr_col, dtype=float))
    seed = np.array(seed_col, dtype=int)
    capped = np.array(capped_col, dtype=float)
    diverged = np.array(div_col, dtype=float)
    loss0s = [x for x in loss0_col if x is not None]
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

"""Group trial records into per-configuration (lr × seed) tables of every state and result."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = [
    "ADAM_FAMILY",
    "BOUNDED",
    "RESULT_STATES",
    "ConfigKey",
    "ConfigTable",
    "group_records",
    "lr_key",
    "optimizer_rank",
]

# Mirrors studies.spec.OPTIMIZERS / BOUNDED_OPTIMIZERS; repeated here so that the analysis does not
# import spec (which pulls in torch through the workload registry). tests/studies check they agree.
_ORDER = ("adam", "adamw", "adamod", "diffmod", "radam", "nadamw", "sgd")
BOUNDED = ("adamod", "diffmod")
#: Optimizers whose lr means the same thing (an Adam-style per-element step): compared lr by lr.
ADAM_FAMILY = ("adam", "adamw", "adamod", "diffmod", "radam", "nadamw")
RESULT_STATES = ("completed", "diverged")
_SCHEDULES = ("constant", "cosine")
_FIELDS = ("optimizer", "lr", "beta3", "warmup_steps", "seed", "state", "loss", "loss0")


def optimizer_rank(name: str) -> tuple[int, str]:
    """Sort key: the project's optimizer order first, unknown names after, alphabetically."""
    return (_ORDER.index(name) if name in _ORDER else len(_ORDER), name)


def lr_key(lr: float) -> float:
    """An lr rounded to 12 significant digits, so grid values that went through text still match."""
    return float(f"{lr:.12g}")


@dataclass(frozen=True)
class ConfigKey:
    """One configuration: (optimizer, β3, warmup, schedule); β3 is None unless bounded."""

    optimizer: str
    beta3: float | None
    warmup_steps: int
    schedule: str = "constant"

    def sort_key(self) -> tuple[Any, ...]:
        """Order of presentation: optimizer, β3 (None first), schedule, warmup."""
        b = -1.0 if self.beta3 is None else self.beta3
        s = _SCHEDULES.index(self.schedule) if self.schedule in _SCHEDULES else len(_SCHEDULES)
        return (optimizer_rank(self.optimizer), b, s, self.schedule, self.warmup_steps)


@dataclass(frozen=True)
class ConfigTable:
    """Everything about one configuration's cells: rows are lrs (ascending), columns seeds.

    `lrs` and `seeds` cover every record of the configuration, whatever its state; the float
    matrices hold NaN where a cell has no result.
    """

    key: ConfigKey
    lrs: np.ndarray  # (n_lr,)
    seeds: np.ndarray  # (n_seeds,)
    loss: np.ndarray  # capped loss L
    raw: np.ndarray  # final loss, +inf when diverged
    loss0: np.ndarray
    test: np.ndarray  # final test loss (NaN without a test split)
    lowest: np.ndarray  # lowest validation loss along the curve (loss0 when the curve is empty)
    diverged: np.ndarray  # bool
    state: np.ndarray  # object: the state of each cell, "missing" where there is no record
    records: np.ndarray  # object: the result record of each cell, None elsewhere
    n_failed: np.ndarray  # (n_lr,) failed records per lr
    release_steps: tuple[float, ...]  # implicit-warmup telemetry of the results

    @property
    def has_result(self) -> np.ndarray:
        """Cells with a result."""
        return ~np.isnan(self.loss)

    @property
    def n_results(self) -> int:
        """How many cells have a result."""
        return int(np.count_nonzero(self.has_result))


def _check(records: Iterable[Any]) -> list[Any]:
    """The records as a list; ValueError('records[i] ...') for an object that is not a record."""
    out = list(records)
    for i, r in enumerate(out):
        missing = [f for f in _FIELDS if not hasattr(r, f)]
        if missing or not hasattr(r, "capped_loss"):
            names = ", ".join(missing or ["capped_loss"])
            raise ValueError(f"records[{i}] is not a TrialRecord: missing {names}")
    return out


def _finite(x: Any) -> float:
    return float(x) if isinstance(x, int | float) and math.isfinite(x) else math.nan


def group_records(records: Iterable[Any]) -> list[ConfigTable]:
    """One ConfigTable per configuration that has any record, in presentation order.

    Records with a non-positive or non-finite lr are ignored. Within a cell, the first result
    counts (a grid point is one trial); a result beats a failed or pending record of the same cell.
    """
    groups: dict[ConfigKey, list[Any]] = {}
    for r in _check(records):
        lr = r.lr
        if not (isinstance(lr, int | float) and math.isfinite(lr) and lr > 0):
            continue
        beta3 = None if r.optimizer not in BOUNDED or r.beta3 is None else float(r.beta3)
        key = ConfigKey(
            str(r.optimizer), beta3, int(r.warmup_steps), str(getattr(r, "schedule", "constant"))
        )
        groups.setdefault(key, []).append(r)
    tables = [_table(key, rows) for key, rows in groups.items()]
    tables.sort(key=lambda t: t.key.sort_key())
    return tables


def _is_result(r: Any) -> bool:
    capped = r.capped_loss
    return r.state in RESULT_STATES and capped is not None and math.isfinite(capped)


def _table(key: ConfigKey, rows: Sequence[Any]) -> ConfigTable:
    """Turn one configuration's records into its lr × seed matrices."""
    lrs = np.array(sorted({lr_key(r.lr) for r in rows}))
    seeds = np.array(sorted({int(r.seed) for r in rows}), dtype=int)
    lr_pos = {float(x): i for i, x in enumerate(lrs)}
    seed_pos = {int(s): j for j, s in enumerate(seeds)}
    shape = (lrs.size, seeds.size)
    loss, raw, loss0, test, lowest = (np.full(shape, np.nan) for _ in range(5))
    diverged = np.zeros(shape, dtype=bool)
    state = np.full(shape, "missing", dtype=object)
    recs = np.full(shape, None, dtype=object)
    n_failed = np.zeros(lrs.size, dtype=int)
    release: list[float] = []
    for r in rows:
        i, j = lr_pos[lr_key(r.lr)], seed_pos[int(r.seed)]
        if r.state == "failed":
            n_failed[i] += 1
        if recs[i, j] is not None:
            continue  # the cell already has its result
        if not _is_result(r):
            if state[i, j] == "missing":
                state[i, j] = str(r.state)
            continue
        state[i, j] = str(r.state)
        recs[i, j] = r
        loss[i, j] = r.capped_loss
        is_div = r.state == "diverged"
        diverged[i, j] = is_div
        final = _finite(r.loss)
        raw[i, j] = math.inf if is_div or math.isnan(final) else final
        loss0[i, j] = _finite(r.loss0)
        test[i, j] = math.nan if is_div else _finite(getattr(r, "test_loss", None))
        curve = [x for x in getattr(r, "curve_losses", ()) if x is not None and math.isfinite(x)]
        lowest[i, j] = min(curve) if curve else _finite(r.loss0)
        step = getattr(r, "bound_release_step", None)
        if isinstance(step, int | float) and math.isfinite(step):
            release.append(float(step))
    return ConfigTable(
        key=key,
        lrs=lrs,
        seeds=seeds,
        loss=loss,
        raw=raw,
        loss0=loss0,
        test=test,
        lowest=lowest,
        diverged=diverged,
        state=state,
        records=recs,
        n_failed=n_failed,
        release_steps=tuple(release),
    )

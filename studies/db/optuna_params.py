"""What Optuna sees of a study: its hyperparameters, each trial's params and flat attributes.

Optuna's views (importance, contour, slice, parallel coordinates) treat every registered param as
a knob that was tuned. So only the grid axes that take more than one value in the study are
registered (distributions); the seed is a repetition, not a knob, and goes to the trial's user
attributes with every other fixed setting; β3 is a param only of the trials that have one (Adam
trials simply lack it, instead of a categorical `None` that plots would interpolate as a β3).

Everything here is a pure function of the normalized spec dict, so every process that builds a
study's handle gets the same distributions without storing them, and queue.py passes our trial
rows' full `params` unchanged. User attributes are flat scalars (nested parts as JSON strings):
optuna-dashboard shows a scalar as it is, and a dict as truncated JSON.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

__all__ = [
    "HYPERPARAMETER_AXES",
    "METRIC_NAME",
    "axis_values",
    "distributions_for_spec",
    "flat_attrs",
    "optuna_study_name",
    "split_params",
    "study_links",
    "study_user_attrs",
]

# The axes a study may vary, in the order dashboards list them; the seed is never one of them.
HYPERPARAMETER_AXES = ("optimizer", "schedule", "lr", "beta3", "warmup_steps")
# The Optuna study's objective, as Study.set_metric_names stores it (see METRIC_NAMES_ATTR).
METRIC_NAME = "capped validation loss"
# Optuna's study system attribute behind Study.set_metric_names / Study.metric_names (Optuna 3.2
# to 5: optuna.study.study._SYSTEM_ATTR_METRIC_NAMES); optuna-dashboard reads the same key.
METRIC_NAMES_ATTR = "study:metric_names"
LEGACY_NAME_PREFIX = "adamod-lab-"
MAX_STUDY_NAME_LENGTH = 200  # our studies.optuna_study_name column; Optuna's allows 512
_CONTROL = re.compile(r"[\x00-\x1f\x7f]+")


def optuna_study_name(study_id: int, name: str | None = None) -> str:
    """The name of the Optuna study mirroring our study `study_id`: `adamod-lab-<id>-<name>`.

    Unique because the id is (and ends at the first "-" after the prefix); readable in
    optuna-dashboard's list. Without `name`: `adamod-lab-<id>`, the name of mirrors created
    before names were added (their rows keep it in studies.optuna_study_name).
    """
    base = f"{LEGACY_NAME_PREFIX}{study_id}"
    if name is None:
        return base
    readable = " ".join(_CONTROL.sub(" ", name).split())
    if not readable:
        return base
    return f"{base}-{readable}"[:MAX_STUDY_NAME_LENGTH]


def study_links(study_id: int) -> dict[str, str]:
    """The API paths of a study's resources (the REST contract's; relative to the API root)."""
    base = f"/studies/{study_id}"
    return {
        "study": base,
        "trials": f"{base}/trials",
        "report": f"{base}/report",
        "report_html": f"{base}/report.html",
    }


def _scalar(value: Any) -> Any:
    """A flat attribute value: scalars as they are, anything nested as compact JSON text."""
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)


def flat_attrs(prefix: str, data: dict[str, Any]) -> dict[str, Any]:
    """`data` as flat scalar attributes named `<prefix><key>`."""
    return {f"{prefix}{key}": _scalar(value) for key, value in data.items()}


def study_user_attrs(study_id: int, spec: dict[str, Any]) -> dict[str, Any]:
    """The Optuna study's descriptive user attributes: name, workload, spec, links, the value's
    definition. Flat and scalar (`spec.<field>`, `link.<name>`)."""
    attrs: dict[str, Any] = {
        "adamod_lab_study_id": study_id,
        "name": spec.get("name"),
        "workload": spec.get("workload"),
        "value": f"{METRIC_NAME}: min(loss, loss0), loss0 when diverged",
        "hyperparameters": ",".join(distributions_for_spec(spec)),
    }
    attrs.update(flat_attrs("spec.", spec))
    attrs.update(flat_attrs("link.", study_links(study_id)))
    return attrs


def _unique(values: list[Any]) -> list[Any]:
    out: list[Any] = []
    for value in values:
        if value not in out:
            out.append(value)
    return out


def axis_values(spec: dict[str, Any]) -> dict[str, list[Any]]:
    """The distinct values each grid axis takes in the study of a normalized StudySpec dict.

    β3 counts only over the bounded optimizers (the others have none); warmup "auto" is resolved
    to steps as the trials carry it; `schedule` is absent from studies stored before schedules.
    """
    from studies.spec import BOUNDED_OPTIMIZERS, LrGrid, resolve_warmup

    optimizers = _unique(list(spec["optimizers"]))
    beta2 = float(spec.get("betas", (0.9, 0.999))[1])
    values: dict[str, list[Any]] = {"optimizer": optimizers}
    if "schedule" in spec:
        values["schedule"] = _unique(list(spec["schedule"]))
    values["lr"] = _unique([float(v) for v in LrGrid.model_validate(spec["lr"]).values()])
    if any(o in BOUNDED_OPTIMIZERS for o in optimizers):
        values["beta3"] = sorted(_unique([float(b) for b in spec["beta3"]]))
    values["warmup_steps"] = sorted(
        _unique([resolve_warmup(w, beta2) for w in spec["warmup_steps"]])
    )
    return values


def distributions_for_spec(spec: dict[str, Any]) -> dict[str, Any]:
    """Optuna distributions of the axes that vary in the study (more than one value), only."""
    from optuna.distributions import CategoricalDistribution, FloatDistribution

    distributions: dict[str, Any] = {}
    for axis, values in axis_values(spec).items():
        if len(values) < 2:
            continue
        if axis == "lr":
            distributions[axis] = FloatDistribution(min(values), max(values), log=True)
        else:
            distributions[axis] = CategoricalDistribution(values)
    return {axis: distributions[axis] for axis in HYPERPARAMETER_AXES if axis in distributions}


def _fits(distribution: Any, value: Any) -> bool:
    """Whether Optuna can store `value` as a param of `distribution` (never raises)."""
    try:
        internal = distribution.to_internal_repr(value)
        return bool(distribution._contains(internal))
    except (TypeError, ValueError):
        return False


def split_params(
    params: dict[str, Any], distributions: dict[str, Any]
) -> tuple[dict[str, Any], dict[str, Any]]:
    """A trial's grid coordinates split into Optuna params (the study's varying axes, where the
    trial has a value) and flat user attributes (the seed and every fixed setting).

    A value its distribution cannot hold (a spec edited by hand) becomes an attribute instead of
    failing the worker's write; None values (Adam's β3) are simply left out.
    """
    optuna_params: dict[str, Any] = {}
    attrs: dict[str, Any] = {}
    for name, value in params.items():
        if value is None:
            continue
        distribution = distributions.get(name)
        if distribution is not None and _fits(distribution, value):
            optuna_params[name] = value
        else:
            attrs[name] = _scalar(value)
    return optuna_params, attrs

"""Result reuse in the queue: a claimed trial whose reuse key (studies/reuse.py) matches a
finished trial of any study is completed from that result instead of trained.

The worker looks up its claims right after claiming them, with the key of its own torch version
and device type, and completes the matches through the ordinary completion path (so the row, its
Optuna trial and the study's progress read as for a trained trial), marked `reused_from`: the id
of the trial that was actually trained. A study whose spec says `reuse: false` never reuses.
Diverged results are reused too: divergence is a result (ARCHITECTURE.md), as deterministic as
any other on the same torch and device.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from sqlalchemy import select

from studies.db.engine import Database
from studies.db.models import StudyRow, TrialRow
from studies.db.queue import ClaimedTrial
from studies.reuse import reuse_key
from studies.trial_result import EvalPoint, TrialResult

__all__ = ["find_reusable"]

_FLOAT_POINT_FIELDS = ("epoch", "val_loss")  # stored as null when not finite


def find_reusable(
    db: Database, claims: Sequence[ClaimedTrial], device: str
) -> dict[int, TrialResult]:
    """{claimed trial id: the earlier result that stands for it} for the claims that have one
    (the oldest finished trial with the same key), given this worker's `device`."""
    if not claims:
        return {}
    keys = {claim.trial_id: reuse_key(claim.config, device=device) for claim in claims}
    with db.session(readonly=True) as session:
        specs = session.execute(
            select(StudyRow.id, StudyRow.spec).where(
                StudyRow.id.in_({claim.study_id for claim in claims})
            )
        ).all()
        allowed = {row.id for row in specs if (row.spec or {}).get("reuse", True) is not False}
        wanted = {keys[c.trial_id] for c in claims if c.study_id in allowed}
        if not wanted:
            return {}
        rows = session.execute(
            select(TrialRow)
            .where(
                TrialRow.reuse_key.in_(wanted),
                TrialRow.state.in_(("completed", "diverged")),
                TrialRow.id.not_in(keys),
            )
            .order_by(TrialRow.id)
        ).scalars()
        sources: dict[str, TrialRow] = {}
        for row in rows:
            sources.setdefault(str(row.reuse_key), row)
        return {
            claim.trial_id: _stored_result(source)
            for claim in claims
            if claim.study_id in allowed and (source := sources.get(keys[claim.trial_id]))
        }


def _stored_result(row: TrialRow) -> TrialResult:
    """The TrialResult a finished row stores (its result JSON, curve and bound series), marked
    as reused from the trial that was trained (a reused source points on to its own source)."""
    data: dict[str, Any] = dict(row.result or {})
    data.pop("reused_from", None)
    for name in ("loss0", "duration_s"):
        data[name] = _nan_for_none(data.get(name))
    curve = []
    for point in row.curve or []:
        values = {**point, **{k: _nan_for_none(point.get(k)) for k in _FLOAT_POINT_FIELDS}}
        curve.append(EvalPoint(**values))
    known = set(TrialResult.__dataclass_fields__) - {"curve", "bound_stats", "reused_from"}
    return TrialResult(
        **{k: v for k, v in data.items() if k in known},
        curve=curve,
        bound_stats=row.bound_stats,
        reused_from=row.reused_from if row.reused_from is not None else row.id,
    )


def _nan_for_none(value: Any) -> float:
    return math.nan if value is None else float(value)

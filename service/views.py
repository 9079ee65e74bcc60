"""Turns the database layer's views into response models."""

from __future__ import annotations

from typing import Any

from fastapi import HTTPException, status

from service.errors import json_safe
from service.schemas import Progress, StudyLinks, StudyOut
from studies.plots import PLOT_NAMES


def study_links(study_id: int, optuna_study_name: str | None = None) -> StudyLinks:
    """The paths of a study's resources."""
    base = f"/studies/{study_id}"
    return StudyLinks(
        self=base,
        trials=f"{base}/trials",
        report=f"{base}/report",
        report_html=f"{base}/report.html",
        plots={name: f"{base}/plots/{name}.png" for name in PLOT_NAMES},
        optuna_study_name=optuna_study_name,
    )


def study_out(view: Any) -> StudyOut:
    """StudyOut from a studies.db StudyView."""
    progress = {k: int(v) for k, v in dict(view.progress).items() if k in Progress.model_fields}
    progress.setdefault("total", int(view.n_trials))
    return StudyOut(
        id=view.id,
        name=view.name,
        status=view.status,
        spec=json_safe(view.spec),
        n_trials=view.n_trials,
        progress=Progress(**progress),
        created_at=view.created_at,
        started_at=view.started_at,
        finished_at=view.finished_at,
        links=study_links(view.id, getattr(view, "optuna_study_name", None)),
    )


def not_found(study_id: int) -> HTTPException:
    """The 404 for an unknown study id."""
    return HTTPException(
        status_code=status.HTTP_404_NOT_FOUND, detail=f"study {study_id} not found"
    )

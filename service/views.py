"""Turns the database layer's views into response models (studies, comparisons of studies)."""

from __future__ import annotations

import json
import re
from typing import Any

from fastapi import HTTPException, status

from service.deps import MAX_ID
from service.errors import json_safe
from service.reportcache import ReportCache
from service.schemas import Progress, StudyLinks, StudyOut
from studies.compare import Comparison, compare_reports
from studies.db import Database, get_study
from studies.plots import PLOT_NAMES

MIN_STUDIES, MAX_STUDIES = 2, 50
# 50 ids of 10 digits, commas and some spaces: anything longer cannot be valid.
_MAX_QUERY_CHARS = 1000
_ID = re.compile(r"[0-9]{1,10}")


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


class CompareOut(Comparison):
    """The comparison, with the ids of the studies in the order they were given."""

    study_ids: list[int]


def _invalid(message: str, value: str | None = None) -> HTTPException:
    """A 422 in FastAPI's own shape, naming the `studies` query parameter."""
    item: dict[str, Any] = {"loc": ["query", "studies"], "msg": message, "type": "value_error"}
    if value is not None:
        item["input"] = value if len(value) <= 200 else value[:200] + "..."
    return HTTPException(status_code=status.HTTP_422_UNPROCESSABLE_ENTITY, detail=[item])


def parse_study_ids(raw: str) -> list[int]:
    """The ids of `?studies=`; an HTTPException 422 naming `studies` for anything else."""
    if len(raw) > _MAX_QUERY_CHARS:
        raise _invalid(f"studies is too long (more than {_MAX_QUERY_CHARS} characters)")
    parts = [p.strip() for p in raw.split(",")]
    if parts == [""]:
        raise _invalid("studies is empty: give 2 to 50 comma-separated study ids", raw)
    ids: list[int] = []
    for part in parts:
        if not _ID.fullmatch(part):
            shown = part if len(part) <= 40 else part[:40] + "..."
            raise _invalid(
                f"studies must be comma-separated positive integer ids; {shown!r} is not one", raw
            )
        value = int(part)
        if not 1 <= value <= MAX_ID:
            raise _invalid(f"studies: id {value} is out of range 1..{MAX_ID}", raw)
        if value in ids:
            raise _invalid(f"studies: id {value} is given twice; ids must be distinct", raw)
        ids.append(value)
    if not MIN_STUDIES <= len(ids) <= MAX_STUDIES:
        raise _invalid(
            f"studies must name {MIN_STUDIES} to {MAX_STUDIES} studies, got {len(ids)}", raw
        )
    return ids


def compare_studies(db: Database, cache: ReportCache, ids: list[int]) -> CompareOut:
    """Looks every study up (404 naming the unknown ones), then compares their cached reports.

    What GET /compare answers and the UI's compare page shows; blocking (run it in a thread).
    """
    views = [(i, get_study(db, i)) for i in ids]
    unknown = [i for i, view in views if view is None]
    if unknown:
        which = (
            f"study {unknown[0]} not found"
            if len(unknown) == 1
            else f"studies {', '.join(map(str, unknown))} not found"
        )
        raise HTTPException(status_code=status.HTTP_404_NOT_FOUND, detail=which)
    reports = []
    names = []
    for i, view in views:
        entry = cache.get(db, view)
        # The cached JSON is the report as clients see it (non-finite numbers already null).
        reports.append(json.loads(entry.json_bytes))
        names.append(f"#{i} {view.name}")
    try:
        comparison = compare_reports(reports, names)
    except ValueError as exc:
        raise _invalid(f"studies cannot be compared: {exc}") from exc
    return CompareOut(**comparison.model_dump(), study_ids=ids)

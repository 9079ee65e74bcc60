"""Response models of the REST API (requests are StudySpec from studies.spec), with examples."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from studies.spec_floats import restore_spec_floats

StudyStatus = Literal["queued", "running", "completed", "cancelled", "failed"]
TrialState = Literal["queued", "running", "completed", "diverged", "failed", "cancelled"]
STUDY_STATUSES: tuple[str, ...] = ("queued", "running", "completed", "cancelled", "failed")

# A small, valid StudySpec: the example shown in /docs and used by the tests of the docs.
STUDY_SPEC_EXAMPLE: dict[str, Any] = {
    "name": "digits-lr-robustness",
    "workload": "digits_mlp",
    "workload_config": {},
    "optimizers": ["adam", "adamod"],
    "lr": {"min": 1e-4, "max": 1e-1, "points": 7},
    "beta3": [0.99, 0.999],
    "warmup_steps": [0],
    "seeds": 6,
    "budget": {"epochs": 5},
}
STUDY_SPEC_EXAMPLES: dict[str, dict[str, Any]] = {
    "digits": {
        "summary": "Adam vs AdaMod on digits, 7 learning rates, 2 values of beta3, 6 seeds",
        "value": STUDY_SPEC_EXAMPLE,
    },
    "explicit_lrs": {
        "summary": "Explicit learning rates, warmup on and off, a step budget",
        "value": {
            "name": "quadratic-warmup",
            "workload": "quadratic",
            "optimizers": ["adam", "adamod", "sgd"],
            "lr": {"values": [0.001, 0.01, 0.1]},
            "warmup_steps": [0, 100],
            "seeds": 2,
            "budget": {"steps": 500},
        },
    },
    "schedules": {
        "summary": (
            "Adam-family optimizers, no warmup vs the untuned 'auto' warmup (2 / (1 - beta2) = "
            "200 steps at beta2 0.99), constant vs cosine schedule, Adam as the reference"
        ),
        "value": {
            "name": "transformer-warmup-schedules",
            "workload": "tiny_transformer",
            "optimizers": ["adam", "adamod", "radam", "nadamw"],
            "reference": "adam",
            "lr": {"min": 3e-4, "max": 3e-2, "points": 5},
            "beta3": [0.999],
            "warmup_steps": [0, "auto"],
            "schedule": ["constant", "cosine"],
            "betas": [0.9, 0.99],
            "seeds": 6,
            "budget": {"steps": 800},
        },
    },
}


class Progress(BaseModel):
    """How many of a study's trials are in each state."""

    total: int = Field(description="Number of grid points (trials) in the study.")
    queued: int = 0
    running: int = 0
    completed: int = 0
    diverged: int = 0
    failed: int = 0
    cancelled: int = 0


class StudyLinks(BaseModel):
    """Where to read more about a study (paths relative to the API root)."""

    self: str
    trials: str
    report: str
    report_html: str
    plots: dict[str, str] = Field(description="Plot name -> PNG path.")
    optuna_study_name: str | None = Field(
        default=None, description="Name of the Optuna study in the same database (dashboard)."
    )


# A study as GET /studies/{id} shows it (StudyOut's example; RetryOut builds on it).
_STUDY_OUT_EXAMPLE: dict[str, Any] = {
    "id": 1,
    "name": "digits-lr-robustness",
    "status": "running",
    "spec": STUDY_SPEC_EXAMPLE,
    "n_trials": 126,
    "progress": {
        "total": 126,
        "queued": 100,
        "running": 2,
        "completed": 23,
        "diverged": 1,
        "failed": 0,
        "cancelled": 0,
    },
    "created_at": "2026-01-01T12:00:00Z",
    "started_at": "2026-01-01T12:00:01Z",
    "finished_at": None,
    "links": {
        "self": "/studies/1",
        "trials": "/studies/1/trials",
        "report": "/studies/1/report",
        "report_html": "/studies/1/report.html",
        "plots": {"lr_curves": "/studies/1/plots/lr_curves.png"},
        "optuna_study_name": "adamod-lab-1",
    },
}


class StudyOut(BaseModel):
    """A study as the API returns it: its normalized spec, status and progress."""

    model_config = ConfigDict(json_schema_extra={"examples": [_STUDY_OUT_EXAMPLE]})

    id: int
    name: str
    status: StudyStatus
    spec: dict[str, Any] = Field(description="The normalized StudySpec, defaults filled in.")
    n_trials: int
    progress: Progress
    created_at: datetime
    started_at: datetime | None = None
    finished_at: datetime | None = None
    links: StudyLinks

    @field_validator("spec")
    @classmethod
    def _floats_as_sent(cls, value: dict[str, Any]) -> dict[str, Any]:
        # PostgreSQL's JSONB reads 1e25 back as the int 10000000000000000000000000.
        return restore_spec_floats(value)


class RetryOut(StudyOut):
    """The study after `POST /studies/{id}/retry` (StudyOut's fields), with how many of its
    trials that request queued again."""

    model_config = ConfigDict(
        json_schema_extra={"examples": [{**_STUDY_OUT_EXAMPLE, "requeued": 3}]}
    )

    requeued: int = Field(
        description="Failed and cancelled trials queued again by this request (0: nothing to "
        "retry; the study is returned unchanged, except that a cancelled one is resumed)."
    )


class TrialOut(BaseModel):
    """One trial (grid point): its parameters, state, result and learning curve."""

    id: int
    number: int = Field(description="Position of the trial in the study's grid (0-based).")
    params: dict[str, Any] = Field(
        description="optimizer, lr, beta3, warmup_steps (in steps), schedule, seed."
    )
    state: TrialState
    value: float | None = Field(default=None, description="Final validation loss.")
    loss0: float | None = Field(default=None, description="Validation loss before step 1.")
    accuracy: float | None = None
    curve: list[dict[str, Any]] = Field(
        default_factory=list, description="One point per evaluation: step, epoch, val_loss, ..."
    )
    attempts: int = 0
    worker: dict[str, Any] | None = Field(default=None, description="host, pid, device.")
    duration_s: float | None = None
    error: str | None = None
    bound_stats: dict[str, Any] | None = Field(
        default=None, description="AdaMod/DiffMod bound telemetry (bounded optimizers only)."
    )
    pack_size: int | None = Field(
        default=None, description="How many trials trained together in one vectorized pack."
    )
    reused_from: int | None = Field(
        default=None,
        description="The id of the identical earlier trial whose result this one copied "
        "(the study's `reuse`); null: trained.",
    )
    resumed_from_step: int | None = Field(
        default=None,
        description="The step of the checkpoint this trial's last attempt resumed from; "
        "null: trained from step 0.",
    )


class WorkloadOut(BaseModel):
    """A registered workload: what it trains, its default budget and its config schema."""

    name: str
    description: str
    default_budget: dict[str, int] = Field(description='{"epochs": n} or {"steps": n}.')
    config_schema: dict[str, Any] = Field(description="JSON schema of workload_config.")


class Health(BaseModel):
    """Liveness and database reachability."""

    status: Literal["ok", "unavailable"]
    database: str = Field(description='"ok" or why the database cannot be reached.')
    version: str

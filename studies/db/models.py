"""Typed SQLAlchemy 2 ORM models: one row per study, one row per trial (grid point).

Table names carry an `adamod_lab_` prefix because Optuna's own tables ("studies", "trials", ...)
live in the same database.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

__all__ = [
    "FINISHED_STATES",
    "OPTUNA_PENDING_SQL",
    "TERMINAL_STATES",
    "TRIAL_STATES",
    "Base",
    "StudyRow",
    "TrialRow",
    "UtcDateTime",
    "WorkerRow",
    "utcnow",
]

TRIAL_STATES = ("queued", "running", "completed", "diverged", "failed", "cancelled")
TERMINAL_STATES = ("completed", "diverged", "failed", "cancelled")
# The states recorded in the Optuna study.
FINISHED_STATES = ("completed", "diverged", "failed")
# Terminal trials whose Optuna trial does not show their final state yet (sync_optuna's work).
OPTUNA_PENDING_SQL = (
    "NOT optuna_final AND state IN ('completed', 'diverged', 'failed', 'cancelled')"
)

JsonType = JSON().with_variant(JSONB(), "postgresql")


def utcnow() -> datetime:
    """The current time, timezone-aware UTC."""
    return datetime.now(UTC)


class UtcDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on every backend (SQLite stores them naive, in UTC)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Base(DeclarativeBase):
    """Declarative base of AdaMod Lab's own tables."""


class StudyRow(Base):
    """A submitted study: its normalized spec; status and progress are derived from its trials."""

    __tablename__ = "adamod_lab_studies"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(200))
    workload: Mapped[str] = mapped_column(String(100))
    spec: Mapped[dict[str, Any]] = mapped_column(JsonType)
    spec_hash: Mapped[str] = mapped_column(String(64))
    n_trials: Mapped[int] = mapped_column(Integer)
    priority: Mapped[int] = mapped_column(Integer, default=0)
    idempotency_key: Mapped[str | None] = mapped_column(String(200), unique=True)
    optuna_study_name: Mapped[str | None] = mapped_column(String(200))
    cancelled: Mapped[bool] = mapped_column(Boolean, default=False, server_default=text("false"))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime(), default=utcnow)
    cancelled_at: Mapped[datetime | None] = mapped_column(UtcDateTime())

    trials: Mapped[list[TrialRow]] = relationship(back_populates="study", passive_deletes=True)

    __table_args__ = (Index("ix_adamod_lab_studies_created", "created_at"),)


class TrialRow(Base):
    """One grid point of a study: its config, queue state, lease, worker and result."""

    __tablename__ = "adamod_lab_trials"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    study_id: Mapped[int] = mapped_column(
        ForeignKey("adamod_lab_studies.id", ondelete="CASCADE"), index=False
    )
    number: Mapped[int] = mapped_column(Integer)
    config: Mapped[dict[str, Any]] = mapped_column(JsonType)
    config_key: Mapped[str] = mapped_column(String(64))
    # TrialConfig.pack_key(): trials of one study with equal keys may train in one pack; NULL
    # (a stored config that no longer validates) means the trial is only ever claimed alone.
    pack_key: Mapped[str | None] = mapped_column(String(64))
    # studies/reuse.py's key, set when the trial finishes (completed or diverged): a later trial
    # with the same key is completed from this one's result instead of trained again.
    reuse_key: Mapped[str | None] = mapped_column(String(64))
    # The trial whose result this one copied (None: trained).
    reused_from: Mapped[int | None] = mapped_column(Integer)
    params: Mapped[dict[str, Any]] = mapped_column(JsonType)
    # Copied from the study so that the claim query reads one index: priority, then FIFO by id.
    priority: Mapped[int] = mapped_column(Integer, default=0)
    state: Mapped[str] = mapped_column(String(16), default="queued")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    lease_token: Mapped[str | None] = mapped_column(String(32))
    lease_expires_at: Mapped[datetime | None] = mapped_column(UtcDateTime())
    worker_host: Mapped[str | None] = mapped_column(String(255))
    worker_pid: Mapped[int | None] = mapped_column(Integer)
    worker_device: Mapped[str | None] = mapped_column(String(64))
    value: Mapped[float | None] = mapped_column(Float)
    loss: Mapped[float | None] = mapped_column(Float)
    loss0: Mapped[float | None] = mapped_column(Float)
    accuracy: Mapped[float | None] = mapped_column(Float)
    curve: Mapped[list[dict[str, Any]] | None] = mapped_column(JsonType)
    bound_stats: Mapped[dict[str, Any] | None] = mapped_column(JsonType)
    result: Mapped[dict[str, Any] | None] = mapped_column(JsonType)
    steps: Mapped[int | None] = mapped_column(Integer)
    duration_s: Mapped[float | None] = mapped_column(Float)
    error: Mapped[str | None] = mapped_column(Text)
    # The trial's Optuna trial, created RUNNING at its first claim and reused by every re-run.
    optuna_trial_id: Mapped[int | None] = mapped_column(Integer)
    # True once the Optuna trial shows this trial's final state (COMPLETE, FAIL or PRUNED).
    optuna_final: Mapped[bool] = mapped_column(Boolean, default=False, server_default=text("false"))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime(), default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(UtcDateTime())
    claimed_at: Mapped[datetime | None] = mapped_column(UtcDateTime())
    finished_at: Mapped[datetime | None] = mapped_column(UtcDateTime())

    study: Mapped[StudyRow] = relationship(back_populates="trials")

    __table_args__ = (
        UniqueConstraint("study_id", "config_key", name="uq_adamod_lab_trials_study_config"),
        UniqueConstraint("study_id", "number", name="uq_adamod_lab_trials_study_number"),
        # The claim query: the next queued trial by priority, then id.
        Index(
            "ix_adamod_lab_trials_claim",
            text("priority DESC"),
            "id",
            postgresql_where=text("state = 'queued'"),
            sqlite_where=text("state = 'queued'"),
        ),
        # The pack claim: more queued trials of the lead's study and pack key, in claim order.
        Index(
            "ix_adamod_lab_trials_pack_claim",
            "study_id",
            "pack_key",
            text("priority DESC"),
            "id",
            postgresql_where=text("state = 'queued'"),
            sqlite_where=text("state = 'queued'"),
        ),
        # Expired leases.
        Index(
            "ix_adamod_lab_trials_lease",
            "lease_expires_at",
            postgresql_where=text("state = 'running'"),
            sqlite_where=text("state = 'running'"),
        ),
        # Terminal trials whose Optuna trial does not show it yet (normally none for long).
        Index(
            "ix_adamod_lab_trials_optuna_pending",
            "finished_at",
            postgresql_where=text(OPTUNA_PENDING_SQL),
            sqlite_where=text(OPTUNA_PENDING_SQL),
        ),
        # Progress counts per study.
        Index("ix_adamod_lab_trials_study_state", "study_id", "state"),
        # Result reuse: finished trials with a given reuse key.
        Index(
            "ix_adamod_lab_trials_reuse",
            "reuse_key",
            "id",
            postgresql_where=text("state IN ('completed', 'diverged')"),
            sqlite_where=text("state IN ('completed', 'diverged')"),
        ),
    )


class WorkerRow(Base):
    """A worker process, registered at start and beaten by its heartbeat (GET /workers)."""

    __tablename__ = "adamod_lab_workers"

    # A random token per process start: a restarted worker (same host and pid) is a new row.
    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    host: Mapped[str] = mapped_column(String(255))
    pid: Mapped[int] = mapped_column(Integer)
    device: Mapped[str] = mapped_column(String(64))
    # The --pack-size option (None: auto).
    pack_size: Mapped[int | None] = mapped_column(Integer)
    state: Mapped[str] = mapped_column(String(16), default="running")
    # The trial it trains, or every member of its pack; empty while idle.
    current_trial_ids: Mapped[list[int]] = mapped_column(JsonType, default=list)
    started_at: Mapped[datetime] = mapped_column(UtcDateTime(), default=utcnow)
    last_beat_at: Mapped[datetime] = mapped_column(UtcDateTime(), default=utcnow)
    exited_at: Mapped[datetime | None] = mapped_column(UtcDateTime())

    __table_args__ = (Index("ix_adamod_lab_workers_last_beat", "last_beat_at"),)

"""Persistence: engine, ORM models, migrations, repository, retry, trial queue, Optuna bridge."""

from __future__ import annotations

from studies.db.engine import Database, database_url_from_env
from studies.db.repository import (
    IdempotencyConflict,
    StudyView,
    TrialView,
    cancel_study,
    create_study,
    get_study,
    list_studies,
    list_trials,
    load_records,
)
from studies.db.retry import RetryOutcome, retry_study

__all__ = [
    "Database",
    "IdempotencyConflict",
    "RetryOutcome",
    "StudyView",
    "TrialView",
    "cancel_study",
    "create_study",
    "database_url_from_env",
    "get_study",
    "list_studies",
    "list_trials",
    "load_records",
    "retry_study",
]

"""Small builders shared by the storage tests."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from studies.db import Database, StudyView, create_study
from studies.spec import StudySpec


def noop_spec(n_lr: int = 2, seeds: int = 2, **overrides: Any) -> StudySpec:
    """A tiny noop study: 2 optimizers × n_lr × seeds trials, one evaluation per step."""
    data: dict[str, Any] = {
        "name": "noop study",
        "workload": "noop",
        "workload_config": {"steps_per_epoch": 2, "eval_every": 1},
        "optimizers": ["adam", "adamod"],
        "lr": {"values": [10.0 ** -(i + 1) for i in range(n_lr)]},
        "seeds": seeds,
    }
    data.update(overrides)
    return StudySpec.model_validate(data)


def migrated(url: str) -> Database:
    """A migrated database handle."""
    db = Database(url)
    db.migrate()
    return db


def make_study(db: Database, **overrides: Any) -> StudyView:
    """Stores a tiny noop study and returns its view."""
    return create_study(db, noop_spec(**overrides))


@contextmanager
def row_locked(url: str, trial_id: int) -> Iterator[Any]:
    """Holds a row lock on one trial from another PostgreSQL session, idle in its transaction
    (a worker frozen inside a transaction, as seen by everyone else)."""
    import psycopg

    dsn = url.replace("postgresql+psycopg://", "postgresql://")
    connection = psycopg.connect(dsn, connect_timeout=5)
    try:
        connection.execute(
            "SELECT id FROM adamod_lab_trials WHERE id = %s FOR UPDATE", (trial_id,)
        ).fetchall()
        yield connection
    finally:
        connection.rollback()
        connection.close()

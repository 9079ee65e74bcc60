"""Repository round trips on SQLite and PostgreSQL: create, read, list, cancel, idempotency."""

from __future__ import annotations

import optuna
import pytest
from sqlalchemy import func, inspect, select, text

from studies.db import (
    IdempotencyConflict,
    cancel_study,
    create_study,
    get_study,
    list_studies,
    list_trials,
    load_records,
)
from studies.db.engine import VERSION_TABLE, Database, normalize_database_url
from studies.db.migrations import HEAD_REVISION
from studies.db.models import StudyRow, TrialRow
from studies.spec import expand_grid
from tests.db.util import make_study, migrated, noop_spec


def _count(db: Database, model: type) -> int:
    with db.session(readonly=True) as session:
        return session.execute(select(func.count()).select_from(model)).scalar_one()


def test_create_and_read_back(database_url: str) -> None:
    db = migrated(database_url)
    spec = noop_spec(n_lr=3, seeds=2)
    view = create_study(db, spec)
    assert view.n_trials == spec.n_trials == 12
    assert view.status == "queued"
    assert view.progress["total"] == 12 and view.progress["queued"] == 12
    assert view.spec == spec.model_dump(mode="json")
    assert view.optuna_study_name == f"adamod-lab-{view.id}-noop study"
    assert view.started_at is None and view.finished_at is None

    again = get_study(db, view.id)
    assert again is not None and again.spec == view.spec and again.created_at == view.created_at

    trials = list_trials(db, view.id)
    assert trials is not None and [t.number for t in trials] == list(range(12))
    expected = [c.params() for c in expand_grid(spec)]
    assert [t.params for t in trials] == expected
    assert all(t.state == "queued" and t.attempts == 0 and t.worker is None for t in trials)

    records = load_records(db, view.id)
    assert records is not None and len(records) == 12
    assert {(r.optimizer, r.lr, r.seed) for r in records} == {
        (p["optimizer"], p["lr"], p["seed"]) for p in expected
    }

    # The Optuna study exists in the same database, empty until trials finish.
    study = optuna.load_study(study_name=view.optuna_study_name, storage=db.url)
    assert study.trials == []


def test_unknown_ids_give_none(database_url: str) -> None:
    db = migrated(database_url)
    assert get_study(db, 999) is None
    assert list_trials(db, 999) is None
    assert load_records(db, 999) is None
    assert cancel_study(db, 999) is None


def test_idempotency_key(database_url: str) -> None:
    db = migrated(database_url)
    first = create_study(db, noop_spec(), idempotency_key="key-1")
    second = create_study(db, noop_spec(), idempotency_key="key-1")
    assert second.id == first.id
    with pytest.raises(IdempotencyConflict, match="key-1"):
        create_study(db, noop_spec(seeds=3), idempotency_key="key-1")
    assert _count(db, StudyRow) == 1
    assert _count(db, TrialRow) == first.n_trials
    other = create_study(db, noop_spec(), idempotency_key="key-2")
    assert other.id != first.id
    for bad in ("", "   ", "x" * 201):
        with pytest.raises(ValueError, match="idempotency_key"):
            create_study(db, noop_spec(), idempotency_key=bad)
    assert _count(db, StudyRow) == 2


def test_list_newest_first_with_filters(database_url: str) -> None:
    db = migrated(database_url)
    ids = [make_study(db).id for _ in range(3)]
    assert [s.id for s in list_studies(db)] == ids[::-1]
    assert [s.id for s in list_studies(db, limit=1, offset=1)] == [ids[1]]
    cancel_study(db, ids[0])
    assert [s.id for s in list_studies(db, status="cancelled")] == [ids[0]]
    assert [s.id for s in list_studies(db, status="queued")] == ids[:0:-1]
    assert list_studies(db, status="completed") == []
    for kwargs, field in (
        ({"status": "done"}, "status"),
        ({"limit": 0}, "limit"),
        ({"limit": 10_001}, "limit"),
        ({"offset": -1}, "offset"),
    ):
        with pytest.raises(ValueError, match=field):
            list_studies(db, **kwargs)


def test_cancel_marks_queued_trials(database_url: str) -> None:
    db = migrated(database_url)
    view = make_study(db)
    cancelled = cancel_study(db, view.id)
    assert cancelled is not None and cancelled.status == "cancelled"
    assert cancelled.progress["cancelled"] == view.n_trials and cancelled.progress["queued"] == 0
    assert cancelled.finished_at is not None
    assert cancel_study(db, view.id).status == "cancelled"  # idempotent


def test_five_thousand_trials_in_one_transaction(database_url: str) -> None:
    db = migrated(database_url)
    spec = noop_spec(n_lr=1, seeds=1)
    spec = spec.model_copy(update={"seeds": 2500, "lr": spec.lr})
    view = create_study(db, spec)
    assert view.n_trials == 5000 == view.progress["queued"]
    with db.session(readonly=True) as session:
        distinct = session.execute(
            select(func.count(func.distinct(TrialRow.config_key))).where(
                TrialRow.study_id == view.id
            )
        ).scalar_one()
    assert distinct == 5000


def test_migrations_use_their_own_version_table(database_url: str) -> None:
    db = migrated(database_url)
    db.migrate()  # idempotent
    tables = set(inspect(db.engine).get_table_names())
    assert {"adamod_lab_studies", "adamod_lab_trials", VERSION_TABLE} <= tables
    assert "alembic_version" in tables  # Optuna's, untouched by ours
    with db.engine.connect() as connection:
        ours = connection.execute(text(f"SELECT version_num FROM {VERSION_TABLE}")).scalar_one()
        optunas = connection.execute(text("SELECT version_num FROM alembic_version")).scalar_one()
    assert ours == HEAD_REVISION and optunas != ours


def test_head_revision_constant_matches_alembic() -> None:
    from alembic.script import ScriptDirectory

    from studies.db.migrations import alembic_config

    assert ScriptDirectory.from_config(alembic_config()).get_heads() == [HEAD_REVISION]


def test_database_url_validation() -> None:
    assert normalize_database_url("postgresql://u@h/db") == "postgresql+psycopg://u@h/db"
    assert normalize_database_url("postgres://u@h/db") == "postgresql+psycopg://u@h/db"
    for bad in ("", "mysql://u@h/db", "not a url"):
        with pytest.raises(ValueError, match="database url"):
            normalize_database_url(bad)


def test_sqlite_pragmas(sqlite_url: str) -> None:
    db = migrated(sqlite_url)
    with db.engine.connect() as connection:
        assert connection.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert connection.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
        assert connection.exec_driver_sql("PRAGMA busy_timeout").scalar() >= 1000

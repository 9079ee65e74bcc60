"""Result reuse with real worker processes, on SQLite and PostgreSQL: a study submitted again
trains nothing and reports the same; one with more seeds trains only the new seeds."""

from __future__ import annotations

import optuna
from optuna.trial import TrialState

from studies.db import create_study, get_study
from studies.db.repository import list_trials, load_records
from studies.report import build_report
from studies.reuse import reuse_key
from studies.spec import TrialConfig
from tests.db.util import migrated, noop_spec
from tests.workers.procs import WorkerProcesses, trial_rows


def _run(url: str, processes: WorkerProcesses, *args: str) -> str:
    process = processes.start(url, "--exit-when-idle", "--poll-interval", "0.1", *args)
    assert process.wait(timeout=180) == 0, processes.log(process)
    return processes.log(process)


def _report(db, study_id: int) -> dict:  # type: ignore[no-untyped-def]
    view = get_study(db, study_id)
    report = build_report(load_records(db, study_id), spec=view.spec, status=view.status)
    data = report.model_dump(mode="json")
    return {key: data[key] for key in ("configs", "comparisons", "counts", "headline")}


def test_a_study_submitted_again_trains_nothing(
    database_url: str, worker_processes: WorkerProcesses
) -> None:
    db = migrated(database_url)
    first = create_study(db, noop_spec(n_lr=2, seeds=2))
    log = _run(database_url, worker_processes)
    assert "reused the result" not in log
    trained = {r.config_key: r for r in trial_rows(db, first.id)}
    assert all(r.state == "completed" and r.reused_from is None for r in trained.values())
    for row in trained.values():  # the key a worker on this torch and CPU computes
        assert row.reuse_key == reuse_key(TrialConfig.model_validate(row.config), device="cpu")

    again = create_study(db, noop_spec(n_lr=2, seeds=2))
    log = _run(database_url, worker_processes, "--pack-size", "1")
    rows = trial_rows(db, again.id)
    assert log.count("reused the result") == again.n_trials and " in 0." not in log
    for row in rows:
        source = trained[row.config_key]
        assert row.state == "completed" and row.reused_from == source.id
        assert (row.loss, row.value, row.curve, row.steps) == (
            source.loss,
            source.value,
            source.curve,
            source.steps,
        )
        assert row.result["reused_from"] == source.id and row.attempts == 1
    assert get_study(db, again.id).status == "completed"
    views = {v.id: v for v in list_trials(db, again.id)}  # what GET /studies/{id}/trials says
    assert {v.reused_from for v in views.values()} == {r.id for r in trained.values()}
    sources = {r.id: r for r in trained.values()}
    assert all(v.pack_size == sources[v.reused_from].result["pack_size"] for v in views.values())
    # The web UI's trial table says so too: the reused-from column, rendered on the server.
    from service.reportcache import ReportCache
    from service.routes.ui import _study_context

    context = _study_context(db, ReportCache(), again.id)
    assert context is not None
    assert {row.reused_from for row in context["rows"]} == set(sources)
    assert _report(db, again.id) == _report(db, first.id)
    trials = optuna.load_study(study_name=again.optuna_study_name, storage=db.url).trials
    assert [t.state for t in trials] == [TrialState.COMPLETE] * again.n_trials
    assert sorted(t.value for t in trials) == sorted(r.value for r in rows)
    by_id = {r.id: r for r in rows}  # the Optuna trial says it was reused, and from which trial
    assert all(t.user_attrs["reused_from"] == by_id[t.user_attrs["adamod_lab_trial_id"]].reused_from
               for t in trials)  # fmt: skip


def test_more_seeds_train_only_the_new_seeds(
    database_url: str, worker_processes: WorkerProcesses
) -> None:
    db = migrated(database_url)
    first = create_study(db, noop_spec(n_lr=2, seeds=2))
    _run(database_url, worker_processes)
    originals = {r.config_key: r.id for r in trial_rows(db, first.id)}
    wider = create_study(db, noop_spec(n_lr=2, seeds=3))
    log = _run(database_url, worker_processes)  # packs (auto): reused members leave the pack
    rows = trial_rows(db, wider.id)
    reused = [r for r in rows if r.reused_from is not None]
    trained = [r for r in rows if r.reused_from is None]
    assert {r.config["seed"] for r in trained} == {2} and len(trained) == 4
    assert {r.reused_from for r in reused} == {originals[r.config_key] for r in reused}
    assert len(reused) == len(originals) == log.count("reused the result")
    assert all(r.state == "completed" for r in rows)
    # A third study reuses the reused: its trials point at the trials that were trained.
    third = create_study(db, noop_spec(n_lr=2, seeds=3))
    _run(database_url, worker_processes)
    points = {r.config_key: r.reused_from for r in trial_rows(db, third.id)}
    expected = {**{r.config_key: r.id for r in trained}, **originals}
    assert points == expected


def test_reuse_false_trains_again(sqlite_url: str, worker_processes: WorkerProcesses) -> None:
    db = migrated(sqlite_url)
    create_study(db, noop_spec(n_lr=1, seeds=2))
    _run(sqlite_url, worker_processes)
    fresh = create_study(db, noop_spec(n_lr=1, seeds=2, reuse=False))
    assert fresh.spec["reuse"] is False
    log = _run(sqlite_url, worker_processes)
    assert "reused the result" not in log
    assert all(r.state == "completed" and r.reused_from is None for r in trial_rows(db, fresh.id))


def test_reuse_must_be_a_boolean() -> None:
    import pytest
    from pydantic import ValidationError

    for bad in ("yes", 1, None):
        with pytest.raises(ValidationError, match="reuse"):
            noop_spec(reuse=bad)

"""The Optuna mirror reads right: in optuna.load_study and in optuna-dashboard's own HTTP API a
finished study has its name, metric name and flat attributes; its params are exactly the axes
that vary; Adam trials have no β3; the seed is a user attribute, never a hyperparameter."""

from __future__ import annotations

import ast
import json
import os
import threading
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import optuna
import pytest
from optuna.trial import TrialState
from sqlalchemy import text

from studies.db import Database, StudyView, create_study, list_trials
from studies.db.optuna_bridge import direct_writes
from studies.db.optuna_params import distributions_for_spec, optuna_study_name, split_params
from studies.db.queue import WorkerInfo, claim_next_trial, complete_trial, record_evaluation
from studies.trial import run_trial
from tests.db.util import migrated, noop_spec

WORKER = WorkerInfo(host="reads-right-host", pid=os.getpid(), device="cpu")
# Adam and AdaMod × 2 lrs × β3 {0.99, 0.999} (AdaMod only) × 2 seeds; one warmup, one schedule.
VARYING = {"optimizer", "lr", "beta3"}
METRIC = "capped validation loss"


def _finished_study(db: Database) -> StudyView:
    view = create_study(
        db,
        noop_spec(n_lr=2, seeds=2, name="reads right", beta3=[0.999, 0.99], warmup_steps=[0]),
    )
    while (claim := claim_next_trial(db, WORKER, lease_seconds=30)) is not None:
        result = run_trial(claim.config, "cpu", lambda p, c=claim: not record_evaluation(db, c, p))
        assert complete_trial(db, claim, result)
    return view


def _is_scalar(value: Any) -> bool:
    return value is None or isinstance(value, (bool, int, float, str))


def test_load_study_shows_name_metric_attrs_and_only_varying_params(database_url: str) -> None:
    db = migrated(database_url)
    view = _finished_study(db)
    assert view.n_trials == 2 * 2 * 2 + 2 * 2
    assert view.optuna_study_name == f"adamod-lab-{view.id}-reads right"
    study = optuna.load_study(study_name=view.optuna_study_name, storage=db.url)
    assert study.metric_names == [METRIC]

    attrs = study.user_attrs
    assert all(_is_scalar(v) for v in attrs.values()), attrs
    assert attrs["name"] == "reads right" and attrs["spec.name"] == "reads right"
    assert attrs["spec.workload"] == "noop" and attrs["spec.seeds"] == 2
    assert json.loads(attrs["spec.lr"]) == view.spec["lr"]
    assert json.loads(attrs["spec.beta3"]) == [0.999, 0.99]
    assert attrs["link.study"] == f"/studies/{view.id}"
    assert attrs["link.report"] == f"/studies/{view.id}/report"
    assert attrs["adamod_lab_study_id"] == view.id

    _assert_trials_read_right(db, view, study)

    importances = optuna.importance.get_param_importances(study)
    assert {"optimizer", "lr"} <= set(importances) <= VARYING  # never the seed
    bounded = optuna.importance.get_param_importances(study, params=["lr", "beta3"])
    assert set(bounded) == {"lr", "beta3"}  # over the AdaMod trials, which have a β3


def test_fallback_through_optunas_storage_api_reads_right_too(database_url: str) -> None:
    """A database whose Optuna schema is not the installed Optuna's head revision is written
    through RDBStorage's public API instead of direct statements: the same study results."""
    db = migrated(database_url)
    with db.engine.begin() as connection:
        head = connection.execute(text("SELECT version_num FROM alembic_version")).scalar_one()
        connection.execute(text("UPDATE alembic_version SET version_num = 'v3.0.0.d'"))
    assert not direct_writes(db.url)
    view = _finished_study(db)
    with db.engine.begin() as connection:  # Optuna's own clients refuse the older revision
        connection.execute(text(f"UPDATE alembic_version SET version_num = '{head}'"))
    study = optuna.load_study(study_name=view.optuna_study_name, storage=db.url)
    assert study.metric_names == [METRIC] and study.user_attrs["name"] == "reads right"
    assert all(_is_scalar(v) for v in study.user_attrs.values())
    _assert_trials_read_right(db, view, study)


def _assert_trials_read_right(db: Database, view: StudyView, study: optuna.Study) -> None:
    rows = {row.id: row for row in list_trials(db, view.id) or []}
    assert len(study.trials) == len(rows) == view.n_trials
    for trial in study.trials:
        row = rows[trial.user_attrs["adamod_lab_trial_id"]]
        assert trial.state == TrialState.COMPLETE and trial.number == row.number
        expected = {"optimizer", "lr"} | (
            {"beta3"} if row.params["optimizer"] == "adamod" else set()
        )
        assert set(trial.params) == set(trial.distributions) == expected
        assert trial.params == {k: row.params[k] for k in expected}
        assert trial.user_attrs["seed"] == row.params["seed"]
        assert trial.user_attrs["warmup_steps"] == 0
        assert trial.user_attrs["schedule"] == "constant"
        assert all(_is_scalar(v) for v in trial.user_attrs.values()), trial.user_attrs
    assert {t.user_attrs["seed"] for t in study.trials} == {0, 1}


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


@contextmanager
def _dashboard(url: str) -> Iterator[str]:
    """optuna-dashboard's own WSGI app on the database, served on a loopback port."""
    from optuna_dashboard import wsgi

    storage = optuna.storages.RDBStorage(url)
    server = make_server(
        "127.0.0.1", 0, wsgi(storage), server_class=WSGIServer, handler_class=_QuietHandler
    )
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)
        storage.engine.dispose()


def _get(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=30) as response:
        assert response.status == 200
        return json.loads(response.read())


def test_dashboard_api_shows_name_metric_and_exactly_the_varying_axes(database_url: str) -> None:
    db = migrated(database_url)
    view = _finished_study(db)
    with _dashboard(db.url) as base:
        (summary,) = [
            s
            for s in _get(f"{base}/api/studies")["study_summaries"]
            if s["study_name"] == view.optuna_study_name
        ]
        listed = {a["key"]: a["value"] for a in summary["user_attrs"]}
        assert listed["name"] == "reads right"
        detail = _get(f"{base}/api/studies/{summary['study_id']}")
        importances = _get(f"{base}/api/studies/{summary['study_id']}/param_importances")
    assert detail["name"] == view.optuna_study_name
    assert detail["objective_names"] == [METRIC]
    assert {p["name"] for p in detail["union_search_space"]} == VARYING
    assert {p["name"] for p in detail["intersection_search_space"]} == {"optimizer", "lr"}
    assert len(detail["trials"]) == view.n_trials
    for trial in detail["trials"]:
        names = {p["name"] for p in trial["params"]}
        assert "seed" not in names
        assert ("beta3" in names) == (_param(trial, "optimizer") == "adamod")  # Adam: none
    assert "seed" in {a["key"] for a in detail["union_user_attrs"]}
    (per_objective,) = importances["param_importances"]
    assert {i["name"] for i in per_objective} <= VARYING
    assert "seed" not in {i["name"] for i in per_objective}


def _param(trial: dict[str, Any], name: str) -> Any:
    (value,) = [p["param_external_value"] for p in trial["params"] if p["name"] == name]
    return value


def test_only_axes_with_several_values_are_distributions() -> None:
    spec = noop_spec(
        n_lr=1, seeds=3, optimizers=["adamod"], beta3=[0.9, 0.99], warmup_steps=[0, "auto"]
    ).model_dump(mode="json")
    assert list(distributions_for_spec(spec)) == ["beta3", "warmup_steps"]
    # "auto" resolves to 2000 steps with β2 = 0.999: [2000, "auto"] is one value, not two.
    spec["warmup_steps"] = [2000, "auto"]
    assert list(distributions_for_spec(spec)) == ["beta3"]
    params = {"optimizer": "adamod", "lr": 0.1, "beta3": 0.9, "warmup_steps": 2000, "seed": 2}
    optuna_params, attrs = split_params(params, distributions_for_spec(spec))
    assert optuna_params == {"beta3": 0.9}
    assert attrs == {"optimizer": "adamod", "lr": 0.1, "warmup_steps": 2000, "seed": 2}
    # A value the distribution cannot hold becomes an attribute instead of failing a write.
    assert split_params({"beta3": 0.5}, distributions_for_spec(spec)) == ({}, {"beta3": 0.5})


def test_study_names_are_readable_and_unique() -> None:
    assert optuna_study_name(7) == "adamod-lab-7"  # mirrors created before names
    assert optuna_study_name(7, "lr sweep") == "adamod-lab-7-lr sweep"
    assert optuna_study_name(1, "2 x") != optuna_study_name(12, "x")
    assert optuna_study_name(3, "a\x00b\n c") == "adamod-lab-3-a b c"
    assert len(optuna_study_name(10**9, "n" * 300)) == 200
    assert optuna_study_name(4, "\t") == "adamod-lab-4"


def _imported_modules(path: Path) -> set[str]:
    """Modules a file imports at run time (anything under `if TYPE_CHECKING:` left out)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    skipped: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and ast.unparse(node.test) == "TYPE_CHECKING":
            skipped.update(id(child) for child in ast.walk(node))
    found: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return found


def test_engine_and_optuna_bridge_do_not_import_each_other() -> None:
    db_dir = Path(__file__).resolve().parents[2] / "studies" / "db"
    # The engine creates Optuna's schema through optuna_schema, which imports nothing of ours.
    engine = _imported_modules(db_dir / "engine.py")
    assert {m for m in engine if "optuna" in m} == {"studies.db.optuna_schema"}
    for name in ("optuna_bridge.py", "optuna_params.py", "optuna_schema.py"):
        assert "studies.db.engine" not in _imported_modules(db_dir / name), name
    assert not {m for m in _imported_modules(db_dir / "optuna_schema.py") if "studies" in m}


@pytest.mark.parametrize(
    "module", ["studies.db.engine", "studies.db.optuna_bridge", "studies.db.optuna_params"]
)
def test_each_module_imports_alone(module: str) -> None:
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, "-c", f"import {module}"], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr

"""Workers training trial packs (--pack-size): real worker processes on real databases.

Each member of a pack must end exactly like a trial trained alone: its own result (saying how
many trained with it), curve, attempt count and Optuna trial; stopping, failing and being killed
mid-pack must hand back, fail or requeue every member.
"""

from __future__ import annotations

import random
import re
import signal
import time
from typing import Any

import optuna
import pytest
from optuna.trial import TrialState

from studies.db import Database, cancel_study, create_study, get_study
from studies.spec import StudySpec
from tests.db.util import migrated, noop_spec
from tests.workers.procs import WorkerProcesses, trial_rows, wait_for

IDLE = ("--exit-when-idle", "--poll-interval", "0.2")


def _quadratic_spec(seeds: int = 4) -> StudySpec:
    """2 optimizers × 2 lrs × `seeds` seeds: two pack keys (adam, adamod), 2·seeds trials each."""
    return StudySpec.model_validate(
        {
            "name": "quadratic packs",
            "workload": "quadratic",
            "workload_config": {"dim": 4, "steps_per_epoch": 4, "eval_every": 2},
            "optimizers": ["adam", "adamod"],
            "lr": {"values": [0.1, 0.01]},
            "seeds": seeds,
            "budget": {"steps": 8},
        }
    )


def _optuna_trials(db: Database, study_id: int) -> list[optuna.trial.FrozenTrial]:
    view = get_study(db, study_id)
    assert view is not None
    return optuna.load_study(study_name=view.optuna_study_name, storage=db.url).trials


def _assert_each_completed_once(db: Database, study_id: int) -> list[Any]:
    """Every trial completed, and exactly one COMPLETE Optuna trial per grid point, showing the
    trial's own curve."""
    rows = trial_rows(db, study_id)
    assert [r.state for r in rows] == ["completed"] * len(rows)
    trials = _optuna_trials(db, study_id)
    assert sorted(t.user_attrs["adamod_lab_trial_id"] for t in trials) == [r.id for r in rows]
    assert sorted(t.number for t in trials) == [r.number for r in rows]
    by_id = {t._trial_id: t for t in trials}
    for row in rows:
        frozen = by_id[row.optuna_trial_id]
        assert frozen.state == TrialState.COMPLETE
        assert frozen.intermediate_values == {p["step"]: p["val_loss"] for p in row.curve}
        assert frozen.user_attrs["attempts"] == row.attempts
    return rows


def _packs_in_log(log: str) -> list[list[int]]:
    return [
        [int(i) for i in ids.split(", ")]
        for ids in re.findall(r"pack of \d+ trials \(ids ([\d, ]+)\) claimed", log)
    ]


@pytest.mark.parametrize("workload", ["quadratic-sqlite", "quadratic-postgresql", "noop-sqlite"])
def test_pack_worker_completes_every_trial_once(
    workload: str, request: pytest.FixtureRequest, worker_processes: WorkerProcesses
) -> None:
    name, backend = workload.split("-")
    url = request.getfixturevalue("sqlite_url" if backend == "sqlite" else "postgres_url")
    db = migrated(url)
    if name == "quadratic":
        spec = _quadratic_spec(seeds=4)  # 16 trials: adam 0-7, adamod 8-15
    else:
        spec = noop_spec(n_lr=2, seeds=4, workload_config={"steps_per_epoch": 4, "eval_every": 2})
    view = create_study(db, spec)
    process = worker_processes.start(url, *IDLE, "--pack-size", "4")
    assert process.wait(timeout=120) == 0, worker_processes.log(process)
    rows = _assert_each_completed_once(db, view.id)
    assert [r.attempts for r in rows] == [1] * 16
    assert [r.result["pack_size"] for r in rows] == [4] * 16
    assert {r.worker_pid for r in rows} == {process.pid}
    assert all(r.curve and r.duration_s is not None and r.loss is not None for r in rows)
    log = worker_processes.log(process)
    packs = _packs_in_log(log)
    ids = [r.id for r in rows]
    assert packs == [ids[0:4], ids[4:8], ids[8:12], ids[12:16]]  # claim order, one key each
    assert log.count("completed in") == 16 and log.count("(pack of 4)") == 16
    # Each pack but the last is stored while the next one trains: after the next one's claim.
    claimed_at = [log.index(f"(ids {', '.join(map(str, p))}) claimed") for p in packs]
    stored_at = [log.index(f"trial {p[0]} completed in") for p in packs]
    assert all(claimed_at[i + 1] < stored_at[i] for i in range(3)), log


def test_max_trials_counts_members_and_unpackable_trials_run_alone(
    sqlite_url: str, worker_processes: WorkerProcesses
) -> None:
    db = migrated(sqlite_url)
    packed = create_study(db, _quadratic_spec(seeds=4))  # 16 trials
    process = worker_processes.start(sqlite_url, *IDLE, "--pack-size", "4", "--max-trials", "6")
    assert process.wait(timeout=120) == 0, worker_processes.log(process)
    rows = trial_rows(db, packed.id)
    assert [r.state for r in rows] == ["completed"] * 6 + ["queued"] * 10  # a pack of 4, then 2
    assert [r.result["pack_size"] for r in rows[:6]] == [4] * 4 + [2] * 2
    assert "worker exiting after 6 trial(s)" in worker_processes.log(process)
    cancel_study(db, packed.id)
    # noop with fail_seeds (here: a seed that never runs) cannot share a pack: one at a time.
    unpackable = create_study(
        db,
        noop_spec(n_lr=2, seeds=1, workload_config={"steps_per_epoch": 2, "fail_seeds": [99]}),
    )
    process = worker_processes.start(sqlite_url, *IDLE, "--pack-size", "4")
    assert process.wait(timeout=120) == 0, worker_processes.log(process)
    rows = _assert_each_completed_once(db, unpackable.id)
    assert [r.result["pack_size"] for r in rows] == [1] * 4
    log = worker_processes.log(process)
    assert "pack of" not in log and log.count(") claimed") == 4


def test_sigterm_mid_pack_hands_back_every_member(
    sqlite_url: str, worker_processes: WorkerProcesses
) -> None:
    db = migrated(sqlite_url)
    slow = {"steps_per_epoch": 40, "sleep_s": 0.1, "eval_every": 1}  # a pack takes about 4 s
    view = create_study(db, noop_spec(n_lr=2, seeds=2, optimizers=["adam"], workload_config=slow))
    first = worker_processes.start(sqlite_url, "--pack-size", "4", "--lease-seconds", "30")
    wait_for(
        lambda: all(r.state == "running" and r.curve for r in trial_rows(db, view.id)),
        timeout=60,
        what="every member of the pack to report",
    )
    first.send_signal(signal.SIGTERM)
    assert first.wait(timeout=15) == 0, worker_processes.log(first)
    rows = trial_rows(db, view.id)
    assert [(r.state, r.attempts, r.curve) for r in rows] == [("queued", 0, None)] * 4
    assert worker_processes.log(first).count("handed back: True") == 4
    assert {t.state for t in _optuna_trials(db, view.id)} == {TrialState.WAITING}
    second = worker_processes.start(sqlite_url, *IDLE, "--pack-size", "4")
    assert second.wait(timeout=60) == 0, worker_processes.log(second)
    rows = _assert_each_completed_once(db, view.id)
    assert [(r.attempts, r.worker_pid, r.result["pack_size"]) for r in rows] == [
        (1, second.pid, 4)
    ] * 4
    assert all(len(r.curve) == 40 for r in rows)


def test_watchdog_hands_back_a_pack_that_does_not_stop(
    sqlite_url: str, worker_processes: WorkerProcesses
) -> None:
    db = migrated(sqlite_url)
    slow = {"steps_per_epoch": 200, "sleep_s": 0.05, "eval_every": 200}  # no evaluation for 10 s
    view = create_study(db, noop_spec(n_lr=1, seeds=3, optimizers=["adam"], workload_config=slow))
    process = worker_processes.start(sqlite_url, "--pack-size", "3", "--shutdown-timeout", "1")
    wait_for(
        lambda: "pack of 3 trials" in worker_processes.log(process),
        timeout=60,
        what="the pack to be claimed",
    )
    started = time.monotonic()
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=15) == 0, worker_processes.log(process)
    assert time.monotonic() - started < 8  # the watchdog, not the pack's end
    assert [(r.state, r.attempts) for r in trial_rows(db, view.id)] == [("queued", 0)] * 3
    log = worker_processes.log(process)
    assert "did not stop within 1.0 s" in log and log.count("handed back: True") == 3


def test_cancel_and_failure_reach_every_member(
    sqlite_url: str, worker_processes: WorkerProcesses
) -> None:
    db = migrated(sqlite_url)
    slow = {"steps_per_epoch": 300, "sleep_s": 0.05, "eval_every": 2}  # a 15-second pack
    view = create_study(db, noop_spec(n_lr=1, seeds=3, optimizers=["adam"], workload_config=slow))
    process = worker_processes.start(sqlite_url, *IDLE, "--pack-size", "3", "--max-attempts", "2")
    wait_for(
        lambda: all(r.state == "running" and r.curve for r in trial_rows(db, view.id)),
        timeout=60,
        what="every member of the pack to report",
    )
    cancel_study(db, view.id)
    assert process.wait(timeout=20) == 0, worker_processes.log(process)  # long before 15 s
    rows = trial_rows(db, view.id)
    assert all(r.state == "cancelled" and 0 < len(r.curve) < 150 for r in rows)
    assert {t.state for t in _optuna_trials(db, view.id)} == {TrialState.PRUNED}
    failing = {"steps_per_epoch": 3, "fail_at_step": 2}  # the pack's loss raises at step 2
    broken = create_study(
        db, noop_spec(n_lr=1, seeds=3, optimizers=["adam"], workload_config=failing)
    )
    process = worker_processes.start(sqlite_url, *IDLE, "--pack-size", "3", "--max-attempts", "2")
    assert process.wait(timeout=60) == 0, worker_processes.log(process)
    rows = trial_rows(db, broken.id)
    assert [(r.state, r.attempts) for r in rows] == [("failed", 2)] * 3
    assert all("failing on purpose at step 2" in r.error and "Traceback" in r.error for r in rows)
    trials = _optuna_trials(db, broken.id)
    assert len(trials) == 3 and {t.state for t in trials} == {TrialState.FAIL}


def test_sigkilled_pack_workers_complete_each_grid_point_once(
    postgres_url: str, worker_processes: WorkerProcesses
) -> None:
    db = migrated(postgres_url)
    slow = {"steps_per_epoch": 30, "sleep_s": 0.1, "eval_every": 2}  # a pack takes about 3 s
    view = create_study(db, noop_spec(n_lr=8, seeds=4, workload_config=slow))  # 64 trials
    args = (*IDLE, "--lease-seconds", "2", "--max-attempts", "20")
    sizes = ["4", "4", "3", "auto"]
    for size in sizes:
        worker_processes.start(postgres_url, *args, "--pack-size", size)
    rng = random.Random(8)
    kills = 0
    deadline = time.monotonic() + 40
    while kills < 3 and time.monotonic() < deadline:
        # A victim in the middle of a pack: a live worker whose trials are running with a curve.
        busy = {r.worker_pid for r in trial_rows(db, view.id) if r.state == "running" and r.curve}
        victims = [p for p in worker_processes.processes if p.poll() is None and p.pid in busy]
        if not victims:
            time.sleep(0.1)
            continue
        victim = rng.choice(victims)
        victim.send_signal(signal.SIGKILL)
        victim.wait(timeout=10)
        kills += 1
        worker_processes.start(postgres_url, *args, "--pack-size", rng.choice(sizes))
        time.sleep(0.5)
    assert kills == 3, "the study finished before three workers were killed mid-pack"
    codes = worker_processes.wait_all(timeout=90)
    survivors = [p for p in worker_processes.processes if p.returncode != -signal.SIGKILL]
    assert [p.returncode for p in survivors] == [0] * len(survivors), [
        worker_processes.log(p) for p in survivors
    ]
    assert codes.count(-signal.SIGKILL) == 3
    rows = _assert_each_completed_once(db, view.id)
    assert max(r.attempts for r in rows) >= 2  # killed packs ran again
    assert max(r.result["pack_size"] for r in rows) > 1


def test_pack_size_option_is_checked_and_passed_on(tmp_path, capsys) -> None:  # type: ignore[no-untyped-def]
    from service.cli import main as cli_main
    from service.processes import worker_command
    from workers.__main__ import build_parser
    from workers.__main__ import main as worker_main
    from workers.worker import WorkerOptions

    url = f"sqlite:///{tmp_path / 'x.db'}"
    assert build_parser().parse_args([]).pack_size is None  # auto
    assert build_parser().parse_args(["--pack-size", "AUTO"]).pack_size is None
    assert build_parser().parse_args(["--pack-size", "64"]).pack_size == 64
    for bad in ("0", "65", "-1", "2.5", "four", ""):
        with pytest.raises(SystemExit) as exited:
            worker_main(["--database-url", url, "--pack-size", bad])
        assert exited.value.code == 2 and "--pack-size" in capsys.readouterr().err
        with pytest.raises(SystemExit, match="--pack-size"):
            cli_main(["up", "--workers", "1", "--pack-size", bad])
    for bad_value in (0, 65, True, 2.0):
        with pytest.raises(ValueError, match="--pack-size"):
            WorkerOptions(database_url=url, pack_size=bad_value).validate()  # type: ignore[arg-type]
    assert not (tmp_path / "x.db").exists()  # nothing was started
    command = worker_command(url, "cpu", "--exit-when-idle", pack_size="4")
    assert command[-3:] == ["--pack-size", "4", "--exit-when-idle"]
    assert "--pack-size" not in worker_command(url, "cpu")

"""A worker SIGKILLed half way through a digits trial: the next worker resumes the trial from its
checkpoint, trains fewer steps, and stores the result an uninterrupted run gives, to the bit."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest

from studies.db import create_study
from studies.db.repository import list_trials
from studies.spec import StudySpec, expand_grid
from studies.trial import run_trial
from tests.db.util import migrated
from tests.workers.procs import WorkerProcesses, trial_rows, wait_for
from workers.__main__ import main as worker_main

# One AdaMod trial of 40 epochs x 17 steps, an evaluation per epoch: several seconds on CPU.
SPEC = {
    "name": "resume",
    "workload": "digits_mlp",
    "workload_config": {"hidden": 16, "batch_size": 64},
    "optimizers": ["adamod"],
    "beta3": [0.99],
    "lr": {"values": [0.01]},
    "warmup_steps": [7],
    "schedule": ["cosine"],
    "seeds": 1,
    "budget": {"epochs": 40},
}
EPOCHS, STEPS_PER_EPOCH = 40, 17


def test_a_killed_trial_resumes_from_its_checkpoint_to_the_same_result(
    sqlite_url: str, worker_processes: WorkerProcesses, tmp_path: Path
) -> None:
    db = migrated(sqlite_url)
    spec = StudySpec.model_validate(SPEC)
    view = create_study(db, spec)
    checkpoints = tmp_path / "checkpoints"
    common = ["--checkpoint-dir", str(checkpoints), "--checkpoint-every", "1", "--pack-size", "1"]
    first = worker_processes.start(sqlite_url, *common, "--lease-seconds", "2")
    saved = checkpoints / f"trial-{trial_rows(db, view.id)[0].id}.pt"
    # The first checkpoint comes after epoch 1, seconds before the end: kill it then (a
    # condition on the written curve as well could miss the window while the trial finishes).
    wait_for(saved.exists, timeout=120, what="the trial's first checkpoint")
    first.send_signal(signal.SIGKILL)  # and with it its trainer
    first.wait(timeout=10)
    second = worker_processes.start(
        sqlite_url, *common, "--exit-when-idle", "--poll-interval", "0.2"
    )
    assert second.wait(timeout=180) == 0, worker_processes.log(second)

    (row,) = trial_rows(db, view.id)
    assert row.state == "completed" and row.attempts == 2, worker_processes.log(second)
    resumed_from = row.result["resumed_from_step"]
    assert STEPS_PER_EPOCH <= resumed_from < EPOCHS * STEPS_PER_EPOCH  # fewer steps trained
    assert not saved.exists()  # deleted once the trial completed
    (view_of_trial,) = list_trials(db, view.id) or []
    assert view_of_trial.resumed_from_step == resumed_from  # what GET /studies/{id}/trials shows

    (config,) = expand_grid(spec)
    uninterrupted = run_trial(config)
    assert row.loss == uninterrupted.loss  # to the bit, not approximately
    assert row.accuracy == uninterrupted.accuracy
    assert [p["val_loss"] for p in row.curve] == [p.val_loss for p in uninterrupted.curve]
    assert [p["train_loss"] for p in row.curve] == [p.train_loss for p in uninterrupted.curve]


@pytest.mark.parametrize(
    ("args", "flag"),
    [
        (["--checkpoint-every", "0"], "--checkpoint-every"),
        (["--checkpoint-seconds", "-5"], "--checkpoint-seconds"),
        (["--checkpoint-seconds", "soon"], "--checkpoint-seconds"),
        (["--checkpoint-dir", ""], "--checkpoint-dir"),
    ],
)
def test_bad_checkpoint_options_exit_2_naming_the_flag(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], flag: str
) -> None:
    with pytest.raises(SystemExit) as exited:
        worker_main(["--database-url", f"sqlite:///{tmp_path / 'x.db'}", *args])
    assert exited.value.code == 2
    assert flag in capsys.readouterr().err

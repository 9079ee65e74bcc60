"""Checkpoints: the store writes atomically and shrugs off damaged files; a trial interrupted after
a checkpoint (an exception, a stop, a real SIGKILL) resumes from it with fewer steps and ends with
the result an uninterrupted run gives, to the bit; the checkpoint is gone once the trial ends."""

from __future__ import annotations

import dataclasses
import logging
import math
import pickle
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from torch.optim.optimizer import register_optimizer_step_post_hook

import studies.checkpoints as checkpoints_module
from studies.checkpoints import Checkpointing, CheckpointStore
from studies.spec import TrialConfig
from studies.trial import EvalPoint, TrialResult, run_trial

REPO = Path(__file__).resolve().parents[2]

# 6 epochs of 17 steps (102 steps, an evaluation per epoch), about a second; warmup and cosine so
# that the resumed lr multiplier matters, AdaMod so that its bound telemetry must carry over.
DIGITS: dict[str, Any] = {
    "workload": "digits_mlp",
    "workload_config": {"hidden": 16, "batch_size": 64},
    "optimizer": "adamod",
    "beta3": 0.99,
    "lr": 0.01,
    "warmup_steps": 7,
    "schedule": "cosine",
    "budget": {"epochs": 6},
}
STEPS_PER_EPOCH = 17


def digits(**overrides: Any) -> TrialConfig:
    return TrialConfig.model_validate({**DIGITS, **overrides})


@pytest.fixture(scope="module")
def uninterrupted() -> TrialResult:
    return run_trial(digits())


@pytest.fixture
def steps_taken() -> Iterator[list[int]]:
    """A one-element list counting every optimizer step taken while the test runs."""
    count = [0]

    def hook(*_: Any) -> None:
        count[0] += 1

    handle = register_optimizer_step_post_hook(hook)
    try:
        yield count
    finally:
        handle.remove()


def policy(directory: Path, name: str = "trial-17", **rules: Any) -> Checkpointing:
    rules = rules or {"every_evaluations": 1}
    return Checkpointing(CheckpointStore(directory), name=name, **rules)


def assert_same_result(resumed: TrialResult, reference: TrialResult) -> None:
    """Every field of the result equal (==, not approximately), but the attempt's own facts."""
    for field in dataclasses.fields(TrialResult):
        if field.name in ("duration_s", "resumed_from_step"):
            continue
        assert getattr(resumed, field.name) == getattr(reference, field.name), field.name
    assert resumed.bound_stats is not None and resumed.bound_stats["n_steps"] == reference.steps


class Interrupted(Exception):
    """Stands for the worker dying between two evaluations."""


def interrupt_after(step: int) -> Any:
    def report(point: EvalPoint) -> None:
        if point.step > step:
            raise Interrupted

    return report


def test_interrupted_trial_resumes_to_the_same_result(
    tmp_path: Path, uninterrupted: TrialResult, steps_taken: list[int]
) -> None:
    checkpoint = policy(tmp_path)
    with pytest.raises(Interrupted):  # evaluations 1..3 saved; dies at the 4th, before saving
        run_trial(digits(), report=interrupt_after(3 * STEPS_PER_EPOCH), checkpoint=checkpoint)
    assert checkpoint.store.path("trial-17").is_file()
    steps_taken[0] = 0
    reported: list[int] = []
    resumed = run_trial(
        digits(), report=lambda p: reported.append(p.step) is not None, checkpoint=checkpoint
    )
    assert resumed.resumed_from_step == 3 * STEPS_PER_EPOCH
    assert steps_taken[0] == uninterrupted.steps - 3 * STEPS_PER_EPOCH  # fewer steps: 51 of 102
    assert reported == [4 * STEPS_PER_EPOCH, 5 * STEPS_PER_EPOCH, 6 * STEPS_PER_EPOCH]
    assert_same_result(resumed, uninterrupted)
    assert [p.val_loss for p in resumed.curve] == [p.val_loss for p in uninterrupted.curve]
    assert uninterrupted.resumed_from_step is None
    assert resumed.to_dict()["resumed_from_step"] == 3 * STEPS_PER_EPOCH
    assert not checkpoint.store.path("trial-17").exists()  # deleted on completion
    assert list(tmp_path.iterdir()) == []  # and no temporary file left behind


def test_sigkilled_trial_resumes_to_the_same_result(
    tmp_path: Path, uninterrupted: TrialResult
) -> None:
    """A real trainer process, killed with SIGKILL while it holds checkpoints; the policy reaches
    it pickled, as a worker sends it to its trainer child."""
    checkpoint = policy(tmp_path / "store")
    (tmp_path / "policy.pkl").write_bytes(pickle.dumps(checkpoint))
    child = textwrap.dedent(
        """
        import pickle, sys, time
        import torch
        torch.set_num_threads(1)
        from studies.spec import TrialConfig
        from studies.trial import run_trial
        config = TrialConfig.model_validate_json(sys.argv[1])
        with open(sys.argv[2], "rb") as f:
            checkpoint = pickle.load(f)
        def report(point):
            if point.step > 2 * 17:  # evaluations 1 and 2 are saved: wait here to be killed
                print("waiting", flush=True)
                time.sleep(600)
        run_trial(config, report=report, checkpoint=checkpoint)
        print("finished", flush=True)
        """
    )
    args = [sys.executable, "-c", child, digits().model_dump_json(), str(tmp_path / "policy.pkl")]
    proc = subprocess.Popen(args, cwd=REPO, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "waiting"
        assert checkpoint.store.path("trial-17").is_file()
        proc.kill()  # SIGKILL: no handler runs, nothing is flushed
        assert proc.wait(timeout=30) == -9
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    resumed = run_trial(digits(), checkpoint=checkpoint)
    assert resumed.resumed_from_step == 2 * STEPS_PER_EPOCH
    assert_same_result(resumed, uninterrupted)
    assert not checkpoint.store.path("trial-17").exists()


def test_resumes_in_the_middle_of_an_epoch_with_dropout(tmp_path: Path) -> None:
    """Evaluations every 6 of 20 steps per epoch: the resumed attempt skips the batches of the
    epoch already trained on; dropout draws from torch's generator, which must carry over too.
    The trial is stopped by its report (as a cancel or a worker's SIGTERM does), which saves."""
    config = TrialConfig.model_validate(
        {
            "workload": "tiny_transformer",
            "workload_config": {
                "corpus": "generated",
                "d_model": 16,
                "n_heads": 2,
                "n_layers": 1,
                "d_ff": 32,
                "context": 16,
                "batch_size": 4,
                "dropout": 0.2,
                "steps_per_epoch": 20,
                "eval_every": 6,
                "eval_batches": 2,
            },
            "optimizer": "adamw",
            "lr": 0.003,
            "budget": {"steps": 50},
        }
    )
    reference = run_trial(config)
    # saves at evaluations 1 and 2 by count, then at 4 (step 24: epoch 1, 4 batches in) on stop
    checkpoint = policy(tmp_path, every_evaluations=2)
    stopped = run_trial(config, report=lambda p: p.step >= 24, checkpoint=checkpoint)
    assert stopped.state == "cancelled"
    assert checkpoint.store.path("trial-17").is_file()  # a cancelled trial keeps its checkpoint
    torch.manual_seed(12345)  # whatever ran in between: the saved generator state wins
    resumed = run_trial(config, checkpoint=checkpoint)
    assert resumed.resumed_from_step == 24
    assert resumed.state == "completed"
    assert resumed.curve == reference.curve
    assert (resumed.loss, resumed.test_loss, resumed.steps) == (
        reference.loss,
        reference.test_loss,
        reference.steps,
    )
    assert not checkpoint.store.path("trial-17").exists()


def test_corrupt_checkpoint_is_ignored_with_a_warning(
    tmp_path: Path, uninterrupted: TrialResult, caplog: pytest.LogCaptureFixture
) -> None:
    checkpoint = policy(tmp_path)
    checkpoint.store.path("trial-17").write_bytes(b"PK\x03\x04 not a checkpoint at all")
    with caplog.at_level(logging.WARNING, logger="studies.checkpoints"):
        assert checkpoint.load() is None
        result = run_trial(digits(), checkpoint=checkpoint)
    assert "unreadable checkpoint" in caplog.text
    assert result.resumed_from_step is None
    assert_same_result(result, uninterrupted)
    assert not checkpoint.store.path("trial-17").exists()


def test_truncated_checkpoint_is_ignored(tmp_path: Path) -> None:
    store = CheckpointStore(tmp_path)
    store.save("a", {"weights": torch.arange(10_000.0), "step": 3})
    data = store.path("a").read_bytes()
    store.path("a").write_bytes(data[: len(data) // 2])  # a copy cut short
    assert store.load("a") is None


def test_checkpoint_of_another_config_is_ignored(
    tmp_path: Path, uninterrupted: TrialResult, caplog: pytest.LogCaptureFixture
) -> None:
    checkpoint = policy(tmp_path)
    other = digits(lr=0.02)
    with pytest.raises(Interrupted):
        run_trial(other, report=interrupt_after(STEPS_PER_EPOCH), checkpoint=checkpoint)
    assert checkpoint.load() is not None
    with caplog.at_level(logging.WARNING, logger="studies.trial"):
        result = run_trial(digits(), checkpoint=checkpoint)
    assert "another trial config" in caplog.text
    assert result.resumed_from_step is None
    assert_same_result(result, uninterrupted)


def test_checkpoint_that_cannot_be_restored_starts_over(
    tmp_path: Path, uninterrupted: TrialResult, caplog: pytest.LogCaptureFixture
) -> None:
    """Same config key, but a state this code cannot load (a model of other shapes): the trial
    is prepared afresh and trains from step 0 as if there had been no checkpoint."""
    checkpoint = policy(tmp_path)
    with pytest.raises(Interrupted):
        run_trial(digits(), report=interrupt_after(STEPS_PER_EPOCH), checkpoint=checkpoint)
    saved = checkpoint.load()
    assert saved is not None
    saved["model"] = {"0.weight": torch.zeros(3, 3)}
    checkpoint.save(saved)
    with caplog.at_level(logging.WARNING, logger="studies.trial"):
        result = run_trial(digits(), checkpoint=checkpoint)
    assert "cannot be restored" in caplog.text
    assert result.resumed_from_step is None
    assert_same_result(result, uninterrupted)


def test_diverged_trial_deletes_its_checkpoint(tmp_path: Path) -> None:
    checkpoint = policy(tmp_path)
    checkpoint.save({"stale": True})  # not this code's format: ignored, then removed at the end
    result = run_trial(digits(optimizer="adam", beta3=None, lr=1e25), checkpoint=checkpoint)
    assert result.state == "diverged"
    assert not checkpoint.store.path("trial-17").exists()


def test_save_is_atomic(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A save that fails half-way leaves the previous checkpoint readable and no stray file."""
    store = CheckpointStore(tmp_path / "new" / "dir")  # created on the first save
    store.save("t", {"step": 1, "w": torch.ones(4)})
    real_save = torch.save

    def half_save(obj: Any, f: Any) -> None:
        real_save(obj, f)
        f.seek(0)
        f.truncate(10)  # half a file...
        raise OSError("disk full")  # ...and the process stops writing

    monkeypatch.setattr(checkpoints_module.torch, "save", half_save)
    with pytest.raises(OSError, match="disk full"):
        store.save("t", {"step": 2, "w": torch.zeros(4)})
    monkeypatch.undo()
    assert [p.name for p in store.directory.iterdir()] == ["t.pt"]
    loaded = store.load("t")
    assert loaded is not None and loaded["step"] == 1 and torch.equal(loaded["w"], torch.ones(4))


def test_save_never_shows_a_partial_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """While the new checkpoint is written, the name still holds the old one, whole."""
    store = CheckpointStore(tmp_path)
    store.save("t", {"step": 1})
    seen: list[Any] = []
    real_save = torch.save

    def watching_save(obj: Any, f: Any) -> None:
        real_save(obj, f)
        f.flush()
        loaded = store.load("t")
        seen.append(None if loaded is None else loaded["step"])

    monkeypatch.setattr(checkpoints_module.torch, "save", watching_save)
    store.save("t", {"step": 2})
    monkeypatch.undo()
    assert seen == [1]
    loaded = store.load("t")
    assert loaded is not None and loaded["step"] == 2


def test_store_load_and_delete(tmp_path: Path) -> None:
    store = CheckpointStore(tmp_path / "missing")
    assert store.load("nothing") is None  # no directory yet: no checkpoint, no error
    store.delete("nothing")  # nothing to delete: no error
    store.save("x", {"a": [1, 2.5, None, "s"], "t": torch.tensor([1.0, math.inf])})
    loaded = store.load("x")
    assert loaded is not None and loaded["a"] == [1, 2.5, None, "s"]
    store.delete("x")
    assert store.load("x") is None


def test_store_refuses_to_load_code(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """weights_only: a pickle that would run code is not a checkpoint."""
    store = CheckpointStore(tmp_path)
    torch.save({"obj": Interrupted("x")}, store.path("evil"))
    with caplog.at_level(logging.WARNING, logger="studies.checkpoints"):
        assert store.load("evil") is None
    assert "unreadable checkpoint" in caplog.text


def test_policy_is_due_by_count_or_time(tmp_path: Path) -> None:
    by_count = policy(tmp_path, every_evaluations=3)
    assert not by_count.due(2, 1e9)
    assert by_count.due(3, 0.0)
    by_time = policy(tmp_path, every_seconds=60.0)
    assert not by_time.due(1000, 59.0)
    assert by_time.due(1, 60.0)
    both = policy(tmp_path, every_evaluations=5, every_seconds=10)
    assert both.due(5, 0.0) and both.due(1, 10.0) and not both.due(4, 9.0)


def test_policy_pickles_as_a_path_and_numbers(tmp_path: Path) -> None:
    checkpoint = policy(tmp_path, every_evaluations=2, every_seconds=300.0)
    copy = pickle.loads(pickle.dumps(checkpoint))
    assert copy == checkpoint
    assert copy.store.directory == tmp_path


@pytest.mark.parametrize(
    ("build", "argument"),
    [
        (lambda d: CheckpointStore(""), "directory"),
        (lambda d: CheckpointStore(None), "directory"),  # type: ignore[arg-type]
        (lambda d: Checkpointing(CheckpointStore(d), "", every_evaluations=1), "name"),
        (lambda d: Checkpointing(CheckpointStore(d), "a/b", every_evaluations=1), "name"),
        (lambda d: Checkpointing(CheckpointStore(d), "..", every_evaluations=1), "name"),
        (lambda d: Checkpointing(CheckpointStore(d), 17, every_evaluations=1), "name"),  # type: ignore[arg-type]
        (lambda d: Checkpointing(str(d), "t", every_evaluations=1), "store"),  # type: ignore[arg-type]
        (
            lambda d: Checkpointing(CheckpointStore(d), "t", every_evaluations=0),
            "every_evaluations",
        ),
        (
            lambda d: Checkpointing(CheckpointStore(d), "t", every_evaluations=True),
            "every_evaluations",
        ),
        (
            lambda d: Checkpointing(CheckpointStore(d), "t", every_evaluations=1.5),
            "every_evaluations",
        ),  # type: ignore[arg-type]
        (lambda d: Checkpointing(CheckpointStore(d), "t", every_seconds=0), "every_seconds"),
        (lambda d: Checkpointing(CheckpointStore(d), "t", every_seconds=math.nan), "every_seconds"),
        (lambda d: Checkpointing(CheckpointStore(d), "t", every_seconds="5"), "every_seconds"),  # type: ignore[arg-type]
        (lambda d: Checkpointing(CheckpointStore(d), "t"), "every_evaluations, every_seconds"),
        (lambda d: CheckpointStore(d).save("../up", {}), "name"),
        (lambda d: CheckpointStore(d).load("a\\b"), "name"),
        (lambda d: CheckpointStore(d).delete(""), "name"),
    ],
)
def test_bad_arguments_name_the_argument(tmp_path: Path, build: Any, argument: str) -> None:
    with pytest.raises(ValueError, match=f"^{argument}:"):
        build(tmp_path)
    assert list(tmp_path.iterdir()) == []

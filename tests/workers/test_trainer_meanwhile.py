"""Trainer.run's `meanwhile`: the supervisor's own work done while the child trains the job."""

from __future__ import annotations

import pytest

from studies.spec import TrialConfig
from workers.trainer import Trainer, TrainingJob


def _job(n: int = 2) -> TrainingJob:
    configs = [
        TrialConfig(
            workload="quadratic", workload_config={"dim": 4}, optimizer="adamod",
            lr=0.01 * (k + 1), beta3=0.99, seed=k, budget={"steps": 20},
        )
        for k in range(n)
    ]  # fmt: skip
    return TrainingJob(configs=configs, device="cpu", packed=True)


@pytest.fixture
def trainer():  # type: ignore[no-untyped-def]
    trainer = Trainer()
    yield trainer
    trainer.close()


def test_meanwhile_runs_once_while_the_child_has_the_job(trainer: Trainer) -> None:
    calls: list[int | None] = []
    results = trainer.run(
        _job(), report=lambda k, point: False, watch=lambda: None,
        meanwhile=lambda: calls.append(trainer.pid),
    )  # fmt: skip
    assert calls == [trainer.pid] and calls[0] is not None  # the child was alive, training
    assert [r.state for r in results] == ["completed", "completed"]
    assert [r.pack_size for r in results] == [2, 2]


def test_a_meanwhile_that_raises_ends_the_job_and_the_trainer_recovers(trainer: Trainer) -> None:
    def fail() -> None:
        raise RuntimeError("database gave up")

    trainer.start()
    child = trainer.pid
    with pytest.raises(RuntimeError, match="database gave up"):
        trainer.run(_job(), report=lambda k, point: False, watch=lambda: None, meanwhile=fail)
    assert trainer.pid is None  # killed: no child trains on with no one to answer it
    results = trainer.run(_job(1), report=lambda k, point: False, watch=lambda: None)
    assert trainer.pid not in (None, child) and [r.state for r in results] == ["completed"]

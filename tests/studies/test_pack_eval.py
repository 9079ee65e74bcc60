"""A pack's evaluation and batches on a real workload (digits_mlp, float32) against its members'
own problems: the stacked metrics path, and one batch order per distinct seed.

The reference is each member's Problem used alone (evaluate, evaluate_test, train_batches), as
`run_trial` uses it; tests/studies/test_pack.py checks whole trials in float64.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch

from studies import pack as pack_module
from studies.workloads.base import Problem
from studies.workloads.common import ShuffledBatches
from studies.workloads.registry import get_workload

SEEDS = [0, 1, 0, 2, 1]  # repeated seeds, as in a study (several lrs per seed)


def _problems(**config: Any) -> list[Problem]:
    spec = get_workload("digits_mlp")
    cfg = spec.config_model.model_validate({"hidden": 16, "depth": 2, **config})
    return [spec.build(cfg, seed, torch.device("cpu")) for seed in SEEDS]


def test_pack_metrics_are_each_members_evaluate(monkeypatch: pytest.MonkeyPatch) -> None:
    """Validation and test metrics through Problem.pack_metrics (vmap never runs) equal each
    member's own evaluate, to float32 rounding; the model is left in training mode."""

    def no_vmap(*args: Any) -> Any:
        raise AssertionError("vmapped metrics although the workload gives stacked ones")

    monkeypatch.setattr(pack_module._PackModel, "_vmapped_metrics", no_vmap)
    problems = _problems()
    pack = pack_module._PackModel(problems)
    for which, own in (("metrics", "evaluate"), ("test_metrics", "evaluate_test")):
        got = pack.metrics(which)
        assert len(got) == len(problems)
        for metrics, problem in zip(got, problems, strict=True):
            want = getattr(problem, own)(problem.model)
            assert metrics.keys() == want.keys() == {"loss", "accuracy"}
            assert metrics["loss"] == pytest.approx(want["loss"], rel=1e-5)
            assert metrics["accuracy"] == pytest.approx(want["accuracy"], abs=1e-2)
    assert pack.module.training


def test_without_a_test_split_a_pack_has_no_test_metrics() -> None:
    problems = _problems(test_fraction=0.0)
    assert problems[0].pack_test_metrics is None
    assert not pack_module._PackModel(problems).has_test()


def test_epoch_batches_draw_one_order_per_seed_and_are_each_members_batches(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Members of one seed share one permutation per epoch (drawn once), and every member's
    batch is exactly, bit for bit, the one its own train_batches gives; contiguous."""
    problems = _problems()
    pack = pack_module._PackModel(problems)
    drawn: list[tuple[int, int]] = []
    order = ShuffledBatches.order

    def counting(self: ShuffledBatches, epoch: int) -> torch.Tensor:
        drawn.append((self.seed, epoch))
        return order(self, epoch)

    for epoch in (0, 3):
        drawn.clear()
        monkeypatch.setattr(ShuffledBatches, "order", counting)
        steps = list(pack.epoch_batches(epoch))
        monkeypatch.undo()
        assert sorted(drawn) == [(seed, epoch) for seed in sorted(set(SEEDS))]
        own = [problem.train_batches(epoch) for problem in problems]
        assert len(steps) == len(own[0]) == problems[0].steps_per_epoch
        for step, (batch, dims) in enumerate(steps):
            assert dims == (0, 0)
            for tensor, part in zip(batch, range(2), strict=True):
                assert tensor.is_contiguous()
                want = torch.stack([own[k][step][part] for k in range(len(problems))])
                assert tensor.dtype == want.dtype and torch.equal(tensor, want)

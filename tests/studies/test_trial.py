"""run_trial on real (small) training: divergence, cancellation, warmup, determinism, telemetry."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest
import torch

from studies.spec import Budget, TrialConfig
from studies.trial import EvalPoint, TrialResult, resolve_device, run_trial


def config(**overrides: Any) -> TrialConfig:
    base: dict[str, Any] = {
        "workload": "quadratic",
        "optimizer": "adam",
        "lr": 0.03,
        "budget": {"steps": 100},
    }
    base.update(overrides)
    return TrialConfig.model_validate(base)


def test_quadratic_trains_and_reports_every_evaluation() -> None:
    seen: list[EvalPoint] = []
    result = run_trial(config(), report=lambda p: seen.append(p) is not None)
    assert result.state == "completed"
    assert result.steps == 100
    assert [p.step for p in result.curve] == [25, 50, 75, 100]  # eval_every = 25
    assert seen == result.curve
    assert result.loss == result.curve[-1].val_loss
    assert result.loss < 0.2 * result.loss0
    assert result.curve[0].epoch == 0.5  # 25 of 50 steps per epoch
    assert all(p.train_loss is not None and p.train_loss > 0 for p in result.curve)
    assert result.device == "cpu" and result.torch_version == torch.__version__
    assert result.bound_stats is None  # torch's Adam has no bound telemetry
    json.dumps(result.to_dict(), allow_nan=False)


@pytest.mark.parametrize(("optimizer", "lr"), [("adam", 1e25), ("sgd", 50.0)])
def test_huge_lr_diverges_as_a_result(optimizer: str, lr: float) -> None:
    result = run_trial(config(optimizer=optimizer, lr=lr))
    assert result.state == "diverged"
    assert result.loss is None and math.isfinite(result.loss0)
    assert result.steps < 100
    json.dumps(result.to_dict(), allow_nan=False)


def test_divergence_keeps_partial_curve() -> None:
    cfg = config(
        workload="noop",
        workload_config={"steps_per_epoch": 10, "eval_every": 2, "diverge_at_step": 7},
        budget={"epochs": 1},
        lr=0.01,
    )
    result = run_trial(cfg)
    assert result.state == "diverged"
    assert [p.step for p in result.curve] == [2, 4, 6]
    assert result.steps == 7


def test_report_returning_true_cancels() -> None:
    calls: list[int] = []

    def stop_after_two(point: EvalPoint) -> bool:
        calls.append(point.step)
        return len(calls) >= 2

    result = run_trial(config(), report=stop_after_two)
    assert result.state == "cancelled"
    assert calls == [25, 50]
    assert result.steps == 50
    assert result.loss == result.curve[-1].val_loss


def test_errors_in_the_workload_propagate() -> None:
    cfg = config(workload="noop", workload_config={"fail_at_step": 3}, budget={"steps": 5})
    with pytest.raises(RuntimeError, match="failing on purpose at step 3"):
        run_trial(cfg)


def test_same_config_and_seed_is_bit_identical_on_cpu() -> None:
    a = run_trial(config(seed=3)).to_dict()
    b = run_trial(config(seed=3)).to_dict()
    c = run_trial(config(seed=4)).to_dict()
    for r in (a, b, c):
        r.pop("duration_s")
    assert a == b
    assert a["loss"] != c["loss"]


def test_linear_warmup_slows_the_first_steps() -> None:
    # With warmup over the whole budget the lr ramps from lr/100 up; progress after 25 steps
    # must be smaller than without warmup at the same lr.
    plain = run_trial(config(budget={"steps": 25}, lr=0.01))
    warm = run_trial(config(budget={"steps": 25}, lr=0.01, warmup_steps=100))
    assert warm.loss0 == plain.loss0
    assert plain.loss < warm.loss < warm.loss0


def test_epochs_budget_counts_steps_per_epoch() -> None:
    cfg = config(workload="noop", workload_config={"steps_per_epoch": 4}, budget={"epochs": 3})
    result = run_trial(cfg)
    assert result.steps == 12
    assert [p.step for p in result.curve] == [4, 8, 12]
    assert [p.epoch for p in result.curve] == [1.0, 2.0, 3.0]


def test_device_argument_is_checked() -> None:
    assert resolve_device("cpu") == torch.device("cpu")
    with pytest.raises(ValueError, match="device"):
        resolve_device("quantum:0")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            resolve_device("cuda:0")
    assert resolve_device("auto").type in ("cpu", "cuda")


def test_result_to_dict_is_json_safe() -> None:
    r = TrialResult(
        state="completed",
        loss=float("nan"),
        loss0=1.0,
        accuracy=None,
        curve=[EvalPoint(1, 1.0, 0.5, float("inf"), None)],
        bound_stats=None,
        steps=1,
        duration_s=0.1,
        device="cpu",
        torch_version="x",
    )
    d = r.to_dict()
    assert d["loss"] is None and d["curve"][0]["train_loss"] is None
    json.dumps(d, allow_nan=False)


def test_budget_total_steps() -> None:
    assert Budget(steps=7).total_steps(100) == 7
    assert Budget(epochs=3).total_steps(5) == 15


def test_adamod_trial_with_telemetry_is_bit_identical() -> None:
    cfg = config(
        workload="digits_mlp", optimizer="adamod", beta3=0.99, lr=1e-2, budget={"steps": 30},
        workload_config={"hidden": 16}, warmup_steps=5,
    )  # fmt: skip
    a, b = run_trial(cfg).to_dict(), run_trial(cfg).to_dict()
    a.pop("duration_s"), b.pop("duration_s")
    assert a == b and a["bound_stats"]["n_steps"] == 30

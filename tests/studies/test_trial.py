"""run_trial on real (small) training: divergence, cancellation, warmup, schedules, determinism,
telemetry, the new optimizers and the test split."""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Iterator
from typing import Any

import pytest
import torch
from pydantic import BaseModel, ConfigDict

from studies.spec import Budget, TrialConfig
from studies.trial import (
    EvalPoint,
    TrialResult,
    lr_multiplier,
    prepare_trial,
    resolve_device,
    run_trial,
)
from studies.workloads.base import Problem, Workload
from studies.workloads.registry import register_workload


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
    # Against the standard library's own conversion: every field, each field's value
    assert set(d) == set(dataclasses.asdict(r))
    assert d["curve"] == [{"step": 1, "epoch": 1.0, "val_loss": 0.5, "train_loss": None,
                           "accuracy": None}]  # fmt: skip
    slim = r.to_dict(exclude=("curve", "bound_stats"))
    assert slim == {k: v for k, v in d.items() if k not in ("curve", "bound_stats")}
    with pytest.raises(ValueError, match="exclude"):
        r.to_dict(exclude=("curv",))


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


# --- schedules ------------------------------------------------------------------------------


def test_lr_multiplier_hand_worked_case() -> None:
    # warmup 2 of 6 steps, then cosine over steps 2..6: progress (step - 2) / 4
    got = [
        lr_multiplier(step, warmup_steps=2, total_steps=6, schedule="cosine")
        for step in range(1, 7)
    ]
    r = math.sqrt(2) / 2  # cos(pi / 4)
    expected = [1 / 2, 1.0, (1 + r) / 2, 0.5, (1 - r) / 2, 0.0]
    assert got == pytest.approx(expected, abs=1e-15)
    assert got[-1] == 0.0  # exactly 0 at the budget's last step
    assert got[:2] == [0.5, 1.0]  # warmup is exactly step / warmup
    # constant: the warmup, then 1
    assert [
        lr_multiplier(s, warmup_steps=4, total_steps=6, schedule="constant") for s in range(1, 7)
    ] == [0.25, 0.5, 0.75, 1.0, 1.0, 1.0]
    # cosine without warmup starts just below 1 and decays monotonically to 0
    plain = [lr_multiplier(s, warmup_steps=0, total_steps=4, schedule="cosine") for s in (1, 2, 4)]
    assert plain == pytest.approx([(1 + r) / 2, 0.5, 0.0], abs=1e-15)
    # a budget that is all warmup has nothing left to decay
    assert lr_multiplier(3, warmup_steps=3, total_steps=3, schedule="cosine") == 1.0
    with pytest.raises(ValueError, match="unknown schedule"):
        lr_multiplier(1, warmup_steps=0, total_steps=3, schedule="linear")


def _record_lrs(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """Make run_trial's optimizer note its lr before every step."""
    import studies.trial as trial_module

    seen: list[float] = []
    real = trial_module.build_optimizer

    def spying(config: TrialConfig, params: Any) -> torch.optim.Optimizer:
        optimizer = real(config, params)
        step = optimizer.step

        def noted_step(*args: Any, **kwargs: Any) -> Any:
            seen.append(optimizer.param_groups[0]["lr"])
            return step(*args, **kwargs)

        optimizer.step = noted_step  # type: ignore[method-assign]
        return optimizer

    monkeypatch.setattr(trial_module, "build_optimizer", spying)
    return seen


@pytest.mark.parametrize("schedule", ["constant", "cosine"])
def test_run_trial_applies_the_schedule_every_step(
    monkeypatch: pytest.MonkeyPatch, schedule: str
) -> None:
    seen = _record_lrs(monkeypatch)
    result = run_trial(config(lr=0.02, warmup_steps=10, schedule=schedule, budget={"steps": 40}))
    assert result.state == "completed" and len(seen) == 40
    expected = [
        0.02 * lr_multiplier(s, warmup_steps=10, total_steps=40, schedule=schedule)
        for s in range(1, 41)
    ]
    assert seen == expected
    if schedule == "cosine":
        assert seen[-1] == 0.0 and seen[9] == 0.02


def test_cosine_changes_the_result_but_not_the_start() -> None:
    constant = run_trial(config(lr=0.05))
    cosine = run_trial(config(lr=0.05, schedule="cosine"))
    assert cosine.loss0 == constant.loss0
    assert cosine.loss != constant.loss
    assert cosine.state == "completed" and cosine.loss < cosine.loss0


# --- new optimizers -------------------------------------------------------------------------


@pytest.mark.parametrize("optimizer", ["radam", "nadamw"])
def test_new_optimizers_train(optimizer: str) -> None:
    result = run_trial(config(optimizer=optimizer, lr=0.05, weight_decay=1e-4))
    assert result.state == "completed"
    assert result.loss < 0.5 * result.loss0
    assert result.bound_stats is None


def _steps_of(optimizer_factory: Any, n: int = 5) -> list[torch.Tensor]:
    """Parameters after n steps on a fixed quadratic-plus-noise loss from a fixed start."""
    gen = torch.Generator().manual_seed(0)
    weight = torch.nn.Parameter(torch.randn(4, 3, generator=gen))
    bias = torch.nn.Parameter(torch.randn(3, generator=gen))
    targets = torch.randn(n, 4, 3, generator=gen)
    optimizer = optimizer_factory([weight, bias])
    for k in range(n):
        optimizer.zero_grad()
        loss = ((weight - targets[k]) ** 2).sum() + (bias**2).sum() * 0.5
        loss.backward()
        optimizer.step()
    return [weight.detach().clone(), bias.detach().clone()]


def test_nadamw_is_torch_nadam_with_decoupled_decay() -> None:
    from studies.optimizers import build_optimizer

    cfg = config(optimizer="nadamw", lr=0.01, weight_decay=0.1, betas=(0.8, 0.99), eps=1e-6)
    ours = _steps_of(lambda params: build_optimizer(cfg, params))
    torchs = _steps_of(
        lambda params: torch.optim.NAdam(
            params, lr=0.01, betas=(0.8, 0.99), eps=1e-6, weight_decay=0.1,
            decoupled_weight_decay=True,
        )
    )  # fmt: skip
    for a, b in zip(ours, torchs, strict=True):
        assert torch.equal(a, b)
    # and the decay really is decoupled: L2-decay NAdam ends elsewhere
    l2 = _steps_of(
        lambda params: torch.optim.NAdam(
            params, lr=0.01, betas=(0.8, 0.99), eps=1e-6, weight_decay=0.1
        )
    )
    assert not torch.equal(ours[0], l2[0])


def test_radam_is_torch_radam() -> None:
    from studies.optimizers import build_optimizer

    cfg = config(optimizer="radam", lr=0.01, weight_decay=0.01, betas=(0.9, 0.99))
    ours = _steps_of(lambda params: build_optimizer(cfg, params), n=8)
    torchs = _steps_of(
        lambda params: torch.optim.RAdam(params, lr=0.01, betas=(0.9, 0.99), weight_decay=0.01),
        n=8,
    )
    for a, b in zip(ours, torchs, strict=True):
        assert torch.equal(a, b)


# --- prepare_trial and the test split ------------------------------------------------------


def test_prepare_trial_builds_what_run_trial_trains() -> None:
    cfg = config(optimizer="adamod", beta3=0.99, budget={"epochs": 3})
    prepared = prepare_trial(cfg)
    assert prepared.total_steps == 150  # 3 epochs of 50 steps
    assert prepared.model is prepared.problem.model
    assert prepared.optimizer.param_groups[0]["lr"] == cfg.lr
    assert prepared.device == torch.device("cpu")
    start = [p.detach().clone() for p in prepared.model.parameters()]
    again = prepare_trial(cfg)
    assert all(torch.equal(a, b) for a, b in zip(start, again.model.parameters(), strict=True))


class _SplitConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    test_split: bool = True
    diverge: bool = False


def _split_build(cfg: Any, seed: int, device: torch.device) -> Problem:
    """A linear regression with train, validation and test data (held-out test: other inputs)."""
    gen = torch.Generator().manual_seed(100 + seed)
    true_w = torch.tensor([1.0, -2.0, 0.5])
    x_train, x_val, x_test = (torch.randn(n, 3, generator=gen) for n in (64, 32, 32))
    model = torch.nn.Linear(3, 1, bias=False).to(device)

    def mse(m: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
        return ((m(x).squeeze(1) - x @ true_w) ** 2).mean()

    def loss_fn(m: torch.nn.Module, batch: torch.Tensor) -> torch.Tensor:
        loss = mse(m, batch)
        return loss * float("nan") if cfg.diverge else loss

    def evaluate(m: torch.nn.Module) -> dict[str, float]:
        with torch.no_grad():
            return {"loss": float(mse(m, x_val))}

    def evaluate_test(m: torch.nn.Module) -> dict[str, float]:
        with torch.no_grad():
            return {"loss": float(mse(m, x_test)), "accuracy": 0.25}

    return Problem(
        model=model,
        train_batches=lambda epoch: list(x_train.split(16)),
        loss_fn=loss_fn,
        evaluate=evaluate,
        steps_per_epoch=4,
        eval_every=4,
        evaluate_test=evaluate_test if cfg.test_split else None,
    )


@pytest.fixture(scope="module")
def split_workload() -> Iterator[str]:
    """A workload with a test split, registered for this module only (the built-ins are not
    relied on for it: their splits are being reworked)."""
    from studies.workloads import registry

    name = "test_split_regression"
    register_workload(
        Workload(
            name=name,
            description="linear regression with a test split (tests only)",
            config_model=_SplitConfig,
            default_budget=Budget(epochs=5),
            build=_split_build,
        ),
        replace=True,
    )
    try:
        yield name
    finally:
        with registry._lock:
            registry._registry.pop(name, None)  # other tests list the registered workloads


def test_test_loss_is_recorded_when_the_workload_has_a_test_split(split_workload: str) -> None:
    cfg = config(workload=split_workload, lr=0.05, budget={"epochs": 5})
    result = run_trial(cfg)
    assert result.state == "completed"
    assert result.test_loss is not None and 0 < result.test_loss < result.loss0
    assert result.test_loss != result.loss  # other data than validation
    assert result.test_accuracy == 0.25
    stored = result.to_dict()
    assert stored["test_loss"] == result.test_loss and stored["test_accuracy"] == 0.25
    # what the worker stores (to_dict minus curve and bound_stats) and the local runner's line
    # both give the analysis its test loss
    from studies.local import _record
    from studies.records import TrialRecord

    row = {"state": result.state, "error": None, "result": stored}
    record = _record(cfg, row)
    assert record.test_loss == result.test_loss
    assert list(record.curve_steps) == [p.step for p in result.curve]
    db_result = {k: v for k, v in stored.items() if k not in ("curve", "bound_stats")}
    from_db = TrialRecord.from_params(
        cfg.params(), state="completed", loss=result.loss, loss0=result.loss0, result=db_result
    )
    assert from_db.test_loss == result.test_loss


def test_no_test_loss_without_a_split_or_after_divergence(split_workload: str) -> None:
    none = run_trial(config(workload=split_workload, workload_config={"test_split": False}))
    assert none.state == "completed" and none.test_loss is None and none.test_accuracy is None
    diverged = run_trial(config(workload=split_workload, workload_config={"diverge": True}))
    assert diverged.state == "diverged" and diverged.test_loss is None
    cancelled = run_trial(config(workload=split_workload), report=lambda point: True)
    assert cancelled.state == "cancelled" and cancelled.test_loss is None
    # the built-in quadratic has no test split
    assert run_trial(config(budget={"steps": 5})).test_loss is None

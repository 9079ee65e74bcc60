"""Trial packs against their unfused trials: every member must be the trial it replaces.

The reference is `run_trial`, the one-model loop with torch.optim's (or adamod's scalar)
optimizers: a second implementation of the same training, so a pack that mixed members, shared
a reduction or mis-scheduled an lr would show up as a difference. Float64 throughout, so the
tolerance (1e-9 relative) is about summation order, not precision.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import pytest
import torch
from pydantic import BaseModel, ConfigDict
from torch import Tensor, nn
from torch.nn import functional as F

from studies import pack as pack_module
from studies.budget import Budget
from studies.pack import check_pack, packable, parse_pack_size, run_pack
from studies.spec import OPTIMIZERS, TrialConfig
from studies.trial import run_trial
from studies.trial_result import TrialResult
from studies.workloads.base import Problem, Workload
from studies.workloads.common import batch_generator, float_metrics, seeded_init
from studies.workloads.registry import register_workload
from studies.workloads.stacked import stacked_sequential

RTOL = 1e-9


class _Mlp64Config(BaseModel):
    model_config = ConfigDict(extra="forbid")
    width: int = 16
    batch_size: int = 16
    stacked: bool = False  # give the pack its stacked loss and metrics (no vmap): the fast path


def _build_mlp64(config: _Mlp64Config, seed: int, device: torch.device) -> Problem:
    """A float64 two-layer tanh MLP regression on fixed synthetic data (the same for every
    seed; the seed moves the weights and the batch order), with a test split."""
    data = torch.Generator().manual_seed(1234)
    x = torch.randn(96, 8, generator=data, dtype=torch.float64)
    y = torch.sin(x @ torch.randn(8, 2, generator=data, dtype=torch.float64))
    x_val, y_val = x[64:80], y[64:80]
    x_test, y_test = x[80:], y[80:]
    with seeded_init(seed):
        model = nn.Sequential(
            nn.Linear(8, config.width), nn.Tanh(), nn.Linear(config.width, 2)
        ).double()

    def train_batches(epoch: int) -> list[tuple[Tensor, Tensor]]:
        order = torch.randperm(64, generator=batch_generator(seed, epoch))
        return [(x[i], y[i]) for i in order.split(config.batch_size)]

    def loss_fn(m: nn.Module, batch: tuple[Tensor, Tensor]) -> Tensor:
        xb, yb = batch
        return F.mse_loss(m(xb), yb)

    def metrics_on(xs: Tensor, ys: Tensor) -> Any:
        def metrics(m: nn.Module) -> dict[str, Tensor]:
            with torch.no_grad():
                return {"loss": F.mse_loss(m(xs), ys)}

        return metrics

    val, test = metrics_on(x_val, y_val), metrics_on(x_test, y_test)
    pack_loss = pack_val = pack_test = None
    if config.stacked:
        forward = stacked_sequential(model)
        assert forward is not None

        def pack_loss(params: dict[str, Tensor], batch: tuple[Tensor, Tensor]) -> Tensor:
            xb, yb = batch  # [K, B, 8], [K, B, 2]
            out = forward(params, xb.transpose(1, 2)).transpose(1, 2)
            return (out - yb).square().mean(dim=(1, 2))

        def pack_metrics_on(xs: Tensor, ys: Tensor) -> Any:
            def pack_metrics(params: dict[str, Tensor]) -> dict[str, Tensor]:
                k = params["0.weight"].shape[0]
                shared = xs.t().unsqueeze(0).expand(k, -1, -1)  # one split for all members
                out = forward(params, shared).transpose(1, 2)
                return {"loss": (out - ys).square().mean(dim=(1, 2))}

            return pack_metrics

        pack_val, pack_test = pack_metrics_on(x_val, y_val), pack_metrics_on(x_test, y_test)

    return Problem(
        model=model.to(device),
        train_batches=train_batches,
        loss_fn=loss_fn,
        evaluate=float_metrics(val),
        evaluate_test=float_metrics(test),
        metrics=val,
        test_metrics=test,
        steps_per_epoch=4,
        eval_every=10,
        pack_loss=pack_loss,
        pack_metrics=pack_val,
        pack_test_metrics=pack_test,
    )


MLP64 = Workload(
    name="mlp64_pack_test",
    description="float64 MLP regression for the pack equality tests",
    config_model=_Mlp64Config,
    default_budget=Budget(steps=200),
    build=lambda config, seed, device: _build_mlp64(config, seed, device),
    packable=True,
)
UNPACKABLE = Workload(
    name="unpackable_pack_test",
    description="a workload that says it cannot be packed",
    config_model=_Mlp64Config,
    default_budget=Budget(steps=10),
    build=lambda config, seed, device: _build_mlp64(config, seed, device),
)


@pytest.fixture(scope="module", autouse=True)
def _workloads() -> Iterator[None]:
    register_workload(MLP64, replace=True)
    register_workload(UNPACKABLE, replace=True)
    yield


def member(optimizer: str, lr: float, seed: int, **overrides: Any) -> TrialConfig:
    fields: dict[str, Any] = {
        "workload": MLP64.name,
        "optimizer": optimizer,
        "lr": lr,
        "seed": seed,
        "budget": {"steps": 200},
        "weight_decay": 0.01,
        "beta3": 0.99 if optimizer in ("adamod", "diffmod") else None,
    }
    fields.update(overrides)
    return TrialConfig.model_validate(fields)


LRS = {"sgd": 0.05, "adam": 3e-3, "adamw": 3e-3, "radam": 3e-3, "nadamw": 3e-3}


def three_members(optimizer: str, schedule: str, **shared: Any) -> list[TrialConfig]:
    """Three members differing in lr, β3, warmup and seed (the axes a pack may vary)."""
    lr = LRS.get(optimizer, 3e-3)
    bounded = optimizer in ("adamod", "diffmod")
    return [
        member(optimizer, lr, 0, warmup_steps=0, schedule=schedule, **shared),
        member(
            optimizer,
            lr * 3,
            1,
            warmup_steps=20,
            schedule=schedule,
            beta3=0.9 if bounded else None,
            **shared,
        ),
        member(
            optimizer,
            lr / 2,
            2,
            warmup_steps=50,
            schedule=schedule,
            beta3=0.999 if bounded else None,
            **shared,
        ),
    ]


def assert_same_trial(packed: TrialResult, alone: TrialResult, rtol: float = RTOL) -> None:
    """A packed member equals its unfused trial: state, steps, every evaluation, test loss."""
    assert packed.state == alone.state
    assert packed.steps == alone.steps
    assert len(packed.curve) == len(alone.curve)
    for p, a in zip(packed.curve, alone.curve, strict=True):
        assert p.step == a.step
        assert p.val_loss == pytest.approx(a.val_loss, rel=rtol, abs=0)
        if a.train_loss is None:
            assert p.train_loss is None
        else:
            assert p.train_loss == pytest.approx(a.train_loss, rel=rtol, abs=0)
    assert packed.loss0 == pytest.approx(alone.loss0, rel=rtol, abs=0)
    if alone.loss is None:
        assert packed.loss is None
    else:
        assert packed.loss == pytest.approx(alone.loss, rel=rtol, abs=0)
    if alone.test_loss is None:
        assert packed.test_loss is None
    else:
        assert packed.test_loss == pytest.approx(alone.test_loss, rel=rtol, abs=0)


STACKED = {"workload_config": {"stacked": True}}
PATHS = pytest.mark.parametrize("path", [{}, STACKED], ids=["vmap", "stacked"])


@PATHS
@pytest.mark.parametrize("schedule", ["constant", "cosine"])
@pytest.mark.parametrize("optimizer", OPTIMIZERS)
def test_every_member_equals_its_unfused_trial(
    optimizer: str, schedule: str, path: dict[str, Any]
) -> None:
    configs = three_members(optimizer, schedule, **path)
    packed = run_pack(configs)
    for config, result in zip(configs, packed, strict=True):
        alone = run_trial(config)
        assert result.state == "completed"
        assert result.steps == 200
        assert result.pack_size == 3
        assert_same_trial(result, alone)
    # the members really differ (a pack that trained one member thrice would fail above, but
    # make the point explicit)
    assert len({round(r.loss or 0.0, 12) for r in packed}) == 3


def test_the_stacked_path_evaluates_without_vmap(monkeypatch: pytest.MonkeyPatch) -> None:
    """With Problem.pack_metrics the members' evaluations (validation and test) come from it,
    not from vmap, and are still their unfused trials' to 1e-9."""

    def no_vmap(*args: Any) -> Any:
        raise AssertionError("vmapped metrics on the stacked path")

    monkeypatch.setattr(pack_module._PackModel, "_vmapped_metrics", no_vmap)
    configs = three_members("adamod", "cosine", **STACKED)
    for config, result in zip(configs, run_pack(configs), strict=True):
        assert result.test_loss is not None
        assert_same_trial(result, run_trial(config))


@pytest.mark.parametrize("optimizer", ["adamod", "diffmod"])
def test_bound_telemetry_is_per_member(optimizer: str) -> None:
    configs = three_members(optimizer, "constant")
    packed = run_pack(configs)
    for config, result in zip(configs, packed, strict=True):
        alone = run_trial(config)
        assert result.bound_stats is not None and alone.bound_stats is not None
        assert result.bound_stats["n_steps"] == alone.bound_stats["n_steps"]
        for key, values in alone.bound_stats["series"].items():
            assert result.bound_stats["series"][key] == pytest.approx(values, rel=RTOL, abs=1e-300)


def diverging_pack(optimizer: str, divergent_lr: float, **shared: Any) -> list[TrialConfig]:
    lr = LRS.get(optimizer, 3e-3)
    return [
        member(optimizer, lr, 0, **shared),
        member(optimizer, divergent_lr, 1, warmup_steps=30, **shared),
        member(optimizer, lr / 2, 2, **shared),
    ]


DIVERGENT_LR = {"sgd": 50.0, "adam": 1e200, "adamod": 1e200}


@PATHS
@pytest.mark.parametrize("optimizer", sorted(DIVERGENT_LR))
def test_a_diverging_member_changes_no_other_member(optimizer: str, path: dict[str, Any]) -> None:
    configs = diverging_pack(optimizer, DIVERGENT_LR[optimizer], **path)
    packed = run_pack(configs)
    diverged = packed[1]
    alone = run_trial(configs[1])
    assert alone.state == "diverged", "the test needs a member that really diverges"
    assert 1 < alone.steps < 200, "it should diverge mid-pack"
    assert_same_trial(diverged, alone)
    assert diverged.loss is None

    # The same pack with a tame second member: the others must not move by a single bit.
    tame = [configs[0], member(optimizer, LRS.get(optimizer, 3e-3), 1, **path), configs[2]]
    reference = run_pack(tame)
    for k in (0, 2):
        assert packed[k].state == "completed"
        assert [p.val_loss for p in packed[k].curve] == [p.val_loss for p in reference[k].curve]
        assert [p.train_loss for p in packed[k].curve] == [p.train_loss for p in reference[k].curve]
        assert packed[k].test_loss == reference[k].test_loss
        assert_same_trial(packed[k], run_trial(configs[k]))


def test_a_member_told_to_stop_is_cancelled_and_the_others_go_on() -> None:
    configs = three_members("adam", "constant")
    seen: list[tuple[int, int]] = []

    def report(points: list[tuple[int, Any]]) -> list[int]:
        assert [k for k, _ in points] == sorted(k for k, _ in points)
        seen.extend((k, point.step) for k, point in points)
        return [k for k, point in points if k == 1 and point.step >= 30]

    packed = run_pack(configs, report=report)
    assert packed[1].state == "cancelled"
    assert packed[1].steps == 30
    assert [p.step for p in packed[1].curve] == [10, 20, 30]
    assert packed[1].test_loss is None
    for k in (0, 2):
        assert packed[k].state == "completed"
        assert_same_trial(packed[k], run_trial(configs[k]))
    assert max(step for k, step in seen if k == 1) == 30
    assert max(step for k, step in seen if k == 0) == 200


def test_a_pack_of_one_equals_run_trial() -> None:
    config = three_members("adamod", "cosine")[1]
    (packed,) = run_pack([config])
    assert packed.pack_size == 1
    assert_same_trial(packed, run_trial(config))


def test_duration_is_the_pack_time_shared_by_its_members() -> None:
    configs = three_members("sgd", "constant")
    packed = run_pack(configs)
    assert len({r.duration_s for r in packed}) == 1
    assert 0 < packed[0].duration_s < 60


def test_quadratic_and_noop_members_equal_their_trials() -> None:
    torch_default = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)  # the quadratic builds in the default dtype
    try:
        configs = [
            TrialConfig(
                workload="quadratic",
                optimizer="adamod",
                lr=lr,
                beta3=0.99,
                seed=s,
                budget=Budget(steps=150),
            )
            for lr, s in ((0.01, 0), (0.1, 1), (0.03, 2))
        ]
        for config, result in zip(configs, run_pack(configs), strict=True):
            assert_same_trial(result, run_trial(config))
        noop = [
            TrialConfig(workload="noop", optimizer="sgd", lr=0.1, seed=s, budget=Budget(steps=20))
            for s in range(3)
        ]
        for config, result in zip(noop, run_pack(noop), strict=True):
            assert_same_trial(result, run_trial(config))
    finally:
        torch.set_default_dtype(torch_default)


def test_members_start_from_their_own_seeds_weights() -> None:
    """Members with equal hyperparameters and different seeds differ; equal seeds agree."""
    configs = [member("adam", 3e-3, 0), member("adam", 3e-3, 1), member("adam", 3e-3, 0)]
    packed = run_pack(configs)
    assert packed[0].loss0 != packed[1].loss0
    assert [p.val_loss for p in packed[0].curve] == [p.val_loss for p in packed[2].curve]


def test_check_pack_names_what_does_not_fit() -> None:
    base = member("adam", 1e-3, 0)
    with pytest.raises(ValueError, match=r"configs\[1\]"):
        check_pack([base, member("adamw", 1e-3, 1)])
    with pytest.raises(ValueError, match=r"configs\[1\]"):
        check_pack([base, member("adam", 1e-3, 1, schedule="cosine")])
    with pytest.raises(ValueError, match=r"configs\[2\]"):
        check_pack([base, base, member("adam", 1e-3, 1, weight_decay=0.5)])
    with pytest.raises(ValueError, match="at least one"):
        check_pack([])
    with pytest.raises(ValueError, match="cannot be trained in a pack"):
        check_pack([member("adam", 1e-3, 0, workload=UNPACKABLE.name)])
    check_pack([base, member("adam", 1e-2, 3, warmup_steps=7)])  # lr, seed, warmup may differ


def test_packable_follows_the_workload() -> None:
    assert packable(member("adam", 1e-3, 0))
    assert not packable(member("adam", 1e-3, 0, workload=UNPACKABLE.name))
    noop = {"workload": "noop", "optimizer": "adam", "lr": 1e-3, "budget": {"steps": 3}}
    assert packable(TrialConfig.model_validate(noop))
    refused = {**noop, "workload_config": {"fail_at_step": 2, "fail_seeds": [1]}}
    assert not packable(TrialConfig.model_validate(refused))
    cifar = {**noop, "workload": "cifar10_resnet", "workload_config": {"data_dir": "/nowhere"}}
    try:
        config = TrialConfig.model_validate(cifar)
    except ValueError:
        return  # validation wants the data; unpackable either way
    assert not packable(config)


def test_parse_pack_size() -> None:
    assert parse_pack_size("auto") is None
    assert parse_pack_size("1") == 1
    assert parse_pack_size("64") == 64
    for bad in ("0", "65", "x", "-3", "2.5"):
        with pytest.raises(ValueError, match="--pack-size"):
            parse_pack_size(bad)


def test_a_workload_that_raises_fails_the_pack() -> None:
    configs = [
        TrialConfig.model_validate(
            {
                "workload": "noop",
                "optimizer": "sgd",
                "lr": 0.1,
                "seed": s,
                "budget": {"steps": 10},
                "workload_config": {"fail_at_step": 4},
            }
        )
        for s in range(2)
    ]
    with pytest.raises(RuntimeError, match="failing on purpose"):
        run_pack(configs)


def test_results_are_json_safe_and_finite() -> None:
    configs = diverging_pack("sgd", DIVERGENT_LR["sgd"])
    for result in run_pack(configs):
        data = result.to_dict()
        assert data["pack_size"] == 3
        for point in data["curve"]:
            assert point["val_loss"] is None or math.isfinite(point["val_loss"])

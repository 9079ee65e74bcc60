"""The pairing assumption of the report: seed s gives every configuration the same start.

ROBUSTNESS.md pairs trials by seed: for a given seed, every optimizer, lr, warmup and schedule
starts from the same initial parameters and sees the same data in the same order, so that the
per-seed differences the statistics use compare optimizers and nothing else. This checks it for
every registered workload through prepare_trial, the setup run_trial itself uses.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
import torch

from studies.spec import BOUNDED_OPTIMIZERS, OPTIMIZERS, TrialConfig
from studies.trial import prepare_trial
from studies.workloads import list_workloads
from studies.workloads.cifar10_resnet import DATA_DIR_ENV, find_cifar10
from tests.studies.cifar_fake import write_fake_cifar10

# Small configurations of the built-ins, so that building a problem takes milliseconds. A
# workload not named here (a new built-in, a plugin) is checked with its default config.
SMALL: dict[str, dict[str, Any]] = {
    "quadratic": {"dim": 8, "steps_per_epoch": 4},
    "digits_mlp": {"hidden": 16, "batch_size": 64},
    "tiny_transformer": {
        "d_model": 16,
        "n_heads": 2,
        "n_layers": 1,
        "d_ff": 32,
        "context": 8,
        "batch_size": 4,
        "steps_per_epoch": 3,
        "eval_batches": 1,
    },
    "cifar10_resnet": {"arch": "resnet20", "batch_size": 8, "train_subset": 32, "val_subset": 8},
    "noop": {"steps_per_epoch": 3},
}

# Workloads whose model and batches do not depend on the seed by design: noop's one parameter
# starts at 0 and its batches are step numbers; its seed moves the target (the loss) instead.
SEED_FREE_START = {"noop"}

# One config per optimizer (beta3 where it takes one), then other lrs, warmups and schedules.
VARIANTS: list[dict[str, Any]] = [
    {"optimizer": name, "beta3": 0.99 if name in BOUNDED_OPTIMIZERS else None}
    for name in OPTIMIZERS
] + [
    {"optimizer": "adam", "lr": 0.3, "warmup_steps": 7, "schedule": "cosine"},
    {"optimizer": "adamod", "beta3": 0.9, "lr": 1e-4, "warmup_steps": 2000, "schedule": "cosine"},
    {"optimizer": "sgd", "lr": 3e-2, "warmup_steps": 1, "schedule": "constant"},
]


@pytest.fixture(scope="module")
def cifar_dir(tmp_path_factory: pytest.TempPathFactory) -> str:
    """The real CIFAR-10 folder when $ADAMOD_LAB_DATA_DIR points at one, else a tiny fake one in
    the real file format (so the workload's code path is covered on every machine)."""
    try:
        return str(find_cifar10(os.environ.get(DATA_DIR_ENV) or None))
    except FileNotFoundError:
        return str(write_fake_cifar10(Path(tmp_path_factory.mktemp("cifar")) / "data"))


def _workload_config(name: str, cifar_dir: str) -> dict[str, Any]:
    config = dict(SMALL.get(name, {}))
    if name == "cifar10_resnet":
        config["data_dir"] = cifar_dir
    return config


def _config(
    workload: str, workload_config: dict[str, Any], seed: int, **variant: Any
) -> TrialConfig:
    data: dict[str, Any] = {
        "workload": workload,
        "workload_config": workload_config,
        "lr": 1e-3,
        "seed": seed,
        "budget": {"steps": 5},
        **variant,
    }
    return TrialConfig.model_validate(data)


def _tensors(value: Any) -> list[Any]:
    """A batch (tensor, tuple/list/dict of tensors, or plain values) as a flat list."""
    if isinstance(value, torch.Tensor):
        return [value]
    if isinstance(value, dict):
        return [t for key in sorted(value) for t in _tensors(value[key])]
    if isinstance(value, list | tuple):
        return [t for item in value for t in _tensors(item)]
    return [value]


def _first_batch(problem: Any, epoch: int) -> list[Any]:
    return _tensors(next(iter(problem.train_batches(epoch))))


def _start(config: TrialConfig) -> dict[str, Any]:
    """What a seed decides before the first step: state, the first batches, the RNG left over."""
    prepared = prepare_trial(config, "cpu")
    state = {k: v.detach().clone() for k, v in prepared.model.state_dict().items()}
    # The generator state after setup: building the optimizer must draw nothing, or dropout and
    # other in-training randomness would differ between optimizers of the same seed.
    rng = torch.random.get_rng_state()
    return {
        "state": state,
        "epoch0": _first_batch(prepared.problem, 0),
        "epoch1": _first_batch(prepared.problem, 1),
        "rng": rng,
        "problem": prepared.problem,
        "model": prepared.model,
    }


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        return (
            isinstance(a, torch.Tensor)
            and isinstance(b, torch.Tensor)
            and a.dtype == b.dtype
            and a.shape == b.shape
            and torch.equal(a, b)  # bit for bit, no tolerance
        )
    return bool(a == b)


def _same_list(a: list[Any], b: list[Any]) -> bool:
    return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))


def _assert_same_start(base: dict[str, Any], other: dict[str, Any], label: str) -> None:
    assert base["state"].keys() == other["state"].keys(), label
    for key, tensor in base["state"].items():
        assert _same(tensor, other["state"][key]), f"{label}: initial {key} differs"
    assert _same_list(base["epoch0"], other["epoch0"]), f"{label}: first batch of epoch 0 differs"
    assert _same_list(base["epoch1"], other["epoch1"]), f"{label}: first batch of epoch 1 differs"
    assert torch.equal(base["rng"], other["rng"]), f"{label}: setup drew different random numbers"


WORKLOADS = [w.name for w in list_workloads()]


@pytest.mark.parametrize("workload", WORKLOADS)
def test_a_seed_gives_every_configuration_the_same_start(workload: str, cifar_dir: str) -> None:
    workload_config = _workload_config(workload, cifar_dir)
    for seed in (0, 3):
        base = _start(_config(workload, workload_config, seed, **VARIANTS[0]))
        assert base["state"], f"{workload}: a model without parameters or buffers"
        # the two epochs differ (a new order or new draws each epoch), unless seed-free
        if workload not in SEED_FREE_START:
            assert not _same_list(base["epoch0"], base["epoch1"]), f"{workload}: epochs repeat"
        for variant in VARIANTS[1:]:
            config = _config(workload, workload_config, seed, **variant)
            _assert_same_start(base, _start(config), f"{workload} seed {seed} {variant}")


@pytest.mark.parametrize("workload", WORKLOADS)
def test_another_seed_gives_another_start(workload: str, cifar_dir: str) -> None:
    workload_config = _workload_config(workload, cifar_dir)
    a = _start(_config(workload, workload_config, 0, optimizer="adam"))
    b = _start(_config(workload, workload_config, 1, optimizer="adam"))
    if workload in SEED_FREE_START:
        # the same start, but another problem: the seed moves the target
        a["model"].eval(), b["model"].eval()
        assert a["problem"].evaluate(a["model"]) != b["problem"].evaluate(b["model"])
        return
    differs = [k for k, t in a["state"].items() if not _same(t, b["state"][k])]
    assert differs, f"{workload}: seeds 0 and 1 give the same initial parameters"
    assert not _same_list(a["epoch0"], b["epoch0"]), f"{workload}: same first batch for 2 seeds"
    assert not _same_list(a["epoch1"], b["epoch1"]), f"{workload}: same epoch-1 batch for 2 seeds"


def test_every_optimizer_is_covered() -> None:
    assert {v["optimizer"] for v in VARIANTS} == set(OPTIMIZERS)
    assert {v.get("schedule", "constant") for v in VARIANTS} == {"constant", "cosine"}
    assert {"quadratic", "digits_mlp", "tiny_transformer", "cifar10_resnet", "noop"} <= set(
        WORKLOADS
    )

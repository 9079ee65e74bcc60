"""Splits and seeding of every built-in workload, on real data (no mocks).

ROBUSTNESS.md ("Per trial"): selection uses validation only, and the test loss at the selected
point is reported beside it, so the train, validation and test parts must be disjoint and the same
for every trial of a study; a workload without test data says so (evaluate_test is None). Pairing
by seed needs the initial weights and the batches of an epoch to depend on (seed, epoch) alone,
whatever else ran in the process before. Every check iterates over the registry, so a new built-in
is covered as soon as it is registered (it must then either expose `data_splits(config)` in its
module or be listed in NO_DATA with the reason).
"""

from __future__ import annotations

import math
import os
import random
import re
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pytest
import torch
from pydantic import BaseModel

from studies.workloads import Problem, Workload, list_workloads
from studies.workloads.cifar10_resnet import DATA_DIR_ENV, find_cifar10
from tests.studies.cifar_fake import write_fake_cifar10

# Built-ins without data, hence without splits and without a test set.
NO_DATA = {
    "quadratic": "deterministic objective: evaluate is the exact loss, a test set would repeat it",
    "noop": "one scalar pulled towards a target: nothing to hold out",
}

# Small configurations, so that a build takes milliseconds; others get their defaults.
SMALL: dict[str, dict[str, Any]] = {
    "quadratic": {"dim": 8, "steps_per_epoch": 4},
    "digits_mlp": {"hidden": 16, "batch_size": 64},
    "tiny_transformer": {
        **{"d_model": 16, "n_heads": 2, "n_layers": 1, "d_ff": 32, "context": 8},
        **{"batch_size": 4, "steps_per_epoch": 3, "eval_batches": 1},
    },
    "cifar10_resnet": {"arch": "resnet20", "batch_size": 8, "train_subset": 32, "test_subset": 16},
    "mnist1d": {"num_samples": 1000},
    "noop": {"steps_per_epoch": 3},
}

BUILTINS = [w for w in list_workloads() if w.build.__module__.startswith("studies.workloads.")]
NAMES = [w.name for w in BUILTINS]
WITH_DATA = [name for name in NAMES if name not in NO_DATA]
CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def cifar_dir(tmp_path_factory: pytest.TempPathFactory) -> str:
    """The real CIFAR-10 folder when $ADAMOD_LAB_DATA_DIR points at one, else a tiny fake one in
    the real file format."""
    try:
        return str(find_cifar10(os.environ.get(DATA_DIR_ENV) or None))
    except FileNotFoundError:
        return str(write_fake_cifar10(Path(tmp_path_factory.mktemp("cifar")) / "data"))


@pytest.fixture(autouse=True, scope="module")
def _mnist1d_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """MNIST-1D's disk cache in a temporary folder (the in-process cache is kept)."""
    from studies.workloads.mnist1d import CACHE_DIR_ENV

    before = os.environ.get(CACHE_DIR_ENV)
    os.environ[CACHE_DIR_ENV] = str(tmp_path_factory.mktemp("cache"))
    yield
    if before is None:
        os.environ.pop(CACHE_DIR_ENV, None)
    else:
        os.environ[CACHE_DIR_ENV] = before


def _workload(name: str) -> Workload:
    return next(w for w in BUILTINS if w.name == name)


def _module(name: str) -> ModuleType:
    return sys.modules[_workload(name).build.__module__]


def _config(name: str, cifar_dir: str, **changes: Any) -> BaseModel:
    data = {**SMALL.get(name, {}), **changes}
    if name == "cifar10_resnet":
        data["data_dir"] = cifar_dir
    return _workload(name).config_model.model_validate(data)


def _build(name: str, cifar_dir: str, seed: int = 0, **changes: Any) -> Problem:
    return _workload(name).build(_config(name, cifar_dir, **changes), seed, CPU)


def _splits(name: str, cifar_dir: str, **changes: Any) -> dict[str, np.ndarray]:
    return _module(name).data_splits(_config(name, cifar_dir, **changes))


def _flat(value: Any) -> list[Any]:
    if isinstance(value, torch.Tensor):
        return [value]
    if isinstance(value, list | tuple):
        return [t for item in value for t in _flat(item)]
    return [value]


def _same(a: list[Any], b: list[Any]) -> bool:
    return len(a) == len(b) and all(
        torch.equal(x, y) if isinstance(x, torch.Tensor) else x == y
        for x, y in zip(a, b, strict=True)
    )


def _first_batch(problem: Problem, epoch: int) -> list[Any]:
    return _flat(next(iter(problem.train_batches(epoch))))


def test_every_builtin_has_splits_or_says_why_not() -> None:
    assert {"digits_mlp", "tiny_transformer", "cifar10_resnet", "mnist1d"} <= set(WITH_DATA)
    for name in NAMES:
        has_splits = callable(getattr(_module(name), "data_splits", None))
        assert has_splits != (name in NO_DATA), (
            f"{name}: a built-in with data exposes data_splits(config) in its module; one "
            f"without is listed in NO_DATA with the reason"
        )


@pytest.mark.parametrize("name", WITH_DATA)
def test_splits_are_disjoint_fixed_and_what_the_problem_uses(name: str, cifar_dir: str) -> None:
    parts = _splits(name, cifar_dir)
    assert set(parts) == {"train", "val", "test"}
    assert all(len(parts[k]) > 0 for k in ("train", "val", "test")), {
        k: len(v) for k, v in parts.items()
    }
    for part in parts.values():
        assert len(np.unique(part)) == len(part)  # no index twice within a part
    for a, b in (("train", "val"), ("train", "test"), ("val", "test")):
        assert not np.intersect1d(parts[a], parts[b]).size, f"{name}: {a} and {b} overlap"
    again = _splits(name, cifar_dir)  # same config, same split
    assert all(np.array_equal(parts[k], again[k]) for k in parts)

    problem = _build(name, cifar_dir, seed=0)
    other_seed = _build(name, cifar_dir, seed=5)  # the trial seed never moves the split
    for extras in (problem.extras, other_seed.extras):
        assert (extras["n_train"], extras["n_val"], extras["n_test"]) == tuple(
            len(parts[k]) for k in ("train", "val", "test")
        )
    assert problem.extras == other_seed.extras
    hashes = {k: v for k, v in problem.extras.items() if "sha256" in k}
    assert hashes and all(re.fullmatch(r"[0-9a-f]{16}", v) for v in hashes.values()), hashes


@pytest.mark.parametrize("name", NAMES)
def test_test_evaluation_exists_exactly_where_there_is_test_data(name: str, cifar_dir: str) -> None:
    problem = _build(name, cifar_dir, seed=1)
    if name in NO_DATA:
        assert problem.evaluate_test is None
        assert "n_test" not in problem.extras
        return
    assert problem.evaluate_test is not None
    problem.model.eval()
    test = problem.evaluate_test(problem.model)
    assert math.isfinite(test["loss"]) and test["loss"] > 0
    if "accuracy" in test:
        assert 0.0 <= test["accuracy"] <= 1.0
    val = problem.evaluate(problem.model)
    assert set(test) == set(val)  # the same metrics on both parts
    rebuilt = _build(name, cifar_dir, seed=1)
    rebuilt.model.eval()
    assert rebuilt.evaluate_test is not None and rebuilt.evaluate_test(rebuilt.model) == test


@pytest.mark.parametrize(
    "name", [n for n in WITH_DATA if "split_seed" in _workload(n).config_model.model_fields]
)
def test_the_split_seed_moves_the_validation_part(name: str, cifar_dir: str) -> None:
    a, b = _splits(name, cifar_dir), _splits(name, cifar_dir, split_seed=1)
    assert not np.array_equal(a["val"], b["val"])
    assert len(a["val"]) == len(b["val"]) and len(a["train"]) == len(b["train"])


@pytest.mark.parametrize("name", NAMES)
def test_weights_and_batches_depend_on_the_seed_alone(name: str, cifar_dir: str) -> None:
    torch.manual_seed(0)
    reference = _build(name, cifar_dir, seed=3)
    weights = {k: v.clone() for k, v in reference.model.state_dict().items()}
    batches = [_first_batch(reference, 0), _first_batch(reference, 1)]

    # Whatever ran before: other draws from every global generator, another trial's build.
    torch.rand(1000)
    np.random.rand(1000)
    random.random()
    _build(name, cifar_dir, seed=4)
    states = (torch.random.get_rng_state(), np.random.get_state()[1].copy(), random.getstate())
    again = _build(name, cifar_dir, seed=3)

    # building draws nothing from the global generators
    assert torch.equal(torch.random.get_rng_state(), states[0])
    assert np.array_equal(np.random.get_state()[1], states[1])
    assert random.getstate() == states[2]
    for key, tensor in again.model.state_dict().items():
        assert torch.equal(tensor, weights[key]), f"{name}: initial {key} moved"
    # batches come in the same order whatever was drawn in between, even out of order
    assert _same(_first_batch(again, 1), batches[1])
    torch.rand(10)
    assert _same(_first_batch(again, 0), batches[0])


def test_digits_fractions_are_checked_and_zero_means_no_test_split(cifar_dir: str) -> None:
    model = _workload("digits_mlp").config_model
    with pytest.raises(ValueError, match="val_fraction \\+ test_fraction must be < 1") as info:
        model.model_validate({"val_fraction": 0.5, "test_fraction": 0.5})
    assert info.value.errors()[0]["loc"] == ("test_fraction",)  # type: ignore[attr-defined]
    parts = _splits("digits_mlp", cifar_dir)
    assert [len(parts[k]) for k in ("train", "val", "test")] == [1079, 359, 359]
    problem = _build("digits_mlp", cifar_dir, test_fraction=0.0)
    assert problem.evaluate_test is None and problem.extras["n_test"] == 0
    assert (problem.extras["n_train"], problem.extras["n_val"]) == (1438, 359)


def test_tiny_transformer_parts_are_contiguous_in_order(cifar_dir: str) -> None:
    parts = _splits("tiny_transformer", cifar_dir)
    assert parts["train"][-1] + 1 == parts["val"][0] and parts["val"][-1] + 1 == parts["test"][0]
    assert all(np.array_equal(p, np.arange(p[0], p[-1] + 1)) for p in parts.values())
    n = sum(len(p) for p in parts.values())
    assert abs(len(parts["test"]) - 0.1 * n) <= 1 and abs(len(parts["val"]) - 0.1 * n) <= 1
    assert _build("tiny_transformer", cifar_dir, test_fraction=0.0).evaluate_test is None
    with pytest.raises(ValueError, match="test_fraction"):
        _workload("tiny_transformer").config_model(val_fraction=0.6, test_fraction=0.4)


def test_cifar10_test_part_is_test_batch_and_validation_comes_from_training(
    cifar_dir: str,
) -> None:
    from studies.workloads.cifar10_resnet import load_cifar10

    _, y_train, _, y_test = load_cifar10(cifar_dir)
    parts = _splits("cifar10_resnet", cifar_dir, train_subset=None, test_subset=None)
    n = len(y_train)
    assert parts["train"].max() < n and parts["val"].max() < n  # both from the training files
    assert np.array_equal(parts["test"], n + np.arange(len(y_test)))  # all of test_batch
    assert len(parts["val"]) == round(0.1 * n) and len(parts["train"]) == n - len(parts["val"])


def test_mnist1d_generation_leaves_the_global_generators_alone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from studies.workloads import mnist1d

    monkeypatch.setenv(mnist1d.CACHE_DIR_ENV, str(tmp_path))  # cold: the generator runs
    np.random.seed(123)
    random.seed(123)
    before = (np.random.get_state()[1].copy(), random.getstate())
    x, y, _ = mnist1d.generate_mnist1d.__wrapped__(200, 3, False)
    assert x.shape == (200, 40) and set(np.unique(y)) == set(range(10))
    assert np.array_equal(np.random.get_state()[1], before[0]) and random.getstate() == before[1]

"""Every built-in workload trains for real on a small budget; CIFAR-10 reads the real format;
MNIST-1D is generated offline. Splits and seeding of every workload: see test_splits.py."""

from __future__ import annotations

import json
import pickle
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

from studies.spec import StudySpec, TrialConfig
from studies.trial import run_trial
from studies.workloads import Problem, get_workload, list_workloads
from studies.workloads.cifar10_resnet import DATA_DIR_ENV, find_cifar10, load_cifar10
from studies.workloads.tiny_transformer import load_corpus
from tests.studies.cifar_fake import write_fake_cifar10

BUILTINS = {"quadratic", "digits_mlp", "tiny_transformer", "cifar10_resnet", "noop", "mnist1d"}


def trial(workload: str, optimizer: str = "adam", lr: float = 1e-2, **kw: Any) -> TrialConfig:
    beta3 = 0.99 if optimizer in ("adamod", "diffmod") else None
    kw.setdefault("budget", get_workload(workload).default_budget)
    return TrialConfig.model_validate(
        {"workload": workload, "optimizer": optimizer, "lr": lr, "beta3": beta3, **kw}
    )


def test_builtins_are_registered_with_schema_and_budget() -> None:
    names = {w.name for w in list_workloads()}
    assert names >= BUILTINS
    for name in BUILTINS:
        w = get_workload(name)
        assert w.description and w.default_budget.total_steps(10) >= 1
        schema = w.config_schema()
        assert schema["type"] == "object" and "properties" in schema
        json.dumps(schema)
        w.config_model.model_validate(w.default_config())


@pytest.mark.parametrize(
    ("optimizer", "lr"),
    [("adam", 3e-3), ("adamw", 3e-3), ("adamod", 3e-3), ("diffmod", 3e-3), ("sgd", 0.1)],
)
def test_digits_mlp_learns_with_every_optimizer(optimizer: str, lr: float) -> None:
    cfg = trial("digits_mlp", optimizer, lr, budget={"epochs": 3}, warmup_steps=10)
    result = run_trial(cfg)
    assert result.state == "completed"
    assert result.loss < 0.5 * result.loss0  # starts near ln(10) = 2.30
    assert result.accuracy is not None and result.accuracy > 0.6
    assert len(result.curve) == 3 and result.curve[-1].accuracy == result.accuracy
    if optimizer in ("adamod", "diffmod"):
        stats = result.bound_stats
        assert stats is not None and stats["n_steps"] == result.steps
        assert 0.0 <= stats["summary"]["bound_active_frac_mean"] <= 1.0
        assert len(stats["series"]["step"]) == min(result.steps, 200)
        json.dumps(stats, allow_nan=False)
    else:
        assert result.bound_stats is None


def test_digits_split_is_fixed_and_seed_moves_init_only() -> None:
    w = get_workload("digits_mlp")
    cfg = w.config_model()
    a: Problem = w.build(cfg, 0, torch.device("cpu"))
    b: Problem = w.build(cfg, 1, torch.device("cpu"))
    assert a.extras == b.extras
    assert (a.extras["n_train"], a.extras["n_val"], a.extras["n_test"]) == (1079, 359, 359)
    first_a = a.train_batches(0)[0][1]
    assert torch.equal(first_a, w.build(cfg, 0, torch.device("cpu")).train_batches(0)[0][1])
    assert not torch.equal(first_a, b.train_batches(0)[0][1])


def test_tiny_transformer_learns_the_stdlib_text() -> None:
    small = {"d_model": 32, "n_heads": 2, "d_ff": 64, "context": 16, "eval_batches": 2}
    result = run_trial(
        trial(
            "tiny_transformer", "adam", 3e-3, workload_config=small,
            budget={"steps": 60}, warmup_steps=10,
        )
    )  # fmt: skip
    assert result.state == "completed"
    assert result.loss0 > 5.0  # about ln(256) = 5.55 for an untrained byte model
    assert result.loss < 0.75 * result.loss0
    text, source = load_corpus("stdlib")
    assert source.startswith("stdlib:") and b"import" in text and len(text) > 100_000


def test_tiny_transformer_generated_corpus_and_config_checks() -> None:
    text, source = load_corpus("generated")
    assert source == "generated" and text == load_corpus("generated")[0]
    spec = {"name": "t", "workload": "tiny_transformer", "workload_config": {"n_heads": 3}}
    with pytest.raises(Exception, match="divisible by n_heads") as info:
        StudySpec.model_validate(spec)
    assert info.value.errors()[0]["loc"][0] == "workload_config"  # type: ignore[attr-defined]


def test_tiny_transformer_is_post_layernorm() -> None:
    w = get_workload("tiny_transformer")
    problem = w.build(w.config_model(corpus="generated"), 0, torch.device("cpu"))
    blocks = problem.model.blocks  # type: ignore[union-attr]
    assert all(not block.norm_first for block in blocks)


def test_quadratic_and_noop_learn_at_a_sane_lr() -> None:
    result = run_trial(trial("quadratic", "adamod", 3e-2))
    assert result.state == "completed" and result.loss < 0.3 * result.loss0
    noop = run_trial(trial("noop", "adam", 0.1, budget={"steps": 20}))
    assert noop.state == "completed" and noop.loss < noop.loss0


@pytest.fixture
def fake_cifar(tmp_path: Path) -> Path:
    return write_fake_cifar10(tmp_path / "data")


def test_cifar10_reads_the_real_pickle_format(fake_cifar: Path) -> None:
    x_tr, y_tr, x_te, y_te = load_cifar10(str(fake_cifar))
    assert x_tr.shape == (100, 3, 32, 32) and x_tr.dtype.name == "uint8"
    assert y_tr.shape == (100,) and x_te.shape == (40, 3, 32, 32) and y_te.shape == (40,)
    with (fake_cifar / "data_batch_1").open("rb") as handle:
        raw = pickle.load(handle, encoding="bytes")
    # row layout of the official files: 1024 red, then 1024 green, then 1024 blue values
    assert (x_tr[0].reshape(-1) == raw[b"data"][0]).all()
    assert find_cifar10(str(fake_cifar.parent)) == fake_cifar  # parent folder or the folder
    assert find_cifar10(str(fake_cifar)) == fake_cifar


def test_cifar10_resnet_trains_on_the_fake_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Validation is held out of the training batches: 300 images give 60 for validation.
    fake = write_fake_cifar10(tmp_path / "data", per_batch=60)
    monkeypatch.setenv(DATA_DIR_ENV, str(fake.parent))  # from the environment this time
    cfg = {"arch": "resnet20", "batch_size": 25, "train_subset": 100, "val_subset": 40,
           "val_fraction": 0.2}  # fmt: skip
    result = run_trial(trial("cifar10_resnet", "adam", 3e-3, workload_config=cfg,
                             budget={"epochs": 3}))  # fmt: skip
    assert result.state == "completed" and result.steps == 12
    assert result.loss < result.loss0
    assert result.accuracy is not None and result.accuracy > 0.2  # chance is 0.1


def test_cifar10_without_data_names_both_sources(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(DATA_DIR_ENV, raising=False)
    with pytest.raises(FileNotFoundError) as info:
        run_trial(trial("cifar10_resnet", budget={"steps": 1}))
    assert "data_dir" in str(info.value) and DATA_DIR_ENV in str(info.value)
    with pytest.raises(FileNotFoundError, match=str(tmp_path)):
        find_cifar10(str(tmp_path))


def test_cifar10_corrupt_file_is_a_clear_error(fake_cifar: Path) -> None:
    (fake_cifar / "test_batch").write_bytes(pickle.dumps({b"data": [1, 2, 3]}))
    with pytest.raises(ValueError, match="test_batch"):
        load_cifar10.__wrapped__(str(fake_cifar))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.gpu
def test_cifar10_resnet_on_gpu(fake_cifar: Path) -> None:
    cfg = {"data_dir": str(fake_cifar), "arch": "resnet20", "batch_size": 25}
    result = run_trial(trial("cifar10_resnet", workload_config=cfg, budget={"epochs": 2}), "cuda")
    assert result.state == "completed" and result.device.startswith("cuda")


# --------------------------------------------------------------------------- MNIST-1D


@pytest.fixture
def offline(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any attempt to open a network connection fails the test."""
    import socket

    def refuse(*_args: Any, **_kwargs: Any) -> None:
        raise AssertionError("the workload tried to open a network connection")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


@pytest.fixture
def cache_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """An empty disk cache for MNIST-1D, and an empty in-process cache (restored afterwards)."""
    from studies.workloads import mnist1d

    monkeypatch.setenv(mnist1d.CACHE_DIR_ENV, str(tmp_path / "cache"))
    mnist1d.generate_mnist1d.cache_clear()
    yield tmp_path / "cache"
    mnist1d.generate_mnist1d.cache_clear()


SMALL_MNIST1D = {"num_samples": 2000, "eval_every": 50}


def test_mnist1d_generates_offline_and_learns(offline: None, cache_dir: Path) -> None:
    from studies.workloads import mnist1d

    result = run_trial(trial("mnist1d", "adam", 3e-3, workload_config=SMALL_MNIST1D,
                             budget={"steps": 200}))  # fmt: skip
    assert result.state == "completed" and result.steps == 200
    assert result.loss0 > 2.0  # about ln(10) = 2.30 untrained
    assert result.loss < 0.8 * result.loss0
    assert [p.step for p in result.curve] == [50, 100, 150, 200]
    assert result.curve[-1].train_loss < result.curve[0].train_loss  # type: ignore[operator]
    assert result.accuracy is not None and result.accuracy > 0.3  # chance is 0.1
    assert result.test_loss is not None and result.test_accuracy is not None
    extras = result.extras
    assert (extras["n_train"], extras["n_val"], extras["n_test"]) == (1280, 320, 400)
    assert extras["source"].startswith("mnist1d ") and "seed=42" in extras["source"]
    assert list((cache_dir / "mnist1d").glob("*.npz"))  # generated once, cached on disk
    assert mnist1d.WORKLOAD.default_budget.steps == 2000


def test_mnist1d_cnn_learns(cache_dir: Path) -> None:
    cfg = {**SMALL_MNIST1D, "model": "cnn"}
    result = run_trial(trial("mnist1d", "adam", 1e-2, workload_config=cfg, budget={"steps": 100}))
    assert result.state == "completed" and result.loss < result.loss0
    w = get_workload("mnist1d")
    model = w.build(w.config_model(**cfg), 0, torch.device("cpu")).model
    # the reference CNN: 3 convolutions of 25 channels, 25 x 5 features into the classifier
    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv1d)]
    assert [c.out_channels for c in convs] == [25, 25, 25]
    assert model.linear.in_features == 125  # type: ignore[union-attr]


def test_mnist1d_default_test_set_is_the_packages(cache_dir: Path) -> None:
    from mnist1d.data import get_dataset_args, make_dataset

    from studies.workloads.mnist1d import Mnist1dConfig, data_splits, generate_mnist1d

    x, y, _ = generate_mnist1d()  # the defaults: 5000 samples, seed 42
    parts = data_splits(Mnist1dConfig())
    assert [len(parts[k]) for k in ("train", "val", "test")] == [3200, 800, 1000]
    reference = make_dataset(get_dataset_args())
    assert (x[parts["test"]] == reference["x_test"].astype("float32")).all()
    assert (y[parts["test"]] == reference["y_test"]).all()


def test_mnist1d_disk_cache_is_used_and_survives_corruption(
    cache_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from studies.workloads import mnist1d

    x, _, sha = mnist1d.generate_mnist1d(500, 7, False)
    assert not x.flags.writeable  # shared between builds: read-only
    (path,) = (cache_dir / "mnist1d").glob("*.npz")
    mnist1d.generate_mnist1d.cache_clear()

    def no_generation(*_args: Any) -> None:
        raise AssertionError("generated again despite the disk cache")

    with monkeypatch.context() as patch:
        patch.setattr(mnist1d, "_generate", no_generation)
        assert mnist1d.generate_mnist1d(500, 7, False)[2] == sha
    path.write_bytes(b"not an npz file")
    mnist1d.generate_mnist1d.cache_clear()
    assert mnist1d.generate_mnist1d(500, 7, False)[2] == sha  # regenerated, identical
    assert mnist1d.generate_mnist1d(500, 8, False)[2] != sha  # another generator seed


def test_mnist1d_config_is_strict() -> None:
    model = get_workload("mnist1d").config_model
    for bad in ({"model": "rnn"}, {"num_samples": 1005}, {"batch_size": 0}, {"extra": 1}):
        with pytest.raises(ValueError):
            model.model_validate(bad)
    with pytest.raises(ValueError, match="empty split"):
        from studies.workloads.mnist1d import data_splits

        data_splits(model(num_samples=100, test_fraction=0.001))

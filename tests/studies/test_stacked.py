"""Stacked losses and metrics (studies/workloads/stacked.py) against each member's own module,
in float64.

The reference is the plain nn.Module forward and autograd of every member on its own slice of
the batch, a loop over members: no stacking, no vmap, none of the code under test.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch
from torch import Tensor, nn
from torch.nn import functional as F

from studies.workloads import stacked
from studies.workloads.common import classifier_metrics
from studies.workloads.mnist1d import Mnist1dCNN, Mnist1dMLP
from studies.workloads.registry import get_workload
from studies.workloads.stacked import (
    stacked_classifier_loss,
    stacked_classifier_metrics,
    stacked_cross_entropy,
    stacked_linear,
    stacked_sequential,
)

K, BATCH = 3, 7
RTOL = 1e-12


def _members(build: Any, k: int = K) -> list[nn.Module]:
    generator_state = torch.random.get_rng_state()
    try:
        models = []
        for seed in range(k):
            torch.manual_seed(seed)
            models.append(build().double())
        return models
    finally:
        torch.random.set_rng_state(generator_state)


def _stack(models: list[nn.Module]) -> dict[str, Tensor]:
    tables = [dict(m.named_parameters()) for m in models]
    return {
        name: torch.stack([t[name].detach() for t in tables]).requires_grad_(True)
        for name in tables[0]
    }


def _reference(models: list[nn.Module], loss: Any, batches: list[Any]) -> tuple[list, list]:
    """Each member's loss and gradients ({name: grad}) from its own module and autograd."""
    losses, grads = [], []
    for model, batch in zip(models, batches, strict=True):
        model.zero_grad()
        value = loss(model, batch)
        value.backward()
        losses.append(value.item())
        grads.append({n: p.grad.clone() for n, p in model.named_parameters()})
    return losses, grads


def _assert_matches(
    pack_loss: Any, models: list[nn.Module], loss: Any, x: Tensor, y: Tensor
) -> None:
    params = _stack(models)
    values = pack_loss(params, (x, y))
    assert values.shape == (len(models),)
    values.sum().backward()
    want_losses, want_grads = _reference(models, loss, list(zip(x, y, strict=True)))
    assert values.tolist() == pytest.approx(want_losses, rel=RTOL, abs=0)
    for k, want in enumerate(want_grads):
        for name, grad in want.items():
            torch.testing.assert_close(params[name].grad[k], grad, rtol=RTOL, atol=1e-15)


def _cross_entropy(model: nn.Module, batch: tuple[Tensor, Tensor]) -> Tensor:
    xb, yb = batch
    return F.cross_entropy(model(xb), yb)


def _classification_batch(features: int, classes: int = 10) -> tuple[Tensor, Tensor]:
    generator = torch.Generator().manual_seed(7)
    x = torch.randn(K, BATCH, features, generator=generator, dtype=torch.float64)
    y = torch.randint(0, classes, (K, BATCH), generator=generator)
    return x, y


@pytest.mark.parametrize(
    "layers",
    [
        lambda: nn.Sequential(nn.Linear(5, 6), nn.ReLU(), nn.Linear(6, 4)),
        lambda: nn.Sequential(
            nn.Linear(5, 6, bias=False), nn.Tanh(), nn.Linear(6, 6), nn.GELU(), nn.Linear(6, 4)
        ),
        lambda: nn.Sequential(nn.Linear(5, 4), nn.Identity(), nn.SiLU()),
    ],
    ids=["relu", "no-bias-tanh-gelu", "identity-silu"],
)
def test_a_sequential_mlp_matches_each_member_alone(layers: Any) -> None:
    models = _members(layers)
    forward = stacked_sequential(models[0])
    assert forward is not None
    x, y = _classification_batch(5, classes=4)
    _assert_matches(stacked_classifier_loss(forward), models, _cross_entropy, x, y)


@pytest.mark.parametrize(
    "model",
    [
        nn.Sequential(nn.Linear(4, 4), nn.Dropout(0.1), nn.Linear(4, 2)),  # per-member randomness
        nn.Sequential(nn.Linear(4, 4), nn.BatchNorm1d(4)),  # running statistics
        nn.Sequential(nn.Conv1d(1, 2, 3)),
        nn.Sequential(nn.Linear(4, 4), nn.PReLU()),  # an activation with a parameter
        nn.Linear(4, 2),  # not a Sequential
    ],
    ids=["dropout", "batchnorm", "conv", "prelu", "bare-linear"],
)
def test_other_models_get_no_stacked_forward(model: nn.Module) -> None:
    assert stacked_sequential(model) is None


def test_stacked_linear_is_each_members_linear_with_the_gradient_in_the_weights_layout() -> None:
    generator = torch.Generator().manual_seed(3)
    weight = torch.randn(K, 4, 5, generator=generator, dtype=torch.float64, requires_grad=True)
    bias = torch.randn(K, 4, generator=generator, dtype=torch.float64)
    x = torch.randn(K, BATCH, 5, generator=generator, dtype=torch.float64)
    out = stacked_linear(x.transpose(1, 2), weight, bias)
    assert out.shape == (K, 4, BATCH)
    for k in range(K):
        # by hand: sum_j W[o, j] x[b, j] + bias[o]
        want = (weight[k].detach() @ x[k].T) + bias[k][:, None]
        torch.testing.assert_close(out[k].detach(), want, rtol=RTOL, atol=1e-15)
    out.sum().backward()
    assert weight.grad is not None and weight.grad.is_contiguous()


def test_stacked_cross_entropy_is_each_members_mean() -> None:
    generator = torch.Generator().manual_seed(5)
    logits = torch.randn(K, BATCH, 6, generator=generator, dtype=torch.float64)
    targets = torch.randint(0, 6, (K, BATCH), generator=generator)
    got = stacked_cross_entropy(logits, targets)
    for k in range(K):
        # by hand: mean over the batch of logsumexp(z) - z[target]
        z = logits[k]
        want = (torch.logsumexp(z, dim=1) - z[torch.arange(BATCH), targets[k]]).mean()
        assert got[k].item() == pytest.approx(want.item(), rel=RTOL)


def test_mnist1d_mlp_stacked_forward_matches_each_member() -> None:
    models = _members(lambda: Mnist1dMLP(hidden=12))
    x, y = _classification_batch(40)
    pack_loss = stacked_classifier_loss(Mnist1dMLP.stacked_forward)
    _assert_matches(pack_loss, models, _cross_entropy, x, y)


@pytest.mark.parametrize(
    ("workload", "config", "fast"),
    [
        ("digits_mlp", {"hidden": 8, "depth": 2}, True),
        ("mnist1d", {"model": "mlp", "hidden": 8, "num_samples": 400}, True),
        ("mnist1d", {"model": "cnn", "channels": 4, "num_samples": 400}, False),
        ("tiny_transformer", {}, False),
    ],
)
def test_workloads_give_their_pack_loss_and_it_is_their_loss_fn(
    workload: str, config: dict[str, Any], fast: bool
) -> None:
    """The loss each workload gives the pack equals its own loss_fn on each member (the
    problems built as a pack builds them, then cast to float64)."""
    spec = get_workload(workload)
    cfg = spec.config_model.model_validate(config)
    problems = [spec.build(cfg, seed, torch.device("cpu")) for seed in range(K)]
    if not fast:
        assert problems[0].pack_loss is None
        return
    pack_loss = problems[0].pack_loss
    assert pack_loss is not None
    models = [p.model.double() for p in problems]
    batches = [next(iter(p.train_batches(0))) for p in problems]
    x = torch.stack([b[0] for b in batches]).double()
    y = torch.stack([b[1] for b in batches])
    _assert_matches(pack_loss, models, problems[0].loss_fn, x, y)


def test_mnist1d_cnn_is_not_a_sequential_mlp() -> None:
    assert stacked_sequential(Mnist1dCNN(channels=2)) is None


def _split(features: int, n: int = 23, classes: int = 4) -> tuple[Tensor, Tensor]:
    """A shared evaluation split: x [n, features] float64, class targets y [n]."""
    generator = torch.Generator().manual_seed(11)
    x = torch.randn(n, features, generator=generator, dtype=torch.float64)
    return x, torch.randint(0, classes, (n,), generator=generator)


def _assert_metrics_match(
    pack_metrics: Any, models: list[nn.Module], x: Tensor, y: Tensor, chunk: int
) -> dict[str, Tensor]:
    """Each member's stacked metrics equal classifier_metrics on its own module."""
    got = pack_metrics(_stack(models))
    assert set(got) == {"loss", "accuracy"}
    for value in got.values():
        assert value.shape == (len(models),) and value.dtype == torch.float64
    reference = classifier_metrics(x, y, chunk)
    for k, model in enumerate(models):
        want = reference(model)
        assert got["loss"][k].item() == pytest.approx(want["loss"].item(), rel=RTOL, abs=0)
        assert got["accuracy"][k].item() == pytest.approx(want["accuracy"].item(), rel=RTOL)
    return got


@pytest.mark.parametrize("chunk", [4096, 10, 1], ids=["one-chunk", "three-chunks", "per-row"])
def test_stacked_classifier_metrics_are_each_members_classifier_metrics(chunk: int) -> None:
    models = _members(lambda: nn.Sequential(nn.Linear(5, 6), nn.ReLU(), nn.Linear(6, 4)), k=4)
    forward = stacked_sequential(models[0])
    assert forward is not None
    x, y = _split(5)
    got = _assert_metrics_match(
        stacked_classifier_metrics(forward, x, y, chunk), models, x, y, chunk
    )
    assert len(set(got["loss"].tolist())) == 4  # the members really differ


def test_mnist1d_mlp_stacked_metrics_match_each_member() -> None:
    models = _members(lambda: Mnist1dMLP(hidden=12))
    x, y = _split(40, classes=10)
    pack_metrics = stacked_classifier_metrics(Mnist1dMLP.stacked_forward, x, y, chunk=8)
    _assert_metrics_match(pack_metrics, models, x, y, chunk=8)


def test_how_members_are_grouped_into_passes_changes_no_number(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    models = _members(lambda: nn.Sequential(nn.Linear(5, 6), nn.Tanh(), nn.Linear(6, 4)), k=5)
    forward = stacked_sequential(models[0])
    assert forward is not None
    x, y = _split(5)
    whole = stacked_classifier_metrics(forward, x, y)(_stack(models))
    monkeypatch.setattr(stacked, "_PASS_ELEMENTS", 2 * 6 * len(y))  # two members per pass
    assert [len(g["0.weight"]) for g in stacked._member_groups(_stack(models), len(y))] == [
        2,
        2,
        1,
    ]
    grouped = stacked_classifier_metrics(forward, x, y)(_stack(models))
    for key, value in whole.items():
        assert torch.equal(grouped[key], value), key


def test_stacked_classifier_metrics_refuse_an_empty_split() -> None:
    forward = stacked_sequential(nn.Sequential(nn.Linear(2, 2)))
    assert forward is not None
    with pytest.raises(ValueError, match="empty split"):
        stacked_classifier_metrics(forward, torch.zeros(0, 2), torch.zeros(0, dtype=torch.long))


def test_stacked_linear_of_a_shared_input_is_each_members_linear() -> None:
    """A stride-0 expand of one input (evaluation) takes the one-product path: the same
    values as the per-member product on a real copy, with and without bias."""
    generator = torch.Generator().manual_seed(4)
    weight = torch.randn(K, 4, 5, generator=generator, dtype=torch.float64)
    bias = torch.randn(K, 4, generator=generator, dtype=torch.float64)
    x_t = torch.randn(5, BATCH, generator=generator, dtype=torch.float64)
    shared = x_t.unsqueeze(0).expand(K, -1, -1)
    assert shared.stride(0) == 0
    for b in (bias, None):
        got = stacked_linear(shared, weight, b)
        want = stacked_linear(shared.contiguous(), weight, b)
        assert got.shape == (K, 4, BATCH)
        torch.testing.assert_close(got, want, rtol=RTOL, atol=1e-15)


@pytest.mark.parametrize(
    ("workload", "config", "fast", "test_split"),
    [
        ("digits_mlp", {"hidden": 8, "depth": 2}, True, True),
        ("digits_mlp", {"hidden": 8, "depth": 1, "test_fraction": 0.0}, True, False),
        ("mnist1d", {"model": "mlp", "hidden": 8, "num_samples": 400}, True, True),
        ("mnist1d", {"model": "cnn", "channels": 4, "num_samples": 400}, False, True),
        ("tiny_transformer", {}, False, False),
    ],
)
def test_workloads_give_their_pack_metrics_and_they_are_their_metrics(
    workload: str, config: dict[str, Any], fast: bool, test_split: bool
) -> None:
    """The stacked metrics each workload gives the pack equal its own metrics and
    test_metrics on each member (float32, as trained: the same kernels up to summation order,
    so a float32 tolerance)."""
    spec = get_workload(workload)
    cfg = spec.config_model.model_validate(config)
    problems = [spec.build(cfg, seed, torch.device("cpu")) for seed in range(K)]
    first = problems[0]
    if not fast:
        assert first.pack_metrics is None and first.pack_test_metrics is None
        return
    assert (first.pack_test_metrics is not None) == test_split == (first.test_metrics is not None)
    params = _stack([p.model for p in problems])
    pairs = [(first.pack_metrics, first.metrics), (first.pack_test_metrics, first.test_metrics)]
    for pack_metrics, metrics in pairs[: 1 + test_split]:
        assert pack_metrics is not None and metrics is not None
        got = pack_metrics(params)
        for k, problem in enumerate(problems):
            want = metrics(problem.model)
            assert got["loss"][k].item() == pytest.approx(want["loss"].item(), rel=1e-5)
            assert got["accuracy"][k].item() == pytest.approx(want["accuracy"].item(), abs=1e-2)

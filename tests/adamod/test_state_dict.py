"""state_dict contract: exact round trip, the authors' state loads, old groups get defaults."""

from __future__ import annotations

import copy
from typing import Any

import pytest
import torch

from adamod import AdaMod, DiffMod
from tests.adamod.authors import AuthorsAdaMod, AuthorsDiffMod
from tests.adamod.optim_infos import OPTIMIZERS, PATHS, OptimizerInfo

CASES = [
    (info, kwargs, path)
    for info in OPTIMIZERS
    for kwargs in info.valid_inputs
    for path in ("single", "multi")
    if "foreach" not in kwargs
]


def _model(dtype: torch.dtype = torch.float32) -> torch.nn.Module:
    torch.manual_seed(3)
    return torch.nn.Sequential(torch.nn.Linear(5, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2)).to(
        dtype
    )


def _batches(n: int, dtype: torch.dtype = torch.float32) -> list[tuple[torch.Tensor, ...]]:
    gen = torch.Generator().manual_seed(4)
    return [
        (
            torch.randn(16, 5, generator=gen, dtype=dtype),
            torch.randn(16, 2, generator=gen, dtype=dtype),
        )
        for _ in range(n)
    ]


def _train(model: torch.nn.Module, opt: torch.optim.Optimizer, batches: list) -> None:
    for x, y in batches:
        opt.zero_grad()
        torch.nn.functional.mse_loss(model(x), y).backward()
        opt.step()


@pytest.mark.parametrize(
    ("info", "kwargs", "path"), CASES, ids=[f"{i.name}-{k}-{p}" for i, k, p in CASES]
)
def test_round_trip_gives_identical_trajectory(
    info: OptimizerInfo, kwargs: dict[str, Any], path: str
) -> None:
    """Save at step k, load into a fresh optimizer over a copy of the model, continue: identical."""
    batches = _batches(30)
    model = _model()
    opt = info.cls(model.parameters(), **kwargs, **PATHS[path])
    _train(model, opt, batches[:10])
    saved_model = copy.deepcopy(model.state_dict())
    saved_opt = copy.deepcopy(opt.state_dict())

    _train(model, opt, batches[10:])

    resumed = _model()
    resumed.load_state_dict(saved_model)
    fresh = info.cls(resumed.parameters(), **PATHS[path])  # defaults: the state_dict brings groups
    fresh.load_state_dict(saved_opt)
    assert fresh.param_groups[0]["lr"] == opt.param_groups[0]["lr"]
    _train(resumed, fresh, batches[10:])
    for a, b in zip(model.parameters(), resumed.parameters(), strict=True):
        assert torch.equal(a, b)


def test_authors_adamod_state_dict_loads_and_continues_identically() -> None:
    """A state_dict written by the authors' AdaMod (integer step) continues the same run."""
    batches = _batches(30, torch.float64)
    hyper = {"lr": 1e-2, "betas": (0.9, 0.999), "beta3": 0.99, "eps": 1e-8, "weight_decay": 0.01}
    model = _model(torch.float64)
    theirs = AuthorsAdaMod(model.parameters(), **hyper)
    _train(model, theirs, batches[:10])
    saved = copy.deepcopy(theirs.state_dict())
    assert isinstance(saved["state"][0]["step"], int)
    ours_model = copy.deepcopy(model)

    ours = AdaMod(ours_model.parameters())
    ours.load_state_dict(saved)
    assert ours.param_groups[0]["form"] == "code" and ours.param_groups[0]["maximize"] is False
    assert torch.is_tensor(ours.state[next(ours_model.parameters())]["step"])

    _train(model, theirs, batches[10:])
    _train(ours_model, ours, batches[10:])
    for a, b in zip(model.parameters(), ours_model.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
    assert ours.state[next(ours_model.parameters())]["step"].item() == 30


def test_authors_diffmod_state_dict_loads_and_continues_identically() -> None:
    """The DiffGrad repository's diffMod state (previous_grad, beta3 in groups) loads too."""
    batches = _batches(30, torch.float64)
    model = _model(torch.float64)
    theirs = AuthorsDiffMod(model.parameters(), lr=1e-2, len_memory=50)
    _train(model, theirs, batches[:10])
    saved = copy.deepcopy(theirs.state_dict())
    ours_model = copy.deepcopy(model)
    ours = DiffMod(ours_model.parameters())
    ours.load_state_dict(saved)
    assert ours.param_groups[0]["len_memory"] == pytest.approx(50)
    assert ours.param_groups[0]["version"] == 0
    _train(model, theirs, batches[10:])
    _train(ours_model, ours, batches[10:])
    for a, b in zip(model.parameters(), ours_model.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


def test_setstate_fills_defaults_of_options_added_later() -> None:
    """Groups saved before maximize/foreach/fused/form existed still load and step."""
    p = torch.nn.Parameter(torch.ones(3))
    opt = AdaMod([p], lr=0.1)
    state = opt.state_dict()
    for key in ("maximize", "foreach", "fused", "form"):
        del state["param_groups"][0][key]
    fresh = AdaMod([p], lr=0.5, maximize=True, form="paper")
    fresh.load_state_dict(state)
    group = fresh.param_groups[0]
    assert (group["maximize"], group["foreach"], group["fused"], group["form"]) == (
        False,
        None,
        None,
        "code",
    )
    assert group["lr"] == 0.1
    p.grad = torch.ones(3)
    fresh.step()
    assert torch.all(p < 1)  # minimizes: the saved group, not the new constructor's maximize


@pytest.mark.parametrize("cls", [AdaMod, DiffMod])
def test_bfloat16_params_keep_float32_state_through_a_round_trip(cls: type) -> None:
    """torch casts loaded state to the param dtype; ours stays float32 for bfloat16 params."""
    model = _model(torch.bfloat16)
    opt = cls(model.parameters(), lr=1e-2)
    _train(model, opt, _batches(5, torch.bfloat16))
    saved = copy.deepcopy(opt.state_dict())
    fresh = cls(model.parameters())
    fresh.load_state_dict(saved)
    for p in model.parameters():
        for key, value in fresh.state[p].items():
            if key != "step":
                assert value.dtype == torch.float32, key
                assert torch.equal(value, opt.state[p][key])


def _steps(opt: torch.optim.Optimizer, model: torch.nn.Module, batches: list[Any]) -> None:
    for x, y in batches:
        opt.zero_grad()
        torch.nn.functional.mse_loss(model(x), y).backward()
        opt.step()


@pytest.mark.parametrize("cls", [AdaMod, DiffMod])
def test_telemetry_state_dict_continues_the_series(cls: type, tmp_path: Any) -> None:
    """A checkpoint of state_dict plus telemetry_state_dict (read back weights_only) continues
    to exactly the bound series of a run that never stopped."""
    batches = _batches(6)
    model = _model()
    opt = cls(model.parameters(), lr=0.01, track_bounds=True)
    _steps(opt, model, batches)
    expected = opt.bound_stats()

    model = _model()
    opt = cls(model.parameters(), lr=0.01, track_bounds=True)
    _steps(opt, model, batches[:4])
    path = tmp_path / "ckpt.pt"
    torch.save(
        {"model": model.state_dict(), "opt": opt.state_dict(), "tm": opt.telemetry_state_dict()},
        path,
    )
    saved = torch.load(path, weights_only=True)
    model = _model()
    opt = cls(model.parameters(), lr=0.01, track_bounds=True)
    model.load_state_dict(saved["model"])
    opt.load_state_dict(saved["opt"])
    opt.load_telemetry_state_dict(saved["tm"])
    _steps(opt, model, batches[4:])
    assert opt.bound_stats() == expected


def test_telemetry_state_dict_spans_chunks_and_needs_track_bounds() -> None:
    from adamod._telemetry import BoundTracker, partial_bound_stats

    def record(tracker: BoundTracker, steps: range) -> None:
        for step in steps:
            eta = torch.full((3,), float(step))
            tracker.add(partial_bound_stats(eta, eta * 0.5), eta.numel(), step)
            tracker.end_step()

    whole, first = BoundTracker(), BoundTracker()
    record(whole, range(1, 1031))  # more than one preallocated chunk of rows
    record(first, range(1, 1026))
    resumed = BoundTracker()
    resumed.load_state_dict(first.state_dict())
    record(resumed, range(1026, 1031))
    assert resumed.series() == whole.series()

    plain = AdaMod(_model().parameters(), lr=0.01)
    assert plain.telemetry_state_dict() is None
    plain.load_telemetry_state_dict(None)
    with pytest.raises(ValueError, match="without track_bounds"):
        plain.load_telemetry_state_dict(first.state_dict())

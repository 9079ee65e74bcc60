"""Conformance with torch.optim conventions that other projects' optimizer test suites rely on.

torch.compile of a training step, atomic add_param_group, deepcopy/pickle of the optimizer.
"""

from __future__ import annotations

import copy
import pickle
from collections.abc import Iterator
from typing import Any

import pytest
import torch

from adamod import AdaMod, DiffMod
from tests.adamod.optim_infos import PATHS

CLASSES = {"adamod": AdaMod, "diffmod": DiffMod}


def _model() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 2))


def _data(n: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    gen = torch.Generator().manual_seed(1)
    return [
        (torch.randn(16, 4, generator=gen), torch.randn(16, 2, generator=gen)) for _ in range(n)
    ]


def _backward(model: torch.nn.Module, opt: torch.optim.Optimizer, x: torch.Tensor, y: Any) -> None:
    opt.zero_grad()
    torch.nn.functional.mse_loss(model(x), y).backward()


def _snapshot(opt: torch.optim.Optimizer) -> tuple[list[dict[str, Any]], dict[Any, Any]]:
    """A deep copy of param_groups and state, to compare against after a failed call."""
    groups = [{**g, "params": list(g["params"])} for g in opt.param_groups]
    state = {p: {k: v.clone() for k, v in s.items()} for p, s in opt.state.items()}
    return groups, state


def _assert_same(opt: torch.optim.Optimizer, snapshot: tuple[list[dict], dict]) -> None:
    groups, state = snapshot
    assert len(opt.param_groups) == len(groups)
    for group, saved in zip(opt.param_groups, groups, strict=True):
        assert group.keys() == saved.keys()
        for key, value in saved.items():
            if key == "params":
                assert [id(p) for p in group[key]] == [id(p) for p in value]
            else:
                assert group[key] == value, key
    assert list(opt.state) == list(state)
    for p, saved_state in state.items():
        assert opt.state[p].keys() == saved_state.keys()
        for key, value in saved_state.items():
            assert torch.equal(opt.state[p][key], value), key


# --- torch.compile -------------------------------------------------------------------------


@pytest.fixture
def fresh_dynamo() -> Iterator[None]:
    """Each test compiles for optimizers of its own: start and end with an empty Dynamo cache."""
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


def _compiled_matches_eager(
    name: str, path: str, backend: str, steps: int = 4, **extra: Any
) -> tuple[torch.optim.Optimizer, torch.optim.Optimizer]:
    """Run `steps` compiled steps and the same steps eagerly; parameters must agree."""
    kwargs = {"lr": 1e-2, "weight_decay": 0.01, **PATHS[path], **extra}
    compiled_model, eager_model = _model(), _model()
    compiled_opt = CLASSES[name](compiled_model.parameters(), **kwargs)
    eager_opt = CLASSES[name](eager_model.parameters(), **kwargs)

    def step() -> None:
        compiled_opt.step()

    compiled_step = torch.compile(step, backend=backend)
    for x, y in _data(steps):
        _backward(compiled_model, compiled_opt, x, y)
        compiled_step()
        _backward(eager_model, eager_opt, x, y)
        eager_opt.step()
    for a, b in zip(compiled_model.parameters(), eager_model.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)
    for p, q in zip(compiled_model.parameters(), eager_model.parameters(), strict=True):
        for key, value in eager_opt.state[q].items():
            torch.testing.assert_close(compiled_opt.state[p][key], value, rtol=1e-6, atol=1e-7)
    return compiled_opt, eager_opt


@pytest.mark.usefixtures("fresh_dynamo")
@pytest.mark.parametrize("path", ["single", "multi", "fused"])
@pytest.mark.parametrize("name", ["adamod", "diffmod"])
def test_compiled_step_matches_eager_eager_backend(name: str, path: str) -> None:
    """A torch.compile'd step (Dynamo, eager backend) updates exactly like the eager step.

    Before the fix Dynamo failed: it runs any `_init_group` method itself and wraps the return
    value as a constant, and ours returned lists of tensors. The fused CPU path calls a C kernel
    through ctypes, which Dynamo cannot trace: it graph-breaks and runs that call eagerly.
    """
    _compiled_matches_eager(name, path, "eager")


@pytest.mark.usefixtures("fresh_dynamo")
def test_compiled_step_keeps_bound_telemetry() -> None:
    """track_bounds under torch.compile records one row per step, as eagerly."""
    compiled_opt, eager_opt = _compiled_matches_eager(
        "adamod", "single", "eager", track_bounds=True
    )
    compiled_stats, eager_stats = compiled_opt.bound_stats(), eager_opt.bound_stats()  # type: ignore[attr-defined]
    assert compiled_stats["step"] == eager_stats["step"] == [1, 2, 3, 4]
    for key, values in eager_stats.items():
        assert compiled_stats[key] == pytest.approx(values, rel=1e-6, abs=1e-12), key


@pytest.mark.slow
@pytest.mark.usefixtures("fresh_dynamo")
@pytest.mark.parametrize(("name", "path"), [("adamod", "single"), ("diffmod", "multi")])
def test_compiled_step_matches_eager_inductor(name: str, path: str) -> None:
    """The default inductor backend too (needs a C compiler; ~10 s of compilation per case)."""
    _compiled_matches_eager(name, path, "inductor")


# --- add_param_group -----------------------------------------------------------------------


BAD_GROUPS = [
    ("adamod", {"lr": -1.0}, ValueError, r"^Invalid lr"),
    ("adamod", {"beta3": 1.5}, ValueError, r"^Invalid beta3"),
    ("adamod", {"betas": (0.9, 1.0)}, ValueError, r"^Invalid betas\[1\]"),
    ("adamod", {"form": "book"}, ValueError, r"^Invalid form"),
    ("adamod", {"foreach": True, "fused": True}, ValueError, r"^Invalid foreach and fused"),
    ("diffmod", {"len_memory": 0.5}, ValueError, r"^Invalid len_memory"),
    ("diffmod", {"version": 7}, ValueError, r"^Invalid version"),
    ("diffmod", {"eps": -1.0}, ValueError, r"^Invalid eps"),
]


@pytest.mark.parametrize(
    ("name", "options", "error", "message"),
    BAD_GROUPS,
    ids=[f"{n}-{o}" for n, o, _, _ in BAD_GROUPS],
)
def test_rejected_param_group_leaves_optimizer_unchanged(
    name: str, options: dict[str, Any], error: type[Exception], message: str
) -> None:
    """A group with a bad option raises and is not added; state and groups stay identical."""
    model = _model()
    opt = CLASSES[name](model.parameters(), lr=1e-2)
    x, y = _data(1)[0]
    _backward(model, opt, x, y)
    opt.step()
    before = _snapshot(opt)
    extra = torch.nn.Parameter(torch.ones(3))
    with pytest.raises(error, match=message):
        opt.add_param_group({"params": [extra], **options})
    _assert_same(opt, before)
    opt.add_param_group({"params": [extra]})  # the same param may still be added, validly
    assert opt.param_groups[-1]["params"] == [extra]


@pytest.mark.parametrize("name", ["adamod", "diffmod"])
def test_duplicate_parameter_group_leaves_optimizer_unchanged(name: str) -> None:
    """A parameter already in a group raises torch's ValueError; nothing changes."""
    model = _model()
    opt = CLASSES[name](model.parameters(), lr=1e-2)
    x, y = _data(1)[0]
    _backward(model, opt, x, y)
    opt.step()
    before = _snapshot(opt)
    with pytest.raises(ValueError, match="more than one parameter group"):
        opt.add_param_group({"params": [next(model.parameters())], "lr": 0.5})
    _assert_same(opt, before)
    with pytest.raises(TypeError, match="param_group must be a dict"):
        opt.add_param_group([torch.nn.Parameter(torch.ones(1))])  # type: ignore[arg-type]
    _assert_same(opt, before)


def test_added_group_betas_are_normalised() -> None:
    """Validation runs before the group is stored and still normalises betas to floats."""
    opt = AdaMod([torch.nn.Parameter(torch.ones(2))])
    opt.add_param_group({"params": [torch.nn.Parameter(torch.ones(2))], "betas": [0, 0.5]})
    assert opt.param_groups[-1]["betas"] == (0.0, 0.5)
    assert opt.param_groups[-1]["beta3"] == 0.999  # defaults filled in


# --- deepcopy and pickle -------------------------------------------------------------------


def _copy_by(how: str, obj: Any) -> Any:
    return copy.deepcopy(obj) if how == "deepcopy" else pickle.loads(pickle.dumps(obj))


@pytest.mark.parametrize("how", ["deepcopy", "pickle"])
@pytest.mark.parametrize("track_bounds", [True, False])
@pytest.mark.parametrize("name", ["adamod", "diffmod"])
def test_copied_optimizer_keeps_options_and_continues_identically(
    name: str, track_bounds: bool, how: str
) -> None:
    """A copy keeps track_bounds, its telemetry and every group option, and steps the same."""
    model = _model()
    kwargs: dict[str, Any] = {"lr": 1e-2, "foreach": True, "maximize": False}
    kwargs.update({"form": "paper"} if name == "adamod" else {"version": 2, "len_memory": 20})
    opt = CLASSES[name](model.parameters(), track_bounds=track_bounds, **kwargs)
    data = _data(6)
    for x, y in data[:3]:
        _backward(model, opt, x, y)
        opt.step()
    model_copy, opt_copy = _copy_by(how, (model, opt))
    assert type(opt_copy) is type(opt)
    assert opt_copy.track_bounds is track_bounds
    # torch.optim's __setstate__ adds defaults["differentiable"] = False; all else is kept
    assert {**opt.defaults, "differentiable": False} == opt_copy.defaults
    for group, copied in zip(opt.param_groups, opt_copy.param_groups, strict=True):
        assert {k: v for k, v in group.items() if k != "params"} == {
            k: v for k, v in copied.items() if k != "params"
        }
    for x, y in data[3:]:
        _backward(model, opt, x, y)
        opt.step()
        _backward(model_copy, opt_copy, x, y)
        opt_copy.step()
    for a, b in zip(model.parameters(), model_copy.parameters(), strict=True):
        assert torch.equal(a, b)
    if track_bounds:
        assert opt_copy.bound_stats() == opt.bound_stats()
        assert opt_copy.bound_stats()["step"] == [1, 2, 3, 4, 5, 6]
    else:
        with pytest.raises(ValueError, match="needs track_bounds=True"):
            opt_copy.bound_stats()


@pytest.mark.parametrize("name", ["adamod", "diffmod"])
def test_pickled_state_dict_loads_and_keeps_optimizer_options(name: str) -> None:
    """A pickled state_dict restores every group option; load_state_dict keeps track_bounds."""
    model = _model()
    opt = CLASSES[name](model.parameters(), lr=3e-3, weight_decay=0.1, track_bounds=True)
    data = _data(6)
    for x, y in data[:3]:
        _backward(model, opt, x, y)
        opt.step()
    saved = pickle.loads(pickle.dumps(opt.state_dict()))
    resumed_model = copy.deepcopy(model)
    resumed = CLASSES[name](resumed_model.parameters(), track_bounds=True)
    resumed.load_state_dict(saved)
    assert resumed.track_bounds is True
    assert resumed.param_groups[0]["lr"] == 3e-3
    assert resumed.param_groups[0]["weight_decay"] == 0.1
    for x, y in data[3:]:
        _backward(model, opt, x, y)
        opt.step()
        _backward(resumed_model, resumed, x, y)
        resumed.step()
    for a, b in zip(model.parameters(), resumed_model.parameters(), strict=True):
        assert torch.equal(a, b)
    assert resumed.bound_stats()["step"] == [4, 5, 6]  # telemetry is not part of a state_dict


def test_unpickling_an_old_optimizer_without_track_bounds() -> None:
    """State pickled by torch.optim's own __getstate__ (no track_bounds) still loads."""
    opt = AdaMod([torch.nn.Parameter(torch.ones(2))], track_bounds=True)
    state = torch.optim.Optimizer.__getstate__(opt)
    fresh = AdaMod.__new__(AdaMod)
    fresh.__setstate__(copy.deepcopy(state))
    assert fresh.track_bounds is False
    fresh.param_groups[0]["params"][0].grad = torch.ones(2)
    fresh.step()

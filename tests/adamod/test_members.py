"""Member mode: K models stacked on a leading dim, each with its own hyperparameters.

Every member-mode run is checked against the scalar optimizer run on that member alone (adamod's
scalar single-tensor AdaMod/DiffMod, torch.optim's own classes for the torch family), never
against member-mode code itself.
"""

from __future__ import annotations

import copy
import math
import pickle
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import pytest
import torch
from torch import Tensor

from adamod import STAT_KEYS, AdaMod, BoundTracker, DiffMod, adamod, members
from tests.adamod.optim_infos import PATHS

# member mode's default (foreach and fused None) is a path of its own on CPU: the member C kernel
MEMBER_PATHS = {"default": {}, **PATHS}
K = 3
SHAPES = [(K, 4, 5), (K,), (K, 2, 3)]
SKIPPING = 2  # this param gets a gradient only every third step (its step count lags)
F64 = torch.float64

# one value per member; each member differs from the others in every hyperparameter
HYPERS: dict[str, Tensor] = {
    "lr": torch.tensor([1e-2, 3e-3, 3e-2], dtype=F64),
    "beta1": torch.tensor([0.9, 0.8, 0.5], dtype=F64),
    "beta2": torch.tensor([0.999, 0.99, 0.95], dtype=F64),
    "eps": torch.tensor([1e-8, 1e-6, 1e-4], dtype=F64),
    "weight_decay": torch.tensor([0.0, 0.1, 0.02], dtype=F64),
    "beta3": torch.tensor([0.9, 0.99, 0.0], dtype=F64),
    "len_memory": torch.tensor([10.0, 100.0, 1.0], dtype=F64),
    "momentum": torch.tensor([0.9, 0.0, 0.5], dtype=F64),
    "momentum_decay": torch.tensor([4e-3, 1e-2, 0.0], dtype=F64),
}
WARMUP = (5, 10, 20)  # per member: the lr multiplier differs between members


def lr_factors(step: int, steps: int) -> list[float]:
    """Each member's lr multiplier at `step`: its own linear warm-up, then a cosine."""
    cosine = 0.55 + 0.45 * math.cos(math.pi * step / steps)
    return [min(1.0, (step + 1) / w) * cosine for w in WARMUP]


Build = Callable[..., torch.optim.Optimizer]  # (params, hypers, **extra options)


@dataclass(frozen=True)
class MemberCase:
    """A member-mode optimizer and the scalar optimizer each of its members must equal.

    Both builders take the params and the hyperparameters as a dict of HYPERS' names (1-D
    tensors for the member optimizer, member k's floats for the reference), and extra options
    (track_bounds for AdaMod and DiffMod).
    """

    name: str
    build: Build
    reference: Build
    tracks_bounds: bool = False


def _adam_like(h: dict[str, Any]) -> dict[str, Any]:
    return {
        "lr": h["lr"],
        "betas": (h["beta1"], h["beta2"]),
        "eps": h["eps"],
        "weight_decay": h["weight_decay"],
    }


def _adamod_case(form: str, path: str) -> MemberCase:
    def build(ps: list[Tensor], h: dict[str, Any], **extra: Any) -> torch.optim.Optimizer:
        return AdaMod(ps, **_adam_like(h), beta3=h["beta3"], form=form, **extra)

    return MemberCase(
        f"AdaMod-{form}-{path}",
        lambda ps, h, **extra: build(ps, h, **MEMBER_PATHS[path], **extra),
        lambda ps, h, **extra: build(ps, h, foreach=False, **extra),
        tracks_bounds=True,
    )


def _diffmod_case(version: int, path: str) -> MemberCase:
    def build(ps: list[Tensor], h: dict[str, Any], **extra: Any) -> torch.optim.Optimizer:
        return DiffMod(ps, **_adam_like(h), len_memory=h["len_memory"], version=version, **extra)

    return MemberCase(
        f"DiffMod-v{version}-{path}",
        lambda ps, h, **extra: build(ps, h, **MEMBER_PATHS[path], **extra),
        lambda ps, h, **extra: build(ps, h, foreach=False, **extra),
        tracks_bounds=True,
    )


TORCH_CASES = [
    MemberCase(
        "Adam",
        lambda ps, h: members.Adam(ps, **_adam_like(h)),
        lambda ps, h: torch.optim.Adam(ps, **_adam_like(h), foreach=False),
    ),
    MemberCase(
        "AdamW",
        lambda ps, h: members.AdamW(ps, **_adam_like(h)),
        lambda ps, h: torch.optim.AdamW(ps, **_adam_like(h), foreach=False),
    ),
    MemberCase(
        "SGD",
        lambda ps, h: members.SGD(
            ps, lr=h["lr"], momentum=h["momentum"], weight_decay=h["weight_decay"]
        ),
        lambda ps, h: torch.optim.SGD(
            ps, lr=h["lr"], momentum=h["momentum"], weight_decay=h["weight_decay"], foreach=False
        ),
    ),
    MemberCase(
        "RAdam",
        lambda ps, h: members.RAdam(ps, **_adam_like(h)),
        lambda ps, h: torch.optim.RAdam(ps, **_adam_like(h), foreach=False),
    ),
    MemberCase(
        "NAdamW",
        lambda ps, h: members.NAdamW(ps, **_adam_like(h), momentum_decay=h["momentum_decay"]),
        lambda ps, h: torch.optim.NAdam(
            ps,
            **_adam_like(h),
            momentum_decay=h["momentum_decay"],
            decoupled_weight_decay=True,
            foreach=False,
        ),
    ),
]
ADAMOD_CASES = [
    *(_adamod_case(form, path) for form in ("code", "paper") for path in MEMBER_PATHS),
    *(_diffmod_case(version, path) for version in (0, 1, 2) for path in MEMBER_PATHS),
]
CASES = ADAMOD_CASES + TORCH_CASES


def member_hypers(k: int) -> dict[str, float]:
    """Member k's hyperparameters as floats (what the scalar reference gets)."""
    return {name: float(values[k]) for name, values in HYPERS.items()}


def fresh_hypers() -> dict[str, Tensor]:
    """HYPERS cloned: a run changes its optimizer's lr in place."""
    return {name: values.clone() for name, values in HYPERS.items()}


@dataclass
class Problem:
    """Initial params, curvatures and per-step noise; the gradient is curvature·θ + noise."""

    init: list[Tensor]
    curvatures: list[Tensor]
    noise: list[list[Tensor]]

    @classmethod
    def make(cls, seed: int, steps: int, dtype: torch.dtype = F64) -> Problem:
        gen = torch.Generator().manual_seed(seed)
        init = [torch.randn(s, generator=gen, dtype=F64).to(dtype) for s in SHAPES]
        curvatures = [torch.rand(s, generator=gen, dtype=F64).to(dtype) + 0.1 for s in SHAPES]
        noise = [
            [torch.randn(s, generator=gen, dtype=F64).to(dtype) for s in SHAPES]
            for _ in range(steps)
        ]
        return cls(init, curvatures, noise)

    def grad(self, step: int, j: int, param: Tensor, member: int | None) -> Tensor | None:
        """The gradient of param j at `step` (None on skipped steps); `member`: one slice."""
        if j == SKIPPING and step % 3 != 0:
            return None
        curvature, noise = self.curvatures[j], self.noise[step][j]
        if member is not None:
            curvature, noise = curvature[member], noise[member]
        return curvature * param.detach() + noise


def train_members(
    case: MemberCase,
    problem: Problem,
    *,
    track: bool = False,
    nan_member: int | None = None,
    nan_from: int = 0,
) -> tuple[torch.optim.Optimizer, list[torch.nn.Parameter]]:
    """Run the member optimizer; lr is rescaled every step with `group["lr"].copy_()`."""
    params = [torch.nn.Parameter(t.clone()) for t in problem.init]
    h = fresh_hypers()
    opt = case.build(params, h, **_tracking(track))
    steps = len(problem.noise)
    base_lr = HYPERS["lr"].clone()
    for step in range(steps):
        opt.param_groups[0]["lr"].copy_(base_lr * torch.tensor(lr_factors(step, steps), dtype=F64))
        for j, p in enumerate(params):
            p.grad = problem.grad(step, j, p, None)
            if p.grad is not None and nan_member is not None and step >= nan_from:
                p.grad[nan_member] = float("nan")
        opt.step()
    return opt, params


def train_reference(
    case: MemberCase, problem: Problem, k: int, *, track: bool = False
) -> tuple[torch.optim.Optimizer, list[torch.nn.Parameter]]:
    """Run the scalar optimizer on member k alone, with member k's lr schedule."""
    params = [torch.nn.Parameter(t[k].clone()) for t in problem.init]
    h = member_hypers(k)
    opt = case.reference(params, h, **_tracking(track))
    steps = len(problem.noise)
    for step in range(steps):
        opt.param_groups[0]["lr"] = h["lr"] * lr_factors(step, steps)[k]
        for j, p in enumerate(params):
            p.grad = problem.grad(step, j, p, k)
        opt.step()
    return opt, params


def _tracking(track: bool) -> dict[str, Any]:
    return {"track_bounds": True} if track else {}


def assert_member_equals(
    member_opt: torch.optim.Optimizer,
    member_params: Sequence[Tensor],
    ref_opt: torch.optim.Optimizer,
    ref_params: Sequence[Tensor],
    k: int,
) -> None:
    """Member k's params and state equal the reference's to 1e-12 relative."""
    for p, q in zip(member_params, ref_params, strict=True):
        torch.testing.assert_close(p.detach()[k], q.detach(), rtol=1e-12, atol=1e-15)
        ref_state, state = ref_opt.state[q], member_opt.state[p]
        for key, expected in ref_state.items():
            if expected is None:  # torch's SGD keeps no buffer where momentum is 0
                continue
            got = state[key] if state[key].dim() == 0 else state[key][k]
            torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-15, msg=key)


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_every_member_equals_the_scalar_optimizer_on_that_member(case: MemberCase) -> None:
    """200 float64 steps, lr rescaled every step per member: member k is the scalar run on k."""
    problem = Problem.make(seed=0, steps=200)
    opt, params = train_members(case, problem)
    for k in range(K):
        ref_opt, ref_params = train_reference(case, problem, k)
        assert_member_equals(opt, params, ref_opt, ref_params, k)
    assert all(p.dtype == F64 for p in params)


@pytest.mark.parametrize("case", ADAMOD_CASES, ids=lambda c: c.name)
def test_member_bound_stats_equal_the_scalar_bound_stats(case: MemberCase) -> None:
    """member_bound_stats()[k] is the scalar optimizer's bound_stats() on member k."""
    problem = Problem.make(seed=1, steps=40)
    opt, params = train_members(case, problem, track=True)
    series = opt.member_bound_stats()  # type: ignore[attr-defined]
    assert len(series) == K
    for k in range(K):
        ref_opt, ref_params = train_reference(case, problem, k, track=True)
        assert_member_equals(opt, params, ref_opt, ref_params, k)
        expected = ref_opt.bound_stats()  # type: ignore[attr-defined]
        assert set(series[k]) == {"step", *STAT_KEYS} == set(expected)
        assert series[k]["step"] == expected["step"] == list(range(1, 41))
        for key in STAT_KEYS:
            torch.testing.assert_close(
                torch.tensor(series[k][key], dtype=F64),
                torch.tensor(expected[key], dtype=F64),
                rtol=1e-12,
                atol=1e-300,
                msg=key,
            )
    aggregate = opt.bound_stats()  # type: ignore[attr-defined]
    assert aggregate["step"] == list(range(1, 41))
    eta_max = [max(s["eta_max"][i] for s in series) for i in range(40)]
    assert aggregate["eta_max"] == eta_max  # the aggregate is over every member's elements


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_a_nan_member_changes_no_other_member_by_a_bit(case: MemberCase) -> None:
    """Member 1's gradient turns NaN from step 5: members 0 and 2 are bit-identical."""
    problem = Problem.make(seed=2, steps=20)
    track = case.tracks_bounds
    clean_opt, clean = train_members(case, problem, track=track)
    nan_opt, poisoned = train_members(case, problem, track=track, nan_member=1, nan_from=5)
    assert torch.isnan(poisoned[0].detach()[1]).all()
    for p, q in zip(clean, poisoned, strict=True):
        for k in (0, 2):
            assert torch.equal(p.detach()[k], q.detach()[k])
        for key, value in clean_opt.state[p].items():
            other = nan_opt.state[q][key]
            if value.dim() == 0:
                assert torch.equal(value, other), key
            else:
                assert torch.equal(value[0], other[0]) and torch.equal(value[2], other[2]), key
    if track:
        clean_series = clean_opt.member_bound_stats()  # type: ignore[attr-defined]
        nan_series = nan_opt.member_bound_stats()  # type: ignore[attr-defined]
        assert clean_series[0] == nan_series[0] and clean_series[2] == nan_series[2]
        assert math.isnan(nan_series[1]["eta_mean"][-1])


# --- lr updates, dtypes, the functional form ----------------------------------------------


@pytest.mark.parametrize(
    "case", [ADAMOD_CASES[0], ADAMOD_CASES[1], ADAMOD_CASES[3], *TORCH_CASES], ids=lambda c: c.name
)
def test_assigning_a_new_lr_tensor_equals_copying_into_it(case: MemberCase) -> None:
    """group["lr"] = new tensor and group["lr"].copy_(values) give the same run."""
    problem = Problem.make(seed=3, steps=15)
    copied, copied_params = train_members(case, problem)
    params = [torch.nn.Parameter(t.clone()) for t in problem.init]
    opt = case.build(params, fresh_hypers())
    for step in range(15):
        opt.param_groups[0]["lr"] = HYPERS["lr"] * torch.tensor(lr_factors(step, 15), dtype=F64)
        for j, p in enumerate(params):
            p.grad = problem.grad(step, j, p, None)
        opt.step()
    for a, b in zip(copied_params, params, strict=True):
        assert torch.equal(a, b)
    assert copied.param_groups[0]["lr"].dtype == F64


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_float32_params_stay_float32_with_float64_hyperparameters(case: MemberCase) -> None:
    """Hyperparameters are cast to the state dtype: nothing is promoted to float64."""
    problem = Problem.make(seed=4, steps=5, dtype=torch.float32)
    opt, params = train_members(case, problem)
    for p in params:
        assert p.dtype == torch.float32 and torch.isfinite(p).all()
        for key, value in opt.state[p].items():
            if key not in ("step", "mu_product"):
                assert value.dtype == torch.float32, key


@pytest.mark.parametrize("path", list(MEMBER_PATHS))
def test_bfloat16_packs_keep_float32_state(path: str) -> None:
    """Reduced-precision packs are updated in float32 and keep float32 state, as scalars do."""
    params = [torch.nn.Parameter(torch.randn(s).to(torch.bfloat16)) for s in SHAPES]
    opt = AdaMod(params, lr=HYPERS["lr"].clone(), beta3=HYPERS["beta3"], **MEMBER_PATHS[path])
    for _ in range(5):
        for p in params:
            p.grad = torch.randn(p.shape).to(torch.bfloat16)
        opt.step()
    assert all(p.dtype == torch.bfloat16 for p in params)
    assert all(opt.state[p]["exp_avg_sq"].dtype == torch.float32 for p in params)


@pytest.mark.parametrize("path", list(MEMBER_PATHS))
def test_functional_adamod_in_member_mode_equals_the_class(path: str) -> None:
    """adamod.adamod with tensor hyperparameters updates like AdaMod with the same values."""
    problem = Problem.make(seed=5, steps=10)
    case = _adamod_case("code", path)
    _, params = train_members(case, problem)
    fn_params = [t.clone() for t in problem.init]
    states = [[torch.zeros_like(t) for t in fn_params] for _ in range(3)]
    steps = [torch.tensor(0.0) for _ in fn_params]
    for step in range(10):
        lr = HYPERS["lr"] * torch.tensor(lr_factors(step, 10), dtype=F64)
        with_grad = [
            (j, g)
            for j, p in enumerate(fn_params)
            if (g := problem.grad(step, j, p, None)) is not None
        ]
        pick = [j for j, _ in with_grad]
        m, v, s = ([state[j] for j in pick] for state in states)
        adamod(
            [fn_params[j] for j in pick],
            [g for _, g in with_grad],
            m,
            v,
            s,
            [steps[j] for j in pick],
            beta1=HYPERS["beta1"],
            beta2=HYPERS["beta2"],
            beta3=HYPERS["beta3"],
            lr=lr,
            eps=HYPERS["eps"],
            weight_decay=HYPERS["weight_decay"],
            **MEMBER_PATHS[path],
        )
    for a, b in zip(params, fn_params, strict=True):
        assert torch.equal(a.detach(), b)


@pytest.mark.parametrize("path", ["default", "fused"])
def test_kernel_members_split_over_threads_match_the_single_path(path: str) -> None:
    """Member slices large enough to be split over two threads (a split inside a member's
    slice): the member kernel's update and telemetry equal the single-tensor member path's."""
    torch.set_num_threads(2)  # the autouse fixture restores the count
    gen = torch.Generator().manual_seed(9)
    init = [torch.randn(2, n, generator=gen, dtype=F64) for n in (150_001, 70_000)]
    hypers = {"lr": _values(1e-2, 3e-2), "beta3": _values(0.9, 0.5), "track_bounds": True}
    runs = []
    for options in (MEMBER_PATHS[path], {"foreach": False}):
        params = [torch.nn.Parameter(t.clone()) for t in init]
        opt = AdaMod(params, **hypers, **options)
        grads = torch.Generator().manual_seed(10)
        for _ in range(3):
            for p in params:
                p.grad = torch.randn(p.shape, generator=grads, dtype=F64)
            opt.step()
        runs.append((params, opt.member_bound_stats()))
    (fused, fused_stats), (single, single_stats) = runs
    for a, b in zip(fused, single, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-15)
    for k in range(2):
        for key in STAT_KEYS:
            torch.testing.assert_close(
                torch.tensor(fused_stats[k][key]),
                torch.tensor(single_stats[k][key]),
                rtol=1e-12,
                atol=0,
            )


# --- the member C kernel ----------------------------------------------------------------------


def kernel_hypers(members: int) -> dict[str, Tensor]:
    """Hyperparameters of `members` members, every member different in every value."""
    spread = torch.linspace(0.0, 1.0, members, dtype=F64)
    return {
        "lr": 1e-3 * 30.0**spread,
        "beta1": 0.5 + 0.4 * spread,
        "beta2": 0.95 + 0.049 * spread,
        "eps": 1e-8 * 1e4**spread,
        "weight_decay": 0.1 * spread,
        "beta3": 0.99 * spread,
        "len_memory": 1.0 + 99.0 * spread,
    }


# slices of 20, 1, 6, 37 and 0 elements: none a multiple of a SIMD width, one empty
KERNEL_SHAPES = [(4, 5), (), (2, 3), (37,), (0,)]
KERNEL_SKIPPING = 2  # gets a gradient every other step: one kernel call, two step counts


def _kernel_builders() -> dict[str, Callable[..., torch.optim.Optimizer]]:
    """AdaMod (both forms, the paper one maximizing) and DiffMod (every version)."""

    def adamod_(form: str, maximize: bool) -> Callable[..., torch.optim.Optimizer]:
        return lambda ps, h, **o: AdaMod(
            ps, **_adam_like(h), beta3=h["beta3"], form=form, maximize=maximize, **o
        )

    def diffmod_(version: int) -> Callable[..., torch.optim.Optimizer]:
        return lambda ps, h, **o: DiffMod(
            ps, **_adam_like(h), len_memory=h["len_memory"], version=version, **o
        )

    return {
        "AdaMod-code": adamod_("code", False),
        "AdaMod-paper-maximize": adamod_("paper", True),
        **{f"DiffMod-v{v}": diffmod_(v) for v in (0, 1, 2)},
    }


KERNEL_BUILDERS = _kernel_builders()


def _kernel_run(
    build: Callable[..., torch.optim.Optimizer],
    init: list[Tensor],
    hypers: dict[str, Any],
    grads: list[list[Tensor]],
    member: int | None,
    **options: Any,
) -> tuple[torch.optim.Optimizer, list[torch.nn.Parameter]]:
    """Train on init (member: that slice alone, with that member's floats); lr decays per step."""
    params = [torch.nn.Parameter((t if member is None else t[member]).clone()) for t in init]
    if member is None:  # the optimizer's lr tensor is rescaled in place: keep ours apart
        hypers = {name: values.clone() for name, values in hypers.items()}
    else:
        hypers = {name: float(values[member]) for name, values in hypers.items()}
    base_lr = hypers["lr"].clone() if member is None else hypers["lr"]
    opt = build(params, hypers, **options)
    for step, row in enumerate(grads):
        factor = 1.0 / (1.0 + 0.1 * step)
        if member is None:
            opt.param_groups[0]["lr"].copy_(base_lr * factor)
        else:
            opt.param_groups[0]["lr"] = base_lr * factor
        for j, (p, g) in enumerate(zip(params, row, strict=True)):
            skipped = j == KERNEL_SKIPPING and step % 2 == 1
            p.grad = None if skipped else (g if member is None else g[member]).clone()
        opt.step()
    return opt, params


def _kernel_problem(
    members: int, dtype: torch.dtype, steps: int
) -> tuple[list[Tensor], list[list[Tensor]]]:
    """Initial packs and per-step gradients of KERNEL_SHAPES (float64 draws, cast)."""
    gen = torch.Generator().manual_seed(members)
    shapes = [(members, *s) for s in KERNEL_SHAPES]
    init = [torch.randn(s, generator=gen, dtype=F64).to(dtype) for s in shapes]
    grads = [
        [torch.randn(s, generator=gen, dtype=F64).to(dtype) for s in shapes] for _ in range(steps)
    ]
    return init, grads


@pytest.mark.parametrize("track", [False, True], ids=["plain", "tracked"])
@pytest.mark.parametrize("members_", [1, 3, 7])
@pytest.mark.parametrize("dtype", [torch.float32, F64], ids=["f32", "f64"])
@pytest.mark.parametrize("name", list(KERNEL_BUILDERS))
def test_member_kernel_equals_the_scalar_fused_optimizer_bit_for_bit(
    name: str, dtype: torch.dtype, members_: int, track: bool
) -> None:
    """The default member path (the kernel, one call per step) moves member k exactly as the
    scalar fused optimizer moves param[k] alone: params and state bit for bit, and its
    telemetry to float64 summation order."""
    from adamod import _cpu_kernel

    assert _cpu_kernel.available(), _cpu_kernel._load_error  # else this tests the torch path
    build = KERNEL_BUILDERS[name]
    init, grads = _kernel_problem(members_, dtype, steps=12)
    hypers = kernel_hypers(members_)
    opt, params = _kernel_run(build, init, hypers, grads, None, **_tracking(track))
    series = opt.member_bound_stats() if track else None  # type: ignore[attr-defined]
    for k in range(members_):
        ref, ref_params = _kernel_run(build, init, hypers, grads, k, fused=True, **_tracking(track))
        for p, q in zip(params, ref_params, strict=True):
            assert torch.equal(p.detach()[k], q.detach())
            for key, expected in ref.state[q].items():
                got = opt.state[p][key]
                assert torch.equal(got if got.dim() == 0 else got[k], expected), key
        if series is not None:
            expected_series = ref.bound_stats()  # type: ignore[attr-defined]
            assert series[k]["step"] == expected_series["step"]
            for key in STAT_KEYS:
                torch.testing.assert_close(
                    torch.tensor(series[k][key], dtype=F64),
                    torch.tensor(expected_series[key], dtype=F64),
                    rtol=1e-12,
                    atol=0,
                    msg=key,
                )


@pytest.mark.parametrize("name", list(KERNEL_BUILDERS))
def test_member_kernel_equals_the_single_tensor_optimizer_in_float64(name: str) -> None:
    """Against the eager scalar optimizer (other rounding of the same maths): 1e-12."""
    build = KERNEL_BUILDERS[name]
    init, grads = _kernel_problem(5, F64, steps=40)
    hypers = kernel_hypers(5)
    opt, params = _kernel_run(build, init, hypers, grads, None, track_bounds=True)
    series = opt.member_bound_stats()  # type: ignore[attr-defined]
    for k in range(5):
        ref, ref_params = _kernel_run(
            build, init, hypers, grads, k, foreach=False, track_bounds=True
        )
        assert_member_equals(opt, params, ref, ref_params, k)
        expected = ref.bound_stats()  # type: ignore[attr-defined]
        for key in STAT_KEYS:
            torch.testing.assert_close(
                torch.tensor(series[k][key]), torch.tensor(expected[key]), rtol=1e-12, atol=0
            )


def test_without_a_compiler_the_default_member_path_falls_back_silently(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Any
) -> None:
    """No compiler: the default member step is the torch path's, bit for bit, and compiling
    is tried once, not every step; fused=True still raises before anything changes."""
    from adamod import _cpu_kernel

    monkeypatch.setattr(_cpu_kernel, "_library", None)
    monkeypatch.setattr(_cpu_kernel, "_load_error", None)
    monkeypatch.setenv("ADAMOD_KERNEL_DIR", str(tmp_path))
    monkeypatch.setenv("CC", str(tmp_path / "no-such-compiler"))
    attempts = []
    load = _cpu_kernel.load_library
    monkeypatch.setattr(_cpu_kernel, "load_library", lambda: attempts.append(1) or load())
    init, grads = _kernel_problem(3, F64, steps=6)
    runs = [
        _kernel_run(KERNEL_BUILDERS["DiffMod-v2"], init, kernel_hypers(3), grads, None, **o)
        for o in ({}, {"foreach": False})
    ]
    (default_opt, default), (single_opt, single) = runs
    assert len(attempts) == 1 and _cpu_kernel._load_error is not None
    for p, q in zip(default, single, strict=True):
        assert torch.equal(p, q)
        for key, value in default_opt.state[p].items():
            assert torch.equal(value, single_opt.state[q][key]), key
    fused = AdaMod([torch.nn.Parameter(torch.ones(3, 2))], lr=_values(1, 2, 3), fused=True)
    param = fused.param_groups[0]["params"][0]
    param.grad = torch.ones(3, 2)
    with pytest.raises(ImportError, match="compiling the fused CPU kernel failed"):
        fused.step()
    assert torch.equal(param.detach(), torch.ones(3, 2)) and fused.state[param]["step"] == 0


def test_tensors_the_kernel_cannot_update_take_the_torch_path() -> None:
    """A non-contiguous pack next to float64, float32 and empty ones (one kernel call per
    dtype): it takes the torch path, and every pack follows the single-tensor member path."""
    gen = torch.Generator().manual_seed(11)
    init = [
        torch.randn(3, 4, 5, generator=gen, dtype=F64),
        torch.randn(3, 5, 4, generator=gen, dtype=F64).transpose(1, 2),  # not contiguous
        torch.randn(3, 7, generator=gen),
        torch.randn(3, 0, generator=gen, dtype=F64),  # empty: telemetry of nothing on both paths
    ]
    grads = [[torch.randn(t.shape, generator=gen).to(t.dtype) for t in init] for _ in range(8)]
    runs = []
    for options in ({}, {"foreach": False}):
        params = [torch.nn.Parameter(t.clone()) for t in init]
        assert not params[1].is_contiguous()
        opt = AdaMod(params, **_adam_like(kernel_hypers(3)), track_bounds=True, **options)
        for row in grads:
            for p, g in zip(params, row, strict=True):
                p.grad = g.clone()
            opt.step()
        runs.append((params, opt.member_bound_stats()))
    (default, default_stats), (single, single_stats) = runs
    for a, b in zip(default, single, strict=True):
        tol = 1e-12 if a.dtype == F64 else 1e-5  # float32 maths: rounding of other op orders
        torch.testing.assert_close(a, b, rtol=tol, atol=tol)
    for k in range(3):
        for key in STAT_KEYS:
            torch.testing.assert_close(
                torch.tensor(default_stats[k][key]),
                torch.tensor(single_stats[k][key]),
                rtol=1e-5,  # float32 members: the kernel sums in float64, the torch path in float32
                atol=0,
            )


@pytest.mark.parametrize("path", ["single", "multi"])
def test_float32_member_telemetry_of_the_torch_paths_equals_the_scalar(path: str) -> None:
    """The torch paths sum float32 telemetry in float32: the scalar's float64 sums to 1e-6."""
    problem = Problem.make(seed=12, steps=30, dtype=torch.float32)
    case = _adamod_case("paper", path)
    opt, _ = train_members(case, problem, track=True)
    series = opt.member_bound_stats()  # type: ignore[attr-defined]
    for k in range(K):
        ref_opt, _ = train_reference(case, problem, k, track=True)
        expected = ref_opt.bound_stats()  # type: ignore[attr-defined]
        assert series[k]["bound_active_frac"] == expected["bound_active_frac"]  # exact counts
        for key in STAT_KEYS:
            torch.testing.assert_close(
                torch.tensor(series[k][key], dtype=F64),
                torch.tensor(expected[key], dtype=F64),
                rtol=1e-6,  # float32 accumulation (the scalar sums in float64)
                atol=0,
                msg=key,
            )


def test_counts_past_the_exact_float_range_are_summed_in_float64(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Above 2**24 elements per member a float32 count would round: then it is a float64 sum.
    The limit is lowered here, so both branches must give the same telemetry."""
    from adamod import _telemetry

    problem = Problem.make(seed=13, steps=6, dtype=torch.float32)
    case = _adamod_case("code", "single")
    exact, _ = train_members(case, problem, track=True)
    monkeypatch.setattr(_telemetry, "_EXACT_COUNT", {torch.float32: 2, torch.float64: 2})
    wide, _ = train_members(case, problem, track=True)
    assert wide.member_bound_stats() == exact.member_bound_stats()  # type: ignore[attr-defined]


# --- validation -------------------------------------------------------------------------------

MEMBER_CLASSES: list[tuple[type, dict[str, Any]]] = [
    (AdaMod, {}),
    (DiffMod, {}),
    (members.Adam, {}),
    (members.AdamW, {}),
    (members.SGD, {"momentum": 0.9}),
    (members.RAdam, {}),
    (members.NAdamW, {}),
]


def _pack(shape: tuple[int, ...] = (K, 2)) -> torch.nn.Parameter:
    return torch.nn.Parameter(torch.ones(shape, dtype=F64))


def _values(*xs: float) -> Tensor:
    return torch.tensor(xs, dtype=F64)


@pytest.mark.parametrize(("cls", "extra"), MEMBER_CLASSES, ids=lambda c: getattr(c, "__name__", ""))
def test_lengths_must_agree(cls: type, extra: dict[str, Any]) -> None:
    """Two tensor hyperparameters of different lengths: the later one is named with both."""
    with pytest.raises(ValueError, match=r"^Invalid weight_decay: 4 values, but lr has 3 \("):
        cls([_pack()], lr=_values(1e-3, 1e-3, 1e-3), weight_decay=_values(0, 0, 0, 0), **extra)


@pytest.mark.parametrize(("cls", "extra"), MEMBER_CLASSES, ids=lambda c: getattr(c, "__name__", ""))
def test_params_need_the_leading_member_dim(cls: type, extra: dict[str, Any]) -> None:
    """A param whose leading dim is not K is named with its shape."""
    message = (
        r"^Invalid lr: 3 member values, but param 1 of its group has shape \(4, 2\) "
        r"\(member mode needs param.shape\[0\] == 3\)$"
    )
    with pytest.raises(ValueError, match=message):
        cls([_pack(), _pack((4, 2))], lr=_values(1e-3, 2e-3, 3e-3), **extra)
    with pytest.raises(ValueError, match=r"param 0 of its group has shape \(\)"):
        cls([torch.nn.Parameter(torch.tensor(1.0))], lr=_values(1e-3, 2e-3, 3e-3), **extra)


ELEMENT_ERRORS: list[tuple[type, dict[str, Any], str]] = [
    (
        AdaMod,
        {"beta3": _values(0.9, 0.99, 0.5, 1.2)},
        r"^Invalid beta3\[3\]: 1\.2 \(must be in \[0, 1\)\)$",
    ),
    (AdaMod, {"lr": _values(1e-3, -0.5)}, r"^Invalid lr\[1\]: -0\.5 \(must be >= 0\)$"),
    (AdaMod, {"betas": (_values(0.9, 1.0), 0.999)}, r"^Invalid betas\[0\]\[1\]: 1\.0 \(must be in"),
    (AdaMod, {"eps": _values(1e-8, float("nan"))}, r"^Invalid eps\[1\]: nan \(must be >= 0\)$"),
    (
        DiffMod,
        {"len_memory": _values(10, 0.5)},
        r"^Invalid len_memory\[1\]: 0\.5 \(must be >= 1\)$",
    ),
    (members.Adam, {"betas": (0.9, _values(0.99, 1.5))}, r"^Invalid betas\[1\]\[1\]: 1\.5"),
    (
        members.SGD,
        {"momentum": _values(0.9, -0.1)},
        r"^Invalid momentum\[1\]: -0\.1 \(must be >= 0",
    ),
    (members.NAdamW, {"weight_decay": _values(0.1, -1.0)}, r"^Invalid weight_decay\[1\]: -1\.0"),
    (
        AdaMod,
        {"lr": torch.ones(2, 2)},
        r"^Invalid lr: a tensor of shape \(2, 2\) \(must be a number",
    ),
    (AdaMod, {"lr": torch.ones(2, dtype=torch.int64)}, r"^Invalid lr: dtype torch\.int64"),
    (members.RAdam, {"eps": torch.ones(0)}, r"^Invalid eps: an empty tensor"),
    (members.Adam, {"amsgrad": True}, r"^Invalid amsgrad: True \(only False is supported\)$"),
    (members.SGD, {"nesterov": True}, r"^Invalid nesterov: True"),
]


@pytest.mark.parametrize(
    ("cls", "kwargs", "message"), ELEMENT_ERRORS, ids=[m for _, _, m in ELEMENT_ERRORS]
)
def test_every_element_is_checked_like_the_scalar(cls: type, kwargs: dict, message: str) -> None:
    """An out-of-range element raises the scalar's message with its index."""
    with pytest.raises(ValueError, match=message):
        cls([_pack((2, 2))], **kwargs)


def _snapshot(opt: torch.optim.Optimizer, params: Sequence[Tensor]) -> tuple[Any, ...]:
    groups = [
        {k: (v.clone() if torch.is_tensor(v) else v) for k, v in g.items() if k != "params"}
        for g in opt.param_groups
    ]
    state = {id(p): {k: v.clone() for k, v in opt.state[p].items()} for p in params}
    return groups, state, [p.detach().clone() for p in params]


def _assert_unchanged(opt: torch.optim.Optimizer, params: Sequence[Tensor], before: tuple) -> None:
    groups, state, values = before
    assert len(opt.param_groups) == len(groups)
    for group, saved in zip(opt.param_groups, groups, strict=True):
        for key, value in saved.items():
            assert torch.equal(group[key], value) if torch.is_tensor(value) else group[key] == value
    for p, value in zip(params, values, strict=True):
        assert torch.equal(p.detach(), value)
        for key, saved in state[id(p)].items():
            assert torch.equal(opt.state[p][key], saved), key


@pytest.mark.parametrize(("cls", "extra"), MEMBER_CLASSES, ids=lambda c: getattr(c, "__name__", ""))
def test_rejected_input_changes_nothing(cls: type, extra: dict[str, Any]) -> None:
    """A bad group, or an lr of the wrong length assigned before a step: nothing changes."""
    params = [_pack(), _pack((K,))]
    opt = cls(params, lr=_values(1e-2, 2e-2, 3e-2), **extra)
    for p in params:
        p.grad = torch.ones_like(p)
    opt.step()
    before = _snapshot(opt, params)
    with pytest.raises(ValueError, match=r"^Invalid lr\[2\]: -1\.0"):
        opt.add_param_group({"params": [_pack()], "lr": _values(1e-2, 1e-2, -1.0)})
    with pytest.raises(ValueError, match=r"param 0 of its group has shape \(2, 2\)"):
        opt.add_param_group({"params": [_pack((2, 2))]})
    _assert_unchanged(opt, params, before)
    opt.param_groups[0]["lr"] = _values(1e-2, 2e-2)
    with pytest.raises(ValueError, match=r"2 member values, but param 0 of its group has shape"):
        opt.step()
    opt.param_groups[0]["lr"] = before[0][0]["lr"]
    _assert_unchanged(opt, params, before)


def test_member_bound_stats_needs_member_mode_and_tracking() -> None:
    """Scalar mode: an error saying it needs tensor hyperparameters; untracked: track_bounds."""
    scalar = AdaMod([_pack()], track_bounds=True)
    with pytest.raises(ValueError, match=r"^member_bound_stats\(\) needs tensor hyperparameters"):
        scalar.member_bound_stats()
    untracked = AdaMod([_pack()], lr=_values(1e-3, 1e-3, 1e-3))
    with pytest.raises(ValueError, match=r"^member_bound_stats\(\) needs track_bounds=True"):
        untracked.member_bound_stats()
    tracked = DiffMod([_pack()], len_memory=_values(2, 3, 4), track_bounds=True)
    assert tracked.member_bound_stats() == [{"step": [], **{k: [] for k in STAT_KEYS}}] * K


def test_tracked_groups_need_the_same_member_count() -> None:
    """With track_bounds one series per member: groups of other K are rejected."""
    opt = AdaMod([_pack()], lr=_values(1e-3, 1e-3, 1e-3), track_bounds=True)
    with pytest.raises(ValueError, match=r"^Invalid param group: 2 members, but another"):
        opt.add_param_group({"params": [_pack((2, 2))], "lr": _values(1e-3, 1e-3)})
    assert len(opt.param_groups) == 1
    AdaMod([_pack()], lr=_values(1e-3, 1e-3, 1e-3)).add_param_group(
        {"params": [_pack((2, 2))], "lr": _values(1e-3, 1e-3)}
    )  # without telemetry any K per group is fine


def test_functional_form_checks_members_before_any_change() -> None:
    """adamod.adamod with a wrong leading dim raises; params and step counts are untouched."""
    p, g = torch.ones(2, 3, dtype=F64), torch.ones(2, 3, dtype=F64)
    state = [torch.zeros(2, 3, dtype=F64) for _ in range(3)]
    step = torch.tensor(0.0)
    with pytest.raises(ValueError, match=r"^Invalid lr: 3 member values, but param 0"):
        adamod(
            [p], [g], [state[0]], [state[1]], [state[2]], [step],
            beta1=0.9, beta2=0.999, beta3=0.9, lr=_values(1, 2, 3), eps=1e-8, weight_decay=0.0,
        )  # fmt: skip
    assert torch.equal(p, torch.ones(2, 3, dtype=F64)) and step.item() == 0


# --- state_dict and deepcopy ----------------------------------------------------------------

ROUND_TRIP_CASES = [
    _adamod_case("paper", "single"),
    _adamod_case("code", "default"),
    _diffmod_case(2, "multi"),
    _diffmod_case(1, "default"),
    *TORCH_CASES,
]


def _continue(
    opt: torch.optim.Optimizer, params: Sequence[Tensor], problem: Problem, start: int, stop: int
) -> None:
    """Steps start..stop-1 of train_members' loop."""
    steps = len(problem.noise)
    for step in range(start, stop):
        lr = HYPERS["lr"] * torch.tensor(lr_factors(step, steps), dtype=F64)
        opt.param_groups[0]["lr"].copy_(lr)
        for j, p in enumerate(params):
            p.grad = problem.grad(step, j, p, None)
        opt.step()


@pytest.mark.parametrize("case", ROUND_TRIP_CASES, ids=lambda c: c.name)
def test_state_dict_round_trip_continues_identically(case: MemberCase) -> None:
    """Save at step 10, load into a fresh optimizer on copied params, continue: bit-identical."""
    problem = Problem.make(seed=6, steps=20)
    params = [torch.nn.Parameter(t.clone()) for t in problem.init]
    opt = case.build(params, fresh_hypers())
    _continue(opt, params, problem, 0, 10)
    saved = copy.deepcopy(opt.state_dict())
    resumed_params = [torch.nn.Parameter(p.detach().clone()) for p in params]
    _continue(opt, params, problem, 10, 20)

    fresh = case.build(resumed_params, {**fresh_hypers(), "lr": _values(9.0, 9.0, 9.0)})
    fresh.load_state_dict(saved)
    assert torch.equal(fresh.param_groups[0]["lr"], saved["param_groups"][0]["lr"])
    for p, q in zip(params, resumed_params, strict=True):
        for key, value in fresh.state[q].items():
            assert value.dtype == opt.state[p][key].dtype, key  # NAdamW's float32 mu_product
    _continue(fresh, resumed_params, problem, 10, 20)
    for a, b in zip(params, resumed_params, strict=True):
        assert torch.equal(a, b)


@pytest.mark.parametrize("case", ROUND_TRIP_CASES, ids=lambda c: c.name)
def test_deepcopy_keeps_member_mode(case: MemberCase) -> None:
    """A deep copy has its own member tensors and continues like the original."""
    problem = Problem.make(seed=7, steps=12)
    params = [torch.nn.Parameter(t.clone()) for t in problem.init]
    opt = case.build(params, fresh_hypers(), **_tracking(case.tracks_bounds))
    _continue(opt, params, problem, 0, 6)
    twin_opt, twin_params = copy.deepcopy((opt, params))
    lr = twin_opt.param_groups[0]["lr"]
    assert lr.shape == (K,) and lr.data_ptr() != opt.param_groups[0]["lr"].data_ptr()
    _continue(opt, params, problem, 6, 12)
    _continue(twin_opt, twin_params, problem, 6, 12)
    for a, b in zip(params, twin_params, strict=True):
        assert torch.equal(a, b)
    if isinstance(opt, AdaMod | DiffMod):
        assert twin_opt.member_bound_stats() == opt.member_bound_stats()  # type: ignore[attr-defined]


def test_a_tracker_pickled_before_member_telemetry_still_records() -> None:
    """Old pickles lack the member fields; unpickled, the tracker records scalar steps."""
    tracker = BoundTracker()
    tracker.add(torch.tensor([1.0, 2.0, 3.0, 4.0, 5.0], dtype=F64), 2, 1)
    tracker.end_step()
    old = copy.copy(tracker)
    for name in [n for n in vars(old) if n.startswith("_member") or n == "_members"]:
        delattr(old, name)
    restored = pickle.loads(pickle.dumps(old))
    restored.add(torch.tensor([2.0, 2.0, 3.0, 4.0, 5.0], dtype=F64), 2, 2)
    restored.end_step()
    assert restored.series()["step"] == [1, 2] and restored.member_series(1)[0]["step"] == []


# --- CUDA -------------------------------------------------------------------------------------


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize(
    "case",
    [_adamod_case("code", p) for p in MEMBER_PATHS] + [_diffmod_case(0, "multi"), *TORCH_CASES],
    ids=lambda c: c.name,
)
def test_member_mode_on_cuda_matches_cpu(case: MemberCase) -> None:
    """Member mode on CUDA (float64) follows the CPU member run; a tracked step never syncs."""
    problem = Problem.make(seed=8, steps=30)
    _, cpu_params = train_members(case, problem)
    gpu_problem = Problem(
        [t.cuda() for t in problem.init],
        [t.cuda() for t in problem.curvatures],
        [[t.cuda() for t in row] for row in problem.noise],
    )
    gpu_opt, gpu_params = train_members(case, gpu_problem, track=case.tracks_bounds)
    for a, b in zip(cpu_params, gpu_params, strict=True):
        torch.testing.assert_close(a.detach(), b.detach().cpu(), rtol=1e-9, atol=1e-12)
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        gpu_opt.param_groups[0]["lr"].copy_(HYPERS["lr"])
        gpu_opt.step()
    finally:
        torch.cuda.set_sync_debug_mode("default")
    if case.tracks_bounds:
        series = gpu_opt.member_bound_stats()  # type: ignore[attr-defined]
        assert len(series) == K and len(series[0]["step"]) == 31

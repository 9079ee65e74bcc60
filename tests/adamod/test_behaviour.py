"""torch.optim conventions, precision, DiffMod's gradient copy, telemetry and path choice."""

from __future__ import annotations

import pytest
import torch

from adamod import STAT_KEYS, AdaMod, BoundTracker, DiffMod, adamod, diffmod
from adamod._update import choose_impl
from tests.adamod.optim_infos import OPTIMIZERS, PATHS, OptimizerInfo

EAGER = ["single", "multi"]


@pytest.mark.parametrize("info", OPTIMIZERS, ids=lambda i: i.name)
@pytest.mark.parametrize("path", EAGER)
def test_closure_is_called_and_its_loss_returned(info: OptimizerInfo, path: str) -> None:
    """step(closure) re-evaluates with gradients enabled and returns the closure's loss."""
    p = torch.nn.Parameter(torch.tensor([1.0, -2.0]))
    opt = info.cls([p], lr=0.1, **PATHS[path])
    calls = []

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = (p**2).sum()
        loss.backward()
        calls.append(loss.item())
        return loss

    assert opt.step(closure).item() == pytest.approx(5.0)
    assert calls == [5.0]
    assert torch.all(p.detach().abs() < torch.tensor([1.0, 2.0]))


@pytest.mark.parametrize("info", OPTIMIZERS, ids=lambda i: i.name)
@pytest.mark.parametrize("path", EAGER)
def test_params_without_grad_are_skipped(info: OptimizerInfo, path: str) -> None:
    """A parameter with grad None neither moves nor gets state, even with weight decay."""
    used = torch.nn.Parameter(torch.ones(3))
    unused = torch.nn.Parameter(torch.ones(3))
    opt = info.cls([used, unused], lr=0.1, weight_decay=0.1, **PATHS[path])
    used.grad = torch.ones(3)
    opt.step()
    assert torch.equal(unused.detach(), torch.ones(3))
    assert unused not in opt.state and opt.state[used]["step"].item() == 1


@pytest.mark.parametrize("info", OPTIMIZERS, ids=lambda i: i.name)
@pytest.mark.parametrize("path", EAGER)
def test_maximize_equals_minimizing_the_negated_gradient(info: OptimizerInfo, path: str) -> None:
    """maximize=True with gradient g moves exactly as minimizing with -g."""
    gen = torch.Generator().manual_seed(0)
    grads = [torch.randn(6, generator=gen) for _ in range(20)]
    a = torch.nn.Parameter(torch.zeros(6))
    b = torch.nn.Parameter(torch.zeros(6))
    opt_a = info.cls([a], lr=0.01, weight_decay=0.01, maximize=True, **PATHS[path])
    opt_b = info.cls([b], lr=0.01, weight_decay=0.01, **PATHS[path])
    for g in grads:
        a.grad, b.grad = g.clone(), -g
        opt_a.step()
        opt_b.step()
    assert torch.equal(a, b)
    assert torch.any(a != 0)


@pytest.mark.parametrize("path", EAGER)
def test_diffmod_keeps_a_copy_of_the_previous_gradient(path: str) -> None:
    """Changing p.grad in place after a step does not change DiffMod's memory of it."""
    p = torch.nn.Parameter(torch.zeros(4))
    opt = DiffMod([p], lr=0.1, **PATHS[path])
    p.grad = torch.tensor([1.0, 2.0, 3.0, 4.0])
    opt.step()
    p.grad.mul_(100)  # gradient accumulation reuses the buffer in place
    assert torch.equal(opt.state[p]["previous_grad"], torch.tensor([1.0, 2.0, 3.0, 4.0]))
    assert opt.state[p]["previous_grad"].data_ptr() != p.grad.data_ptr()


@pytest.mark.parametrize("path", EAGER)
def test_functional_forms_match_the_classes(path: str) -> None:
    """adamod.adamod / adamod.diffmod on explicit state lists equal the optimizer classes."""
    gen = torch.Generator().manual_seed(1)
    grads = [torch.randn(5, generator=gen) for _ in range(10)]
    for cls, fn in ((AdaMod, adamod), (DiffMod, diffmod)):
        p_class = torch.nn.Parameter(torch.ones(5))
        opt = cls([p_class], lr=0.05, weight_decay=0.01, **PATHS[path])
        p_fn = torch.ones(5)
        n_state = 4 if cls is DiffMod else 3
        state = [torch.zeros(5) for _ in range(n_state)]
        step = torch.tensor(0.0)
        common = {"beta1": 0.9, "beta2": 0.999, "lr": 0.05, "eps": 1e-8, "weight_decay": 0.01}
        for g in grads:
            p_class.grad = g
            opt.step()
            if cls is AdaMod:
                fn([p_fn], [g], *[[s] for s in state], [step], beta3=0.999, **common, **PATHS[path])
            else:
                fn(
                    [p_fn],
                    [g],
                    *[[s] for s in state],
                    [step],
                    len_memory=1000,
                    **common,
                    **PATHS[path],
                )
        assert torch.equal(p_class.detach(), p_fn)


@pytest.mark.parametrize("info", OPTIMIZERS, ids=lambda i: i.name)
def test_lr_scheduler_drives_the_step(info: OptimizerInfo) -> None:
    """A torch LR scheduler changes the step: lr = 0 after the first step freezes the params."""
    p = torch.nn.Parameter(torch.ones(3))
    opt = info.cls([p], lr=0.1)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda epoch: 1.0 if epoch == 0 else 0.0)
    p.grad = torch.ones(3)
    opt.step()
    sched.step()
    moved = p.detach().clone()
    assert not torch.equal(moved, torch.ones(3))
    opt.step()
    assert torch.equal(p.detach(), moved)


@pytest.mark.parametrize("info", OPTIMIZERS, ids=lambda i: i.name)
@pytest.mark.parametrize("path", EAGER)
def test_bfloat16_training_stays_finite_and_learns(info: OptimizerInfo, path: str) -> None:
    """A small bfloat16 MLP trains for 150 steps without NaN; state is float32."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(8, 32), torch.nn.GELU(), torch.nn.Linear(32, 1)).to(
        torch.bfloat16
    )
    x = torch.randn(64, 8).to(torch.bfloat16)
    y = (x.float().sum(1, keepdim=True) * 0.3).tanh().to(torch.bfloat16)
    # a short bound memory (β3 = 0.9 / len_memory = 10) so 150 steps are past the warm-up
    opt = info.cls(model.parameters(), **info.valid_inputs[1], **PATHS[path])
    losses = []
    for _ in range(150):
        opt.zero_grad()
        loss = torch.nn.functional.mse_loss(model(x), y)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert all(torch.isfinite(p).all() for p in model.parameters())
    assert all(p.dtype == torch.bfloat16 for p in model.parameters())
    assert losses[-1] < 0.5 * losses[0]
    for state in opt.state.values():
        assert state["exp_avg_sq"].dtype == torch.float32


@pytest.mark.parametrize("info", OPTIMIZERS, ids=lambda i: i.name)
def test_bound_stats_series_and_reset(info: OptimizerInfo) -> None:
    """One row per step with every key; the early bound is active; reset forgets the rows."""
    p1 = torch.nn.Parameter(torch.ones(10))
    p2 = torch.nn.Parameter(torch.ones(3, 3))
    opt = info.cls([{"params": [p1]}, {"params": [p2], "lr": 0.5}], lr=0.1, track_bounds=True)
    for step in range(5):
        p1.grad = torch.full((10,), 1.0 + step)
        p2.grad = torch.full((3, 3), -2.0)
        opt.step()
    stats = opt.bound_stats()
    assert set(stats) == {"step", *STAT_KEYS}
    assert stats["step"] == [1, 2, 3, 4, 5]
    assert all(len(v) == 5 for v in stats.values())
    # s_t < η_t everywhere in the first steps (s_0 = 0 and s is not bias-corrected)
    assert stats["bound_active_frac"] == [1.0] * 5
    assert all(e < m for e, m in zip(stats["eff_lr_max"], stats["eta_max"], strict=True))
    # the largest η belongs to the group with lr = 0.5 (η ∝ lr)
    assert stats["eta_max"][0] == pytest.approx(0.5 / (1 - 0.9) / 2.0, rel=1e-5)
    opt.reset_bound_stats()
    assert opt.bound_stats()["step"] == []


def test_bound_tracker_spans_several_buffers() -> None:
    """More steps than one preallocated buffer holds are all kept, in order."""
    tracker = BoundTracker()
    for step in range(1, 1100):
        tracker.add(torch.tensor([1.0, 2.0, 3.0, 4.0, float(step)], dtype=torch.float64), 2, step)
        tracker.end_step()
    series = tracker.series()
    assert series["step"] == list(range(1, 1100))
    assert series["eff_lr_max"][-1] == 1099.0 and series["bound_active_frac"][0] == 0.5


def test_tracking_off_keeps_no_tracker() -> None:
    """Free when off: no tracker exists, so the step does no telemetry work."""
    assert AdaMod([torch.nn.Parameter(torch.ones(1))])._tracker is None


def test_implementation_choice() -> None:
    """One helper picks the path: CPU defaults to single-tensor, switches are honoured."""
    cpu = [torch.ones(1)]
    assert choose_impl(cpu, None, None) == "single"
    assert choose_impl(cpu, True, None) == "multi"
    assert choose_impl(cpu, False, True) == "fused"
    assert choose_impl(cpu, None, False) == "single"


@pytest.mark.parametrize("info", OPTIMIZERS, ids=lambda i: i.name)
def test_fused_path_handles_mixed_params_like_the_default_path(info: OptimizerInfo) -> None:
    """float32, float64, bfloat16 and non-contiguous params in one fused step match the default."""

    def make() -> list[torch.nn.Parameter]:
        gen = torch.Generator().manual_seed(5)
        return [
            torch.nn.Parameter(torch.randn(30, generator=gen)),
            torch.nn.Parameter(torch.randn(8, generator=gen, dtype=torch.float64)),
            torch.nn.Parameter(torch.randn(12, generator=gen).to(torch.bfloat16)),
            torch.nn.Parameter(torch.randn(4, 6, generator=gen).t()),  # not contiguous
        ]

    fused, default = make(), make()
    assert not fused[3].is_contiguous()
    opt_f = info.cls(fused, **info.valid_inputs[1], fused=True, track_bounds=True)
    opt_d = info.cls(default, **info.valid_inputs[1], track_bounds=True)
    gen = torch.Generator().manual_seed(6)
    for _ in range(20):
        for a, b in zip(fused, default, strict=True):
            g = torch.randn(a.shape, generator=gen).to(a.dtype)
            a.grad, b.grad = g, g.clone()
        opt_f.step()
        opt_d.step()
    for a, b in zip(fused, default, strict=True):
        tol = 1e-2 if a.dtype == torch.bfloat16 else 1e-5
        torch.testing.assert_close(a, b, rtol=tol, atol=tol)
    for key, values in opt_f.bound_stats().items():
        torch.testing.assert_close(
            torch.tensor(values), torch.tensor(opt_d.bound_stats()[key]), rtol=1e-4, atol=0.02
        )


def test_fused_cpu_without_a_compiler_is_a_clear_error(monkeypatch, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """With no working compiler, fused=True raises ImportError saying what is needed."""
    from adamod import _cpu_kernel

    monkeypatch.setattr(_cpu_kernel, "_library", None)
    monkeypatch.setenv("ADAMOD_KERNEL_DIR", str(tmp_path))
    monkeypatch.setenv("CC", str(tmp_path / "no-such-compiler"))
    p = torch.nn.Parameter(torch.ones(3))
    opt = AdaMod([p], fused=True)
    p.grad = torch.ones(3)
    with pytest.raises(ImportError, match="compiling the fused CPU kernel failed"):
        opt.step()
    assert torch.equal(p.detach(), torch.ones(3)) and opt.state[p]["step"].item() == 0


@pytest.mark.parametrize("info", OPTIMIZERS, ids=lambda i: i.name)
@pytest.mark.parametrize("foreach", [False, True])
def test_cache_blocking_changes_no_result(info: OptimizerInfo, foreach: bool, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """Updating a large tensor block by block gives bit-identical params and the same telemetry."""
    from adamod import _update

    results = []
    for block in (50, 10**9):
        monkeypatch.setattr(_update, "CACHE_BLOCK", block)
        gen = torch.Generator().manual_seed(2)
        ps = [torch.nn.Parameter(torch.randn(n, generator=gen)) for n in (321, 7, 30, 64)]
        opt = info.cls(ps, **info.valid_inputs[2], foreach=foreach, track_bounds=True)
        for _ in range(10):
            for p in ps:
                p.grad = torch.randn(p.shape, generator=gen)
            opt.step()
        results.append((torch.cat([p.detach() for p in ps]), opt.bound_stats()))
    assert torch.equal(results[0][0], results[1][0])
    for key in results[0][1]:
        assert results[0][1][key] == pytest.approx(results[1][1][key], rel=1e-6)


@pytest.mark.parametrize("info", OPTIMIZERS, ids=lambda i: i.name)
@pytest.mark.parametrize("threads", [2, 3])
def test_fused_step_split_over_threads_matches_the_default_path(
    info: OptimizerInfo, threads: int
) -> None:
    """Tensors large enough to be split over torch's threads: same update and telemetry."""
    torch.set_num_threads(threads)  # the autouse fixture restores the count

    def make() -> list[torch.nn.Parameter]:
        gen = torch.Generator().manual_seed(7)
        return [
            torch.nn.Parameter(torch.randn(150_001, generator=gen)),
            torch.nn.Parameter(torch.randn(70_000, generator=gen)),
        ]

    fused, default = make(), make()
    opt_f = info.cls(fused, **info.valid_inputs[1], fused=True, track_bounds=True)
    opt_d = info.cls(default, **info.valid_inputs[1], track_bounds=True)
    gen = torch.Generator().manual_seed(8)
    for _ in range(5):
        for a, b in zip(fused, default, strict=True):
            g = torch.randn(a.shape, generator=gen)
            a.grad, b.grad = g, g.clone()
        opt_f.step()
        opt_d.step()
    for a, b in zip(fused, default, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    stats_f, stats_d = opt_f.bound_stats(), opt_d.bound_stats()
    for key in STAT_KEYS:
        torch.testing.assert_close(
            torch.tensor(stats_f[key]), torch.tensor(stats_d[key]), rtol=1e-4, atol=1e-7
        )

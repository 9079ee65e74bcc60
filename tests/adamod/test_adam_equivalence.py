"""With β3 = 0 the bound never binds: AdaMod is Adam (AdamW with decoupled decay)."""

from __future__ import annotations

import pytest
import torch

from adamod import AdaMod, DiffMod


def _train_pair(
    ours: type, ours_kwargs: dict, theirs: type, theirs_kwargs: dict, steps: int = 200
) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Train two copies of a small float64 regression model; return both parameter lists."""
    torch.manual_seed(0)
    model_a = torch.nn.Sequential(
        torch.nn.Linear(6, 16), torch.nn.Tanh(), torch.nn.Linear(16, 1)
    ).double()
    model_b = torch.nn.Sequential(
        torch.nn.Linear(6, 16), torch.nn.Tanh(), torch.nn.Linear(16, 1)
    ).double()
    model_b.load_state_dict(model_a.state_dict())
    opt_a = ours(model_a.parameters(), **ours_kwargs)
    opt_b = theirs(model_b.parameters(), **theirs_kwargs)
    x = torch.randn(128, 6, dtype=torch.float64)
    y = torch.sin(x.sum(1, keepdim=True))
    for _ in range(steps):
        for model, opt in ((model_a, opt_a), (model_b, opt_b)):
            opt.zero_grad()
            torch.nn.functional.mse_loss(model(x), y).backward()
            opt.step()
    return list(model_a.parameters()), list(model_b.parameters())


def _assert_same(a: list[torch.Tensor], b: list[torch.Tensor], rtol: float) -> None:
    for pa, pb in zip(a, b, strict=True):
        torch.testing.assert_close(pa, pb, rtol=rtol, atol=rtol)


@pytest.mark.parametrize("foreach", [False, True])
@pytest.mark.parametrize("weight_decay", [0.0, 0.05])
def test_paper_form_with_beta3_zero_is_adamw(foreach: bool, weight_decay: float) -> None:
    """The printed form adds ε where torch does, so it equals AdamW to float64 rounding."""
    hyper = {"lr": 3e-3, "betas": (0.9, 0.99), "eps": 1e-8, "weight_decay": weight_decay}
    ours, theirs = _train_pair(
        AdaMod,
        {**hyper, "beta3": 0.0, "form": "paper", "foreach": foreach},
        torch.optim.AdamW,
        hyper,
    )
    _assert_same(ours, theirs, rtol=1e-10)


@pytest.mark.parametrize("form", ["code", "paper"])
def test_beta3_zero_without_decay_is_adam(form: str) -> None:
    """With wd = 0 it is torch's Adam; ε sits elsewhere in the code form, so take ε = 0 there."""
    hyper = {"lr": 3e-3, "betas": (0.8, 0.999), "eps": 0.0}
    ours, theirs = _train_pair(
        AdaMod, {**hyper, "beta3": 0.0, "form": form}, torch.optim.Adam, hyper
    )
    _assert_same(ours, theirs, rtol=1e-10)


def test_code_form_differs_from_adam_only_by_order_eps() -> None:
    """Code form, β3 = 0, ordinary ε: Adam up to a difference of order ε."""
    hyper = {"lr": 1e-3, "betas": (0.9, 0.999), "eps": 1e-8, "weight_decay": 0.01}
    ours, theirs = _train_pair(AdaMod, {**hyper, "beta3": 0.0}, torch.optim.AdamW, hyper)
    _assert_same(ours, theirs, rtol=1e-4)


def test_bound_binds_when_beta3_is_positive() -> None:
    """The comparison above can fail: with β3 > 0 AdaMod moves far less early on than Adam."""
    hyper = {"lr": 1e-2, "betas": (0.9, 0.999), "eps": 1e-8}
    ours, theirs = _train_pair(AdaMod, {**hyper, "beta3": 0.999}, torch.optim.Adam, hyper, steps=20)
    with pytest.raises(AssertionError):
        _assert_same(ours, theirs, rtol=1e-3)


def test_diffmod_with_len_memory_one_and_no_friction_change_is_bounded_adam() -> None:
    """len_memory = 1 gives β3 = 0: DiffMod is Adam with momentum scaled by ξ ∈ [0.5, 1)."""
    torch.manual_seed(1)
    p = torch.zeros(50, dtype=torch.float64, requires_grad=True)
    opt = DiffMod([p], lr=1e-2, len_memory=1)
    p.grad = torch.ones_like(p)
    opt.step()
    # step 1: m = 0.1 g, η m = lr · sign(g) (Adam's first step), ξ = sigmoid(|g - 0|)
    expected = -1e-2 * torch.sigmoid(torch.tensor(1.0, dtype=torch.float64))
    torch.testing.assert_close(p.detach(), torch.full_like(p, expected.item()), rtol=1e-6, atol=0)

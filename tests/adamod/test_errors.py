"""Every bad input raises a clear error that names the argument; nothing is changed."""

from __future__ import annotations

import pytest
import torch

from adamod import AdaMod, DiffMod, adamod, diffmod
from tests.adamod.optim_infos import OPTIMIZERS, ErrorInput, OptimizerInfo

CASES = [(info, e) for info in OPTIMIZERS for e in info.error_inputs]


@pytest.mark.parametrize(
    ("info", "error_input"), CASES, ids=[f"{i.name}-{e.kwargs}" for i, e in CASES]
)
def test_constructor_rejects_bad_input(info: OptimizerInfo, error_input: ErrorInput) -> None:
    """The constructor raises the documented error and message."""
    p = torch.nn.Parameter(torch.ones(2))
    with pytest.raises(error_input.error, match=error_input.message):
        info.cls([p], **error_input.kwargs)


@pytest.mark.parametrize(
    ("info", "error_input"),
    [c for c in CASES if "foreach" not in c[1].kwargs],
    ids=[f"{i.name}-{e.kwargs}" for i, e in CASES if "foreach" not in e.kwargs],
)
def test_param_group_override_is_validated(info: OptimizerInfo, error_input: ErrorInput) -> None:
    """A group's own options are checked like the constructor's, also in add_param_group."""
    good = torch.nn.Parameter(torch.ones(2))
    bad = torch.nn.Parameter(torch.ones(2))
    with pytest.raises(error_input.error, match=error_input.message):
        info.cls([{"params": [good]}, {"params": [bad], **error_input.kwargs}])
    opt = info.cls([good])
    with pytest.raises(error_input.error, match=error_input.message):
        opt.add_param_group({"params": [bad], **error_input.kwargs})


@pytest.mark.parametrize("info", OPTIMIZERS, ids=lambda i: i.name)
def test_valid_inputs_construct(info: OptimizerInfo) -> None:
    """Every valid input of the table is accepted (the error table is not trivially true)."""
    for kwargs in info.valid_inputs:
        info.cls([torch.nn.Parameter(torch.ones(2))], **kwargs)


@pytest.mark.parametrize("info", OPTIMIZERS, ids=lambda i: i.name)
@pytest.mark.parametrize("foreach", [False, True])
def test_sparse_gradient_is_rejected_before_any_change(info: OptimizerInfo, foreach: bool) -> None:
    """Sparse gradients raise RuntimeError naming the optimizer; no parameter moves."""
    dense = torch.nn.Parameter(torch.ones(3))
    emb = torch.nn.Embedding(4, 2, sparse=True)
    opt = info.cls([dense, *emb.parameters()], foreach=foreach, lr=0.1)
    dense.grad = torch.ones(3)
    emb(torch.tensor([1])).sum().backward()
    before = emb.weight.detach().clone()
    with pytest.raises(RuntimeError, match=rf"^{info.name} does not support sparse gradients"):
        opt.step()
    assert torch.equal(dense.detach(), torch.ones(3))
    assert torch.equal(emb.weight.detach(), before)


@pytest.mark.parametrize("cls", [AdaMod, DiffMod])
def test_bound_stats_needs_track_bounds(cls: type) -> None:
    """Asking for telemetry that was never recorded is an error naming track_bounds."""
    opt = cls([torch.nn.Parameter(torch.ones(2))])
    with pytest.raises(ValueError, match=r"^bound_stats\(\) needs track_bounds=True"):
        opt.bound_stats()


def test_functional_forms_validate_their_switches() -> None:
    """The functional forms reject foreach+fused and bad DiffMod options by name."""
    p, g = torch.ones(2), torch.ones(2)
    z = [torch.zeros(2) for _ in range(4)]
    step = torch.tensor(0.0)
    common = {"beta1": 0.9, "beta2": 0.999, "lr": 1e-3, "eps": 1e-8, "weight_decay": 0.0}
    with pytest.raises(ValueError, match=r"^Invalid foreach and fused"):
        adamod(
            [p], [g], [z[0]], [z[1]], [z[2]], [step], foreach=True, fused=True, beta3=0.9, **common
        )
    with pytest.raises(ValueError, match=r"^Invalid form: 'x'"):
        adamod([p], [g], [z[0]], [z[1]], [z[2]], [step], beta3=0.9, form="x", **common)
    with pytest.raises(ValueError, match=r"^Invalid version: 5"):
        diffmod(
            [p], [g], [z[0]], [z[1]], [z[2]], [z[3]], [step], len_memory=10, version=5, **common
        )
    with pytest.raises(ValueError, match=r"^Invalid len_memory: 0\.1"):
        diffmod([p], [g], [z[0]], [z[1]], [z[2]], [z[3]], [step], len_memory=0.1, **common)
    assert torch.equal(p, torch.ones(2)) and step.item() == 0

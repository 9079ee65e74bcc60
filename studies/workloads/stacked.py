"""Losses of K stacked models written as batched matrix multiplies: a pack's fast path.

A trial pack (studies/pack.py) trains K copies of one model whose parameters are stacked on a
leading member dim. Its general path runs the workload's loss through `vmap(functional_call)`,
which works for any module but pays functorch's dispatch on every op: for the small MLPs of
sensitivity studies that overhead, not the arithmetic, was most of a step. A workload whose
model is a stack of linear layers can instead give the pack its loss over all members at once
(`Problem.pack_loss`), built from the pieces here: the same operations on [K, batch, ...]
tensors, one `baddbmm` per layer, no transform.

Evaluation has the same fast path (`Problem.pack_metrics`, `pack_test_metrics`): the stacked
forward on the split that every member shares, then each member's loss and accuracy.

Such a loss must give each member exactly what `loss_fn` gives that member alone, and such
metrics what `metrics` gives it; tests/studies/test_stacked.py checks losses, gradients and
metrics against a loop over the members' own modules in float64, and the pack equality tests
check whole trials against `run_trial`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn import functional as F

__all__ = [
    "PackLoss",
    "PackMetrics",
    "StackedForward",
    "stacked_classifier_loss",
    "stacked_classifier_metrics",
    "stacked_cross_entropy",
    "stacked_linear",
    "stacked_sequential",
]

# params ({name: [K, ...]} as in model.named_parameters()) and inputs [K, features, batch] (each
# member's batch feature-major, see stacked_linear) -> outputs [K, features, batch]
StackedForward = Callable[[dict[str, Tensor], Tensor], Tensor]
# params and a stacked batch (each tensor [K, batch, ...]) -> every member's loss, shape [K]
PackLoss = Callable[[dict[str, Tensor], Any], Tensor]
# params -> every member's metrics on one fixed split ({"loss": [K], "accuracy": [K]}, float64)
PackMetrics = Callable[[dict[str, Tensor]], dict[str, Tensor]]

# Parameter-free layers that act element by element: the same on [K, batch, features] as on
# [batch, features]. (Dropout is not here: its randomness must stay per member.)
_ELEMENTWISE = (nn.ReLU, nn.Tanh, nn.GELU, nn.SiLU, nn.Sigmoid, nn.LeakyReLU, nn.ELU, nn.Identity)


def stacked_linear(x_t: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
    """`F.linear` of every member on feature-major inputs: x_t [K, in, B], weight [K, out, in]
    (nn.Linear's layout, stacked), bias [K, out] or None -> [K, out, B].

    Feature-major because then `weight @ x_t` is the product, and autograd's gradient of its
    first factor (grad @ x_t^T) comes out [K, out, in] contiguous, the parameter's own layout,
    which the gradient accumulates into as it is. The batch-major `x @ weight^T` gives the
    gradient transposed, and copying it into the parameter's layout cost a tenth of a step.

    An input shared by all members (x_t a stride-0 expand of one [in, B], as evaluation gives
    it) is one matrix product instead, every member's weight rows stacked: one large GEMM
    runs faster than K small ones, and no copy of the input is made.
    """
    if x_t.dim() == 3 and x_t.stride(0) == 0 and x_t.shape[0] > 1:
        return _shared_input_linear(x_t[0], weight, bias)
    if bias is None:
        return weight.bmm(x_t)
    return bias.unsqueeze(2).baddbmm(weight, x_t)


def _shared_input_linear(x_t: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
    """stacked_linear of one input x_t [in, B] seen by every member -> [K, out, B]."""
    k, out, features = weight.shape
    rows = weight.reshape(k * out, features)
    if bias is None:
        return rows.mm(x_t).view(k, out, x_t.shape[1])
    return torch.addmm(bias.reshape(k * out, 1), rows, x_t).view(k, out, x_t.shape[1])


def stacked_sequential(model: nn.Module) -> StackedForward | None:
    """The stacked, feature-major forward of `model` (see StackedForward) when it is an
    nn.Sequential of nn.Linear layers and element-wise activations (ReLU, Tanh, GELU, ...);
    None for any other model, which then trains through vmap."""
    if not isinstance(model, nn.Sequential):
        return None
    plan: list[tuple[str, nn.Module]] = []
    for name, layer in model.named_children():
        if isinstance(layer, nn.Linear) or (
            isinstance(layer, _ELEMENTWISE) and not any(True for _ in layer.parameters())
        ):
            plan.append((name, layer))
        else:
            return None

    def forward(params: dict[str, Tensor], x: Tensor) -> Tensor:
        h = x
        for name, layer in plan:
            if isinstance(layer, nn.Linear):
                h = stacked_linear(h, params[f"{name}.weight"], params.get(f"{name}.bias"))
            else:
                h = layer(h)
        return h

    return forward


def stacked_cross_entropy(logits: Tensor, targets: Tensor) -> Tensor:
    """Each member's mean cross-entropy: logits [K, B, C], class targets [K, B] -> [K].

    Taken with the classes as dim 1 (F.cross_entropy's [N, C, d] form), which for the
    feature-major logits of a stacked forward (a transposed view here) is their own memory: no
    copy to [K·B, C], and torch's softmax over a middle dim runs vectorized across the batch,
    where over a last dim of 10 classes it ran row by row. A K = 64 digits step's loss forward
    and backward: 0.65 -> 0.17 ms (a seventh of the step)."""
    return F.cross_entropy(logits.transpose(1, 2), targets, reduction="none").mean(1)


def stacked_classifier_loss(forward: StackedForward) -> PackLoss:
    """The pack loss of a classifier trained on (inputs, class targets) batches with
    `F.cross_entropy(model(x), y)`: the feature-major `forward` on the stacked inputs
    (x [K, B, features], y [K, B]), then each member's mean."""

    def pack_loss(params: dict[str, Tensor], batch: tuple[Tensor, Tensor]) -> Tensor:
        x, y = batch
        logits_t = forward(params, x.transpose(1, 2))
        return stacked_cross_entropy(logits_t.transpose(1, 2), y)

    return pack_loss


def stacked_classifier_metrics(
    forward: StackedForward, x: Tensor, y: Tensor, chunk: int = 4096
) -> PackMetrics:
    """Every member's `classifier_metrics(x, y, chunk)` (studies/workloads/common.py) from the
    stacked parameters: mean cross-entropy and accuracy on the split (x [n, features], class
    targets y [n]) that all members share, each a [K] float64 tensor.

    The same chunks and the same arithmetic as classifier_metrics, member by member: float32
    logits, each chunk's cross-entropy summed in float32 by the loss's own kernel, then float64
    over chunks. Only the forward is stacked (no vmap), a few members at a time.
    """
    if len(y) == 0:
        raise ValueError("cannot evaluate on an empty split")
    n = len(y)
    chunks = list(zip(x.split(chunk), y.split(chunk), strict=True))

    def pack_metrics(params: dict[str, Tensor]) -> dict[str, Tensor]:
        losses, hits = [], []
        with torch.no_grad():
            for xb, yb in chunks:
                parts = [
                    _chunk_metrics(forward, group, xb, yb)
                    for group in _member_groups(params, len(yb))
                ]
                losses.append(torch.cat([loss for loss, _ in parts]))
                hits.append(torch.cat([hit for _, hit in parts]))
        return {
            "loss": torch.stack(losses).sum(0) / n,
            "accuracy": torch.stack(hits).sum(0).double() / n,
        }

    return pack_metrics


# Activation elements (members × width × rows) one evaluation pass aims at: about a megabyte
# of float32, so that a layer's output is still in cache when the next layer reads it. All 64
# members of a digits pack in one pass ran at half the speed of 8 or 16 at a time.
_PASS_ELEMENTS = 1 << 18


def _member_groups(params: dict[str, Tensor], rows: int) -> list[dict[str, Tensor]]:
    """`params` split along the member dim into passes of about _PASS_ELEMENTS activations on
    `rows` inputs each (the widest layer estimated from the weights' shapes); views, no copies.

    Members are independent, so how they are grouped changes no member's numbers. The cache
    argument is a CPU's: an accelerator gets all members in one pass (fewer, larger kernels)."""
    first = next(iter(params.values()))
    k = first.shape[0]
    if first.device.type != "cpu":
        return [params]
    widest = max((max(t.shape[1:]) for t in params.values() if t.dim() >= 2), default=1)
    size = max(1, _PASS_ELEMENTS // max(1, widest * rows))
    return [
        {name: t[start : start + size] for name, t in params.items()} for start in range(0, k, size)
    ]


def _chunk_metrics(
    forward: StackedForward, params: dict[str, Tensor], x: Tensor, y: Tensor
) -> tuple[Tensor, Tensor]:
    """Each member's cross-entropy sum (float64) and hit count on one chunk, both [K]."""
    logits = _shared_input_logits(forward, params, x)
    return _member_cross_entropy_sums(logits, y), (logits.argmax(-1) == y).sum(1)


def _shared_input_logits(forward: StackedForward, params: dict[str, Tensor], x: Tensor) -> Tensor:
    """Every member's float32 logits [K, B, C] (contiguous) on one input batch x [B, features]
    shared by all: given to the feature-major forward as a stride-0 expand, which
    stacked_linear turns into one matrix product (no K copies of the input)."""
    k = next(iter(params.values())).shape[0]
    x_t = x.t().unsqueeze(0).expand(k, -1, -1)
    return forward(params, x_t).transpose(1, 2).float().contiguous()


def _member_cross_entropy_sums(logits: Tensor, targets: Tensor) -> Tensor:
    """Each member's `F.cross_entropy(logits[k], targets, reduction="sum")` as float64 [K],
    equal to it bit for bit: logits [K, B, C] (contiguous), targets [B].

    cross_entropy is log_softmax over the classes then nll_loss. The log_softmax of the
    contiguous [K, B, C] rows is the one of each member's [B, C] rows (the same kernel, row by
    row), and each member's sum is left to nll_loss itself, one call per member, because its
    summation order (a cascade) is not torch.sum's: a float32 sum in another order differs
    in the last bits, which the metrics must not. One cheap call per member, not per row.
    """
    log_probs = logits.log_softmax(-1)
    sums = [F.nll_loss(member, targets, reduction="sum") for member in log_probs.unbind(0)]
    return torch.stack(sums).double()

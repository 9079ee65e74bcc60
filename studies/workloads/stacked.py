"""Losses of K stacked models written as batched matrix multiplies: a pack's fast path.

A trial pack (studies/pack.py) trains K copies of one model whose parameters are stacked on a
leading member dim. Its general path runs the workload's loss through `vmap(functional_call)`,
which works for any module but pays functorch's dispatch on every op: for the small MLPs of
sensitivity studies that overhead, not the arithmetic, was most of a step. A workload whose
model is a stack of linear layers can instead give the pack its loss over all members at once
(`Problem.pack_loss`), built from the pieces here: the same operations on [K, batch, ...]
tensors, one `baddbmm` per layer, no transform.

Such a loss must give each member exactly what `loss_fn` gives that member alone;
tests/studies/test_stacked.py checks losses and gradients against a loop over the members'
own modules in float64, and the pack equality tests check whole trials against `run_trial`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import Tensor, nn
from torch.nn import functional as F

__all__ = [
    "StackedForward",
    "stacked_classifier_loss",
    "stacked_cross_entropy",
    "stacked_linear",
    "stacked_sequential",
]

# params ({name: [K, ...]} as in model.named_parameters()) and inputs [K, features, batch] (each
# member's batch feature-major, see stacked_linear) -> outputs [K, features, batch]
StackedForward = Callable[[dict[str, Tensor], Tensor], Tensor]
# params and a stacked batch (each tensor [K, batch, ...]) -> every member's loss, shape [K]
PackLoss = Callable[[dict[str, Tensor], Any], Tensor]

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
    """
    if bias is None:
        return weight.bmm(x_t)
    return bias.unsqueeze(2).baddbmm(weight, x_t)


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
    """Each member's mean cross-entropy: logits [K, B, C], class targets [K, B] -> [K]."""
    k, b, c = logits.shape
    flat = F.cross_entropy(logits.reshape(k * b, c), targets.reshape(k * b), reduction="none")
    return flat.view(k, b).mean(1)


def stacked_classifier_loss(forward: StackedForward) -> PackLoss:
    """The pack loss of a classifier trained on (inputs, class targets) batches with
    `F.cross_entropy(model(x), y)`: the feature-major `forward` on the stacked inputs
    (x [K, B, features], y [K, B]), then each member's mean."""

    def pack_loss(params: dict[str, Tensor], batch: tuple[Tensor, Tensor]) -> Tensor:
        x, y = batch
        logits_t = forward(params, x.transpose(1, 2))
        return stacked_cross_entropy(logits_t.transpose(1, 2), y)

    return pack_loss

"""Pay a fresh process's one-time costs of training before its first trial.

A new Python process that trains for the first time pays for imports that torch makes lazily:
the first optimizer constructed imports `torch._dynamo` (about 1.5 s on one core: every
torch.optim optimizer's `add_param_group` is wrapped to disable Dynamo), and the first vmapped
loss of a pack pays functorch's one-time set-up (about 0.4 s). A worker's trainer child calls
`warm_up()` as soon as it starts, while its supervisor is still registering and polling, so
that a study's first trial or pack does not carry these seconds.
"""

from __future__ import annotations

import torch
from torch.func import vmap
from torch.nn import functional as F

__all__ = ["warm_up"]


def warm_up() -> None:
    """Construct an optimizer and take one vmapped cross-entropy gradient on tiny tensors.

    Nothing it builds is kept and no random stream is touched (zeros only), so a trial's result
    is the same with or without it."""
    weight = torch.zeros(2, 3, 4, requires_grad=True)
    inputs = torch.zeros(2, 5, 4)
    targets = torch.zeros(2, 5, dtype=torch.long)

    def member_loss(w: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(x @ w.T, y)

    vmap(member_loss)(weight, inputs, targets).sum().backward()
    torch.optim.SGD([weight], lr=0.1).step()

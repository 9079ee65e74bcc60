"""The authors' released optimizers, transcribed to the current torch API, for state_dict tests.

AdaMod: lancopku/AdaMod `adamod/adamod.py` (PyPI `adamod`); DiffMod: shivram1987/diffGrad
`diffmod.py`. Only the deprecated `add_(scalar, tensor)` calls were rewritten; the maths, state
keys and the integer `step` are theirs.
"""

from __future__ import annotations

import math

import torch
from torch.optim import Optimizer


class AuthorsAdaMod(Optimizer):
    """AdaMod as released by its authors."""

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), beta3=0.999, eps=1e-8, weight_decay=0):
        defaults = dict(lr=lr, betas=betas, beta3=beta3, eps=eps, weight_decay=weight_decay)
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure=None):
        """One step of the released code."""
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                grad = p.grad
                state = self.state[p]
                if len(state) == 0:
                    state["step"] = 0
                    state["exp_avg"] = torch.zeros_like(p)
                    state["exp_avg_sq"] = torch.zeros_like(p)
                    state["exp_avg_lr"] = torch.zeros_like(p)
                exp_avg, exp_avg_sq = state["exp_avg"], state["exp_avg_sq"]
                beta1, beta2 = group["betas"]
                state["step"] += 1
                exp_avg.mul_(beta1).add_(grad, alpha=1 - beta1)
                exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
                denom = exp_avg_sq.sqrt().add_(group["eps"])
                bias_correction1 = 1 - beta1 ** state["step"]
                bias_correction2 = 1 - beta2 ** state["step"]
                step_size = group["lr"] * math.sqrt(bias_correction2) / bias_correction1
                if group["weight_decay"] != 0:
                    p.add_(p, alpha=-group["weight_decay"] * group["lr"])
                step_size = torch.full_like(denom, step_size)
                step_size.div_(denom)
                exp_avg_lr = state["exp_avg_lr"]
                exp_avg_lr.mul_(group["beta3"]).add_(step_size, alpha=1 - group["beta3"])
                step_size = torch.min(step_size, exp_avg_lr)
                step_size.mul_(exp_avg)
                p.add_(-step_size)


class AuthorsDiffMod(Optimizer):
    """diffMod as released with DiffGrad (weight decay and version handling omitted: wd = 0)."""

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), len_memory=1000, eps=1e-8):
        beta3 = 1 - 1 / len_memory
        defaults = dict(lr=lr, betas=betas, beta3=beta3, eps=eps, weight_decay=0)
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure=None):
        """One step of the released code (version 0)."""
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                grad = p.grad
                state = self.state[p]
                if len(state) == 0:
                    state["step"] = 0
                    state["exp_avg"] = torch.zeros_like(p)
                    state["exp_avg_sq"] = torch.zeros_like(p)
                    state["previous_grad"] = torch.zeros_like(p)
                    state["exp_avg_lr"] = torch.zeros_like(p)
                exp_avg, exp_avg_sq = state["exp_avg"], state["exp_avg_sq"]
                previous_grad, exp_avg_lr = state["previous_grad"], state["exp_avg_lr"]
                beta1, beta2 = group["betas"]
                state["step"] += 1
                exp_avg.mul_(beta1).add_(grad, alpha=1 - beta1)
                exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
                denom = exp_avg_sq.sqrt().add_(group["eps"])
                bias_correction1 = 1 - beta1 ** state["step"]
                bias_correction2 = 1 - beta2 ** state["step"]
                diff = abs(previous_grad - grad)
                dfc = 1.0 / (1.0 + torch.exp(-diff))
                # the original stores a reference to grad here; a copy keeps the test honest
                state["previous_grad"] = grad.clone()
                exp_avg1 = exp_avg * dfc
                step_size = group["lr"] * math.sqrt(bias_correction2) / bias_correction1
                step_size = torch.full_like(denom, step_size)
                step_size.div_(denom)
                exp_avg_lr.mul_(group["beta3"]).add_(step_size, alpha=1 - group["beta3"])
                step_size = torch.min(step_size, exp_avg_lr)
                step_size.mul_(exp_avg1)
                p.add_(-step_size)

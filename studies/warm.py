"""Pay a fresh process's one-time costs of training before its first trial.

A new Python process that trains for the first time pays for imports that torch makes lazily:
the first optimizer constructed imports `torch._dynamo` (about 1.5 s on one core: every
torch.optim optimizer's `add_param_group` is wrapped to disable Dynamo), and the first vmapped
loss of a pack pays functorch's one-time set-up (about 0.4 s), and the first member-mode step
imports adamod and loads its C kernel, and the first workload looked up imports the registry's
built-ins and plugins (about 60 ms). A worker's trainer child calls `warm_up()` as soon as it
starts, while its supervisor is still registering and polling, so that a study's first trial or
pack does not carry these seconds.

It also keeps freed memory in the process (`keep_freed_memory`): glibc hands every block over
128 KiB straight back to the kernel until it has seen a few freed, so a fresh process's first
pack had each step's temporaries (a K = 64 digits pack: megabytes) mapped and page-faulted in
afresh, 67,000 minor faults and a tenth of a second more than the same pack run second.
"""

from __future__ import annotations

import ctypes
import sys

import torch
from torch.func import vmap
from torch.nn import functional as F

__all__ = ["keep_freed_memory", "warm_up"]

# glibc's mallopt parameters (malloc.h) and the values a trainer process uses: blocks up to
# 64 MiB come from the heap, and up to 256 MiB of freed heap stays mapped for the next step.
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
MMAP_THRESHOLD_BYTES = 64 << 20
TRIM_THRESHOLD_BYTES = 256 << 20


def warm_up() -> None:
    """Load the workload registry, construct an optimizer and take one vmapped cross-entropy
    gradient on tiny tensors.

    Nothing it builds is kept and no random stream is touched (zeros only), so a trial's result
    is the same with or without it."""
    from studies.workloads.registry import list_workloads

    list_workloads()
    weight = torch.zeros(2, 3, 4, requires_grad=True)
    inputs = torch.zeros(2, 5, 4)
    targets = torch.zeros(2, 5, dtype=torch.long)

    def member_loss(w: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(x @ w.T, y)

    vmap(member_loss)(weight, inputs, targets).sum().backward()
    torch.optim.SGD([weight], lr=0.1).step()
    _member_step(weight)
    keep_freed_memory()


def _member_step(weight: torch.Tensor) -> None:
    """One member-mode AdaMod step on `weight` (2 members): adamod's imports and its C kernel,
    which a pack's first step would load. Zero gradients and a throwaway tensor: no effect."""
    from adamod import AdaMod

    member = weight.detach().clone().requires_grad_(True)
    member.grad = torch.zeros_like(member)
    AdaMod([member], lr=torch.tensor([0.1, 0.2], dtype=torch.float64), beta3=0.999).step()


def keep_freed_memory() -> bool:
    """Make glibc keep freed memory for reuse (mallopt: mmap threshold 64 MiB, trim threshold
    256 MiB) instead of unmapping large blocks at once; True when set. A no-op (False) off
    glibc. Process-wide: meant for a process that only trains, the trainer child."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None)
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc (musl has no mallopt)
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return bool(
        mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES)
        and mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES)
    )

"""Which device a worker trains on: `cpu`, `cuda:N`, or `auto`."""

from __future__ import annotations

import os
import re

__all__ = ["select_device"]

_CUDA = re.compile(r"cuda(?::(\d+))?")


def select_device(requested: str = "auto") -> str:
    """Resolves --device to a concrete torch device string, or raises ValueError naming --device.

    `auto` is `cuda:0` when CUDA is usable, else `cpu`. CUDA_VISIBLE_DEVICES (set per container by
    the NVIDIA runtime, or by hand) decides which physical GPU that is: torch numbers the visible
    devices from 0.
    """
    requested = (requested or "auto").strip().lower()
    if requested == "cpu":
        return "cpu"
    if requested == "auto":
        if os.environ.get("CUDA_VISIBLE_DEVICES", None) in ("", "-1"):
            return "cpu"
        import torch

        return "cuda:0" if torch.cuda.is_available() else "cpu"
    match = _CUDA.fullmatch(requested)
    if match is None:
        raise ValueError(f"--device: expected auto, cpu or cuda:N (got {requested!r})")
    import torch

    if not torch.cuda.is_available():
        raise ValueError(f"--device: {requested!r} requested but CUDA is not available here")
    index = int(match.group(1) or 0)
    count = torch.cuda.device_count()
    if index >= count:
        raise ValueError(f"--device: {requested!r} but only {count} CUDA device(s) are visible")
    return f"cuda:{index}"

"""Which device a worker trains on: `cpu`, `cuda:N`, or `auto`.

With several GPUs visible (`docker compose up --scale worker=N` gives every replica all of them),
`auto` spreads workers over the GPUs: each worker holds an exclusive file lock on a "slot" of one
GPU for as long as it lives, and takes the first free slot of the least-used GPU. Locks are
released by the kernel when a process dies, so a killed worker's slot is free again at once. The
lock folder must be shared by the workers of one host (compose mounts one volume into every
worker; plain processes share the temporary folder).
"""

from __future__ import annotations

import fcntl
import os
import re
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import IO

__all__ = ["GPU_LOCK_DIR_ENV", "claim_gpu_slot", "gpu_lock_dir", "select_device"]

GPU_LOCK_DIR_ENV = "ADAMOD_LAB_GPU_LOCK_DIR"
MAX_WORKERS_PER_GPU = 64
_CUDA = re.compile(r"cuda(?::(\d+))?")
# Open lock files of this process; closing one (or exiting) releases its slot.
_held_slots: list[IO[str]] = []


def gpu_lock_dir() -> Path:
    """Where GPU slot locks live: $ADAMOD_LAB_GPU_LOCK_DIR, else the system temporary folder."""
    configured = os.environ.get(GPU_LOCK_DIR_ENV)
    return Path(configured) if configured else Path(tempfile.gettempdir()) / "adamod-lab-gpu-locks"


def _try_lock(path: Path) -> IO[str] | None:
    """The open, exclusively locked file at `path`, or None when another process holds it."""
    handle = open(path, "a")  # noqa: SIM115 - kept open while the lock is held
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        return None
    return handle


def _slot_path(lock_dir: Path, key: str, slot: int) -> Path:
    return lock_dir / f"{re.sub(r'[^A-Za-z0-9_.-]', '_', key)}.slot{slot}.lock"


def _usage(lock_dir: Path, key: str) -> tuple[int, int | None]:
    """(slots of this GPU held by live processes, its first free slot) by probing each lock."""
    held, first_free = 0, None
    for slot in range(MAX_WORKERS_PER_GPU):
        probe = _try_lock(_slot_path(lock_dir, key, slot))
        if probe is None:
            held += 1
            continue
        probe.close()  # closing releases the probe's lock
        if first_free is None:
            first_free = slot
    return held, first_free


def claim_gpu_slot(gpu_keys: Sequence[str], lock_dir: Path) -> int:
    """Position in `gpu_keys` of the GPU this process takes: the one with the fewest live holders.

    `gpu_keys` name the physical GPUs (their UUIDs where known), so that processes that number
    their visible GPUs differently still count the same card once. The slot stays held until the
    process exits. When every slot is taken, the first GPU is shared.
    """
    if not gpu_keys:
        raise ValueError("gpu_keys: at least one GPU is needed")
    lock_dir.mkdir(parents=True, exist_ok=True)
    for _ in range(len(gpu_keys) * MAX_WORKERS_PER_GPU):  # a lost race costs one more round
        usage = [_usage(lock_dir, key) for key in gpu_keys]
        free = [i for i, (_, slot) in enumerate(usage) if slot is not None]
        if not free:
            break
        position = min(free, key=lambda i: usage[i][0])
        handle = _try_lock(_slot_path(lock_dir, gpu_keys[position], usage[position][1] or 0))
        if handle is not None:
            _held_slots.append(handle)
            return position
    return 0


def _visible_gpu_keys() -> list[str]:
    """One identifier per visible CUDA device, in torch's order (UUID when torch exposes it)."""
    import torch

    keys = []
    for index in range(torch.cuda.device_count()):
        uuid = getattr(torch.cuda.get_device_properties(index), "uuid", None)
        keys.append(f"gpu-{uuid}" if uuid is not None else f"gpu-index-{index}")
    return keys


def select_device(requested: str = "auto") -> str:
    """Resolves --device to a concrete torch device string, or raises ValueError naming --device.

    `auto` is `cpu` without a usable GPU, `cuda:0` with one, and with several the least-used
    visible GPU (see the module docstring). CUDA_VISIBLE_DEVICES decides which GPUs are visible:
    torch numbers them from 0.
    """
    requested = (requested or "auto").strip().lower()
    if requested == "cpu":
        return "cpu"
    if requested == "auto":
        if os.environ.get("CUDA_VISIBLE_DEVICES", None) in ("", "-1"):
            return "cpu"
        import torch

        if not torch.cuda.is_available():
            return "cpu"
        if torch.cuda.device_count() == 1:
            return "cuda:0"
        return f"cuda:{claim_gpu_slot(_visible_gpu_keys(), gpu_lock_dir())}"
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

"""Result reuse: when an earlier trial's result stands for a new one, so it is not trained again.

Two trials give the same result when everything that decides the training is equal: the trial's
config (workload, workload_config, budget, optimizer and its settings, lr, beta3, warmup,
schedule, seed: TrialConfig.canonical_json, less the budget's time limit, which decides only
whether a trial finishes, not what it finds), the workload's declared version (bumped when its
data, model or metrics change), the torch version, and the device type (a CPU and a GPU round
differently). The reuse key hashes exactly those. It is computed by the worker, which alone
knows its torch and device, both when it stores a result and when it claims a trial.
"""

from __future__ import annotations

import hashlib
import json

import torch

from studies.spec import TrialConfig
from studies.workloads import get_workload

__all__ = ["device_type", "reuse_key"]


def device_type(device: str | torch.device) -> str:
    """ "cpu", "cuda", "mps"...: the part of a device that changes results ("cuda:1" -> "cuda")."""
    return torch.device(device).type


def reuse_key(
    config: TrialConfig, *, device: str | torch.device, torch_version: str | None = None
) -> str:
    """sha256 hex of what decides a trial's result; equal keys: one result stands for both."""
    decided_by = json.loads(config.canonical_json())
    decided_by["budget"].pop("max_seconds", None)
    text = json.dumps(
        {
            "config": decided_by,
            "workload_version": get_workload(config.workload).version,
            "torch": torch.__version__ if torch_version is None else torch_version,
            "device_type": device_type(device),
        },
        sort_keys=True,
        separators=(",", ":"),
    )
    return hashlib.sha256(text.encode()).hexdigest()

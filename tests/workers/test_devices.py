"""--device resolution."""

from __future__ import annotations

import pytest
import torch

from workers.devices import select_device


def test_cpu_and_auto() -> None:
    assert select_device("cpu") == "cpu"
    expected = "cuda:0" if torch.cuda.is_available() else "cpu"
    assert select_device("auto") == expected


def test_auto_honours_hidden_gpus(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert select_device("auto") == "cpu"


@pytest.mark.parametrize("bad", ["tpu", "cuda:x", "cuda:-1", "gpu0"])
def test_bad_device_names_the_flag(bad: str) -> None:
    with pytest.raises(ValueError, match="--device"):
        select_device(bad)


def test_cuda_without_cuda_is_an_error() -> None:
    if torch.cuda.is_available():
        count = torch.cuda.device_count()
        assert select_device("cuda") == "cuda:0"
        with pytest.raises(ValueError, match="--device"):
            select_device(f"cuda:{count}")
    else:
        with pytest.raises(ValueError, match=r"--device.*not available"):
            select_device("cuda:0")


CLAIM_AND_HOLD = """
import sys, time
from pathlib import Path
from workers.devices import claim_gpu_slot
print(claim_gpu_slot(["gpu-A", "gpu-B", "gpu-C"], Path(sys.argv[1])), flush=True)
time.sleep(60)
"""


def _start_claimer(lock_dir):  # type: ignore[no-untyped-def]
    import subprocess
    import sys

    proc = subprocess.Popen(
        [sys.executable, "-c", CLAIM_AND_HOLD, str(lock_dir)],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    return proc, int(proc.stdout.readline())


def test_workers_spread_over_gpus_and_a_dead_workers_slot_is_reused(tmp_path) -> None:  # type: ignore[no-untyped-def]
    procs = []
    try:
        chosen = []
        for _ in range(6):  # real processes, started one after another, as compose replicas
            proc, gpu = _start_claimer(tmp_path)
            procs.append(proc)
            chosen.append(gpu)
        assert sorted(chosen) == [0, 0, 1, 1, 2, 2]
        for victim in (chosen.index(1), len(chosen) - 1 - chosen[::-1].index(2)):
            procs[victim].kill()  # one worker of GPU 1 (slot 0) and one of GPU 2 (slot 1) die
            procs[victim].wait()
        proc, gpu = _start_claimer(tmp_path)
        procs.append(proc)
        assert gpu == 1  # GPUs 1 and 2 have one live worker each; 1 comes first
        proc, gpu = _start_claimer(tmp_path)
        procs.append(proc)
        assert gpu == 2
    finally:
        for proc in procs:
            proc.kill()
            proc.wait()


def test_claim_needs_a_gpu(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from workers.devices import claim_gpu_slot

    with pytest.raises(ValueError, match="gpu_keys"):
        claim_gpu_slot([], tmp_path)

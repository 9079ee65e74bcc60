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

"""Fixtures for tests/studies: one torch thread, so small models do not fight over 2 busy cores."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread() -> Iterator[None]:
    # Tiny models gain nothing from intra-op threads, and on an oversubscribed machine the OpenMP
    # spin-waits make them 10x slower; the previous setting is restored afterwards.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)

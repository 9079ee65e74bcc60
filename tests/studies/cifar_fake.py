"""A tiny fake CIFAR-10 directory in the real python-pickle format, for the workload tests."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np


def write_fake_cifar10(root: Path, per_batch: int = 20, test: int = 40, seed: int = 0) -> Path:
    """Write cifar-10-batches-py/ under root with learnable images (class = a colour pattern)."""
    rng = np.random.default_rng(seed)
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)

    def batch(n: int, label: bytes) -> dict[bytes, object]:
        labels = rng.integers(0, 10, n)
        # Each class has its own mean colour per channel, plus noise: separable but not trivial.
        base = np.stack([(labels * 25) % 256, (labels * 70) % 256, (labels * 130) % 256], 1)
        images = base[:, :, None] + rng.normal(0, 40, (n, 3, 1024))
        data = np.clip(images, 0, 255).astype(np.uint8).reshape(n, 3072)
        return {
            b"batch_label": label,
            b"labels": [int(v) for v in labels],
            b"data": data,
            b"filenames": [f"img_{i}.png".encode() for i in range(n)],
        }

    for i in range(1, 6):
        with (folder / f"data_batch_{i}").open("wb") as handle:
            pickle.dump(batch(per_batch, f"training batch {i} of 5".encode()), handle, protocol=2)
    with (folder / "test_batch").open("wb") as handle:
        pickle.dump(batch(test, b"testing batch 1 of 1"), handle, protocol=2)
    meta = {
        b"num_cases_per_batch": per_batch,
        b"label_names": [
            name.encode()
            for name in (
                *("airplane", "automobile", "bird", "cat", "deer"),
                *("dog", "frog", "horse", "ship", "truck"),
            )
        ],
        b"num_vis": 3072,
    }
    with (folder / "batches.meta").open("wb") as handle:
        pickle.dump(meta, handle, protocol=2)
    return folder

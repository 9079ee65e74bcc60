"""digits_mlp reads scikit-learn's bundled digits without importing scikit-learn (its import is
~2 s of a worker's first trial), and the arrays are exactly what `load_digits` gives."""

from __future__ import annotations

import subprocess
import sys

import numpy as np

from studies.workloads.digits_mlp import N_IMAGES, load_digits_data


def test_same_arrays_as_sklearn_load_digits() -> None:
    from sklearn.datasets import load_digits

    x, y, sha = load_digits_data()
    reference = load_digits()
    assert x.shape == (N_IMAGES, 64) and x.dtype == np.float32
    assert np.array_equal(x, (reference.data / 16.0).astype(np.float32))
    assert np.array_equal(y, reference.target.astype(np.int64))
    assert not x.flags.writeable and not y.flags.writeable
    assert len(sha) == 16 and int(sha, 16) >= 0  # a short hex digest


def test_loading_does_not_import_sklearn() -> None:
    code = (
        "import sys\n"
        "from studies.workloads.digits_mlp import load_digits_data\n"
        "load_digits_data()\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'sklearn'))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    )
    assert out.stdout.strip() == "[]", out.stdout

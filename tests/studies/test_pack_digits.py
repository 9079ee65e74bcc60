"""A real study packed and unpacked gives the same science.

The quick preset's setting (digits MLP, float32, its full 10-epoch budget, 7 learning rates,
Adam and AdaMod) with 3 seeds, run by the local runner one trial at a time and in packs: each
configuration must pick the same best lr, and its lr_sensitivity_norm must agree within 0.02
(float32 members of a pack take batched kernels, so losses differ in the last bits, not more).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from studies.local import run_study
from studies.spec import StudySpec, load_spec

PRESETS = Path(__file__).resolve().parents[2] / "studies" / "presets"


@pytest.fixture(scope="module")
def spec() -> StudySpec:
    quick = load_spec(PRESETS / "quick.yaml")
    data = quick.model_dump(mode="json")
    data.update(name="quick-3-seeds", seeds=3, beta3=[0.99])
    return StudySpec.model_validate(data)


def _configs(out: Path) -> dict[str, dict[str, float]]:
    report = json.loads((out / "report.json").read_text())
    return {
        c["label"]: {"best_lr": c["best_lr"], "norm": c["lr_sensitivity_norm"]}
        for c in report["configs"]
    }


def test_packed_and_unpacked_digits_study_agree(spec: StudySpec, tmp_path: Path) -> None:
    assert spec.budget is not None and spec.budget.epochs == 10  # the preset's full budget
    alone = run_study(spec, tmp_path / "alone", progress=False, pack_size=1)
    packed = run_study(spec, tmp_path / "packed", progress=False, pack_size=None)
    assert alone.counts == packed.counts
    rows = [
        json.loads(line) for line in (tmp_path / "packed" / "trials.jsonl").read_text().splitlines()
    ]
    assert {row["result"]["pack_size"] for row in rows if row["result"]} == {21}
    a, p = _configs(tmp_path / "alone"), _configs(tmp_path / "packed")
    assert a.keys() == p.keys() and len(a) == 2
    for label in a:
        assert p[label]["best_lr"] == a[label]["best_lr"], label
        assert a[label]["norm"] is not None and p[label]["norm"] is not None
        assert abs(p[label]["norm"] - a[label]["norm"]) <= 0.02, label

"""A real study packed and unpacked gives the same science.

The quick preset's setting (digits MLP, float32, its full 10-epoch budget, 7 learning rates,
Adam and AdaMod) with 3 seeds, run by the local runner one trial at a time and in packs. float32
members of a pack take batched kernels, so a trial's arithmetic differs from its unfused run in
the last bits (in float64 they agree to 1e-9: tests/studies/test_pack.py). Below the best lr
that stays a last-bit difference; at the edge of stability (lr >= 0.046 here) training is chaotic
and any two float32 kernels part ways: final losses differ by up to 40% there between packed and
unpacked, and equally between two unpacked runs on 1 and on 2 threads (AdaMod's
lr_sensitivity_norm 0.4143 against 0.4048 on an AVX-512 machine, 2026-12-04). So each
configuration must pick the same best lr, every trial at or below it must end within 5% of its
unfused loss, and lr_sensitivity_norm, which averages the chaotic cells in, within 0.05 (the
issue's 0.02 holds on some CPUs, not on all: 0.0225 on that machine).
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
        assert abs(p[label]["norm"] - a[label]["norm"]) <= 0.05, label
    best = {(opt, lr) for opt, lr in _best_lrs(tmp_path / "alone")}
    alone_losses, packed_losses = _losses(tmp_path / "alone"), _losses(tmp_path / "packed")
    assert alone_losses.keys() == packed_losses.keys()
    stable = [key for key in alone_losses if any(key[0] == o and key[1] <= lr for o, lr in best)]
    assert len(stable) == 2 * 4 * 3  # lr 1e-4 ... 1e-2: four grid points, 3 seeds, 2 configs
    for key in stable:
        assert packed_losses[key] == pytest.approx(alone_losses[key], rel=0.05), key


def _best_lrs(out: Path) -> list[tuple[str, float]]:
    report = json.loads((out / "report.json").read_text())
    return [(c["optimizer"], c["best_lr"]) for c in report["configs"]]


def _losses(out: Path) -> dict[tuple[str, float, int], float]:
    """Each trial's final validation loss by (optimizer, lr, seed)."""
    rows = [json.loads(line) for line in (out / "trials.jsonl").read_text().splitlines()]
    return {
        (r["params"]["optimizer"], r["params"]["lr"], r["params"]["seed"]): r["result"]["loss"]
        for r in rows
    }

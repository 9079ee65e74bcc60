"""`python -m studies`: a real (small) study end to end, resume, and clear errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from studies.__main__ import main
from studies.local import run_study
from studies.spec import StudySpec, load_spec

PRESETS = Path(__file__).resolve().parents[2] / "studies" / "presets"

SMALL = """
name: tiny-quadratic
workload: quadratic
workload_config: {dim: 8, steps_per_epoch: 20, eval_every: 20}
optimizers: [adam, adamod]
lr: {min: 1.0e-3, max: 1.0e+30, points: 4}
beta3: [0.9, 0.999]
seeds: 2
budget: {steps: 40}
"""


def test_run_study_writes_report_and_resumes(tmp_path: Path) -> None:
    spec = StudySpec.model_validate(
        {
            "name": "q",
            "workload": "quadratic",
            "workload_config": {"dim": 8},
            "lr": {"values": [1e-2, 1e30]},
            "seeds": 2,
            "budget": {"steps": 30},
        }
    )
    seen: list[str] = []
    run = run_study(spec, tmp_path, progress=False, on_trial=lambda c, s: seen.append(s))
    assert len(seen) == spec.n_trials == 8
    assert run.counts["diverged"] == 4 and run.counts["completed"] == 4  # lr=1e30 diverges
    for name in ("spec.json", "trials.jsonl", "report.json", "report.html", "lr_curves.png"):
        assert (tmp_path / name).is_file(), name
    assert (tmp_path / "beta3_surface.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["complete"] is True
    rows = [json.loads(line) for line in (tmp_path / "trials.jsonl").read_text().splitlines()]
    assert len({r["key"] for r in rows}) == 8
    again = run_study(spec, tmp_path, progress=False)
    assert again.reused == 8 and again.counts == run.counts
    assert len((tmp_path / "trials.jsonl").read_text().splitlines()) == 8


def test_failure_of_a_later_trial_is_recorded_not_raised(tmp_path: Path) -> None:
    def noop_spec(fail_seeds: list[int]) -> StudySpec:
        return StudySpec.model_validate(
            {
                "name": "f",
                "workload": "noop",
                "workload_config": {"fail_at_step": 3, "fail_seeds": fail_seeds},
                "optimizers": ["adam"],
                "lr": {"values": [0.1]},
                "seeds": 2,
            }
        )

    run = run_study(noop_spec([1]), tmp_path / "later", progress=False)
    assert run.counts["completed"] == 1 and run.counts["failed"] == 1
    rows = [json.loads(x) for x in (tmp_path / "later" / "trials.jsonl").read_text().splitlines()]
    assert "failing on purpose" in rows[1]["error"] and rows[1]["result"] is None
    assert (tmp_path / "later" / "report.html").is_file()
    with pytest.raises(RuntimeError, match="failing on purpose"):
        run_study(noop_spec([0]), tmp_path / "first", progress=False)  # would fail them all


def test_cli_runs_a_spec_end_to_end(tmp_path: Path) -> None:
    spec_path = tmp_path / "small.yaml"
    spec_path.write_text(SMALL)
    out = tmp_path / "out"
    proc = subprocess.run(
        [sys.executable, "-m", "studies", "run", str(spec_path), "--out", str(out),
         "--threads", "1"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert f"report: {out / 'report.html'}" in proc.stdout
    assert "24 trials" in proc.stdout and "diverged" in proc.stdout
    html = (out / "report.html").read_text()
    assert "<html" in html.lower() and "data:image/png;base64" in html
    report = json.loads((out / "report.json").read_text())
    assert json.dumps(report)  # plain JSON


def test_cli_reports_bad_specs_with_the_field(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nworkload: quadratic\nlr: {min: 1.0, max: 0.1, points: 3}\nseeds: 0\n")
    assert main(["run", str(bad), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "lr.max:" in err and "seeds:" in err
    assert not (tmp_path / "o").exists()
    assert main(["run", str(tmp_path / "nope.yaml"), "--out", str(tmp_path / "o")]) == 2
    assert "not found" in capsys.readouterr().err
    good = tmp_path / "good.yaml"
    good.write_text(SMALL)
    assert main(["run", str(good), "--out", str(tmp_path / "o"), "--device", "tpu:9"]) == 2
    assert "device" in capsys.readouterr().err
    assert main(["validate", str(good), "--max-trials", "3"]) == 2
    assert "maximum of 3" in capsys.readouterr().err


def test_cli_suggests_the_field_meant(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    typo = tmp_path / "typo.yaml"
    typo.write_text(
        "name: x\nworkload: noop\nseed: 2\nlr: {value: [0.1]}\nbudget: {step: 2}\n"
        "workload_config: {step_per_epoch: 2}\n"
    )
    assert main(["validate", str(typo)]) == 2
    err = capsys.readouterr().err
    meant = "unknown field 'seed'; did you mean 'seeds'?"
    assert f"  seed: Extra inputs are not permitted: {meant}" in err
    assert "lr.value: " in err and "did you mean 'values'?" in err
    assert "budget.step: " in err and "did you mean 'steps'?" in err
    assert "did you mean 'steps_per_epoch'?" in err


def test_cli_lists_workloads(capsys) -> None:  # type: ignore[no-untyped-def]
    assert main(["workloads"]) == 0
    out = capsys.readouterr().out
    for name in ("quadratic", "digits_mlp", "tiny_transformer", "cifar10_resnet", "noop"):
        assert name in out


@pytest.mark.parametrize("preset", sorted(p.name for p in PRESETS.glob("*.yaml")))
def test_presets_are_valid(preset: str) -> None:
    spec = load_spec(PRESETS / preset)
    assert spec.n_trials >= 2


def test_quick_preset_is_the_promised_grid() -> None:
    spec = load_spec(PRESETS / "quick.yaml")
    assert (spec.workload, spec.optimizers, spec.seeds) == ("digits_mlp", ["adam", "adamod"], 6)
    assert all(load_spec(p).seeds >= 6 for p in PRESETS.glob("*.yaml"))  # paired p <= 0.05
    assert len(spec.lr.values()) == 7 and len(spec.beta3) == 2
    transformer = load_spec(PRESETS / "transformer_warmup.yaml")
    assert 0 in transformer.warmup_steps and max(transformer.warmup_steps) >= 100

"""Run a whole study in this process (no database, no server) and write its report to a folder.

The folder receives `spec.json` (normalized), `trials.jsonl` (one finished trial per line, keyed
by the trial's canonical hash, so an interrupted run resumes where it stopped), `report.json`,
one PNG per figure and a self-contained `report.html`.
"""

from __future__ import annotations

import json
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from studies.pack import MAX_PACK_SIZE, auto_pack_size, packable, run_pack
from studies.records import TrialRecord
from studies.spec import StudySpec, TrialConfig, expand_grid
from studies.trial import TrialResult, run_trial

__all__ = ["LocalRun", "run_study", "write_report"]

TRIALS_FILE = "trials.jsonl"


@dataclass
class LocalRun:
    """What run_study produced: the folder, its files and a count of trial outcomes."""

    out_dir: Path
    files: dict[str, Path]
    counts: dict[str, int] = field(default_factory=dict)
    reused: int = 0

    @property
    def html(self) -> Path | None:
        """The report page, when it could be written."""
        return self.files.get("report.html")


def _read_finished(path: Path) -> dict[str, dict[str, Any]]:
    """Trials already finished in an earlier run of the same folder, by key."""
    finished: dict[str, dict[str, Any]] = {}
    if not path.is_file():
        return finished
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            row = json.loads(line)
            finished[row["key"]] = row
        except (ValueError, KeyError, TypeError):
            continue  # a line cut short by an interruption: that trial runs again
    return finished


def _record(config: TrialConfig, row: dict[str, Any]) -> TrialRecord:
    """The analysis' record of one line of trials.jsonl (its result carries test loss, curve and
    bound telemetry, as the worker's stored row does)."""
    result = row["result"] or {}
    return TrialRecord.from_params(
        config.params(),
        state=row["state"],
        loss=result.get("loss"),
        loss0=result.get("loss0"),
        result=result,
        curve=result.get("curve"),
        bound_stats=result.get("bound_stats"),
        error=row.get("error"),
    )


def write_report(
    records: list[TrialRecord],
    out_dir: Path,
    title: str,
    *,
    spec: dict[str, Any] | None = None,
    status: str | None = None,
) -> dict[str, Path]:
    """Write report.json, the PNG figures and report.html for these records; returns the paths.

    `records` are every trial of the study (failed ones too: the report lists them); `status`
    is derived from their states when None.
    """
    from studies.html import render_html
    from studies.plots import PLOT_NAMES, render_plot
    from studies.report import build_report

    report = build_report(records, spec=spec, status=status)
    files: dict[str, Path] = {}
    path = out_dir / "report.json"
    path.write_text(json.dumps(report.model_dump(mode="json"), indent=2), encoding="utf-8")
    files["report.json"] = path
    for name in PLOT_NAMES:
        path = out_dir / f"{name}.png"
        path.write_bytes(render_plot(report, name))
        files[path.name] = path
    path = out_dir / "report.html"
    path.write_text(render_html(report, title), encoding="utf-8")
    files["report.html"] = path
    return files


def _groups(
    configs: list[TrialConfig],
    finished: dict[str, dict[str, Any]],
    pack_size: int | None,
    device: str,
) -> Iterator[list[TrialConfig]]:
    """The configs in grid order, in groups to train together: finished ones alone (nothing
    to train), the others in packs of neighbours that share a pack key."""
    group: list[TrialConfig] = []
    limit = 1
    for config in configs:
        if config.key() in finished:
            if group:
                yield group
                group = []
            yield [config]
            continue
        if group and (len(group) >= limit or config.pack_key() != group[0].pack_key()):
            yield group
            group = []
        if not group:
            limit = pack_size if pack_size is not None else auto_pack_size(config, device)
            limit = limit if packable(config) else 1
        group.append(config)
    if group:
        yield group


def _train_group(group: list[TrialConfig], device: str) -> list[TrialResult]:
    """Train a group: one trial alone, several as a pack."""
    if len(group) == 1:
        return [run_trial(group[0], device)]
    return run_pack(group, device)


def run_study(
    spec: StudySpec,
    out_dir: str | Path,
    *,
    device: str = "cpu",
    progress: bool = True,
    resume: bool = True,
    on_trial: Callable[[TrialConfig, str], None] | None = None,
    pack_size: int | None = None,
) -> LocalRun:
    """Run every trial of `spec` here and write the report to `out_dir`.

    Trials train in packs of up to `pack_size` (None: studies.pack.auto_pack_size; 1: one at a
    time) where their workload allows it, in grid order, so that a pack's members are grid
    neighbours. A trial that raises is recorded as "failed" (a pack that raises: all its
    members) and the study goes on, except for the very first trial run, whose error (missing
    data, bad device) is raised: it would fail them all.
    """
    if pack_size is not None and not 1 <= pack_size <= MAX_PACK_SIZE:
        raise ValueError(f"pack_size: must be in 1..{MAX_PACK_SIZE} or None (got {pack_size})")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "spec.json").write_text(spec.model_dump_json(indent=2), encoding="utf-8")
    trials_path = out / TRIALS_FILE
    finished = _read_finished(trials_path) if resume else {}
    configs = expand_grid(spec)
    rows: list[tuple[TrialConfig, dict[str, Any]]] = []
    counts = {"completed": 0, "diverged": 0, "cancelled": 0, "failed": 0}
    reused = 0
    ran_one = False

    from tqdm import tqdm

    bar = tqdm(total=len(configs), desc=spec.name, unit="trial", disable=not progress)
    with trials_path.open("a" if resume else "w", encoding="utf-8") as sink:
        for group in _groups(configs, finished, pack_size, device):
            outcomes: list[tuple[TrialResult | None, str | None]] = [(None, None)]
            try:
                if group[0].key() not in finished:  # a finished trial comes alone
                    outcomes = [(result, None) for result in _train_group(group, device)]
            except Exception as exc:
                if not ran_one:
                    raise
                error = "".join(traceback.format_exception_only(exc)).strip()
                outcomes = [(None, error)] * len(group)
            for config, (result, error) in zip(group, outcomes, strict=True):
                key = config.key()
                row = finished.get(key)
                if row is not None:
                    reused += 1
                else:
                    ran_one = True
                    row = {
                        "key": key,
                        "params": config.params(),
                        "state": result.state if result else "failed",
                        "error": error,
                        "result": result.to_dict() if result else None,
                    }
                    sink.write(json.dumps(row, allow_nan=False) + "\n")
                    sink.flush()
                rows.append((config, row))
                counts[row["state"]] = counts.get(row["state"], 0) + 1
                if on_trial is not None:
                    on_trial(config, row["state"])
                loss = (row["result"] or {}).get("loss")
                bar.set_postfix_str(
                    f"{config.optimizer} lr={config.lr:.2g} {row['state']}"
                    + (f" loss={loss:.3g}" if loss is not None else "")
                )
                bar.update(1)
    bar.close()

    records = [_record(config, row) for config, row in rows]
    files = {"spec.json": out / "spec.json", TRIALS_FILE: trials_path}
    files.update(write_report(records, out, spec.name, spec=spec.model_dump(mode="json")))
    return LocalRun(out_dir=out, files=files, counts=counts, reused=reused)

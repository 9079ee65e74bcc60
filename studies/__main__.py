"""`python -m studies`: run a study locally, validate a spec, list the workloads, compare runs."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

from pydantic import ValidationError

from studies.spec import DEFAULT_MAX_TRIALS, load_spec, read_spec_file

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m studies", description="AdaMod Lab studies, run in this process."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run every trial of a spec and write the report to a folder")
    run.add_argument("spec", help="StudySpec file (YAML or JSON), e.g. studies/presets/quick.yaml")
    run.add_argument("--out", required=True, help="folder for report.html, report.json, PNGs")
    run.add_argument("--device", default="cpu", help="cpu (default), cuda, cuda:N or auto")
    run.add_argument("--max-trials", type=int, default=DEFAULT_MAX_TRIALS)
    run.add_argument(
        "--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)"
    )
    run.add_argument("--fresh", action="store_true", help="ignore trials finished in --out")
    run.add_argument(
        "--pack-size",
        default="auto",
        help="trials trained together in one vectorized model: auto (default, up to 64 by a "
        "memory estimate) or 1..64 (1: one trial at a time)",
    )
    run.add_argument("--no-progress", action="store_true", help="no progress bar")
    check = sub.add_parser("validate", help="validate a spec and print it normalized")
    check.add_argument("spec")
    check.add_argument("--max-trials", type=int, default=DEFAULT_MAX_TRIALS)
    sub.add_parser("workloads", help="list the registered workloads")
    compare = sub.add_parser(
        "compare",
        help="compare several run folders (one study per workload): table and performance profiles",
    )
    compare.add_argument(
        "dirs", nargs="+", metavar="DIR", help="folders written by `run` (each with report.json)"
    )
    compare.add_argument(
        "--out", default="compare", help="folder for compare.json, profiles.png, compare.html"
    )
    return parser


def _read_report(directory: str) -> dict:
    """DIR/report.json as a dict; ValueError naming the folder when it is missing or not one."""
    from pathlib import Path

    path = Path(directory) / "report.json"
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ValueError(
            f"{directory}: no report.json (run `python -m studies run` first)"
        ) from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"{directory}: cannot read report.json: {exc}") from None
    if not isinstance(data, dict) or not isinstance(data.get("configs"), list):
        raise ValueError(f"{directory}: report.json is not a study report (no configs list)")
    return data


def _compare(dirs: Sequence[str], out: str) -> int:
    """`compare`: reads every DIR/report.json, writes the comparison's three files into `out`."""
    import re
    from pathlib import Path

    from studies.compare import compare_reports
    from studies.compare_render import render_compare_html, render_profiles

    if len(dirs) < 2:
        print("error: compare needs at least 2 run folders", file=sys.stderr)
        return 2
    try:
        reports = [_read_report(d) for d in dirs]
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    try:
        comparison = compare_reports(reports)
    except ValueError as exc:
        message = str(exc)
        which = re.match(r"reports\[(\d+)\]", message)  # name the folder, not the list index
        if which is not None and int(which.group(1)) < len(dirs):
            message = f"{dirs[int(which.group(1))]}: report.json: {message}"
        print(f"error: {message}", file=sys.stderr)
        return 2
    out_dir = Path(out)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        files = {
            "compare.json": json.dumps(comparison.model_dump(mode="json"), indent=2),
            "profiles.png": render_profiles(comparison),
            "compare.html": render_compare_html(comparison),
        }
        for name, content in files.items():
            path = out_dir / name
            if isinstance(content, bytes):
                path.write_bytes(content)
            else:
                path.write_text(content, encoding="utf-8")
    except OSError as exc:
        print(f"error: cannot write to {out_dir}: {exc}", file=sys.stderr)
        return 1
    for note in comparison.notes:
        print(f"note: {note}")
    for name in files:
        print(f"{name}: {out_dir / name}")
    return 0


def _print_validation_error(path: str, exc: ValidationError) -> None:
    print(f"error: {path} is not a valid StudySpec:", file=sys.stderr)
    from studies.spec_suggest import suggest_fields

    try:  # read again (it just parsed): the workload named there says what workload_config holds
        data = read_spec_file(path)
    except (OSError, ValueError):
        data = None
    for err in suggest_fields(exc.errors(), data):  # "did you mean 'seeds'?" for `seed`
        where = ".".join(str(part) for part in err["loc"]) or "(spec)"
        print(f"  {where}: {err['msg']}", file=sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of `python -m studies`; returns the exit status."""
    args = _parser().parse_args(argv)
    if args.command == "workloads":
        from studies.workloads import list_workloads

        for w in list_workloads():
            budget = w.default_budget.model_dump(exclude_none=True)
            print(f"{w.name:18} default budget {json.dumps(budget):16} {w.description}")
        return 0
    if args.command == "compare":
        return _compare(args.dirs, args.out)
    if args.max_trials < 1:
        print("error: --max-trials must be >= 1", file=sys.stderr)
        return 2
    try:
        spec = load_spec(args.spec, max_trials=args.max_trials)
    except ValidationError as exc:
        _print_validation_error(args.spec, exc)
        return 2
    except (OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.command == "validate":
        print(spec.model_dump_json(indent=2))
        print(f"{spec.n_trials} trials", file=sys.stderr)
        return 0

    import torch

    from studies.local import run_study
    from studies.pack import parse_pack_size
    from studies.trial import resolve_device

    try:
        resolve_device(args.device)
    except ValueError as exc:
        print(f"error: --{exc}", file=sys.stderr)
        return 2
    try:
        pack_size = parse_pack_size(args.pack_size)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.threads is not None:
        if args.threads < 1:
            print("error: --threads must be >= 1", file=sys.stderr)
            return 2
        torch.set_num_threads(args.threads)
    print(f"{spec.name}: {spec.n_trials} trials of {spec.workload} on {args.device}", flush=True)
    try:
        result = run_study(
            spec, args.out, device=args.device, progress=not args.no_progress,
            resume=not args.fresh, pack_size=pack_size,
        )  # fmt: skip
    except (FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    counts = ", ".join(f"{n} {state}" for state, n in result.counts.items() if n)
    if result.reused:
        counts += f" ({result.reused} reused from an earlier run)"
    print(f"trials: {counts}")
    print(f"report: {result.html}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The client commands of `adamod-lab`: submit, status, list, cancel, retry, report (HTTP).

Each takes the parsed arguments and returns the exit status; server errors arrive as ApiError,
which `service.cli.main` prints as one line and turns into exit status 1.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from service.client import ApiError, Client

TERMINAL_STATUSES = ("completed", "cancelled", "failed")
FINISHED_STATES = ("completed", "diverged", "failed", "cancelled")


def _load_spec(path: Path) -> dict[str, Any]:
    from studies.spec import read_spec_file

    try:
        # The same reader as `python -m studies`: `eps: 1e-8` is a number there, not a string.
        data = read_spec_file(path)
    except FileNotFoundError:
        raise SystemExit(f"adamod-lab: cannot read {path}: no such file") from None
    except OSError as exc:
        raise SystemExit(f"adamod-lab: cannot read {path}: {exc.strerror}") from None
    except ValueError as exc:
        raise SystemExit(f"adamod-lab: {path} is not valid YAML/JSON: {exc}") from None
    if not isinstance(data, dict):
        raise SystemExit(f"adamod-lab: {path} must hold a mapping (a StudySpec)")
    return data


def done_count(progress: dict[str, int]) -> int:
    """Trials that will not run again: completed, diverged, failed or cancelled."""
    return sum(int(progress.get(state, 0)) for state in FINISHED_STATES)


def outcome(study: dict[str, Any]) -> tuple[int, str]:
    """The exit status and the closing line of a finished study.

    0 only when every trial completed or diverged (divergence is a result); a failed trial or a
    cancelled study is 1, and the line says how many trials are missing from the report.
    """
    progress, status, study_id = study["progress"], study["status"], study["id"]
    total = int(progress.get("total", study.get("n_trials", 0)))
    failed = int(progress.get("failed", 0))
    if status == "cancelled":
        missing = total - int(progress.get("completed", 0)) - int(progress.get("diverged", 0))
        return 1, f"study {study_id} was cancelled: {missing} of {total} trials did not finish"
    if failed:
        head = f"study {study_id} completed, but" if status == "completed" else f"study {study_id}:"
        return 1, (
            f"{head} {failed} of {total} trials failed "
            f"(their errors: GET /studies/{study_id}/trials; queue them again: "
            f"POST /studies/{study_id}/retry)"
        )
    if status == "completed":
        return 0, f"study {study_id} completed"
    return 1, f"study {study_id} {status}"


def submit(args: argparse.Namespace) -> int:
    """POST the spec file; print the id; with --wait, follow it and exit by its outcome."""
    spec = _load_spec(args.spec)
    client = Client(args.url, args.token)
    try:
        study = client.submit(spec, idempotency_key=args.idempotency_key)
        print(study["id"], flush=True)
        if not args.wait:
            return 0
        return wait(client, study, args.interval)
    finally:
        client.close()


def wait(client: Client, study: dict[str, Any], interval: float) -> int:
    """A progress bar (stderr) until the study ends; its exit status is `outcome`'s."""
    from tqdm import tqdm

    bar = tqdm(total=study["n_trials"], unit="trial", desc=f"study {study['id']}", file=sys.stderr)
    try:
        while True:
            progress = study["progress"]
            bar.n = done_count(progress)
            bar.set_postfix(
                status=study["status"],
                running=progress.get("running", 0),
                diverged=progress.get("diverged", 0),
                failed=progress.get("failed", 0),
                refresh=False,
            )
            bar.refresh()
            if study["status"] in TERMINAL_STATUSES:
                break
            time.sleep(interval)
            study = client.study(study["id"])
    except KeyboardInterrupt:
        bar.close()
        print(
            f"\nstopped waiting; the study keeps running: adamod-lab status {study['id']}",
            file=sys.stderr,
        )
        return 130
    bar.close()
    code, line = outcome(study)
    print(line, file=sys.stderr)
    return code


def status(args: argparse.Namespace) -> int:
    """One study's status and progress (or its StudyOut JSON)."""
    client = Client(args.url, args.token)
    try:
        study = client.study(args.study_id)
    finally:
        client.close()
    if args.json:
        print(json.dumps(study, indent=2))
        return 0
    p = study["progress"]
    print(f"study {study['id']} {study['name']!r}: {study['status']}")
    print(
        f"  {done_count(p)}/{p['total']} done: completed {p.get('completed', 0)}, "
        f"diverged {p.get('diverged', 0)}, failed {p.get('failed', 0)}, "
        f"cancelled {p.get('cancelled', 0)}; running {p.get('running', 0)}, "
        f"queued {p.get('queued', 0)}"
    )
    print(
        f"  created {study['created_at']}  started {study['started_at']}  "
        f"finished {study['finished_at']}"
    )
    return 0


def format_table(studies: list[dict[str, Any]]) -> str:
    """Studies as an aligned text table: id, name, status, progress, created."""
    header = ("ID", "NAME", "STATUS", "PROGRESS", "CREATED")
    rows = [
        (
            str(s["id"]),
            s["name"] if len(s["name"]) <= 40 else s["name"][:39] + "…",
            s["status"],
            f"{done_count(s['progress'])}/{s['progress']['total']}",
            str(s["created_at"])[:19].replace("T", " "),
        )
        for s in studies
    ]
    widths = [max(len(row[i]) for row in (header, *rows)) for i in range(len(header))]
    lines = [
        "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
        for row in (header, *rows)
    ]
    return "\n".join(lines)


def list_studies(args: argparse.Namespace) -> int:
    """The newest studies (GET /studies), as a table or as JSON."""
    client = Client(args.url, args.token)
    try:
        studies = client.studies(status=args.status, limit=args.limit)
    finally:
        client.close()
    if args.json:
        print(json.dumps(studies, indent=2))
    elif not studies:
        where = f" with status {args.status}" if args.status else ""
        print(f"no studies{where}", file=sys.stderr)
    else:
        print(format_table(studies))
    return 0


def cancel(args: argparse.Namespace) -> int:
    """DELETE /studies/{id}: queued trials never run, running ones stop at their next evaluation."""
    client = Client(args.url, args.token)
    try:
        study = client.cancel(args.study_id)
    except ApiError as exc:
        if exc.status == 404:
            print(
                f"adamod-lab cancel: there is no study {args.study_id} at {client.url}",
                file=sys.stderr,
            )
            return 1
        raise
    finally:
        client.close()
    p = study["progress"]
    if study["status"] != "cancelled":
        # The server leaves a study whose trials have all finished as it is.
        print(f"study {study['id']} had already finished ({study['status']}); nothing to cancel")
        return 0
    print(
        f"study {study['id']} cancelled: {p.get('cancelled', 0)} trials will not run, "
        f"{p.get('running', 0)} running stop at their next evaluation; "
        f"{p.get('completed', 0) + p.get('diverged', 0)} finished trials are kept"
    )
    return 0


def retry(args: argparse.Namespace) -> int:
    """POST /studies/{id}/retry: the study's failed and cancelled trials are queued again."""
    client = Client(args.url, args.token)
    try:
        study = client.retry(args.study_id)
    except ApiError as exc:
        if exc.status == 404:
            print(
                f"adamod-lab retry: there is no study {args.study_id} at {client.url}",
                file=sys.stderr,
            )
            return 1
        raise
    finally:
        client.close()
    requeued = int(study.get("requeued", 0))
    if not requeued:
        print(f"study {study['id']} ({study['status']}): no failed or cancelled trial to retry")
        return 0
    print(
        f"study {study['id']} {study['status']}: {requeued} failed or cancelled trials "
        f"queued again; follow it with: adamod-lab status {study['id']}"
    )
    return 0


def report(args: argparse.Namespace) -> int:
    """Writes report.json, one PNG per figure and report.html into --out."""
    client = Client(args.url, args.token)
    out: Path = args.out
    try:
        study = client.study(args.study_id)
        data = client.report(args.study_id)
        out.mkdir(parents=True, exist_ok=True)
        (out / "report.json").write_text(json.dumps(data, indent=2) + "\n")
        for name, path in study["links"]["plots"].items():
            (out / f"{name}.png").write_bytes(client.get_bytes(path))
        (out / "report.html").write_bytes(client.get_bytes(study["links"]["report_html"]))
    finally:
        client.close()
    if not data.get("complete", True):
        print(
            f"note: study {args.study_id} is {study['status']}; the report is partial",
            file=sys.stderr,
        )
    print(
        f"report of study {args.study_id} written to {out}/ "
        f"(report.html, report.json, {len(study['links']['plots'])} PNGs)"
    )
    return 0

"""Trial packs: how much faster a study runs when workers train compatible trials together.

Four measurements, each printed as a ratio against a baseline measured in the same run:

1. end to end: the quick preset (studies/presets/quick.yaml) through `adamod-lab up` (the API
   plus 2 workers on a fresh SQLite file, the machine's cores shared as in production), from
   submission to the last trial finished (its stored finished_at), with `--pack-size 1` (one
   trial at a time) against the default (`auto`, packs of up to 64), in --repeats pairs (the
   median ratio is the figure);
2. trials per second of `run_pack` at K = 1, 4, 16, 64 members, against `run_trial` one after
   the other, for digits_mlp (its quick-preset budget) and tiny_transformer (a short budget);
3. the compute floor: K MLPs' batched forward and backward alone (benchmarks/pack_floor.py),
   the most any pack runner could reach on this CPU, against run_trial one by one;
4. the per-member optimizer step at K members against K scalar steps (benchmarks/member_step.py).

    .venv/bin/python benchmarks/packs.py            # everything (5 to 12 minutes on 2 cores)
    .venv/bin/python benchmarks/packs.py --skip-e2e # 2, 3 and 4 only

Target (issue 8): the quick preset >= 10x faster packed, on the 2-core development machine.
"""

from __future__ import annotations

import sys
from pathlib import Path

# Run as a script, this folder is sys.path[0]: its queue.py would shadow the standard library's
# queue (imported by torch), so drop it and put the checkout first instead.
_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]
sys.path.insert(0, str(_HERE.parent))

import argparse
import contextlib
import os
import statistics
import subprocess
import tempfile
import time
import warnings
from datetime import UTC, datetime
from typing import Any

ROOT = _HERE.parent
QUICK = ROOT / "studies" / "presets" / "quick.yaml"


def _adamod_lab() -> list[str]:
    return [sys.executable, "-m", "service.cli"]


# After every trainer child logged that it is ready (imports and warm-up: about 4 s on one
# quiet core, more when the API and all workers start on 2 cores at once), how long to let the
# workers' own background warm-up (pack sizing, garbage-collector freeze) finish.
SETTLE_S = 1.0
# How often the client asks whether the study is done. The time measured is not the poll's but
# the last trial's own finished_at (the workers' clock, this machine's): polling every 0.2 s
# would add up to 0.2 s to a 2-s run, and polling faster would take CPU from the trainers.
POLL_S = 0.2


def _last_finished(database: Path) -> datetime:
    """The latest finished_at of the study's trials, read from the run's SQLite file (UTC)."""
    import sqlite3

    with contextlib.closing(sqlite3.connect(f"file:{database}?mode=ro", uri=True)) as db:
        (last,) = db.execute("SELECT max(finished_at) FROM adamod_lab_trials").fetchone()
    moment = datetime.fromisoformat(str(last))
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _wait_for_workers(client: Any, n: int, timeout_s: float = 120.0) -> None:
    """Until GET /workers lists `n` live workers: submitting earlier would time the workers'
    start-up (torch's import) rather than the study; both modes get the same head start."""
    deadline = time.monotonic() + timeout_s
    while len(client.request("GET", "/workers").json()) < n:
        if time.monotonic() > deadline:
            raise TimeoutError(f"fewer than {n} workers registered in {timeout_s:g} s")
        time.sleep(0.2)


def _wait_for_trainers(log: Path, n: int, timeout_s: float = 120.0) -> None:
    """Until `n` trainer children logged "trainer ready" in adamod-lab up's log: a study
    submitted earlier would time a trainer's imports (seconds) instead of its training."""
    deadline = time.monotonic() + timeout_s
    while log.read_text(errors="replace").count("trainer ready") < n:
        if time.monotonic() > deadline:
            raise TimeoutError(f"fewer than {n} trainers ready in {timeout_s:g} s")
        time.sleep(0.2)


def run_up(pack_size: str, spec: Path, workers: int = 2, timeout_s: float = 900.0) -> float:
    """Seconds from submitting `spec` to its last trial finished, through `adamod-lab up` with
    `workers` workers at `--pack-size pack_size` on a fresh SQLite file."""
    from service.client import Client
    from service.processes import free_port, wait_healthy
    from studies.spec import read_spec_file

    with tempfile.TemporaryDirectory() as tmp:
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        env = {**os.environ, "ADAMOD_LAB_API_TOKENS": "", "OMP_NUM_THREADS": "1"}
        command = [
            *_adamod_lab(), "up", "--workers", str(workers), "--port", str(port),
            "--database-url", f"sqlite:///{tmp}/bench.db", "--pack-size", pack_size,
            "--device", "cpu",
        ]  # fmt: skip
        log = open(Path(tmp) / "up.log", "w")  # noqa: SIM115 - closed below
        server = subprocess.Popen(command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
        try:
            if not wait_healthy(url, server, 180):
                raise RuntimeError(
                    f"adamod-lab up did not start: {Path(tmp, 'up.log').read_text()}"
                )
            client = Client(url)
            _wait_for_workers(client, workers)
            _wait_for_trainers(Path(tmp) / "up.log", workers)
            time.sleep(SETTLE_S)
            body = read_spec_file(spec)  # the client's own file reading is not the service's
            started = time.perf_counter()
            submitted_at = datetime.now(UTC)
            study = client.submit(body)
            while True:
                status = client.study(study["id"])
                if status["status"] in ("completed", "failed", "cancelled"):
                    break
                if time.perf_counter() - started > timeout_s:
                    raise TimeoutError(f"study did not finish in {timeout_s} s")
                time.sleep(POLL_S)
            seen = time.perf_counter() - started
            elapsed = (_last_finished(Path(tmp) / "bench.db") - submitted_at).total_seconds()
            counts = status.get("counts") or status.get("progress")
            print(
                f"  --pack-size {pack_size:>4}: {elapsed:6.2f} s to the last trial finished "
                f"(seen done by polling after {seen:.2f} s)  ({counts})",
                flush=True,
            )
            return elapsed
        finally:
            server.terminate()
            try:
                server.wait(timeout=60)
            except subprocess.TimeoutExpired:
                server.kill()
            log.close()


def end_to_end_ratios(spec: Path, repeats: int) -> list[float]:
    """`repeats` pairs of end-to-end runs, --pack-size 1 then auto (every other pair the other
    way round); the ratio of each pair, alone / packed.

    In pairs, because this machine's speed drifts from minute to minute with its neighbours'
    use of the memory bus (its memory bandwidth measured 27-35 GB/s within one hour): a pack's
    step streams every member's parameters and optimizer state, one trial's fits in its core's
    cache, so a drift moves the packed run and not the baseline. Each ratio compares runs a
    few seconds apart, and the median of several is what a drift moves least."""
    ratios = []
    for index in range(repeats):
        order = ("1", "auto") if index % 2 == 0 else ("auto", "1")
        seconds = {mode: run_up(mode, spec) for mode in order}
        ratios.append(seconds["1"] / seconds["auto"])
        print(f"  pair {index + 1}: {ratios[-1]:.1f}x", flush=True)
    return ratios


def trials_per_second(workload: str, budget: dict[str, Any], k_values: list[int]) -> None:
    """run_pack at each K against run_trial one by one, on one thread."""
    import torch

    from studies.pack import run_pack
    from studies.spec import TrialConfig
    from studies.trial import run_trial

    torch.set_num_threads(1)

    def config(k: int) -> TrialConfig:
        return TrialConfig.model_validate(
            {
                "workload": workload,
                "optimizer": "adamod",
                "beta3": 0.999,
                "lr": 1e-3 * (1 + k % 7),
                "seed": k % 6,
                "budget": budget,
            }
        )

    run_trial(config(0))  # warm up: imports, data caches
    n_alone = 3
    started = time.perf_counter()
    for k in range(n_alone):
        run_trial(config(k))
    alone = n_alone / (time.perf_counter() - started)
    print(f"  {workload}: run_trial one by one {alone:7.2f} trials/s (baseline)", flush=True)
    for k_members in k_values:
        configs = [config(k) for k in range(k_members)]
        started = time.perf_counter()
        run_pack(configs)
        rate = k_members / (time.perf_counter() - started)
        print(
            f"  {workload}: pack of {k_members:2d}  {rate:7.2f} trials/s  ({rate / alone:5.1f}x)",
            flush=True,
        )


def print_floor(k: int) -> None:
    """The fastest a digits_mlp pack of `k` could train here (batched forward and backward
    only), against run_trial one by one: an upper bound on packing's gain on this machine."""
    import torch

    from benchmarks.pack_floor import floor_step_seconds
    from studies.spec import TrialConfig
    from studies.trial import run_trial

    torch.set_num_threads(1)
    config = TrialConfig.model_validate(
        {"workload": "digits_mlp", "optimizer": "adam", "lr": 1e-3, "budget": {"epochs": 10}}
    )
    run_trial(config)  # warm up
    started = time.perf_counter()
    steps = run_trial(config).steps
    alone = 1.0 / (time.perf_counter() - started)
    step_s = floor_step_seconds(k)
    best = k / (step_s * steps)
    print(
        f"  digits_mlp: {step_s * 1e3:.2f} ms per step of {k} members with nothing but the "
        f"batched forward and backward = {best:.1f} trials/s at most, "
        f"{best / alone:.1f}x run_trial ({alone:.2f} trials/s): no pack runner can do better",
        flush=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--skip-e2e", action="store_true", help="skip the adamod-lab up runs")
    parser.add_argument("--spec", type=Path, default=QUICK, help="spec for the end-to-end runs")
    parser.add_argument("--k", type=int, nargs="+", default=[1, 4, 16, 64])
    parser.add_argument(
        "--repeats", type=int, default=3, help="end-to-end pairs (--pack-size 1, auto) to run"
    )
    args = parser.parse_args()
    warnings.simplefilter("ignore")

    if not args.skip_e2e:
        print(
            f"1. {args.spec.name} end to end through adamod-lab up, 2 workers, "
            f"{args.repeats} pair(s):",
            flush=True,
        )
        ratios = end_to_end_ratios(args.spec, args.repeats)
        print(
            f"  packed is {statistics.median(ratios):.1f}x faster, the median of "
            f"{', '.join(f'{r:.1f}x' for r in ratios)} (target >= 10x)",
            flush=True,
        )

    print("2. trials per second, one thread:", flush=True)
    trials_per_second("digits_mlp", {"epochs": 10}, args.k)
    trials_per_second("tiny_transformer", {"steps": 200}, args.k)

    print("3. the compute floor (benchmarks/pack_floor.py), one thread:", flush=True)
    print_floor(max(args.k))

    print("4. the per-member optimizer step against K scalar steps:", flush=True)
    from benchmarks.member_step import measure

    for row in measure(tuple(args.k)):
        print("  " + "  ".join(f"{key}={value}" for key, value in row.items()), flush=True)


if __name__ == "__main__":
    main()

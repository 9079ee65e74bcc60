"""A pack's evaluation writes: the members' curves, leases and Optuna intermediate values.

A worker training a pack of K writes every member's new evaluations at most every
`--report-interval`. This times one such write for K = 64 members through
`record_evaluations` (one transaction, a few statements for the whole pack) against the
baseline of one `record_evaluation` transaction per member, on a fresh SQLite file (or the
database given).

    .venv/bin/python benchmarks/pack_writes.py [--database-url URL]
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
import tempfile
import time
import warnings

from studies.db import Database, create_study
from studies.db.packs import claim_next_pack
from studies.db.queue import WorkerInfo, record_evaluation, record_evaluations
from studies.spec import StudySpec
from studies.trial_result import EvalPoint

K = 64
WRITES = 20


def _spec() -> StudySpec:
    return StudySpec.model_validate(
        {
            "name": "pack writes",
            "workload": "noop",
            "optimizers": ["adam"],
            "lr": {"values": [10.0 ** -(i + 1) for i in range(8)]},
            "seeds": 8,
        }
    )


def ms_per_write(url: str, batched: bool) -> float:
    """Milliseconds per write of K members' new evaluation (the median-free mean of 20)."""
    db = Database(url)
    db.migrate()
    try:
        create_study(db, _spec())
        pack = claim_next_pack(db, WorkerInfo("bench", 1, "cpu"), pack_size=K, lease_seconds=60)
        assert len(pack) == K
        started = time.perf_counter()
        for step in range(1, WRITES + 1):
            points = [(c, EvalPoint(step, step / 2, 1.0 / step, 1.0, None)) for c in pack]
            if batched:
                assert len(record_evaluations(db, points)) == K
            else:
                assert all(record_evaluation(db, c, p) for c, p in points)
        return (time.perf_counter() - started) / WRITES * 1e3
    finally:
        db.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--database-url", default=None, help="default: a fresh SQLite file")
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    with tempfile.TemporaryDirectory() as tmp:
        one = ms_per_write(args.database_url or f"sqlite:///{tmp}/one.db", batched=False)
        pack = ms_per_write(args.database_url or f"sqlite:///{tmp}/pack.db", batched=True)
    print(f"one transaction per member: {one:7.1f} ms per write of {K} members (baseline)")
    print(f"record_evaluations (pack):  {pack:7.1f} ms  ({one / pack:.1f}x faster)")


if __name__ == "__main__":
    main()

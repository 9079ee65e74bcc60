"""A packing worker claims its lead and the lead's mates in one transaction, sized for the lead
inside it: two workers claiming at once can no longer split a lead from its mates. In-process,
on a real SQLite file: the worker's own claim and sizing code, with an auto PackSizer whose
memory estimate is fixed at 3 (standing for a model that memory limits)."""

from __future__ import annotations

from pathlib import Path

from studies.db import create_study
from tests.db.util import migrated
from tests.workers.procs import trial_rows
from tests.workers.test_pack_worker import _quadratic_spec
from workers.heartbeat import Heartbeat
from workers.packing import PackSizer
from workers.worker import Worker, WorkerOptions


class _MemoryLimitedSizer(PackSizer):
    def _measure(self, config: object) -> int:
        return 3


def _worker(url: str, **options: object) -> Worker:
    return Worker(WorkerOptions(database_url=url, device="cpu", **options))  # type: ignore[arg-type]


def test_lead_and_mates_are_sized_and_claimed_in_one_transaction(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'lab.db'}"
    db = migrated(url)
    view = create_study(db, _quadratic_spec(seeds=4))  # adam: trials 0-7, adamod: 8-15
    worker = _worker(url)
    worker.sizer = _MemoryLimitedSizer(None, "cpu")  # auto, nothing measured yet
    lead = worker._claim_lead()
    assert lead is not None
    # one transaction claimed the lead and, sized for it, its mates
    rows = trial_rows(db, view.id)
    assert [r.state for r in rows] == ["running"] * 3 + ["queued"] * 13
    assert [r.attempts for r in rows] == [1] * 3 + [0] * 13
    with Heartbeat(db, interval_s=60.0) as heartbeat:
        worker._heartbeat = heartbeat
        pack = worker._pack_for(lead)
    assert [c.trial_id for c in pack] == [r.id for r in rows[:3]]
    assert [r.state for r in trial_rows(db, view.id)] == ["running"] * 3 + ["queued"] * 13
    worker.db.dispose()


def test_one_trial_at_a_time_and_max_trials_claim_no_more_than_they_train(
    tmp_path: Path,
) -> None:
    url = f"sqlite:///{tmp_path / 'lab.db'}"
    db = migrated(url)
    view = create_study(db, _quadratic_spec(seeds=4))
    alone = _worker(url, pack_size=1)
    assert alone._claim_lead() is not None
    assert [r.state for r in trial_rows(db, view.id)].count("running") == 1
    capped = _worker(url, max_trials=2)
    assert capped._claim_lead() is not None
    assert [r.state for r in trial_rows(db, view.id)].count("running") == 3  # 1 + a pack of 2
    for worker in (alone, capped):
        worker.db.dispose()

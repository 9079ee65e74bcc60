"""Trial packs in the queue, on SQLite and PostgreSQL: which trials a pack claim takes, that no
trial is ever claimed twice (threads and processes), the pack's leases and evaluations, and the
0002 → 0003 migration that gives stored trials their pack key."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading

import optuna
import pytest
from optuna.trial import TrialState
from sqlalchemy import inspect, select

from studies.db import Database, cancel_study, create_study
from studies.db.migrations import alembic_config
from studies.db.models import StudyRow, TrialRow, utcnow
from studies.db.packs import (
    MAX_PACK_SIZE,
    claim_next_pack,
    extend_pack,
    record_evaluations,
    renew_leases,
)
from studies.db.queue import (
    ClaimedTrial,
    WorkerInfo,
    claim_next_trial,
    release_lease,
    requeue_expired,
)
from studies.spec import TrialConfig, expand_grid
from studies.trial import EvalPoint
from tests.db.util import make_study, migrated, noop_spec

WORKER = WorkerInfo(host="pack-host", pid=os.getpid(), device="cpu")


def _rows(db: Database, study_id: int) -> list[TrialRow]:
    with db.session(readonly=True) as session:
        return list(
            session.execute(
                select(TrialRow).where(TrialRow.study_id == study_id).order_by(TrialRow.number)
            ).scalars()
        )


def _point(step: int, loss: float = 0.5) -> EvalPoint:
    return EvalPoint(step=step, epoch=step / 2, val_loss=loss, train_loss=loss, accuracy=None)


def _stolen(claim: ClaimedTrial) -> ClaimedTrial:
    return ClaimedTrial(**{**claim.__dict__, "lease_token": "0" * 32, "curve": []})


def test_pack_takes_compatible_trials_in_claim_order(database_url: str) -> None:
    db = migrated(database_url)
    study = make_study(db, n_lr=3, seeds=2)  # adam: numbers 0-5, adamod: 6-11
    twin = make_study(db, n_lr=3, seeds=2)  # the same pack keys, another study
    urgent = create_study(db, noop_spec(n_lr=1, seeds=2, priority=3))  # adam 0-1, adamod 2-3
    packs = []
    while pack := claim_next_pack(db, WORKER, pack_size=4, lease_seconds=30):
        packs.append([(c.study_id, c.number) for c in pack])
        assert len({c.pack_key for c in pack}) == 1 and pack[0].pack_key is not None
        assert len({c.lease_token for c in pack}) == len(pack)  # a lease each
        assert all(c.attempt == 1 and c.worker == WORKER for c in pack)
    s, t, u = study.id, twin.id, urgent.id
    assert packs == [
        [(u, 0), (u, 1)],  # priority first; never mixed with adamod nor with another study
        [(u, 2), (u, 3)],
        [(s, 0), (s, 1), (s, 2), (s, 3)],
        [(s, 4), (s, 5)],
        [(s, 6), (s, 7), (s, 8), (s, 9)],
        [(s, 10), (s, 11)],
        [(t, 0), (t, 1), (t, 2), (t, 3)],
        [(t, 4), (t, 5)],
        [(t, 6), (t, 7), (t, 8), (t, 9)],
        [(t, 10), (t, 11)],
    ]
    for row in _rows(db, study.id):
        assert row.state == "running" and row.attempts == 1 and row.lease_expires_at is not None
        assert (row.worker_host, row.worker_pid, row.worker_device) == (
            "pack-host",
            WORKER.pid,
            "cpu",
        )
        assert row.pack_key == TrialConfig.model_validate(row.config).pack_key()
    trials = optuna.load_study(study_name=study.optuna_study_name, storage=db.url).trials
    assert sorted(t.number for t in trials) == list(range(12))
    assert {t.state for t in trials} == {TrialState.RUNNING}


def test_pack_skips_cancelled_studies_and_null_keys(database_url: str) -> None:
    db = migrated(database_url)
    cancelled = make_study(db, n_lr=2, seeds=2)
    live = make_study(db, n_lr=2, seeds=1)  # adam 0-1, adamod 2-3
    cancel_study(db, cancelled.id)
    with db.session() as session:  # a stored config that no longer validates: claimed alone
        row = session.execute(
            select(TrialRow).where(TrialRow.study_id == live.id, TrialRow.number == 0)
        ).scalar_one()
        row.pack_key = None
    alone = claim_next_pack(db, WORKER, pack_size=8, lease_seconds=30)
    assert [(c.study_id, c.number) for c in alone] == [(live.id, 0)]
    pack = claim_next_pack(db, WORKER, pack_size=8, lease_seconds=30)
    assert [(c.study_id, c.number) for c in pack] == [(live.id, 1)]
    pack = claim_next_pack(db, WORKER, pack_size=8, lease_seconds=30)
    assert [c.number for c in pack] == [2, 3]
    assert claim_next_pack(db, WORKER, pack_size=8, lease_seconds=30) == []
    assert {r.state for r in _rows(db, cancelled.id)} == {"cancelled"}


def test_pack_of_one_is_the_single_claim(database_url: str) -> None:
    db = migrated(database_url)
    singles, packs = make_study(db, n_lr=2, seeds=2), make_study(db, n_lr=2, seeds=2)

    def claimed(claim: ClaimedTrial) -> tuple[object, ...]:
        return (
            claim.number,
            claim.attempt,
            claim.params,
            claim.config,
            claim.pack_key,
            claim.worker,
            claim.lease_seconds,
            claim.optuna_trial_id is not None,
        )

    single = [claimed(claim_next_trial(db, WORKER, lease_seconds=30)) for _ in range(8)]
    packed = []
    for _ in range(8):
        (claim,) = claim_next_pack(db, WORKER, pack_size=1, lease_seconds=30)
        packed.append(claimed(claim))
    assert single == packed

    def stored(row: TrialRow) -> tuple[object, ...]:
        return (
            row.number,
            row.state,
            row.attempts,
            row.worker_host,
            row.worker_pid,
            row.worker_device,
            row.claimed_at is not None,
            row.started_at is not None,
            row.lease_expires_at is not None,
            row.curve,
            row.optuna_trial_id is not None,
        )

    assert [stored(r) for r in _rows(db, singles.id)] == [stored(r) for r in _rows(db, packs.id)]
    assert claim_next_pack(db, WORKER, pack_size=1) == [] and claim_next_trial(db, WORKER) is None


def test_bad_pack_sizes_name_the_argument(database_url: str) -> None:
    db = migrated(database_url)
    make_study(db, n_lr=1, seeds=1)
    lead = claim_next_trial(db, WORKER, lease_seconds=30)
    for bad in (0, -1, MAX_PACK_SIZE + 1, 1.5, True, "4", None):
        with pytest.raises(ValueError, match="pack_size"):
            claim_next_pack(db, WORKER, pack_size=bad)  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="pack_size"):
            extend_pack(db, lead, WORKER, pack_size=bad)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="lease_seconds"):
        claim_next_pack(db, WORKER, pack_size=2, lease_seconds=0)
    assert [r.state for r in _rows(db, lead.study_id)] == ["running", "queued"]  # untouched


def test_extend_pack_adds_compatible_trials_to_a_lead(database_url: str) -> None:
    db = migrated(database_url)
    study = make_study(db, n_lr=3, seeds=1)  # adam 0-2, adamod 3-5
    lead = claim_next_trial(db, WORKER, lease_seconds=30)
    other = claim_next_trial(db, WORKER, lease_seconds=30)  # number 1: someone else's
    pack = extend_pack(db, lead, WORKER, pack_size=4)
    assert [c.number for c in pack] == [0, 2] and pack[0] is lead
    assert extend_pack(db, other, WORKER, pack_size=4) == [other]  # no adam trial left
    assert [c.lease_seconds for c in pack] == [30.0, 30.0]
    assert [r.state for r in _rows(db, study.id)] == ["running"] * 3 + ["queued"] * 3


def test_concurrent_pack_claims_never_share_a_trial(database_url: str) -> None:
    db = migrated(database_url)
    studies = [make_study(db, n_lr=5, seeds=3) for _ in range(2)]  # 2 × 30 trials
    claimed: list[tuple[int, int, str]] = []
    lock = threading.Lock()

    def claimer(pack_size: int) -> None:
        while pack := claim_next_pack(db, WORKER, pack_size=pack_size, lease_seconds=30):
            assert len({(c.study_id, c.pack_key) for c in pack}) == 1
            with lock:
                claimed.extend((c.trial_id, c.study_id, c.pack_key or "") for c in pack)

    threads = [threading.Thread(target=claimer, args=(size,)) for size in (1, 2, 3, 4, 5, 7)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    ids = [trial_id for trial_id, _, _ in claimed]
    assert len(ids) == len(set(ids)) == sum(s.n_trials for s in studies)
    for study in studies:
        assert {(r.state, r.attempts) for r in _rows(db, study.id)} == {("running", 1)}


CLAIMER = """
import json, os, sys
from studies.db import Database
from studies.db.packs import claim_next_pack
from studies.db.queue import WorkerInfo
db = Database(sys.argv[1])
worker = WorkerInfo(host="proc", pid=os.getpid(), device="cpu")
print("ready", flush=True)
sys.stdin.readline()  # every claimer starts at once
ids = []
while pack := claim_next_pack(db, worker, pack_size=int(sys.argv[2]), lease_seconds=30):
    ids.append([c.trial_id for c in pack])
print(json.dumps(ids), flush=True)
"""


def test_claiming_processes_never_share_a_trial(database_url: str) -> None:
    db = migrated(database_url)
    study = make_study(db, n_lr=6, seeds=4)  # 48 trials
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", CLAIMER, database_url, str(size)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        for size in (3, 4, 5)
    ]
    try:
        for proc in procs:
            assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        for proc in procs:
            assert proc.stdin is not None
            proc.stdin.write("go\n")
            proc.stdin.flush()
        outputs = [proc.communicate(timeout=120)[0] for proc in procs]
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    assert [proc.returncode for proc in procs] == [0, 0, 0]
    packs = [pack for out in outputs for pack in json.loads(out.strip().splitlines()[-1])]
    ids = [trial_id for pack in packs for trial_id in pack]
    assert len(ids) == len(set(ids)) == study.n_trials
    rows = {r.id: r for r in _rows(db, study.id)}
    for pack in packs:
        assert len({rows[i].pack_key for i in pack}) == 1
        assert len({rows[i].worker_pid for i in pack}) == 1


def test_renew_leases_reports_the_trials_still_held(database_url: str) -> None:
    db = migrated(database_url)
    study = make_study(db, n_lr=3, seeds=1)
    pack = claim_next_pack(db, WORKER, pack_size=3, lease_seconds=30)
    ids = {c.trial_id for c in pack}
    assert renew_leases(db, pack) == ids and renew_leases(db, []) == set()
    before = {r.id: r.lease_expires_at for r in _rows(db, study.id)}
    assert renew_leases(db, pack, lease_seconds=600) == ids
    after = {r.id: r.lease_expires_at for r in _rows(db, study.id)}
    assert all(after[i] > before[i] for i in ids)
    assert renew_leases(db, [_stolen(pack[0]), pack[1]]) == {pack[1].trial_id}
    assert release_lease(db, pack[2])  # handed back: no longer held
    assert renew_leases(db, pack) == {pack[0].trial_id, pack[1].trial_id}
    cancel_study(db, study.id)
    assert renew_leases(db, pack) == set()


def test_renew_leases_after_expiry(database_url: str) -> None:
    db = migrated(database_url)
    make_study(db, n_lr=2, seeds=1)
    pack = claim_next_pack(db, WORKER, pack_size=2, lease_seconds=0.2)
    assert len(pack) == 2
    import time

    time.sleep(0.5)
    assert requeue_expired(db) == 2
    assert renew_leases(db, pack) == set()  # requeued: both leases lost
    again = claim_next_pack(db, WORKER, pack_size=2, lease_seconds=30)
    assert [c.trial_id for c in again] == [c.trial_id for c in pack]
    assert [c.attempt for c in again] == [2, 2]
    assert renew_leases(db, again) == {c.trial_id for c in again}


def test_record_evaluations_per_member(database_url: str) -> None:
    db = migrated(database_url)
    study = make_study(db, n_lr=3, seeds=1)
    a, b, c = claim_next_pack(db, WORKER, pack_size=3, lease_seconds=30)
    assert record_evaluations(
        db, [(a, _point(1, 0.9)), (b, _point(1, 0.8)), (c, _point(1, 0.7))]
    ) == {a.trial_id, b.trial_id, c.trial_id}
    # Again (a retry after a lost reply stores nothing twice), plus a second point for b only.
    assert record_evaluations(db, [(a, _point(1, 0.9)), (b, _point(2, 0.6))]) == {
        a.trial_id,
        b.trial_id,
    }
    thief = _stolen(c)
    assert record_evaluations(db, [(thief, _point(2, 0.1)), (a, _point(2, 0.5))]) == {a.trial_id}
    rows = {r.id: r for r in _rows(db, study.id)}
    assert [p["val_loss"] for p in rows[a.trial_id].curve] == [0.9, 0.5]
    assert [p["val_loss"] for p in rows[b.trial_id].curve] == [0.8, 0.6]
    assert [p["val_loss"] for p in rows[c.trial_id].curve] == [0.7]  # the thief wrote nothing
    trials = optuna.load_study(study_name=study.optuna_study_name, storage=db.url).trials
    live = {t._trial_id: t.intermediate_values for t in trials}
    assert live[a.optuna_trial_id] == {1: 0.9, 2: 0.5}
    assert live[b.optuna_trial_id] == {1: 0.8, 2: 0.6}
    assert live[c.optuna_trial_id] == {1: 0.7}
    cancel_study(db, study.id)
    assert record_evaluations(db, [(a, _point(3)), (b, _point(3))]) == set()
    assert record_evaluations(db, []) == set()


def _trials_at_0002(url: str) -> tuple[Database, list[TrialConfig]]:
    """A database migrated to revision 0002 only, holding a study with trials written as
    0002's code wrote them (no pack key), plus one trial whose config no longer validates."""
    from alembic import command

    db = Database(url)
    with db.engine.begin() as connection:
        command.upgrade(alembic_config(connection), "0002")
    spec = noop_spec(n_lr=2, seeds=2)
    configs = expand_grid(spec)
    now = utcnow()
    with db.session() as session:
        study = StudyRow(
            name="old",
            workload="noop",
            spec=spec.model_dump(mode="json"),
            spec_hash="0" * 64,
            n_trials=len(configs) + 1,
            priority=0,
            created_at=now,
        )
        session.add(study)
        session.flush()
        rows = [
            {
                "study_id": study.id,
                "number": number,
                "config": config.model_dump(mode="json"),
                "config_key": config.key(),
                "params": config.params(),
                "priority": 0,
                "state": "completed" if number == 0 else "queued",
                "attempts": 0,
                "created_at": now,
            }
            for number, config in enumerate(configs)
        ]
        bogus = {**configs[0].model_dump(mode="json"), "optimizer": "lion"}
        rows.append({**rows[-1], "number": len(configs), "config": bogus, "config_key": "f" * 64})
        session.execute(TrialRow.__table__.insert(), rows)
    return db, configs


def test_migration_0002_to_0003_backfills_pack_keys(database_url: str) -> None:
    db, configs = _trials_at_0002(database_url)
    assert "pack_key" not in {
        c["name"] for c in inspect(db.engine).get_columns("adamod_lab_trials")
    }
    assert not db.schema_is_current()
    db.migrate()
    assert db.schema_is_current()
    indexes = {i["name"]: i for i in inspect(db.engine).get_indexes("adamod_lab_trials")}
    assert indexes["ix_adamod_lab_trials_pack_claim"]["column_names"][:2] == [
        "study_id",
        "pack_key",
    ]
    with db.session(readonly=True) as session:
        keys = dict(session.execute(select(TrialRow.number, TrialRow.pack_key)).all())
    assert keys == {
        **{n: config.pack_key() for n, config in enumerate(configs)},
        len(configs): None,  # no longer a valid config: never packed
    }
    assert len(set(keys.values())) == 3  # adam, adamod, and NULL
    pack = claim_next_pack(db, WORKER, pack_size=8, lease_seconds=30)
    assert [c.number for c in pack] == [1, 2, 3]  # 0 is completed; adamod's key differs


def test_pack_never_races_a_cancel_in_flight(postgres_url: str) -> None:
    db = migrated(postgres_url)
    study = make_study(db, n_lr=3, seeds=2)
    with db.engine.connect() as canceller:
        # What cancel_study holds while it cancels the queued trials: the study row.
        canceller.execute(
            select(StudyRow.id).where(StudyRow.id == study.id).with_for_update(key_share=True)
        ).one()
        pack = claim_next_pack(db, WORKER, pack_size=4, lease_seconds=30)
        assert [c.number for c in pack] == [0]  # the lead alone: no queued trial taken from it
        canceller.rollback()
    assert [c.number for c in claim_next_pack(db, WORKER, pack_size=4)] == [1, 2, 3, 4]


def test_complete_pack_stores_members_in_one_transaction(database_url: str) -> None:
    from dataclasses import replace

    from studies.db.queue import complete_pack
    from studies.pack import run_pack

    db = migrated(database_url)
    study = make_study(db, n_lr=2, seeds=2)  # adam: numbers 0-3, adamod: 4-7
    a, b, c, d = claim_next_pack(db, WORKER, pack_size=4, lease_seconds=30)
    results = run_pack([m.config for m in (a, b, c, d)])
    results[3] = replace(results[3], state="cancelled")  # stopped early: handed back
    thief = _stolen(b)  # b's lease is not ours: b is skipped, the others are not undone
    stored, following = complete_pack(
        db, [(c, results[2]), (a, results[0]), (thief, results[1]), (d, results[3])], WORKER
    )
    assert stored == [True, True, False, True]
    # The next claim rode on the commit: d, handed back first, is the oldest queued trial again.
    assert following is not None and following.trial_id == d.trial_id
    assert following.lease_token != d.lease_token and following.attempt == 1
    rows = {r.id: r for r in _rows(db, study.id)}
    for member, result in ((a, results[0]), (c, results[2])):
        row = rows[member.trial_id]
        assert row.state == "completed" and row.lease_expires_at is None
        assert row.loss == pytest.approx(result.loss) and len(row.curve) == len(result.curve)
        assert row.result["pack_size"] == 4 and "curve" not in row.result
    assert rows[b.trial_id].state == "running"  # still b's real lease holder's to finish
    assert rows[d.trial_id].state == "running" and rows[d.trial_id].attempts == 1  # not 2
    trials = optuna.load_study(study_name=study.optuna_study_name, storage=db.url).trials
    states = {t._trial_id: t.state for t in trials}
    assert states[a.optuna_trial_id] == states[c.optuna_trial_id] == TrialState.COMPLETE
    assert states[b.optuna_trial_id] == TrialState.RUNNING
    # A retry after a lost reply: reported stored again, nothing written twice, no second claim.
    again, none = complete_pack(db, [(a, results[0]), (c, results[2])], WORKER)
    assert again == [True, True] and none is None
    after = {r.id: r for r in _rows(db, study.id)}
    assert after[a.trial_id].finished_at == rows[a.trial_id].finished_at
    finished = [t for t in optuna.load_study(study_name=study.optuna_study_name, storage=db.url)
                .trials if t.state == TrialState.COMPLETE]  # fmt: skip
    assert len(finished) == 2


def test_record_evaluations_skips_a_member_whose_optuna_trial_is_gone(database_url: str) -> None:
    from optuna.storages._rdb import models
    from sqlalchemy import delete

    db = migrated(database_url)
    study = make_study(db, n_lr=3, seeds=1)
    a, b, c = claim_next_pack(db, WORKER, pack_size=3, lease_seconds=30)
    with db.session() as session:  # b's Optuna trial deleted behind our back, children first
        for model in (
            models.TrialParamModel,
            models.TrialValueModel,
            models.TrialUserAttributeModel,
            models.TrialSystemAttributeModel,
            models.TrialIntermediateValueModel,
            models.TrialHeartbeatModel,
            models.TrialModel,
        ):
            table = model.__table__
            session.execute(delete(table).where(table.c.trial_id == b.optuna_trial_id))
    held = record_evaluations(db, [(a, _point(1, 0.9)), (b, _point(1, 0.8)), (c, _point(1, 0.7))])
    assert held == {a.trial_id, b.trial_id, c.trial_id}  # our rows are still ours
    rows = {r.id: r for r in _rows(db, study.id)}
    assert [p["val_loss"] for p in rows[b.trial_id].curve] == [0.8]  # our curve is kept
    live = {
        t._trial_id: t.intermediate_values
        for t in optuna.load_study(study_name=study.optuna_study_name, storage=db.url).trials
    }
    assert b.optuna_trial_id not in live
    assert live[a.optuna_trial_id] == {1: 0.9} and live[c.optuna_trial_id] == {1: 0.7}
    assert a.optuna_steps == {1} and b.optuna_steps == set()  # b's point: for the repair pass
    # A later write for all three: a and c get their second point, nothing fails.
    held = record_evaluations(db, [(a, _point(2, 0.5)), (b, _point(2, 0.4)), (c, _point(2, 0.3))])
    assert held == {a.trial_id, b.trial_id, c.trial_id}
    trials = optuna.load_study(study_name=study.optuna_study_name, storage=db.url).trials
    assert {t._trial_id: t.intermediate_values for t in trials}[c.optuna_trial_id] == {
        1: 0.7,
        2: 0.3,
    }


def test_pack_mirror_writes_match_each_member_when_some_optuna_trials_are_odd(
    database_url: str,
) -> None:
    """The claim and completion of a pack write every member's Optuna trial together (a few
    statements for all): checked member by member through Optuna's own API, with a foreign
    trial holding one member's grid number at claim time and another member's Optuna trial
    deleted before completion."""
    from optuna.storages._rdb import models
    from sqlalchemy import delete

    from studies.db.queue import complete_pack
    from studies.pack import run_pack

    db = migrated(database_url)
    study = make_study(db, n_lr=3, seeds=2)  # adam: numbers 0-5
    client = optuna.load_study(study_name=study.optuna_study_name, storage=db.url)
    asked = client.ask()  # Optuna numbers it 0 by counting: grid trial 0's number
    assert asked.number == 0
    pack = claim_next_pack(db, WORKER, pack_size=6, lease_seconds=30)
    assert [m.number for m in pack] == [0, 1, 2, 3, 4, 5]
    running = {t._trial_id: t for t in optuna.load_study(
        study_name=study.optuna_study_name, storage=db.url).trials}  # fmt: skip
    for member in pack:
        trial = running[member.optuna_trial_id]
        assert trial.state == TrialState.RUNNING and trial.number == member.number
        assert trial.params == {"optimizer": "adam", "lr": member.config.lr}
        assert trial.user_attrs["seed"] == member.config.seed
    assert running[asked._trial_id].number >= study.n_trials  # moved past the grid
    gone = pack[2].optuna_trial_id
    with db.session() as session:  # member 2's Optuna trial deleted behind our back
        for model in (
            models.TrialParamModel,
            models.TrialUserAttributeModel,
            models.TrialIntermediateValueModel,
            models.TrialModel,
        ):
            table = model.__table__
            session.execute(delete(table).where(table.c.trial_id == gone))
    results = run_pack([m.config for m in pack])
    stored, _ = complete_pack(db, list(zip(pack, results, strict=True)), None)
    assert stored == [True] * 6
    assert pack[2].optuna_trial_id not in (None, gone)  # written again, whole
    rows = {r.id: r for r in _rows(db, study.id)}
    finished = {t._trial_id: t for t in optuna.load_study(
        study_name=study.optuna_study_name, storage=db.url).trials}  # fmt: skip
    for member, result in zip(pack, results, strict=True):
        row, trial = rows[member.trial_id], finished[member.optuna_trial_id]
        assert row.optuna_trial_id == member.optuna_trial_id and row.optuna_final
        assert trial.number == member.number
        assert trial.params == {"optimizer": "adam", "lr": member.config.lr}
        assert trial.state == TrialState.COMPLETE and trial.value == pytest.approx(row.value)
        assert trial.intermediate_values == {p.step: p.val_loss for p in result.curve}
        assert trial.user_attrs["adamod_lab_trial_id"] == member.trial_id
        assert trial.user_attrs["loss"] == pytest.approx(result.loss)

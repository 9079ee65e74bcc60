"""Trial packs in the queue: claim up to N compatible queued trials at once, keep them all leased.

A pack is a lead (the next trial of the queue, exactly as claim_next_trial takes it) and up to
N-1 more queued trials of the lead's study with the lead's non-NULL pack key (TrialConfig.pack_key:
same workload, workload_config, budget, optimizer, schedule, betas, eps, weight decay), in claim
order (priority DESC, id), locked FOR UPDATE SKIP LOCKED so that concurrent claimers never wait
on each other nor take a trial twice. Every member is claimed as a trial claimed alone: its own
lease token, attempts + 1, the worker's fields, its Optuna trial RUNNING; every later write about
a member (renew, evaluation, completion, hand-back, failure) is that member's own, conditional on
its own lease. renew_leases and record_evaluations (studies.db.queue) do it for a whole pack in
one round trip.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from typing import TYPE_CHECKING

from sqlalchemy import case, select
from sqlalchemy.orm import Session

from studies.db.engine import Database
from studies.db.models import StudyRow, TrialRow
from studies.db.queue import (
    _NO_SYNC,
    DEFAULT_LEASE_SECONDS,
    ClaimedTrial,
    WorkerInfo,
    _check_lease_seconds,
    _claim_in_session,
    _claim_statement,
    _claimed_from_rows,
    record_evaluations,
    renew_leases,
)
from studies.pack_size import MAX_PACK_SIZE, check_pack_size

if TYPE_CHECKING:
    from studies.spec import TrialConfig

__all__ = [
    "MAX_PACK_SIZE",
    "check_pack_size",
    "claim_next_pack",
    "extend_pack",
    "record_evaluations",
    "renew_leases",
]


def claim_next_pack(
    db: Database,
    worker: WorkerInfo,
    *,
    pack_size: int,
    lease_seconds: float = DEFAULT_LEASE_SECONDS,
    study_id: int | None = None,
    size_for: Callable[[TrialConfig], int] | None = None,
) -> list[ClaimedTrial]:
    """Atomically claims the next queued trial (of `study_id` only, when given) and up to
    pack_size-1 compatible ones, in one transaction; [] when the queue is empty. pack_size=1 is
    claim_next_trial. `size_for(lead's config)`, asked inside the transaction, lowers the
    pack's size for that lead (a worker's memory estimate, 1 for a workload that cannot pack):
    the pack is sized before any mate is claimed, and no other claimer can take the mates
    meanwhile."""
    pack_size = check_pack_size(pack_size)
    lease_seconds = _check_lease_seconds(lease_seconds)
    with db.session() as session:
        lead = _claim_in_session(session, db, worker, lease_seconds, study_id)
        if lead is None:
            return []
        if size_for is not None:
            pack_size = max(1, min(pack_size, int(size_for(lead.config))))
        return [lead, *_claim_members(session, db, lead, worker, pack_size - 1, lease_seconds)]


def extend_pack(
    db: Database, lead: ClaimedTrial, worker: WorkerInfo, *, pack_size: int
) -> list[ClaimedTrial]:
    """Claims up to pack_size-1 more queued trials compatible with an already claimed `lead`,
    in one transaction; returns the pack, lead first.

    For a worker that can only size the pack once it sees the lead's config (whether its
    workload packs at all, how many fit in memory), or whose lead rode on the transaction that
    completed its previous trial: the lead is never held up by the sizing.
    """
    pack_size = check_pack_size(pack_size)
    if pack_size == 1 or lead.pack_key is None:
        return [lead]  # nothing to add: no transaction
    with db.session() as session:
        members = _claim_members(session, db, lead, worker, pack_size - 1, lead.lease_seconds)
    return [lead, *members]


def _claim_members(
    session: Session,
    db: Database,
    lead: ClaimedTrial,
    worker: WorkerInfo,
    count: int,
    lease_seconds: float,
) -> list[ClaimedTrial]:
    """Up to `count` queued trials of the lead's study with its pack key, claimed in the
    caller's transaction, in claim order; each gets its own lease token."""
    if count < 1 or lead.pack_key is None:
        return []
    # PostgreSQL: a share lock on the study row, so that a cancel in flight (which holds that
    # row FOR NO KEY UPDATE while it cancels the queued trials) is never raced for its queued
    # trials; SKIP LOCKED, so that it is never waited for (the cancel may be waiting for the
    # lead's row): the lead then trains alone and stops at its first evaluation. SQLite runs
    # one writer at a time: no race there.
    study_open = session.execute(
        select(StudyRow.id)
        .where(StudyRow.id == lead.study_id, StudyRow.cancelled.is_(False))
        .with_for_update(read=True, skip_locked=True)
    ).scalar_one_or_none()
    if study_open is None:
        return []
    ids = list(
        session.execute(
            select(TrialRow.id)
            .join(StudyRow, StudyRow.id == TrialRow.study_id)
            .where(
                TrialRow.study_id == lead.study_id,
                TrialRow.pack_key == lead.pack_key,
                TrialRow.state == "queued",
                StudyRow.cancelled.is_(False),
            )
            .order_by(TrialRow.priority.desc(), TrialRow.id)
            .limit(count)
            .with_for_update(skip_locked=True, of=TrialRow)
        ).scalars()
    )
    if not ids:
        return []
    tokens = {trial_id: secrets.token_hex(16) for trial_id in ids}
    statement = _claim_statement(
        db, worker, lease_seconds, TrialRow.id.in_(ids), case(tokens, value=TrialRow.id)
    )
    rows = {row.id: row for row in session.execute(statement, execution_options=_NO_SYNC)}
    claimed = [(rows[trial_id], tokens[trial_id]) for trial_id in ids if trial_id in rows]
    return _claimed_from_rows(session, db, claimed, worker, lease_seconds)

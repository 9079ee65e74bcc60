"""Result reuse: `reuse_key` says which finished trials stand for a new one; `reused_from` marks a
trial completed from another's result instead of trained.

studies/reuse.py defines the key (the trial's config, its workload's declared version, the torch
version and the device type). Existing completed and diverged trials get theirs from their stored
config and result, so results from before this migration are reused too; a row whose config no
longer validates, or whose result lacks the torch version or device, keeps NULL and is never
reused. The partial index serves the lookup at claim time: finished trials with a given key.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-02
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

FINISHED = sa.text("state IN ('completed', 'diverged')")
BACKFILL_BATCH = 1000
_json = sa.JSON().with_variant(JSONB(), "postgresql")
_trials = sa.table(
    "adamod_lab_trials",
    sa.column("id", sa.Integer()),
    sa.column("state", sa.String(16)),
    sa.column("config", _json),
    sa.column("result", _json),
    sa.column("reuse_key", sa.String(64)),
)


def _reuse_key(config: Any, result: Any) -> str | None:
    from studies.reuse import reuse_key
    from studies.spec import TrialConfig

    if not isinstance(result, dict) or not result.get("torch_version") or not result.get("device"):
        return None
    try:
        return reuse_key(
            TrialConfig.model_validate(config),
            device=str(result["device"]),
            torch_version=str(result["torch_version"]),
        )
    except Exception:  # an old or unknown config or device: never reused
        return None


def _backfill(connection: Any) -> None:
    last_id = 0
    while True:
        rows = connection.execute(
            sa.select(_trials.c.id, _trials.c.config, _trials.c.result)
            .where(_trials.c.id > last_id, _trials.c.state.in_(("completed", "diverged")))
            .order_by(_trials.c.id)
            .limit(BACKFILL_BATCH)
        ).all()
        if not rows:
            return
        last_id = rows[-1].id
        keys = [
            {"row_id": row.id, "key": key}
            for row in rows
            if (key := _reuse_key(row.config, row.result)) is not None
        ]
        if keys:
            connection.execute(
                _trials.update()
                .where(_trials.c.id == sa.bindparam("row_id"))
                .values(reuse_key=sa.bindparam("key")),
                keys,
            )


def upgrade() -> None:
    op.add_column("adamod_lab_trials", sa.Column("reuse_key", sa.String(64), nullable=True))
    op.add_column("adamod_lab_trials", sa.Column("reused_from", sa.Integer(), nullable=True))
    _backfill(op.get_bind())
    op.create_index(
        "ix_adamod_lab_trials_reuse",
        "adamod_lab_trials",
        ["reuse_key", "id"],
        postgresql_where=FINISHED,
        sqlite_where=FINISHED,
    )


def downgrade() -> None:
    op.drop_index("ix_adamod_lab_trials_reuse", table_name="adamod_lab_trials")
    with op.batch_alter_table("adamod_lab_trials") as batch:
        batch.drop_column("reused_from")
        batch.drop_column("reuse_key")

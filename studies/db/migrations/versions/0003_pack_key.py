"""Trial packs: `pack_key` says which queued trials a worker may train together in one model.

Two trials of one study with the same pack key (TrialConfig.pack_key: everything but lr, beta3,
warmup_steps and seed) can share a vectorized pack. Existing rows get their key from their stored
config; a config that no longer validates keeps NULL, and such a trial is only ever claimed alone.
The partial index serves the pack claim's second step: more queued trials of the lead's study
with the lead's pack key, in claim order.

Revision ID: 0003
Revises: 0002
Create Date: 2025-01-03
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

QUEUED = sa.text("state = 'queued'")
BACKFILL_BATCH = 1000
# Just the columns the backfill reads and writes, typed so that JSON comes back decoded.
_trials = sa.table(
    "adamod_lab_trials",
    sa.column("id", sa.Integer()),
    sa.column("config", sa.JSON().with_variant(JSONB(), "postgresql")),
    sa.column("pack_key", sa.String(64)),
)


def _pack_key(config: Any) -> str | None:
    from studies.spec import TrialConfig

    try:
        return TrialConfig.model_validate(config).pack_key()
    except Exception:  # an old or unknown config: claimed alone, never packed
        return None


def _backfill(connection: Any) -> None:
    last_id = 0
    while True:
        rows = connection.execute(
            sa.select(_trials.c.id, _trials.c.config)
            .where(_trials.c.id > last_id)
            .order_by(_trials.c.id)
            .limit(BACKFILL_BATCH)
        ).all()
        if not rows:
            return
        last_id = rows[-1].id
        keys = [
            {"row_id": row.id, "key": key}
            for row in rows
            if (key := _pack_key(row.config)) is not None
        ]
        if keys:
            connection.execute(
                _trials.update()
                .where(_trials.c.id == sa.bindparam("row_id"))
                .values(pack_key=sa.bindparam("key")),
                keys,
            )


def upgrade() -> None:
    op.add_column("adamod_lab_trials", sa.Column("pack_key", sa.String(64), nullable=True))
    _backfill(op.get_bind())
    op.create_index(
        "ix_adamod_lab_trials_pack_claim",
        "adamod_lab_trials",
        ["study_id", "pack_key", sa.text("priority DESC"), "id"],
        postgresql_where=QUEUED,
        sqlite_where=QUEUED,
    )


def downgrade() -> None:
    op.drop_index("ix_adamod_lab_trials_pack_claim", table_name="adamod_lab_trials")
    with op.batch_alter_table("adamod_lab_trials") as batch:
        batch.drop_column("pack_key")

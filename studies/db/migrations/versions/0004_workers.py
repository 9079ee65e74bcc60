"""The worker registry: one row per worker process start, beaten by its heartbeat.

GET /workers and /metrics read it; studies.db.registry writes it. The index on last_beat_at
serves the liveness filter (a worker is live while its last beat is recent) and pruning.

Revision ID: 0004
Revises: 0003
Create Date: 2025-01-04
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

from studies.db.models import UtcDateTime

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "adamod_lab_workers",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("host", sa.String(255), nullable=False),
        sa.Column("pid", sa.Integer(), nullable=False),
        sa.Column("device", sa.String(64), nullable=False),
        sa.Column("pack_size", sa.Integer(), nullable=True),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column(
            "current_trial_ids", sa.JSON().with_variant(JSONB(), "postgresql"), nullable=False
        ),
        sa.Column("started_at", UtcDateTime(), nullable=False),
        sa.Column("last_beat_at", UtcDateTime(), nullable=False),
        sa.Column("exited_at", UtcDateTime(), nullable=True),
    )
    op.create_index("ix_adamod_lab_workers_last_beat", "adamod_lab_workers", ["last_beat_at"])


def downgrade() -> None:
    op.drop_index("ix_adamod_lab_workers_last_beat", table_name="adamod_lab_workers")
    op.drop_table("adamod_lab_workers")

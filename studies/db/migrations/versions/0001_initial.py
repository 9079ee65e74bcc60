"""Initial schema: studies and trials with the queue's lease columns.

Revision ID: 0001
Revises:
Create Date: 2025-01-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

from studies.db.models import UtcDateTime

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

JsonType = sa.JSON().with_variant(JSONB(), "postgresql")
QUEUED = sa.text("state = 'queued'")
RUNNING = sa.text("state = 'running'")
OPTUNA_PENDING = sa.text("optuna_trial_id IS NULL AND state IN ('completed', 'diverged', 'failed')")


def upgrade() -> None:
    op.create_table(
        "adamod_lab_studies",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("workload", sa.String(100), nullable=False),
        sa.Column("spec", JsonType, nullable=False),
        sa.Column("spec_hash", sa.String(64), nullable=False),
        sa.Column("n_trials", sa.Integer(), nullable=False),
        sa.Column("priority", sa.Integer(), nullable=False),
        sa.Column("idempotency_key", sa.String(200), nullable=True, unique=True),
        sa.Column("optuna_study_name", sa.String(200), nullable=True),
        sa.Column("cancelled", sa.Boolean(), nullable=False, server_default=sa.text("false")),
        sa.Column("created_at", UtcDateTime(), nullable=False),
        sa.Column("cancelled_at", UtcDateTime(), nullable=True),
    )
    op.create_index("ix_adamod_lab_studies_created", "adamod_lab_studies", ["created_at"])
    op.create_table(
        "adamod_lab_trials",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column(
            "study_id",
            sa.Integer(),
            sa.ForeignKey("adamod_lab_studies.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("number", sa.Integer(), nullable=False),
        sa.Column("config", JsonType, nullable=False),
        sa.Column("config_key", sa.String(64), nullable=False),
        sa.Column("params", JsonType, nullable=False),
        sa.Column("priority", sa.Integer(), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("lease_token", sa.String(32), nullable=True),
        sa.Column("lease_expires_at", UtcDateTime(), nullable=True),
        sa.Column("worker_host", sa.String(255), nullable=True),
        sa.Column("worker_pid", sa.Integer(), nullable=True),
        sa.Column("worker_device", sa.String(64), nullable=True),
        sa.Column("value", sa.Float(), nullable=True),
        sa.Column("loss", sa.Float(), nullable=True),
        sa.Column("loss0", sa.Float(), nullable=True),
        sa.Column("accuracy", sa.Float(), nullable=True),
        sa.Column("curve", JsonType, nullable=True),
        sa.Column("bound_stats", JsonType, nullable=True),
        sa.Column("result", JsonType, nullable=True),
        sa.Column("steps", sa.Integer(), nullable=True),
        sa.Column("duration_s", sa.Float(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("optuna_trial_id", sa.Integer(), nullable=True),
        sa.Column("created_at", UtcDateTime(), nullable=False),
        sa.Column("started_at", UtcDateTime(), nullable=True),
        sa.Column("claimed_at", UtcDateTime(), nullable=True),
        sa.Column("finished_at", UtcDateTime(), nullable=True),
        sa.UniqueConstraint("study_id", "config_key", name="uq_adamod_lab_trials_study_config"),
        sa.UniqueConstraint("study_id", "number", name="uq_adamod_lab_trials_study_number"),
    )
    op.create_index(
        "ix_adamod_lab_trials_claim",
        "adamod_lab_trials",
        [sa.text("priority DESC"), "id"],
        postgresql_where=QUEUED,
        sqlite_where=QUEUED,
    )
    op.create_index(
        "ix_adamod_lab_trials_lease",
        "adamod_lab_trials",
        ["lease_expires_at"],
        postgresql_where=RUNNING,
        sqlite_where=RUNNING,
    )
    op.create_index(
        "ix_adamod_lab_trials_optuna_pending",
        "adamod_lab_trials",
        ["finished_at"],
        postgresql_where=OPTUNA_PENDING,
        sqlite_where=OPTUNA_PENDING,
    )
    op.create_index("ix_adamod_lab_trials_study_state", "adamod_lab_trials", ["study_id", "state"])


def downgrade() -> None:
    op.drop_table("adamod_lab_trials")
    op.drop_table("adamod_lab_studies")

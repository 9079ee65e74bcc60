"""Live Optuna trials: `optuna_final` says whether Optuna's copy shows the trial's final state.

The Optuna trial is now created when a trial is claimed (RUNNING), so `optuna_trial_id` no longer
means "finished in Optuna"; the repair index follows the new column instead.

Revision ID: 0002
Revises: 0001
Create Date: 2025-01-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

OLD_PENDING = sa.text("optuna_trial_id IS NULL AND state IN ('completed', 'diverged', 'failed')")
PENDING = sa.text("NOT optuna_final AND state IN ('completed', 'diverged', 'failed', 'cancelled')")


def upgrade() -> None:
    op.add_column(
        "adamod_lab_trials",
        sa.Column("optuna_final", sa.Boolean(), nullable=False, server_default=sa.text("false")),
    )
    # Before this revision a trial had an Optuna trial only once it was finished there; trials
    # cancelled before it never had one and need none.
    op.execute(
        "UPDATE adamod_lab_trials SET optuna_final = true WHERE (optuna_trial_id IS NOT NULL"
        " AND state IN ('completed', 'diverged', 'failed')) OR state = 'cancelled'"
    )
    op.drop_index("ix_adamod_lab_trials_optuna_pending", table_name="adamod_lab_trials")
    op.create_index(
        "ix_adamod_lab_trials_optuna_pending",
        "adamod_lab_trials",
        ["finished_at"],
        postgresql_where=PENDING,
        sqlite_where=PENDING,
    )


def downgrade() -> None:
    op.drop_index("ix_adamod_lab_trials_optuna_pending", table_name="adamod_lab_trials")
    op.create_index(
        "ix_adamod_lab_trials_optuna_pending",
        "adamod_lab_trials",
        ["finished_at"],
        postgresql_where=OLD_PENDING,
        sqlite_where=OLD_PENDING,
    )
    with op.batch_alter_table("adamod_lab_trials") as batch:
        batch.drop_column("optuna_final")

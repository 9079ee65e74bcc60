"""Alembic environment: our own version table, so that Optuna's "alembic_version" is left alone."""

from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine

from studies.db.engine import VERSION_TABLE
from studies.db.models import Base

config = context.config


def _run(connection) -> None:  # type: ignore[no-untyped-def]
    context.configure(
        connection=connection,
        target_metadata=Base.metadata,
        version_table=VERSION_TABLE,
        render_as_batch=connection.dialect.name == "sqlite",
        # Only our tables: Optuna's share the database.
        include_name=lambda name, type_, _parent: (
            type_ != "table" or name.startswith("adamod_lab_")
        ),
    )
    with context.begin_transaction():
        context.run_migrations()


connection = config.attributes.get("connection")
if connection is not None:
    _run(connection)
else:
    # Command-line use: `alembic -x ... upgrade head` with sqlalchemy.url set.
    engine = create_engine(config.get_main_option("sqlalchemy.url"))
    with engine.begin() as conn:
        _run(conn)

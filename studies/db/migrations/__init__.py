"""Alembic migrations of AdaMod Lab's tables, applied programmatically (no alembic.ini needed)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

__all__ = ["HEAD_REVISION", "MIGRATIONS_DIR", "alembic_config", "upgrade_head"]

MIGRATIONS_DIR = Path(__file__).resolve().parent
# The newest revision in versions/ (a test checks it against Alembic's own view).
HEAD_REVISION = "0005"


def alembic_config(connection: Any = None, url: str | None = None) -> Any:
    """An Alembic Config pointing at these migrations, bound to a connection or a URL."""
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    if url is not None:
        config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    config.attributes["connection"] = connection
    return config


def upgrade_head(connection: Any) -> None:
    """Runs `alembic upgrade head` on an open connection (inside the caller's transaction)."""
    from alembic import command

    command.upgrade(alembic_config(connection), "head")

"""Optuna's own tables: how our processes open Optuna's storage, and creating its schema.

Its own module so that the engine (which creates the schema at migration) and the Optuna bridge
(which writes trials) both use it without importing each other.
"""

from __future__ import annotations

from typing import Any

__all__ = ["engine_kwargs", "init_optuna_schema"]


def engine_kwargs(url: str) -> dict[str, Any]:
    """SQLAlchemy engine options of Optuna's RDBStorage on our database."""
    if url.startswith("sqlite"):
        # Optuna's engine knows nothing of our workers writing at the same time: wait, don't fail.
        return {"connect_args": {"timeout": 30}}
    return {"pool_pre_ping": True, "pool_size": 2, "max_overflow": 4}


def init_optuna_schema(url: str) -> None:
    """Creates (or upgrades the check of) Optuna's tables; called by Database.migrate()."""
    import optuna

    storage = optuna.storages.RDBStorage(url, engine_kwargs=engine_kwargs(url))
    storage.engine.dispose()

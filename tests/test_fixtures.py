"""The shared database fixtures give real, empty, writable databases."""

from __future__ import annotations

import sqlalchemy as sa


def test_database_url_is_real_and_writable(database_url: str) -> None:
    engine = sa.create_engine(database_url)
    with engine.begin() as conn:
        conn.execute(sa.text("CREATE TABLE probe (x INTEGER)"))
        conn.execute(sa.text("INSERT INTO probe VALUES (1)"))
        assert conn.execute(sa.text("SELECT count(*) FROM probe")).scalar_one() == 1
    engine.dispose()

"""Floats stored in JSON columns come back as the floats that were sent, on SQLite and PostgreSQL.

PostgreSQL's JSONB keeps numbers as `numeric` and wrote 1e25 back as 10000000000000000000000000,
an int to Python; the engine's JSONB serializer writes such floats with a fraction instead.
"""

from __future__ import annotations

import json
import math
from typing import Any

import optuna
import pytest
from sqlalchemy import Column, Integer, MetaData, Table, insert, select, text

from studies.db import create_study, get_study, list_trials
from studies.db.engine import Database, json_dumps, postgres_json_dumps
from studies.db.models import JsonType, StudyRow, TrialRow
from tests.db.util import migrated, noop_spec

# Whole-number floats that repr writes with "e+" were the ones JSONB turned into ints.
FLOATS = [1e25, 1e300, 5e-324, 1.5e20, -1e38, 1e16, 1.0, 0.1, 1.7976931348623157e308]


def _types(values: list[Any]) -> list[type]:
    return [type(v) for v in values]


def test_json_column_round_trips_floats(database_url: str) -> None:
    db = Database(database_url)
    table = Table("json_floats", MetaData(), Column("id", Integer, primary_key=True))
    table.append_column(Column("value", JsonType))
    sent = {
        "floats": FLOATS,
        "ints": [10**25, 3, -7],
        "nested": {"x": [{"y": 1e25}], "s": "1e+25 in a string", "none": None, "flag": True},
    }
    try:
        table.create(db.engine)
        with db.engine.begin() as connection:
            connection.execute(insert(table).values(id=1, value=sent))
        with db.engine.connect() as connection:
            back = connection.execute(select(table.c.value)).scalar_one()
    finally:
        table.drop(db.engine, checkfirst=True)
        db.dispose()
    assert back == sent
    assert _types(back["floats"]) == [float] * len(FLOATS)
    assert _types(back["ints"]) == [int] * 3
    assert type(back["nested"]["x"][0]["y"]) is float
    # The same JSON text as was sent (each float's repr; JSONB orders keys its own way).
    assert json.dumps(back, sort_keys=True) == json.dumps(sent, sort_keys=True)


def test_negative_zero(database_url: str) -> None:
    # Equal value on both; PostgreSQL's numeric has no negative zero, so the sign is lost there.
    db = Database(database_url)
    try:
        with db.engine.connect() as connection:
            cast = "CAST(CAST(:v AS JSONB) AS TEXT)" if db.is_postgres else "json(:v)"
            back = json.loads(
                connection.execute(text(f"SELECT {cast}"), {"v": json_dumps([-0.0])}).scalar_one()
            )[0]
    finally:
        db.dispose()
    assert back == 0.0 and type(back) is float
    assert math.copysign(1.0, back) == (1.0 if db.is_postgres else -1.0)


def test_postgres_json_dumps_keeps_everything_else() -> None:
    value = {"a": [1e25, 2.5, 10**30, "e+", None], "k": {"1e+25": 1e17}}
    assert json.loads(postgres_json_dumps(value)) == value
    assert postgres_json_dumps({"a": [1.5, 3]}) == json_dumps({"a": [1.5, 3]})
    assert postgres_json_dumps([1e25]) == "[10000000000000000000000000.0]"
    with pytest.raises(ValueError):
        postgres_json_dumps([1e25, math.inf])


def test_study_spec_trial_configs_and_optuna_mirror_keep_floats(database_url: str) -> None:
    lrs = [1e-3, 1e25, 1e38]
    spec = noop_spec(n_lr=1, seeds=1, lr={"values": lrs}, eps=1e20, weight_decay=5e-324)
    sent = spec.model_dump(mode="json")
    db = migrated(database_url)
    try:
        view = create_study(db, spec)
        again = get_study(db, view.id)
        assert again is not None
        with db.session(readonly=True) as session:
            raw_spec = session.execute(
                select(StudyRow.spec).where(StudyRow.id == view.id)
            ).scalar_one()
            raw_configs = session.execute(
                select(TrialRow.config).where(TrialRow.study_id == view.id)
            ).scalars()
            raw_configs = list(raw_configs)
        trials = list_trials(db, view.id)
        assert trials is not None
    finally:
        db.dispose()
    for stored in (view.spec, again.spec, raw_spec):  # raw: without any schema-based repair
        assert stored == sent
        assert _types(stored["lr"]["values"]) == [float] * 3
        assert type(stored["eps"]) is float and type(stored["weight_decay"]) is float
        assert json.dumps(stored, sort_keys=True) == json.dumps(sent, sort_keys=True)
    assert sorted({c["lr"] for c in raw_configs}) == lrs
    assert all(type(c["lr"]) is float and type(c["eps"]) is float for c in raw_configs)
    assert sorted({t.params["lr"] for t in trials}) == lrs
    assert all(type(t.params["lr"]) is float for t in trials)

    mirror = optuna.load_study(study_name=view.optuna_study_name, storage=db.url)
    # The mirror's user attributes (Optuna keeps them as JSON text) show the floats as sent.
    assert type(mirror.user_attrs["spec.eps"]) is float
    assert json.loads(mirror.user_attrs["spec.lr"])["values"] == lrs
    assert "1e+25" in mirror.user_attrs["spec.lr"]

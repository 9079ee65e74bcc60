"""StudySpec validation (every bad field names itself), grid expansion and the canonical hash."""

from __future__ import annotations

import hashlib
import math
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from studies.spec import (
    DEFAULT_MAX_TRIALS,
    OPTIMIZERS,
    Budget,
    LrGrid,
    StudySpec,
    TrialConfig,
    expand_grid,
    load_spec,
)


def spec(**overrides: Any) -> dict[str, Any]:
    """A valid spec as a client would send it, with some fields replaced."""
    base: dict[str, Any] = {
        "name": "t",
        "workload": "quadratic",
        "lr": {"min": 1e-3, "max": 1e-1, "points": 3},
    }
    base.update(overrides)
    return base


def error_locs(data: dict[str, Any], **context: Any) -> list[tuple[Any, ...]]:
    with pytest.raises(ValidationError) as info:
        StudySpec.model_validate(data, context=context or None)
    return [tuple(e["loc"]) for e in info.value.errors()]


def test_defaults_are_filled_in() -> None:
    s = StudySpec.model_validate({"name": "n", "workload": "quadratic"})
    assert s.optimizers == ["adam", "adamod"]
    assert s.beta3 == [0.999]
    assert s.warmup_steps == [0]
    assert s.seeds == 3
    assert s.betas == (0.9, 0.999)
    assert s.eps == 1e-8
    assert s.weight_decay == 0.0
    assert s.priority == 0
    assert s.budget == Budget(steps=300)  # the quadratic's default
    assert s.workload_config["dim"] == 32  # normalized by the workload's config model
    assert len(s.lr.values()) == 7


def test_normalized_spec_round_trips() -> None:
    s = StudySpec.model_validate(spec(lr={"values": [0.1, 0.01]}, budget={"epochs": 2}))
    dumped = s.model_dump(mode="json")
    assert dumped["lr"]["values"] == [0.01, 0.1]
    again = StudySpec.model_validate(dumped)
    assert again == s
    assert [c.key() for c in expand_grid(again)] == [c.key() for c in expand_grid(s)]


@pytest.mark.parametrize(
    ("overrides", "loc"),
    [
        ({"name": ""}, ("name",)),
        ({"name": "   "}, ("name",)),
        ({"workload": "nope"}, ("workload",)),
        ({"workload": "studies.workloads.quadratic:WORKLOAD"}, ("workload",)),
        ({"workload_config": {"dim": 0}}, ("workload_config", "dim")),
        ({"workload_config": {"unknown_key": 1}}, ("workload_config", "unknown_key")),
        ({"optimizers": ["adam", "lion"]}, ("optimizers", 1)),
        ({"optimizers": []}, ("optimizers",)),
        ({"optimizers": ["adam", "adam"]}, ("optimizers",)),
        ({"lr": {"min": 0, "max": 1, "points": 3}}, ("lr", "min")),
        ({"lr": {"min": -1e-3, "max": 1, "points": 3}}, ("lr", "min")),
        ({"lr": {"min": 1e-1, "max": 1e-3, "points": 3}}, ("lr", "max")),
        ({"lr": {"min": 1e-3, "max": 1e-1, "points": 0}}, ("lr", "points")),
        ({"lr": {"min": 1e-3, "max": 1e-1, "points": 1}}, ("lr", "points")),
        ({"lr": {"min": 1e-3, "max": 1e-3, "points": 4}}, ("lr", "points")),
        ({"lr": {"min": 1e-3, "max": float("inf"), "points": 3}}, ("lr", "max")),
        ({"lr": {"min": 1e-3, "points": 3}}, ("lr",)),
        ({"lr": {"values": [0.1], "min": 1e-3}}, ("lr",)),
        ({"lr": {"values": []}}, ("lr", "values")),
        ({"lr": {"values": [0.1, -0.1]}}, ("lr", "values", 1)),
        ({"lr": {"values": [0.1, 0.1]}}, ("lr", "values")),
        ({"lr": {"values": [0.1], "step": 2}}, ("lr", "step")),
        ({"beta3": [1.0]}, ("beta3", 0)),
        ({"beta3": [0.9, -0.1]}, ("beta3", 1)),
        ({"beta3": []}, ("beta3",)),
        ({"beta3": [0.9, 0.9]}, ("beta3",)),
        ({"warmup_steps": [-1]}, ("warmup_steps", 0)),
        ({"warmup_steps": [0, 0]}, ("warmup_steps",)),
        ({"seeds": 0}, ("seeds",)),
        ({"seeds": 2.5}, ("seeds",)),
        ({"seeds": True}, ("seeds",)),
        ({"budget": {"epochs": 0}}, ("budget", "epochs")),
        ({"budget": {"steps": -5}}, ("budget", "steps")),
        ({"budget": {"steps": 5, "epochs": 1}}, ("budget",)),
        ({"budget": {}}, ("budget",)),
        ({"betas": [0.9, 1.0]}, ("betas", 1)),
        ({"betas": [0.9]}, ("betas", 1)),
        ({"eps": 0}, ("eps",)),
        ({"weight_decay": -0.1}, ("weight_decay",)),
        ({"priority": "high"}, ("priority",)),
        ({"priority": 2**31}, ("priority",)),
        ({"colour": "blue"}, ("colour",)),
    ],
)
def test_every_bad_field_is_named(overrides: dict[str, Any], loc: tuple[Any, ...]) -> None:
    assert loc in error_locs(spec(**overrides))


def test_unknown_workload_message_lists_known_ones() -> None:
    with pytest.raises(ValidationError) as info:
        StudySpec.model_validate(spec(workload="nope"))
    assert "quadratic" in str(info.value) and "nope" in str(info.value)


def test_grid_size_limit_default_and_context() -> None:
    # 1 optimizer x 5001 lrs x 1 seed: one over the default maximum
    big = spec(optimizers=["adam"], seeds=1, lr={"min": 1e-6, "max": 1.0, "points": 5001})
    assert ("lr",) in error_locs(big)
    ok = spec(optimizers=["adam"], seeds=1, lr={"min": 1e-6, "max": 1.0, "points": 5000})
    assert StudySpec.model_validate(ok).n_trials == DEFAULT_MAX_TRIALS
    assert ("lr",) in error_locs(spec(seeds=10), max_trials=10)
    with pytest.raises(ValidationError, match="maximum of 10"):
        StudySpec.model_validate(spec(seeds=10), context={"max_trials": 10})


def test_grid_expansion_counts_and_order() -> None:
    s = StudySpec.model_validate(
        spec(
            optimizers=["adam", "adamod", "diffmod", "sgd"],
            beta3=[0.99, 0.999],
            warmup_steps=[0, 10],
            seeds=2,
        )
    )
    configs = expand_grid(s)
    # unbounded: 3 lr x 2 warmup x 2 seeds = 12; bounded: x 2 beta3 = 24
    assert len(configs) == s.n_trials == 12 + 24 + 24 + 12
    assert [c.optimizer for c in configs[:13]] == ["adam"] * 12 + ["adamod"]
    assert all(c.beta3 is None for c in configs if c.optimizer in ("adam", "sgd"))
    assert {c.beta3 for c in configs if c.optimizer == "adamod"} == {0.99, 0.999}
    assert [c.seed for c in configs[:4]] == [0, 1, 0, 1]
    assert [c.warmup_steps for c in configs[:4]] == [0, 0, 10, 10]
    assert len({c.key() for c in configs}) == len(configs)
    # expand_grid builds without validation for speed: each config still validates
    for c in configs[:: len(configs) // 7]:
        assert TrialConfig.model_validate(c.model_dump()).key() == c.key()


def test_lr_grid_is_log_spaced_with_exact_ends() -> None:
    grid = LrGrid(min=1e-4, max=1e-1, points=4).values()
    assert grid[0] == 1e-4 and grid[-1] == 1e-1
    assert [round(math.log10(v), 9) for v in grid] == [-4, -3, -2, -1]
    assert LrGrid(min=3e-3, max=3e-3, points=1).values() == [3e-3]
    assert LrGrid.model_validate({"values": [0.3, 0.01]}).values() == [0.01, 0.3]


def test_trial_key_is_canonical_and_sensitive() -> None:
    a = expand_grid(StudySpec.model_validate(spec(seeds=1)))[0]
    b = expand_grid(StudySpec.model_validate(spec(seeds=1)))[0]
    assert a.key() == b.key() and len(a.key()) == 64
    # a fixed expected key would pin the serialization; the hash must not drift silently
    assert a.key() == TrialConfig.model_validate_json(a.model_dump_json()).key()
    for change in ({"lr": a.lr * 1.0001}, {"seed": 1}, {"warmup_steps": 5}, {"eps": 1e-7}):
        assert a.model_copy(update=change).key() != a.key()
    params = a.params()
    assert params == {
        "optimizer": "adam",
        "lr": a.lr,
        "beta3": None,
        "warmup_steps": 0,
        "seed": 0,
    }


def test_trial_config_beta3_must_match_optimizer() -> None:
    base = {"workload": "quadratic", "lr": 0.01, "budget": {"steps": 3}}
    with pytest.raises(ValidationError, match="needs beta3"):
        TrialConfig.model_validate({**base, "optimizer": "adamod"})
    with pytest.raises(ValidationError, match="takes no beta3"):
        TrialConfig.model_validate({**base, "optimizer": "adam", "beta3": 0.9})


def test_load_spec_reads_yaml_and_reports_problems(tmp_path) -> None:  # type: ignore[no-untyped-def]
    good = tmp_path / "s.yaml"
    good.write_text("name: y\nworkload: quadratic\nlr: {values: [0.01]}\nseeds: 1\n")
    assert load_spec(good).n_trials == 2
    with pytest.raises(FileNotFoundError, match=r"missing\.yaml"):
        load_spec(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: [unclosed\n")
    with pytest.raises(ValueError, match="not valid YAML"):
        load_spec(bad)
    listy = tmp_path / "list.yaml"
    listy.write_text("- 1\n")
    with pytest.raises(ValueError, match="mapping"):
        load_spec(listy)
    with pytest.raises(ValidationError, match="maximum of 1"):
        load_spec(good, max_trials=1)


def test_canonical_json_is_pinned() -> None:
    # Keys are stored with trials; a change here silently re-keys every stored trial.
    cfg = TrialConfig.model_validate(
        {
            "workload": "noop",
            "workload_config": {"steps_per_epoch": 2},
            "optimizer": "adamod",
            "lr": 0.001,
            "beta3": 0.999,
            "warmup_steps": 10,
            "seed": 2,
            "budget": {"steps": 5},
        }
    )
    assert cfg.canonical_json() == (
        '{"beta3":0.999,"betas":[0.9,0.999],"budget":{"steps":5},"eps":1e-08,"lr":0.001,'
        '"optimizer":"adamod","seed":2,"warmup_steps":10,"weight_decay":0.0,"workload":"noop",'
        '"workload_config":{"steps_per_epoch":2}}'
    )
    assert cfg.key() == hashlib.sha256(cfg.canonical_json().encode()).hexdigest()


@settings(max_examples=40, deadline=None)
@given(
    optimizers=st.lists(st.sampled_from(OPTIMIZERS), min_size=1, max_size=5, unique=True),
    n_lr=st.integers(1, 6),
    beta3=st.lists(st.sampled_from([0.0, 0.9, 0.99, 0.999]), min_size=1, max_size=4, unique=True),
    warmup=st.lists(st.integers(0, 500), min_size=1, max_size=3, unique=True),
    seeds=st.integers(1, 4),
)
def test_n_trials_matches_expansion(
    optimizers: list[str], n_lr: int, beta3: list[float], warmup: list[int], seeds: int
) -> None:
    lr = {"values": [10.0**-k for k in range(1, n_lr + 1)]}
    s = StudySpec.model_validate(
        spec(optimizers=optimizers, lr=lr, beta3=beta3, warmup_steps=warmup, seeds=seeds)
    )
    configs = expand_grid(s)
    assert len(configs) == s.n_trials
    assert len({c.key() for c in configs}) == len(configs)

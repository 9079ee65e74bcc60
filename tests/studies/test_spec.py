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
    MAX_AXIS_VALUES,
    MAX_LR_VALUES,
    OPTIMIZERS,
    SCHEDULES,
    Budget,
    LrGrid,
    StudySpec,
    TrialConfig,
    auto_warmup_steps,
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
    assert s.schedule == ["constant"]
    assert s.seeds == 6  # the fewest for which the exact paired test can reach p <= 0.05
    assert 2 / 2**s.seeds <= 0.05 < 2 / 2 ** (s.seeds - 1)
    assert s.reference is None  # decided by the report (adamw with weight decay, else adam)
    assert s.target_loss is None
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
        # v2 fields
        ({"optimizers": ["adam", "nadam"]}, ("optimizers", 1)),
        ({"schedule": ["linear"]}, ("schedule", 0)),
        ({"schedule": ["cosine", "cosine"]}, ("schedule",)),
        ({"schedule": []}, ("schedule",)),
        ({"schedule": "cosine"}, ("schedule",)),
        ({"warmup_steps": ["Auto"]}, ("warmup_steps", 0)),
        ({"warmup_steps": [0, "10"]}, ("warmup_steps", 1)),
        ({"warmup_steps": [True]}, ("warmup_steps", 0)),
        ({"warmup_steps": [10.0]}, ("warmup_steps", 0)),
        ({"warmup_steps": [None]}, ("warmup_steps", 0)),
        ({"warmup_steps": [10**9]}, ("warmup_steps", 0)),
        ({"warmup_steps": ["auto", "auto"]}, ("warmup_steps",)),
        ({"warmup_steps": [2000, "auto"]}, ("warmup_steps",)),  # auto = 2000 at beta2 0.999
        ({"warmup_steps": ["auto"], "betas": [0.9, 1 - 1e-15]}, ("warmup_steps",)),  # too long
        ({"reference": "adamw"}, ("reference",)),  # not among the default [adam, adamod]
        ({"reference": "lion"}, ("reference",)),
        ({"target_loss": float("nan")}, ("target_loss",)),
        ({"target_loss": float("inf")}, ("target_loss",)),
        # every number is a JSON number: no booleans, no strings
        ({"target_loss": "1"}, ("target_loss",)),
        ({"target_loss": True}, ("target_loss",)),
        ({"eps": "1e-8"}, ("eps",)),
        ({"eps": True}, ("eps",)),
        ({"weight_decay": True}, ("weight_decay",)),
        ({"weight_decay": "0.1"}, ("weight_decay",)),
        ({"betas": [True, 0.9]}, ("betas", 0)),
        ({"betas": ["0.9", 0.999]}, ("betas", 0)),
        ({"beta3": [False]}, ("beta3", 0)),
        ({"beta3": ["0.9"]}, ("beta3", 0)),
        ({"lr": {"values": ["0.1"]}}, ("lr", "values", 0)),
        ({"lr": {"values": [True]}}, ("lr", "values", 0)),
        ({"lr": {"min": True, "max": 1.0, "points": 3}}, ("lr", "min")),
        ({"lr": {"min": 1e-3, "max": "1", "points": 3}}, ("lr", "max")),
        ({"lr": {"min": 1e-3, "max": 1.0, "points": "3"}}, ("lr", "points")),
        ({"seeds": "6"}, ("seeds",)),
        ({"priority": True}, ("priority",)),
        ({"budget": {"steps": "5"}}, ("budget", "steps")),
        ({"budget": {"epochs": True}}, ("budget", "epochs")),
        ({"workload_config": {"dim": "32"}}, ("workload_config", "dim")),
        ({"workload_config": {"noise": True}}, ("workload_config", "noise")),
        # every list is bounded
        ({"beta3": [i / 1000 for i in range(MAX_AXIS_VALUES + 1)]}, ("beta3",)),
        ({"warmup_steps": list(range(MAX_AXIS_VALUES + 1))}, ("warmup_steps",)),
        ({"lr": {"values": [1e-6 * (i + 1) for i in range(MAX_LR_VALUES + 1)]}}, ("lr", "values")),
        ({"optimizers": [*OPTIMIZERS, "adam"]}, ("optimizers",)),
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
    # schedules multiply the grid, and the message says they are one of the axes to cut
    ok = spec(optimizers=["adam"], seeds=1, lr={"min": 1e-6, "max": 1.0, "points": 2500})
    assert StudySpec.model_validate(ok).n_trials == 2500
    with pytest.raises(ValidationError, match="schedules") as info:
        StudySpec.model_validate({**ok, "schedule": ["constant", "cosine"], "seeds": 2})
    assert [tuple(e["loc"]) for e in info.value.errors()] == [("lr",)]
    assert "10000 trials" in str(info.value)


def test_numbers_accept_json_integers() -> None:
    # strict means "a JSON number", not "a float literal": 1 is a fine weight decay or lr
    s = StudySpec.model_validate(
        spec(lr={"values": [1]}, weight_decay=1, eps=1, betas=[0, 0], beta3=[0], target_loss=2)
    )
    assert s.lr.values() == [1.0] and s.weight_decay == 1.0 and s.target_loss == 2.0
    assert StudySpec.model_validate(spec(target_loss=-3.5)).target_loss == -3.5  # any finite


def test_warmup_auto_is_kept_in_the_spec_and_resolved_in_trials() -> None:
    assert auto_warmup_steps(0.999) == 2000
    assert auto_warmup_steps(0.99) == 200
    assert auto_warmup_steps(0.0) == 2
    s = StudySpec.model_validate(
        spec(optimizers=["adam"], seeds=1, lr={"values": [0.01]}, warmup_steps=[0, "auto"])
    )
    assert s.warmup_steps == [0, "auto"]
    assert s.model_dump(mode="json")["warmup_steps"] == [0, "auto"]
    assert s.resolved_warmup_steps() == [0, 2000]
    assert [c.warmup_steps for c in expand_grid(s)] == [0, 2000]
    assert all(isinstance(c.warmup_steps, int) for c in expand_grid(s))
    # "auto" follows the spec's beta2
    s = StudySpec.model_validate(spec(warmup_steps=["auto"], betas=[0.9, 0.98]))
    assert {c.warmup_steps for c in expand_grid(s)} == {100}
    # no clash with an explicit number when beta2 moves "auto" elsewhere
    s = StudySpec.model_validate(spec(warmup_steps=[2000, "auto"], betas=[0.9, 0.99]))
    assert s.resolved_warmup_steps() == [2000, 200]
    with pytest.raises(ValidationError, match=r"resolves to 2000 steps.*list it once"):
        StudySpec.model_validate(spec(warmup_steps=[2000, "auto"]))
    # the round trip keeps "auto" and gives the same trials
    again = StudySpec.model_validate(s.model_dump(mode="json"))
    assert [c.key() for c in expand_grid(again)] == [c.key() for c in expand_grid(s)]


def test_reference_must_be_one_of_the_optimizers() -> None:
    s = StudySpec.model_validate(spec(optimizers=["adamw", "adamod"], reference="adamw"))
    assert s.reference == "adamw"
    with pytest.raises(ValidationError, match=r"reference 'sgd' is not one of"):
        StudySpec.model_validate(spec(reference="sgd"))
    # an invalid optimizer list is reported once, not again as a bad reference
    assert error_locs(spec(optimizers=["lion"], reference="adam")) == [("optimizers", 0)]


def test_new_optimizers_are_accepted() -> None:
    assert {"radam", "nadamw"} <= set(OPTIMIZERS)
    s = StudySpec.model_validate(spec(optimizers=list(OPTIMIZERS), beta3=[0.9, 0.99], seeds=1))
    configs = expand_grid(s)
    assert {c.optimizer for c in configs} == set(OPTIMIZERS)
    assert len(configs) == s.n_trials == 3 * (len(OPTIMIZERS) - 2) + 3 * 2 * 2


def test_spec_yaml_reads_exponents_as_numbers(tmp_path) -> None:  # type: ignore[no-untyped-def]
    # PyYAML (YAML 1.1) reads 1e-8 as a string; with strict numbers that would be an error
    path = tmp_path / "s.yaml"
    path.write_text(
        "name: y\nworkload: quadratic\nlr: {min: 1e-4, max: 1E-1, points: 4}\neps: 1e-8\n"
        "warmup_steps: [0, auto]\nschedule: [constant, cosine]\ntarget_loss: .5\n"
    )
    s = load_spec(path)
    assert s.eps == 1e-8 and s.lr.values()[0] == 1e-4 and s.lr.values()[-1] == 0.1
    assert s.warmup_steps == [0, "auto"] and s.schedule == ["constant", "cosine"]
    assert s.target_loss == 0.5
    quoted = tmp_path / "q.yaml"
    quoted.write_text('name: y\nworkload: quadratic\neps: "1e-8"\n')
    with pytest.raises(ValidationError, match="eps"):
        load_spec(quoted)


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


def test_grid_expansion_with_schedules() -> None:
    s = StudySpec.model_validate(
        spec(
            optimizers=["adam", "adamod"],
            beta3=[0.99, 0.999],
            warmup_steps=[0, 10],
            schedule=["cosine", "constant"],
            seeds=2,
        )
    )
    configs = expand_grid(s)
    # per schedule: adam 3 lr x 2 warmup x 2 seeds = 12, adamod x 2 beta3 = 24
    assert len(configs) == s.n_trials == 2 * (12 + 24)
    # order: optimizer, schedule (as listed), lr, beta3, warmup, seed
    coords = [(c.optimizer, c.schedule, c.lr, c.beta3, c.warmup_steps, c.seed) for c in configs]
    lrs = s.lr.values()
    expected = [
        (opt, sched, lr, b3, w, seed)
        for opt in ("adam", "adamod")
        for sched in ("cosine", "constant")
        for lr in lrs
        for b3 in ([None] if opt == "adam" else [0.99, 0.999])
        for w in (0, 10)
        for seed in (0, 1)
    ]
    assert coords == expected
    assert len({c.key() for c in configs}) == len(configs)
    assert {c.params()["schedule"] for c in configs} == set(SCHEDULES)
    for c in configs[::9]:
        assert TrialConfig.model_validate(c.model_dump(mode="json")) == c


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
    changes: list[dict[str, Any]] = [
        {"lr": a.lr * 1.0001},
        {"seed": 1},
        {"warmup_steps": 5},
        {"eps": 1e-7},
        {"schedule": "cosine"},
    ]
    for change in changes:
        assert a.model_copy(update=change).key() != a.key()
    params = a.params()
    assert params == {
        "optimizer": "adam",
        "lr": a.lr,
        "beta3": None,
        "warmup_steps": 0,
        "schedule": "constant",
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


def test_constant_schedule_keeps_the_keys_of_stored_trials() -> None:
    # A trial stored (or written to trials.jsonl) before schedules existed has no schedule in
    # its canonical JSON; the same config today is schedule "constant" and must hash the same.
    old = {
        "workload": "noop",
        "workload_config": {"steps_per_epoch": 2},
        "optimizer": "adamod",
        "lr": 0.001,
        "beta3": 0.999,
        "warmup_steps": 10,
        "seed": 2,
        "budget": {"steps": 5},
    }
    pinned = "af7c89ae2e8a7c958dacc0e19a18b6141f50c629b24e5935c965511c4c6d643c"  # v1 code
    stored = TrialConfig.model_validate(old)  # an old config row, read back
    assert stored.schedule == "constant"
    assert stored.key() == pinned
    assert TrialConfig.model_validate({**old, "schedule": "constant"}).key() == pinned
    cosine = TrialConfig.model_validate({**old, "schedule": "cosine"})
    assert '"schedule":"cosine"' in cosine.canonical_json()
    assert cosine.key() != pinned
    # and through the grid: a constant-only spec gives the key v1's expand_grid gave (computed
    # with the code before schedules; it includes the noop config's normalized defaults)
    s = StudySpec.model_validate(
        {
            "name": "n",
            "workload": "noop",
            "workload_config": {"steps_per_epoch": 2},
            "optimizers": ["adamod"],
            "lr": {"values": [0.001]},
            "warmup_steps": [10],
            "seeds": 3,
            "budget": {"steps": 5},
        }
    )
    grid_key = "ce57afd85ee72178423d2cfebca8a37e54fbd411fba40429973ba3c2ce9c27cc"
    assert expand_grid(s)[2].key() == grid_key


@settings(max_examples=40, deadline=None)
@given(
    optimizers=st.lists(st.sampled_from(OPTIMIZERS), min_size=1, max_size=7, unique=True),
    n_lr=st.integers(1, 6),
    beta3=st.lists(st.sampled_from([0.0, 0.9, 0.99, 0.999]), min_size=1, max_size=4, unique=True),
    warmup=st.lists(
        st.one_of(st.integers(0, 500), st.just("auto")), min_size=1, max_size=3, unique=True
    ),
    schedule=st.lists(st.sampled_from(SCHEDULES), min_size=1, max_size=2, unique=True),
    seeds=st.integers(1, 4),
)
def test_n_trials_matches_expansion(
    optimizers: list[str],
    n_lr: int,
    beta3: list[float],
    warmup: list[int | str],
    schedule: list[str],
    seeds: int,
) -> None:
    lr = {"values": [10.0**-k for k in range(1, n_lr + 1)]}
    s = StudySpec.model_validate(
        spec(
            optimizers=optimizers,
            lr=lr,
            beta3=beta3,
            warmup_steps=warmup,
            schedule=schedule,
            seeds=seeds,
        )
    )
    configs = expand_grid(s)
    assert len(configs) == s.n_trials
    assert len({c.key() for c in configs}) == len(configs)

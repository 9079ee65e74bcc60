"""Third-party workloads through the `adamod_lab.workloads` entry-point group, in a subprocess.

A temporary folder on sys.path holds a plugin module and a `*.dist-info` with entry_points.txt,
which is exactly what `pip install` of a plugin package leaves behind. A broken entry point must
produce a warning and leave every other workload usable.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from studies.workloads import UnknownWorkloadError, get_workload, register_workload

PLUGIN = """
from studies.spec import Budget
from studies.workloads import Workload
from studies.workloads.noop import WORKLOAD as NOOP

WORKLOAD = Workload(
    name="toy",
    description="a plugin workload",
    config_model=NOOP.config_model,
    default_budget=Budget(steps=4),
    build=NOOP.build,
)
NOT_A_WORKLOAD = 42
WRONG_NAME = Workload(
    name="other", description="x", config_model=NOOP.config_model,
    default_budget=Budget(steps=1), build=NOOP.build,
)
SHADOW = Workload(
    name="quadratic", description="x", config_model=NOOP.config_model,
    default_budget=Budget(steps=1), build=NOOP.build,
)
"""

ENTRY_POINTS = """
[adamod_lab.workloads]
toy = toy_plugin:WORKLOAD
missing = no_such_module:WORKLOAD
number = toy_plugin:NOT_A_WORKLOAD
misnamed = toy_plugin:WRONG_NAME
quadratic = toy_plugin:SHADOW
"""

CHECK = """
import json, warnings
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    from studies.workloads.registry import list_workloads, plugin_errors
    names = [w.name for w in list_workloads()]
from studies.spec import StudySpec, expand_grid
from studies.trial import run_trial
spec = StudySpec.model_validate(
    {"name": "p", "workload": "toy", "optimizers": ["adam"], "seeds": 1, "lr": {"values": [0.1]}}
)
result = run_trial(expand_grid(spec)[0])
print(json.dumps({
    "names": names,
    "errors": sorted(plugin_errors()),
    "warnings": [str(w.message) for w in caught],
    "budget": spec.budget.model_dump(exclude_none=True),
    "state": result.state,
    "steps": result.steps,
}))
"""


def test_entry_point_plugins_register_and_broken_ones_warn(tmp_path: Path) -> None:
    (tmp_path / "toy_plugin.py").write_text(PLUGIN)
    dist = tmp_path / "toy_plugin-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: toy-plugin\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text(textwrap.dedent(ENTRY_POINTS))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), os.getcwd()])}
    proc = subprocess.run(
        [sys.executable, "-c", CHECK], env=env, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert "toy" in out["names"] and "quadratic" in out["names"]
    assert not {"missing", "number", "misnamed"} & set(out["names"])
    assert out["errors"] == ["misnamed", "missing", "number", "quadratic"]
    joined = "\n".join(out["warnings"])
    for text in ("no_such_module", "not a Workload", "'other'", "already taken"):
        assert text in joined
    assert out["budget"] == {"steps": 4}
    assert (out["state"], out["steps"]) == ("completed", 4)


def test_get_workload_unknown_name_is_key_and_value_error() -> None:
    with pytest.raises(UnknownWorkloadError, match=r"registered workloads: .*quadratic"):
        get_workload("nope")
    with pytest.raises(KeyError):
        get_workload("nope")
    with pytest.raises(ValueError):
        get_workload("nope")


def test_register_workload_rejects_bad_input() -> None:
    quadratic = get_workload("quadratic")
    with pytest.raises(TypeError, match="Workload"):
        register_workload("quadratic")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="already registered"):
        register_workload(
            type(quadratic)(
                name="quadratic", description="x", config_model=quadratic.config_model,
                default_budget=quadratic.default_budget, build=quadratic.build,
            )
        )  # fmt: skip
    assert register_workload(quadratic) is quadratic  # the same object again is harmless

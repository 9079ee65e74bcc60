"""The built wheel ships the C source of the fused CPU kernel, and fused=True works from it.

The kernel is compiled from adamod/_cpu_kernel.c on first use, so a wheel without the .c file
installs fine and then fails at the first fused step. The wheel is built offline from a copy of
pyproject.toml, README.md and adamod/ (the other packages are irrelevant here and building in the
checkout would write build/ and *.egg-info into it).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

FUSED_STEP = """
import sys, torch, adamod
from pathlib import Path
assert Path(adamod.__file__).resolve().is_relative_to(Path(sys.argv[1]).resolve()), adamod.__file__
p = torch.nn.Parameter(torch.ones(1000))
opt = adamod.AdaMod([p], lr=0.1, fused=True)
p.grad = torch.ones(1000)
opt.step()
assert torch.all(p < 1), p
print("ok")
"""


def _build_wheel(tmp_path: Path) -> Path:
    """Build the project's wheel offline into tmp_path/dist, or skip saying why not."""
    source = tmp_path / "src"
    source.mkdir()
    shutil.copy(ROOT / "pyproject.toml", source)
    shutil.copy(ROOT / "README.md", source)
    shutil.copytree(
        ROOT / "adamod", source / "adamod", ignore=shutil.ignore_patterns("__pycache__")
    )
    dist = tmp_path / "dist"
    command = [sys.executable, "-m", "pip", "wheel", str(source), "--no-deps"]
    command += ["--no-build-isolation", "--no-index", "-w", str(dist), "-q"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    wheels = list(dist.glob("*.whl"))
    if result.returncode != 0 or len(wheels) != 1:
        pytest.skip(f"the wheel cannot be built here: {result.stderr[-2000:]}")
    return wheels[0]


@pytest.mark.slow
def test_wheel_ships_kernel_source_and_fused_step_runs_from_it(tmp_path: Path) -> None:
    """The .c file is in the wheel; installed from it, fused=True compiles and steps."""
    wheel = _build_wheel(tmp_path)
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
    assert "adamod/_cpu_kernel.c" in names, names

    if shutil.which(os.environ.get("CC") or "cc") is None and shutil.which("gcc") is None:
        pytest.skip("no C compiler: the fused CPU kernel cannot be compiled here")
    # an install of its own, without dependencies: torch comes from this interpreter's site
    target = tmp_path / "installed"
    install = [sys.executable, "-m", "pip", "install", "--no-deps", "--no-index", "-q"]
    subprocess.run(
        [*install, "--target", str(target), str(wheel)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    cache = tmp_path / "kernel-cache"
    env = {**os.environ, "PYTHONPATH": str(target), "ADAMOD_KERNEL_DIR": str(cache)}
    env.pop("PYTHONSAFEPATH", None)
    # cwd outside the checkout, so that the checkout's adamod/ cannot be the one imported
    result = subprocess.run(
        [sys.executable, "-c", FUSED_STEP, str(target)],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"
    assert list(cache.glob("adamod_kernel_*.so")), "the kernel was not compiled into the cache"

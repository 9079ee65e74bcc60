"""Render every overlay with kustomize into rendered/<overlay>.yaml (the files tests validate).

    python deploy/kubernetes/render.py           # rewrite rendered/*.yaml
    python deploy/kubernetes/render.py --check   # exit 1 if a rendered file is out of date

The renderer is a `kustomize` binary on PATH (`kustomize build`), else kubectl's built-in one
(`kubectl kustomize`, kubectl >= 1.14). Run it after every change under base/, overlays/ or
components/, and commit the rendered files with the change: they let anyone without kustomize
read, diff or `kubectl apply -f` exactly what an overlay deploys.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
RENDERED = HERE / "rendered"
# The overlays that get a rendered file, in this order.
OVERLAYS = ("gpu", "cpu", "dashboard", "external-db")
HEADER = (
    "# Rendered from deploy/kubernetes/overlays/{name} by deploy/kubernetes/render.py: do not\n"
    "# edit; change base/, overlays/ or components/ and run the script again.\n"
)


def renderer() -> list[str] | None:
    """The command that renders a kustomization folder (appended), or None when none is here."""
    if shutil.which("kustomize"):
        return ["kustomize", "build"]
    if shutil.which("kubectl"):
        return ["kubectl", "kustomize"]
    return None


def render(name: str, command: list[str] | None = None) -> str:
    """The rendered manifests of overlays/<name>, with the header."""
    command = command or renderer()
    if command is None:
        raise RuntimeError("no kustomize renderer: install kustomize or kubectl")
    result = subprocess.run(
        [*command, str(HERE / "overlays" / name)],
        check=True,
        capture_output=True,
        text=True,
        timeout=120,
    )
    return HEADER.format(name=name) + result.stdout


def rendered_path(name: str) -> Path:
    return RENDERED / f"{name}.yaml"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only check, write nothing")
    args = parser.parse_args(argv)
    command = renderer()
    if command is None:
        print("render.py: no kustomize renderer (kustomize or kubectl) on PATH", file=sys.stderr)
        return 2
    stale = []
    for name in OVERLAYS:
        text = render(name, command)
        path = rendered_path(name)
        if args.check:
            if not path.is_file() or path.read_text() != text:
                stale.append(path)
            continue
        RENDERED.mkdir(exist_ok=True)
        path.write_text(text)
        print(f"wrote {path.relative_to(HERE)}")
    for path in stale:
        print(f"out of date: {path.relative_to(HERE)} (run render.py)", file=sys.stderr)
    return 1 if stale else 0


if __name__ == "__main__":
    sys.exit(main())

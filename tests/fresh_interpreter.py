"""Running a snippet in a fresh Python interpreter: for tests of per-process state (lazy imports,
the garbage collector's generations, glibc's malloc settings) that this test process has long
since changed."""

from __future__ import annotations

import subprocess
import sys
import textwrap


def run_fresh(code: str) -> str:
    """Run `code` (dedented) in a fresh interpreter; its stdout, stripped. Fails the test, with
    the child's stderr, when it exits non-zero."""
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()

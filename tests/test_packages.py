"""The four top-level packages import, and adamod imports nothing of ours."""

from __future__ import annotations

import subprocess
import sys

CHECK_ADAMOD_STANDS_ALONE = (
    "import sys, adamod\n"
    "ours = {'studies', 'service', 'workers'}\n"
    "assert not any(m.split('.')[0] in ours for m in sys.modules)\n"
)


def test_adamod_imports_without_project_packages() -> None:
    subprocess.run([sys.executable, "-c", CHECK_ADAMOD_STANDS_ALONE], check=True)

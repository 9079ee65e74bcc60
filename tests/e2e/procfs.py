"""What /proc says about the processes `adamod-lab up` starts: its children, and whether one is
still alive (a zombie is not: it has exited and waits for its parent to reap it)."""

from __future__ import annotations

from pathlib import Path

__all__ = ["alive", "children"]

# The spec both `up` tests submit: 12 noop trials of 3 steps.
SPEC_YAML = """\
name: cli quick
workload: noop
workload_config: {steps_per_epoch: 3}
optimizers: [adam, adamod]
lr: {min: 1.0e-3, max: 1.0e-1, points: 3}
seeds: 2
budget: {steps: 3}
"""


def _stat_fields(pid: int | str) -> list[str] | None:
    """The fields of /proc/PID/stat after the command name (state first, then the parent)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None


def alive(pid: int) -> bool:
    """True while ``pid`` runs (not exited, not a zombie)."""
    fields = _stat_fields(pid)
    return fields is not None and fields[0] != "Z"


def children(pid: int) -> list[int]:
    """The live direct children of ``pid``."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            fields = _stat_fields(entry.name)
            if fields is not None and int(fields[1]) == pid and fields[0] != "Z":
                found.append(int(entry.name))
    return found

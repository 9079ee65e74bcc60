"""Checkpoints of long trials: a directory of named training states, and when to write them.

A trial whose worker dies (machine lost, trainer killed) is queued again (ARCHITECTURE.md,
"Workers"); without a checkpoint its re-run starts from step 0 and the compute is spent twice.
`run_trial` saves its full training state to a `CheckpointStore` whenever the `Checkpointing`
policy says so, resumes from it on the next attempt, and deletes it when the trial ends.

The store is a plain directory (a shared volume across machines), one file per name. Writes are
atomic (a temporary file in the same directory, then `os.replace`), so a reader sees the old
checkpoint or the new one, never half of one; a file that still cannot be read (a truncated copy,
a disk error, another format) is ignored with a warning: the trial then starts over, which is
slower but never wrong. Files are read with `torch.load(weights_only=True)`, so a checkpoint on a
shared volume can hold tensors and plain values only and cannot run code when it is loaded.

Both classes hold only a path, a name and numbers, so they pickle: a worker sends them to its
trainer child process.
"""

from __future__ import annotations

import logging
import math
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

__all__ = ["CHECKPOINT_SUFFIX", "CheckpointStore", "Checkpointing", "check_checkpoint_name"]

logger = logging.getLogger(__name__)

CHECKPOINT_SUFFIX = ".pt"
_TEMP_SUFFIX = ".tmp"  # never a checkpoint: a name's file is always <name>.pt


def check_checkpoint_name(name: object, argument: str = "name") -> str:
    """`name` if it can name one file inside the store's directory, else a ValueError naming
    `argument` (empty, a path separator, '.' or '..', a NUL: each would escape or break the
    directory)."""
    if not isinstance(name, str) or not name:
        raise ValueError(f"{argument}: a checkpoint name must be a non-empty string, got {name!r}")
    separators = {"/", "\\", os.sep, *([os.altsep] if os.altsep else [])}
    if any(sep in name for sep in separators) or "\0" in name or name in (".", ".."):
        raise ValueError(
            f"{argument}: a checkpoint name must name one file, without path separators, "
            f"got {name!r}"
        )
    return name


class CheckpointStore:
    """A directory of checkpoints, one `<name>.pt` file each, written atomically.

    The directory is created on the first save, so a store can be configured before its volume
    holds anything.
    """

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        if not isinstance(directory, str | os.PathLike) or not os.fspath(directory):
            raise ValueError(f"directory: a checkpoint directory path is needed, got {directory!r}")
        self.directory = Path(directory)

    def __repr__(self) -> str:
        return f"CheckpointStore({str(self.directory)!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, CheckpointStore) and other.directory == self.directory

    def __hash__(self) -> int:
        return hash(self.directory)

    def path(self, name: str) -> Path:
        """The file that holds checkpoint `name` (whether or not it exists)."""
        return self.directory / f"{check_checkpoint_name(name)}{CHECKPOINT_SUFFIX}"

    def save(self, name: str, state: dict[str, Any]) -> None:
        """Write `state` (tensors and plain values) as checkpoint `name`, replacing any earlier
        one atomically: the temporary file is flushed to disk before it takes the name, so a
        crash at any moment leaves either the previous checkpoint or this one."""
        target = self.path(name)
        self.directory.mkdir(parents=True, exist_ok=True)
        fd, temp = tempfile.mkstemp(dir=self.directory, prefix=f".{name}.", suffix=_TEMP_SUFFIX)
        try:
            with os.fdopen(fd, "wb") as f:
                torch.save(state, f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(temp, target)
        except BaseException:
            Path(temp).unlink(missing_ok=True)
            raise

    def load(self, name: str) -> dict[str, Any] | None:
        """Checkpoint `name`, on the CPU; None when there is none, or when its file cannot be
        read as one (logged as a warning: a damaged checkpoint costs a restart, not the trial)."""
        target = self.path(name)
        try:
            state = torch.load(target, map_location="cpu", weights_only=True)
        except FileNotFoundError:
            return None
        except Exception as exc:  # truncated, corrupt, another format, unreadable disk
            logger.warning(
                "ignoring unreadable checkpoint %s: %s: %s", target, type(exc).__name__, exc
            )
            return None
        if not isinstance(state, dict):
            logger.warning(
                "ignoring checkpoint %s: it holds a %s, not a dict", target, type(state).__name__
            )
            return None
        return state

    def delete(self, name: str) -> None:
        """Remove checkpoint `name`; nothing happens when there is none."""
        self.path(name).unlink(missing_ok=True)


@dataclass(frozen=True)
class Checkpointing:
    """Where one trial's checkpoint goes and how often it is written.

    A checkpoint is written at an evaluation point (the only moment the whole training state,
    curve included, is consistent) when `every_evaluations` evaluations have passed since the
    last save, or `every_seconds` of training, whichever comes first; None disables that rule,
    and at least one must be given. Saving costs a copy of the model and optimizer: evaluations
    of a long trial are far apart, while a short trial (a few seconds) needs no checkpoint.
    `name` is the caller's (a worker uses the queue's trial id), unique within the store.
    """

    store: CheckpointStore
    name: str
    every_evaluations: int | None = None
    every_seconds: float | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.store, CheckpointStore):
            raise ValueError(f"store: a CheckpointStore is needed, got {self.store!r}")
        check_checkpoint_name(self.name, "name")
        every = self.every_evaluations
        if every is not None and (
            isinstance(every, bool) or not isinstance(every, int) or every < 1
        ):
            raise ValueError(f"every_evaluations: must be an integer >= 1 or None, got {every!r}")
        seconds = self.every_seconds
        if seconds is not None and (
            isinstance(seconds, bool)
            or not isinstance(seconds, int | float)
            or not math.isfinite(seconds)
            or seconds <= 0
        ):
            raise ValueError(f"every_seconds: must be a finite number > 0 or None, got {seconds!r}")
        if every is None and seconds is None:
            raise ValueError(
                "every_evaluations, every_seconds: give at least one (a policy that never saves "
                "is no policy: pass checkpoint=None instead)"
            )

    def due(self, evaluations_since_save: int, seconds_since_save: float) -> bool:
        """Whether to save at this evaluation, given what passed since the last save (or since
        the attempt started)."""
        if self.every_evaluations is not None and evaluations_since_save >= self.every_evaluations:
            return True
        return self.every_seconds is not None and seconds_since_save >= self.every_seconds

    def save(self, state: dict[str, Any]) -> None:
        """Write this trial's checkpoint (see CheckpointStore.save)."""
        self.store.save(self.name, state)

    def load(self) -> dict[str, Any] | None:
        """This trial's checkpoint, or None (see CheckpointStore.load)."""
        return self.store.load(self.name)

    def delete(self) -> None:
        """Remove this trial's checkpoint (the trial ended: nothing left to resume)."""
        self.store.delete(self.name)

"""How many trials may train in one pack: the limit, and the checks of a size given in code or on
a command line. One home for them, light to import (no torch), used by the pack runner
(studies/pack.py), the queue's pack claims (studies/db/packs.py) and the command lines."""

from __future__ import annotations

__all__ = ["MAX_PACK_SIZE", "check_pack_size", "parse_pack_size"]

MAX_PACK_SIZE = 64  # issue 8: packs of up to 64 members; memory estimates choose below that


def check_pack_size(pack_size: int) -> int:
    """pack_size, if it is an integer from 1 to MAX_PACK_SIZE; ValueError naming it otherwise."""
    if (
        isinstance(pack_size, bool)
        or not isinstance(pack_size, int)
        or not 1 <= pack_size <= MAX_PACK_SIZE
    ):
        raise ValueError(
            f"pack_size: must be an integer from 1 to {MAX_PACK_SIZE} (got {pack_size!r})"
        )
    return pack_size


def parse_pack_size(text: str) -> int | None:
    """A --pack-size value: "auto" (None: the memory estimate) or an integer in 1..64."""
    if text.strip().lower() == "auto":
        return None
    try:
        size = int(text)
    except ValueError:
        size = 0
    if not 1 <= size <= MAX_PACK_SIZE:
        raise ValueError(
            f"--pack-size: must be auto or an integer in 1..{MAX_PACK_SIZE}, got {text!r}"
        )
    return size

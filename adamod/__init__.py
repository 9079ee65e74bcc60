"""AdaMod and DiffMod optimizers for PyTorch, with functional forms and bound telemetry."""

from __future__ import annotations

from adamod._adamod import AdaMod, adamod
from adamod._diffmod import DiffMod, diffmod
from adamod._telemetry import STAT_KEYS, BoundTracker

__all__ = ["STAT_KEYS", "AdaMod", "BoundTracker", "DiffMod", "adamod", "diffmod"]

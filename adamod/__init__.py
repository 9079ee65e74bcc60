"""AdaMod and DiffMod optimizers for PyTorch, with functional forms and bound telemetry.

Member mode (1-D tensor hyperparameters, one value per member of a pack of K models stacked on
a leading dim) is in AdaMod/DiffMod themselves; `adamod.members` has torch's Adam, AdamW, SGD,
RAdam and NAdamW in member mode.
"""

from __future__ import annotations

from adamod import members
from adamod._adamod import AdaMod, adamod
from adamod._diffmod import DiffMod, diffmod
from adamod._telemetry import STAT_KEYS, BoundTracker

__all__ = ["STAT_KEYS", "AdaMod", "BoundTracker", "DiffMod", "adamod", "diffmod", "members"]

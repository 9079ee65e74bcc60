"""How optimizers and configurations are written for people (AdaMod, not adamod)."""

from __future__ import annotations

__all__ = ["config_label", "display_name", "warmup_words"]

_NAMES = {
    "adam": "Adam",
    "adamw": "AdamW",
    "adamod": "AdaMod",
    "diffmod": "DiffMod",
    "radam": "RAdam",
    "nadamw": "NAdamW",
    "sgd": "SGD",
}


def display_name(optimizer: str) -> str:
    """An optimizer's name as papers write it."""
    return _NAMES.get(optimizer, optimizer)


def warmup_words(steps: int) -> str:
    """'no warmup' or 'N warmup steps'."""
    return "no warmup" if steps == 0 else f"{steps} warmup steps"


def config_label(
    optimizer: str, beta3: float | None, warmup_steps: int, schedule: str = "constant"
) -> str:
    """A configuration's short label, e.g. 'AdaMod β3=0.999, warmup 0' (', cosine' if cosine)."""
    name = display_name(optimizer)
    if beta3 is not None:
        name += f" β3={beta3:g}"
    label = f"{name}, warmup {warmup_steps}"
    return label if schedule == "constant" else f"{label}, {schedule}"

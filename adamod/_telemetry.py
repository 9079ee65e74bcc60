"""Bound telemetry: on-device per-step statistics of Adam's step size η and of min(η, s)."""

from __future__ import annotations

import torch
from torch import Tensor

STAT_KEYS = ("bound_active_frac", "eta_max", "eta_mean", "eff_lr_max", "eff_lr_mean")
_CHUNK_ROWS = 1024


def partial_bound_stats(eta: Tensor, exp_avg_lr: Tensor, eff: Tensor | None = None) -> Tensor:
    """Return [active count, Σ η, max η, Σ eff, max eff] of one tensor, as float64 on its device.

    `eta` is η_t and `exp_avg_lr` is s_t (already updated); `eff` is min(η_t, s_t) when the
    caller has it, else it is computed here.
    """
    if eff is None:
        eff = torch.minimum(eta, exp_avg_lr)
    return torch.stack(
        [
            (exp_avg_lr < eta).sum().to(torch.float64),
            eta.sum(dtype=torch.float64),
            eta.amax().to(torch.float64),
            eff.sum(dtype=torch.float64),
            eff.amax().to(torch.float64),
        ]
    )


class BoundTracker:
    """Collects one row of bound statistics per optimizer step without synchronising the host.

    Rows live in preallocated device buffers; `series()` copies them to the host once.
    """

    def __init__(self) -> None:
        self._chunks: list[Tensor] = []
        self._steps: list[int] = []
        self._partials: list[Tensor] = []
        self._numel = 0
        self._step = 0

    def reset(self) -> None:
        """Forget every recorded step."""
        self.__init__()

    def add(self, partial: Tensor, numel: int, step: int) -> None:
        """Add one tensor's partial statistics (from `partial_bound_stats`) to the current step."""
        self._partials.append(partial)
        self._numel += numel
        self._step = max(self._step, step)

    def end_step(self) -> None:
        """Reduce the partials of this step into one row; no host synchronisation."""
        if not self._partials:
            return
        device = self._partials[0].device
        stacked = torch.stack([p.to(device, non_blocking=True) for p in self._partials])
        sums = stacked.sum(0)
        maxes = stacked.amax(0)
        n = float(self._numel)  # Python scalars: no host-to-device copy
        row = torch.stack([sums[0] / n, maxes[2], sums[1] / n, maxes[4], sums[3] / n])
        index = len(self._steps) % _CHUNK_ROWS
        if index == 0:
            self._chunks.append(
                torch.empty(_CHUNK_ROWS, len(STAT_KEYS), dtype=torch.float64, device=device)
            )
        self._chunks[-1][index].copy_(row)
        self._steps.append(self._step)
        self._partials = []
        self._numel = 0

    def series(self) -> dict[str, list[float]]:
        """Return {"step": [...], key: [...]} for every recorded step (one host sync)."""
        out: dict[str, list[float]] = {"step": list(self._steps)}
        rows: list[list[float]] = []
        if self._steps:
            device = self._chunks[0].device
            table = torch.cat([c.to(device) for c in self._chunks])[: len(self._steps)]
            rows = table.cpu().tolist()
        for column, key in enumerate(STAT_KEYS):
            out[key] = [row[column] for row in rows]
        return out

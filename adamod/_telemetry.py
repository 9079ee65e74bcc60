"""Bound telemetry: on-device per-step statistics of Adam's step size η and of min(η, s).

In member mode (a pack of K models stacked on a leading dim) the statistics are also kept per
member, each reduced over that member's elements only, so that one member's NaN or scale never
shows in another member's series.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

STAT_KEYS = ("bound_active_frac", "eta_max", "eta_mean", "eff_lr_max", "eff_lr_mean")
_CHUNK_ROWS = 1024


def partial_bound_stats(eta: Tensor, exp_avg_lr: Tensor, eff: Tensor | None = None) -> Tensor:
    """Return [active count, Σ η, max η, Σ eff, max eff] of one tensor, as float64 on its device.

    `eta` is η_t and `exp_avg_lr` is s_t (already updated); `eff` is min(η_t, s_t) when the
    caller has it, else it is computed here.
    """
    if eta.numel() == 0:  # amax of nothing raises; the C kernel's maxima start at 0 too
        return torch.zeros(5, dtype=torch.float64, device=eta.device)
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


# Member statistics are summed in the data's own dtype (float64 sums of float32 data cost 15x a
# float32 sum on CPU). A count is a float sum of a 0/1 mask, exact while every partial sum is an
# integer the dtype represents exactly: below 2**24 elements per member for float32.
_EXACT_COUNT = {torch.float32: 1 << 24, torch.float64: 1 << 53}


def _member_rows(t: Tensor, members: int) -> Tensor:
    """t as (members, elements per member): a view where the layout allows, else a copy."""
    return t.reshape(members, t.numel() // members)  # not -1: an empty t would be ambiguous


def member_eta_stats(eta: Tensor, exp_avg_lr: Tensor, members: int) -> list[Tensor]:
    """[count of s < η, Σ η, max η] of each member's slice, as three (members,) tensors.

    Call before η is overwritten by min(η, s); `member_eff_stats` gives the other two columns.
    float32/float64 data are summed in their own dtype (counts stay exact, see _EXACT_COUNT).
    """
    eta2 = _member_rows(eta, members)
    s2 = _member_rows(exp_avg_lr, members)
    if eta2.shape[1] == 0:  # an empty pack: amax of nothing raises, so zeros as the C kernel
        return [eta2.new_zeros(members)] * 3
    limit = _EXACT_COUNT.get(eta2.dtype)
    if limit is None:  # another dtype: float64 sums, as partial_bound_stats
        return [
            (s2 < eta2).sum(1, dtype=torch.float64),
            eta2.sum(1, dtype=torch.float64),
            eta2.amax(1),
        ]
    if eta2.shape[1] < limit:
        # a float mask: comparing into the data's dtype and summing it beats a bool sum
        count = torch.lt(s2, eta2, out=torch.empty_like(eta2)).sum(1)
    else:
        count = (s2 < eta2).sum(1, dtype=torch.float64)
    return [count, eta2.sum(1), eta2.amax(1)]


def member_eff_stats(eff: Tensor, members: int) -> list[Tensor]:
    """[Σ eff, max eff] of each member's slice of eff = min(η, s), as two (members,) tensors."""
    eff2 = _member_rows(eff, members)
    if eff2.shape[1] == 0:
        return [eff2.new_zeros(members)] * 2
    if eff2.dtype in _EXACT_COUNT:
        return [eff2.sum(1), eff2.amax(1)]
    return [eff2.sum(1, dtype=torch.float64), eff2.amax(1)]


def member_partials(columns: list[Tensor]) -> Tensor:
    """The five columns of `member_eta_stats` + `member_eff_stats` as a (K, 5) float64 tensor."""
    if any(c.dtype != columns[0].dtype for c in columns):
        columns = [c.to(torch.float64) for c in columns]
    return torch.stack(columns, dim=1).to(torch.float64)


def member_partial_bound_stats(eta: Tensor, exp_avg_lr: Tensor, members: int) -> Tensor:
    """`partial_bound_stats` of each member's slice: a (members, 5) float64 tensor."""
    eff = torch.minimum(eta, exp_avg_lr)
    return member_partials(
        member_eta_stats(eta, exp_avg_lr, members) + member_eff_stats(eff, members)
    )


# A row's STAT_KEYS from the partials' columns [active, Σ η, max η, Σ eff, max eff]: which
# column each key reads, whether from the maxima (else the sums), and whether it is a mean.
_ROW_COLUMNS = (0, 2, 1, 4, 3)
_FROM_MAXES = (False, False, True, False, True)
_MEANS = (True, False, True, False, True)


class _RowMaths:
    """A row's constants (STAT_KEYS) as tensors on one device, for one element count: built
    when either changes (not every step), so a step's rows take a few ops and no host copy."""

    def __init__(self) -> None:
        self._key: tuple[torch.device, float] | None = None
        self._tensors: tuple[Tensor, Tensor, Tensor] | None = None

    def rows(self, sums: Tensor, maxes: Tensor, numel: float, out: Tensor | None = None) -> Tensor:
        """STAT_KEYS columns from summed and maxed partials (last dim of 5): the means are the
        sums divided by numel, the maxima divided by 1.0 (exact); `maxes is sums` (one partial)
        skips the choice between them. Writes into `out` when given."""
        key = (sums.device, numel)
        if self._key != key or self._tensors is None:
            device = sums.device
            self._tensors = (
                torch.tensor(_ROW_COLUMNS, device=device),
                torch.tensor(_FROM_MAXES, device=device),
                torch.tensor([numel if m else 1.0 for m in _MEANS], dtype=torch.float64,
                             device=device),
            )  # fmt: skip
            self._key = key
        columns, from_maxes, divisor = self._tensors
        raw = sums if maxes is sums else torch.where(from_maxes, maxes, sums)
        picked = raw.index_select(-1, columns)
        return torch.div(picked, divisor) if out is None else torch.div(picked, divisor, out=out)


class BoundTracker:
    """Collects one row of bound statistics per optimizer step without synchronising the host.

    Rows live in preallocated device buffers; `series()` copies them to the host once. Member
    partials (`add_members`) also give one row per member per step (`member_series()`), and
    count towards the aggregate row.
    """

    def __init__(self) -> None:
        self._chunks: list[Tensor] = []
        self._steps: list[int] = []
        self._partials: list[Tensor] = []
        self._numel = 0
        self._step = 0
        self._member_chunks: list[Tensor] = []
        self._member_steps: list[int] = []
        self._member_partials: list[Tensor] = []
        self._member_numel = 0  # elements per member in this step
        self._members: int | None = None
        self._row_maths = _RowMaths()
        self._member_row_maths = _RowMaths()

    def reset(self) -> None:
        """Forget every recorded step."""
        self.__init__()

    def __setstate__(self, state: dict[str, Any]) -> None:
        """Unpickle, giving a tracker pickled before member telemetry existed its fields."""
        self.__dict__.update({**BoundTracker().__dict__, **state})

    def state_dict(self) -> dict[str, Any]:
        """The recorded telemetry as tensors, ints and lists only (what `torch.load(...,
        weights_only=True)` reads back), for a training checkpoint: a resumed run then reports
        the same series as one that never stopped. Only between steps (after `end_step`).
        """
        if self._partials or self._member_partials:
            raise RuntimeError("BoundTracker.state_dict() in the middle of a step (end_step first)")
        return {
            "steps": list(self._steps),
            "rows": _used_rows(self._chunks, len(self._steps)),
            "member_steps": list(self._member_steps),
            "member_rows": _used_rows(self._member_chunks, len(self._member_steps)),
            "members": self._members,
            "step": self._step,
        }

    def load_state_dict(
        self, state: dict[str, Any], device: torch.device | str | None = None
    ) -> None:
        """Replace the recorded telemetry by a `state_dict()`, its rows on `device` (default:
        where they were saved), so later steps append to it as if nothing had stopped."""
        self.reset()
        self._steps = [int(s) for s in state["steps"]]
        self._chunks = _chunked(state["rows"], device)
        self._member_steps = [int(s) for s in state["member_steps"]]
        self._member_chunks = _chunked(state["member_rows"], device)
        members = state["members"]
        self._members = None if members is None else int(members)
        self._step = int(state["step"])

    def add(self, partial: Tensor, numel: int, step: int) -> None:
        """Add one tensor's partial statistics (from `partial_bound_stats`) to the current step."""
        self._partials.append(partial)
        self._numel += numel
        self._step = max(self._step, step)

    def expect_members(self, members: int) -> None:
        """Raise ValueError, before a step changes anything, if it has another member count."""
        if self._members is not None and self._members != members:
            raise ValueError(
                f"track_bounds: this step has {members} members, but the recorded telemetry has "
                f"{self._members} (reset_bound_stats() first)"
            )

    def add_members(self, partials: Tensor, numel: int, step: int) -> None:
        """Add one tensor's per-member partials ((K, 5), from `member_partial_bound_stats`).

        numel is the tensor's number of elements per member.
        """
        self.expect_members(partials.shape[0])
        self._members = partials.shape[0]
        self._member_partials.append(partials)
        self._member_numel += numel
        self._step = max(self._step, step)

    def end_step(self) -> None:
        """Reduce the partials of this step into one row (and member rows); no host sync.

        Called once per optimizer step, between a pack's backward passes (cold caches): a
        step's rows are a few ops (`_RowMaths`), written in place into the preallocated
        chunks, and a step's one partial is used as it is rather than stacked and reduced."""
        if not self._partials and not self._member_partials:
            return
        device = (self._partials or self._member_partials)[0].device
        sums_maxes = []
        if self._partials:
            stacked = torch.stack([p.to(device, non_blocking=True) for p in self._partials])
            sums_maxes.append((stacked.sum(0), stacked.amax(0)))
        if self._member_partials:
            self._end_member_step(device, sums_maxes)
        sums, maxes = sums_maxes[0]
        if len(sums_maxes) == 2:
            sums = sums + sums_maxes[1][0]
            maxes = torch.maximum(maxes, sums_maxes[1][1])
        n = float(self._numel)  # Python scalars: no host-to-device copy
        index = len(self._steps) % _CHUNK_ROWS
        if index == 0:
            self._chunks.append(
                torch.empty(_CHUNK_ROWS, len(STAT_KEYS), dtype=torch.float64, device=device)
            )
        self._row_maths.rows(sums, maxes, n, out=self._chunks[-1][index])
        self._steps.append(self._step)
        self._partials = []
        self._numel = 0

    def _end_member_step(
        self, device: torch.device, sums_maxes: list[tuple[Tensor, Tensor]]
    ) -> None:
        """Store this step's member rows; append the members' totals for the aggregate row."""
        parts = [p.to(device, non_blocking=True) for p in self._member_partials]
        if len(parts) == 1:  # one kernel call's partials: their own sums and maxima
            sums = maxes = parts[0]
        else:
            stacked = torch.stack(parts)
            sums, maxes = stacked.sum(0), stacked.amax(0)  # (K, 5): over tensors, never members
        members = sums.shape[0]
        index = len(self._member_steps) % _CHUNK_ROWS
        if index == 0:
            self._member_chunks.append(
                torch.empty(
                    _CHUNK_ROWS, members, len(STAT_KEYS), dtype=torch.float64, device=device
                )
            )
        self._member_row_maths.rows(
            sums, maxes, float(self._member_numel), out=self._member_chunks[-1][index]
        )
        self._member_steps.append(self._step)
        sums_maxes.append((sums.sum(0), maxes.amax(0)))
        self._numel += members * self._member_numel
        self._member_partials = []
        self._member_numel = 0

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

    def member_series(self, members: int) -> list[dict[str, list[float]]]:
        """`series()` of each member (members: K, used while nothing is recorded); one sync."""
        columns: list[list[list[float]]] = [[[] for _ in STAT_KEYS] for _ in range(members)]
        if self._member_steps:
            device = self._member_chunks[0].device
            table = torch.cat([c.to(device) for c in self._member_chunks])
            table = table[: len(self._member_steps)].permute(1, 2, 0)  # [member][column][step]
            # Laid out member-major before the one host copy, so that each series is one list
            # from tolist: going through [step][member][column] lists cost ~0.15 s per pack.
            columns = table.cpu().contiguous().tolist()
        return [
            {"step": list(self._member_steps), **dict(zip(STAT_KEYS, member, strict=True))}
            for member in columns
        ]


def _used_rows(chunks: list[Tensor], n: int) -> Tensor | None:
    """The first n rows of preallocated chunks, as one CPU tensor (None when there are none)."""
    if not chunks:
        return None
    device = chunks[0].device
    return torch.cat([c.to(device) for c in chunks])[:n].cpu().clone()


def _chunked(rows: Tensor | None, device: torch.device | str | None) -> list[Tensor]:
    """Preallocated chunks of _CHUNK_ROWS rows holding `rows` (the inverse of _used_rows)."""
    if rows is None:
        return []
    target = rows.device if device is None else torch.device(device)
    n = rows.shape[0]
    chunks = []
    for start in range(0, max(n, 1), _CHUNK_ROWS):
        chunk = torch.empty((_CHUNK_ROWS, *rows.shape[1:]), dtype=torch.float64, device=target)
        part = rows[start : start + _CHUNK_ROWS]
        chunk[: part.shape[0]].copy_(part)
        chunks.append(chunk)
    return chunks

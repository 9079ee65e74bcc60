"""The worker's side of trial packs: how big a pack to claim for a lead trial, and the report
callback that writes a pack's evaluations and tells each member when to stop.

A pack is sized from its lead's config only once it is claimed (lead first, then its compatible
trials; see studies.db.packs.extend_pack): an unpackable workload is then never claimed more than
one trial at a time, and the lead can ride on the transaction that completed the previous trial.
"""

from __future__ import annotations

import argparse
import logging
import threading
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from studies.db.engine import Database
from studies.db.packs import MAX_PACK_SIZE, check_pack_size
from studies.db.queue import ClaimedTrial, buffer_evaluation, record_evaluations
from workers.gc_freeze import freeze_long_lived_objects

if TYPE_CHECKING:
    from studies.spec import TrialConfig
    from studies.trial import EvalPoint
    from workers.heartbeat import Heartbeat

__all__ = ["AUTO", "PackReport", "PackSizer", "check_pack_size_option", "parse_pack_size"]

log = logging.getLogger("workers")
AUTO = "auto"
# what PackSizer.warm sizes: a built-in workload with no data to load
_WARM_CONFIG = {
    "workload": "quadratic",
    "optimizer": "adamod",
    "lr": 1e-3,
    "beta3": 0.999,
    "budget": {"steps": 1},
}


def parse_pack_size(text: str) -> int | None:
    """--pack-size's argparse type: `auto` (None: the pack runner's memory estimate) or N, read
    by the pack runner's own parser (the one `python -m studies --pack-size` uses)."""
    from studies.pack import parse_pack_size as parse

    try:
        return parse(text)
    except ValueError as exc:  # argparse prefixes the flag itself
        raise argparse.ArgumentTypeError(str(exc).removeprefix("--pack-size: ")) from None


def check_pack_size_option(value: int | None) -> int | None:
    """The --pack-size option, if valid (None: auto); ValueError naming the flag otherwise."""
    if value is None:
        return None
    try:
        return check_pack_size(value)
    except ValueError:
        raise ValueError(
            f"--pack-size: must be {AUTO} or an integer from 1 to {MAX_PACK_SIZE} (got {value!r})"
        ) from None


class PackSizer:
    """How many trials to train with a lead: 1 when its workload cannot pack it, else the
    --pack-size N, or with auto the pack runner's memory estimate on this device. Remembered per
    pack key: a study's packs are all alike, and the estimate may build a model."""

    def __init__(self, pack_size: int | None, device: str) -> None:
        self.pack_size = pack_size
        self.device = device
        self._sizes: dict[str, int] = {}

    def warm(self) -> None:
        """Pay the sizing's one-time costs now (the pack runner's and the workload registry's
        imports, a first sizing: about 60 ms), in a background thread, rather than inside the
        first pack's claim, between its lead and its mates, then freeze what they made
        (workers.gc_freeze). Nothing with --pack-size 1, which never sizes."""
        if self.pack_size == 1:
            return

        def load() -> None:
            try:
                from studies.pack import auto_pack_size
                from studies.spec import TrialConfig
                from studies.workloads.registry import list_workloads

                list_workloads()
                # One sizing of the smallest built-in workload pays the sizing path's first-time
                # costs (numpy.random's import, torch's first ops: 25 ms), which the first real
                # sizing would pay inside its claim's transaction, holding the database's lock.
                auto_pack_size(TrialConfig.model_validate(_WARM_CONFIG), self.device)
            except Exception as exc:  # the first size_for meets (and reports) it again
                log.debug("warming the pack sizer failed: %s", exc)
                return
            freeze_long_lived_objects()  # torch's objects too, now they are imported

        threading.Thread(target=load, name="pack-sizer-warm", daemon=True).start()

    def size_for(self, config: TrialConfig) -> int:
        """The pack size for a lead with this config (1: run it alone, through run_trial)."""
        if self.pack_size == 1:
            return 1  # today's one-trial path: never even import the pack runner
        key = config.pack_key()
        if key not in self._sizes:
            self._sizes[key] = self._measure(config)
        return self._sizes[key]

    def _measure(self, config: TrialConfig) -> int:
        try:
            import torch

            from studies.pack import auto_pack_size, packable

            if not packable(config):
                return 1
            if self.pack_size is not None:
                return self.pack_size
            estimate = int(auto_pack_size(config, torch.device(self.device)))
            return max(1, min(MAX_PACK_SIZE, estimate))
        except Exception as exc:
            # Sizing is an optimization: the trial still runs, alone, and run_trial reports
            # any real problem with its config as that trial's error.
            log.warning(
                "cannot size a pack for workload %s (%s): one trial at a time", config.workload, exc
            )
            return 1


class PackReport:
    """run_pack's `report(k, point)`: buffers each member's evaluations, writes every member's
    new ones in one transaction at most once per `interval_s`, and returns True (stop) for a
    member whose lease was lost or whose study was cancelled, and for every member once the
    worker is asked to stop."""

    def __init__(
        self,
        db: Database,
        claims: Sequence[ClaimedTrial],
        *,
        heartbeat: Heartbeat,
        shutdown: threading.Event,
        interval_s: float,
        retry: Callable[[Callable[[], set[int]], str], set[int]],
    ) -> None:
        self.db = db
        self.claims = list(claims)
        self.heartbeat = heartbeat
        self.shutdown = shutdown
        self.interval_s = interval_s
        self.retry = retry
        self.stopped: set[int] = set()  # member indices told to stop
        self._unwritten: dict[int, EvalPoint] = {}
        self._last_write = time.monotonic()

    def __call__(self, k: int, point: EvalPoint) -> bool:
        claim = self.claims[k]
        if k in self.stopped or self.shutdown.is_set():
            self.stopped.add(k)
            return True
        if claim.trial_id in self.heartbeat.lost_ids():
            self.stopped.add(k)
            return True
        buffer_evaluation(claim, point)
        self._unwritten[k] = point
        now = time.monotonic()
        if now - self._last_write < self.interval_s:
            return False  # fast evaluations: one write per interval, not one per evaluation
        self._last_write = now
        batch = [(self.claims[j], p) for j, p in sorted(self._unwritten.items())]
        written = list(self._unwritten)
        self._unwritten.clear()
        held = self.retry(lambda: record_evaluations(self.db, batch), "record evaluations")
        self.stopped.update(j for j in written if self.claims[j].trial_id not in held)
        return k in self.stopped

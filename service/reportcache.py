"""An in-memory LRU of robustness reports, keyed by a study's progress so it is never stale."""

from __future__ import annotations

import json
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

from service.errors import json_safe


@dataclass
class CachedReport:
    """One study's report at one progress: the model, its JSON, and figures rendered on demand."""

    version: tuple
    report: Any
    json_bytes: bytes
    title: str
    plots: dict[str, bytes] = field(default_factory=dict)
    html: str | None = None


def report_version(view: Any) -> tuple:
    """What identifies the records behind a report: trials only move forward in state, except
    that a retry (studies.db.retry) queues failed ones again; one that fails again leaves the
    same counts, but not the same finish time."""
    progress = view.progress
    finished_at = getattr(view, "finished_at", None)
    return (view.status, finished_at, *(int(progress.get(k, 0)) for k in sorted(progress)))


class ReportCache:
    """Builds reports from stored records at most once per study progress."""

    def __init__(self, max_entries: int = 16) -> None:
        self.max_entries = max_entries
        self._entries: OrderedDict[int, CachedReport] = OrderedDict()
        self._lock = threading.Lock()
        self._study_locks: dict[int, threading.Lock] = {}

    def get(self, db: Any, view: Any) -> CachedReport:
        """The report of the study ``view`` describes, computed only when its progress changed."""
        version = report_version(view)
        with self._lock:
            cached = self._entries.get(view.id)
            if cached is not None and cached.version == version:
                self._entries.move_to_end(view.id)
                return cached
            study_lock = self._study_locks.setdefault(view.id, threading.Lock())
        # One computation per study at a time; a concurrent request waits and reuses it.
        with study_lock:
            with self._lock:
                cached = self._entries.get(view.id)
                if cached is not None and cached.version == version:
                    return cached
            entry = self._build(db, view, version)
            with self._lock:
                if self.max_entries > 0:
                    self._entries[view.id] = entry
                    self._entries.move_to_end(view.id)
                    while len(self._entries) > self.max_entries:
                        evicted, _ = self._entries.popitem(last=False)
                        self._study_locks.pop(evicted, None)
            return entry

    def _build(self, db: Any, view: Any, version: tuple) -> CachedReport:
        from studies.db import load_records
        from studies.report import build_report

        records = load_records(db, view.id) or []
        report = build_report(records, spec=view.spec, status=view.status)
        payload = json_safe(report.model_dump(mode="json"))
        json_bytes = json.dumps(payload, allow_nan=False, separators=(",", ":")).encode()
        return CachedReport(version=version, report=report, json_bytes=json_bytes, title=view.name)

    def plot(self, entry: CachedReport, name: str) -> bytes:
        """The PNG of figure ``name`` for ``entry``, rendered once."""
        if name not in entry.plots:
            from studies.plots import render_plot

            entry.plots[name] = render_plot(entry.report, name)
        return entry.plots[name]

    def html(self, entry: CachedReport) -> str:
        """The self-contained HTML page of ``entry``, rendered once, with the cached figures."""
        if entry.html is None:
            from studies.html import render_html
            from studies.plots import PLOT_NAMES

            figures = {name: self.plot(entry, name) for name in PLOT_NAMES}
            entry.html = render_html(entry.report, entry.title, figures=figures)
        return entry.html

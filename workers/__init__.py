"""The worker process: claim a trial, train it through `studies`, heartbeat, record, repeat."""

from __future__ import annotations

from workers.devices import select_device
from workers.worker import Worker, WorkerOptions

__all__ = ["Worker", "WorkerOptions", "select_device"]

"""Workloads: what a trial trains. See registry.py for the built-ins and the entry-point group."""

from __future__ import annotations

from studies.workloads.base import Problem, Workload
from studies.workloads.registry import (
    ENTRY_POINT_GROUP,
    UnknownWorkloadError,
    get_workload,
    list_workloads,
    register_workload,
)

__all__ = [
    "ENTRY_POINT_GROUP",
    "Problem",
    "UnknownWorkloadError",
    "Workload",
    "get_workload",
    "list_workloads",
    "register_workload",
]

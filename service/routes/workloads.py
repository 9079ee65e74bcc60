"""The registered workloads a StudySpec may name."""

from __future__ import annotations

from fastapi import APIRouter

from service.deps import ReaderDep
from service.schemas import WorkloadOut
from studies.workloads import list_workloads

router = APIRouter(tags=["workloads"])


def describe_workloads() -> list[WorkloadOut]:
    """Name, description, default budget and config JSON schema of every registered workload."""
    return [
        WorkloadOut(
            name=w.name,
            description=w.description,
            default_budget=w.default_budget.model_dump(exclude_none=True),
            config_schema=w.config_model.model_json_schema(),
        )
        for w in list_workloads()
    ]


@router.get("/workloads", response_model=list[WorkloadOut])
def read_workloads(reader: ReaderDep) -> list[WorkloadOut]:
    """Every workload registered on this server (built-in and entry points)."""
    return describe_workloads()

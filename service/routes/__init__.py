"""One APIRouter per resource: studies, reports, workloads, health."""

"""Studies: submit (idempotent), list, read, cancel, retry, and list a study's trials."""

from __future__ import annotations

import json
from typing import Annotated, Any

from fastapi import APIRouter, Header, HTTPException, Query, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from sqlalchemy.exc import IntegrityError

from service.body import parse_spec
from service.deps import MAX_ID, CallerDep, DbDep, ReaderDep, SettingsDep, StudyId
from service.errors import json_safe
from service.schemas import STUDY_SPEC_EXAMPLES, RetryOut, StudyOut, StudyStatus, TrialOut
from service.views import not_found, study_out
from studies.db import (
    IdempotencyConflict,
    cancel_study,
    create_study,
    get_study,
    list_studies,
    list_trials,
    retry_study,
)

router = APIRouter(prefix="/studies", tags=["studies"])

# The body is read and validated by hand (validate_spec) so that the server's max_trials reaches
# StudySpec's validators as context; this tells OpenAPI what the body is all the same.
_SPEC_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {
                "schema": {"$ref": "#/components/schemas/StudySpec"},
                "examples": STUDY_SPEC_EXAMPLES,
            }
        },
    }
}
_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"description": "Tokens are configured and none (or a wrong one) was sent."},
    404: {"description": "No study with this id."},
}
IdempotencyKey = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        min_length=1,
        max_length=200,
        pattern=r"^[\x21-\x7e][\x20-\x7e]*$",
        description="Repeat a POST safely: the same key with the same body returns the same study.",
    ),
]


@router.post(
    "",
    status_code=201,
    response_model=StudyOut,
    openapi_extra=_SPEC_BODY,
    responses={
        401: _ERRORS[401],
        409: {"description": "Idempotency-Key already used with a different body."},
        413: {"description": "Request body too large."},
        503: {"description": "SQLite database locked by another writer; see Retry-After."},
    },
    summary="Submit a study",
)
async def submit_study(
    request: Request,
    response: Response,
    db: DbDep,
    settings: SettingsDep,
    caller: CallerDep,
    idempotency_key: IdempotencyKey = None,
) -> StudyOut:
    """Validates the StudySpec, expands its grid and queues every trial in one transaction.

    A repeated request with the same `Idempotency-Key` and the same body answers 201 with the
    study created the first time (nothing new is queued); the same key with another body is 409.
    """
    # Decoding and validating up to max_body_bytes is CPU work: off the event loop, so that one
    # large body does not stall every other request.
    raw = await request.body()
    spec = await run_in_threadpool(parse_spec, raw, max_trials=settings.max_trials)
    try:
        view = await run_in_threadpool(create_study, db, spec, idempotency_key=idempotency_key)
    except IdempotencyConflict:
        raise HTTPException(
            status_code=409,
            detail="Idempotency-Key was already used with a different study spec",
        ) from None
    except IntegrityError as exc:
        raise _constraint_error(exc, idempotency_key) from None
    out = study_out(view)
    response.headers["Location"] = out.links.self
    return out


def _constraint_error(exc: IntegrityError, idempotency_key: str | None) -> Exception:
    """A 4xx for a unique constraint the spec ran into; the transaction was rolled back whole.

    Validation refuses every grid it knows to repeat a trial, so this is the safety net for one
    it does not: a client's request, never a 500.
    """
    message = str(exc.orig).lower()
    if idempotency_key is not None and "idempotency" in message:
        return HTTPException(
            status_code=409, detail="Idempotency-Key is being used by a concurrent request"
        )
    return RequestValidationError(
        [
            {
                "loc": ("body",),
                "msg": "the study's grid names the same trial twice (two grid points are equal "
                "once stored); make the lr, beta3 and warmup values distinct",
                "type": "duplicate_trial",
            }
        ]
    )


@router.get("", response_model=list[StudyOut], summary="List studies, newest first")
def read_studies(
    db: DbDep,
    reader: ReaderDep,
    status: Annotated[StudyStatus | None, Query(description="Only studies in this status.")] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    offset: Annotated[int, Query(ge=0, le=MAX_ID)] = 0,
) -> list[StudyOut]:
    """Every study (paged), newest first, optionally only those in one status."""
    return [study_out(v) for v in list_studies(db, status=status, limit=limit, offset=offset)]


@router.get("/{study_id}", response_model=StudyOut, responses={404: _ERRORS[404]})
def read_study(study_id: StudyId, db: DbDep, reader: ReaderDep) -> StudyOut:
    """One study with its status and progress."""
    view = get_study(db, study_id)
    if view is None:
        raise not_found(study_id)
    return study_out(view)


@router.delete(
    "/{study_id}",
    response_model=StudyOut,
    responses={401: _ERRORS[401], 404: _ERRORS[404]},
    summary="Cancel a study",
)
def delete_study(study_id: StudyId, db: DbDep, caller: CallerDep) -> StudyOut:
    """Cancels: queued trials never run, running ones stop at their next evaluation."""
    view = cancel_study(db, study_id)
    if view is None:
        raise not_found(study_id)
    return study_out(view)


@router.post(
    "/{study_id}/retry",
    response_model=RetryOut,
    responses={
        401: _ERRORS[401],
        404: _ERRORS[404],
        503: {"description": "SQLite database locked by another writer; see Retry-After."},
    },
    summary="Queue a study's failed and cancelled trials again",
)
def retry_study_trials(study_id: StudyId, db: DbDep, caller: CallerDep) -> RetryOut:
    """Queues every `failed` and `cancelled` trial of the study again, as new (attempts 0, no
    error, no curve), in one transaction; a cancelled study is resumed (its running trials then
    run to completion). Running, queued, completed and diverged trials are not touched.

    Safe to repeat: with nothing left to retry it answers 200 with `requeued: 0`. Each retried
    trial keeps its Optuna trial (grid point k stays Optuna trial k), WAITING until it runs.
    """
    outcome = retry_study(db, study_id)
    if outcome is None:
        raise not_found(study_id)
    return RetryOut(**study_out(outcome.study).model_dump(), requeued=outcome.requeued)


@router.get("/{study_id}/trials", response_model=list[TrialOut], responses={404: _ERRORS[404]})
def read_trials(study_id: StudyId, db: DbDep, reader: ReaderDep) -> Response:
    """Every trial of the study: params, state, value, curve, attempts, worker, duration."""
    trials = list_trials(db, study_id)
    if trials is None:
        raise not_found(study_id)
    # Thousands of trials with their curves: serialize the plain dicts once instead of building
    # and re-validating a TrialOut per trial (the response_model above documents the shape).
    payload = json_safe([{field: getattr(t, field) for field in _TRIAL_FIELDS} for t in trials])
    body = json.dumps(payload, allow_nan=False, separators=(",", ":"), default=str)
    return Response(body, media_type="application/json")


_TRIAL_FIELDS = tuple(TrialOut.model_fields)

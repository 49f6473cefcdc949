"""The feedback routes: submit feedback as a durable job, follow it, cancel it.

``POST /v1/feedback`` records a job before it answers. By default it then waits
for the job and answers with the published update, as a synchronous call
would; with ``"wait": false`` it answers 202 at once with the queued job, which
``GET /v1/feedback/{job_id}`` follows (``?wait=`` long-polls). An
``Idempotency-Key`` header makes a retry safe: the same key on the same adapter
returns the job already recorded, never a second update.

A job of a namespace the key may not use is answered as if it did not exist
(404), so its id reveals nothing. Routes are plain ``def`` functions, so FastAPI
runs the blocking learner calls (waits included) in its threadpool.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Body, Header, Path, Query
from fastapi.encoders import jsonable_encoder
from fastapi.responses import JSONResponse

from claas import CompletionFeedback, Feedback, RawFeedback
from claas.errors import JobNotFound, error_for_code
from claas.jobs.model import FeedbackJob, JobStatus, check_idempotency_key
from claas_server.auth import Principal
from claas_server.deps import Caller, ServerState, State, finite
from claas_server.errors import ERROR_RESPONSES, QUEUE_FULL_RESPONSE, public_message
from claas_server.schemas import (
    FeedbackEventInfo,
    FeedbackEventList,
    FeedbackRequest,
    FeedbackResponse,
    JobInfo,
    JobList,
)

__all__ = ["MAX_POLL_SECONDS", "job_info", "public_error", "router"]

router = APIRouter(responses=ERROR_RESPONSES, tags=["learning"])

MAX_POLL_SECONDS = 60.0
"""The longest ``GET /v1/feedback/{job_id}?wait=`` holds a request open."""

_FEEDBACK_EXAMPLES = {
    "by_completion": {
        "summary": "Feedback on a served completion",
        "value": {"completion_id": "chatcmpl-0123abcd", "feedback": "Too long; one sentence."},
    },
    "raw": {
        "summary": "Feedback on a response CLaaS did not serve",
        "value": {
            "adapter_id": "alice/assistant",
            "messages": [{"role": "user", "content": "Why is the sky blue?"}],
            "response": "Rayleigh scattering of sunlight by the air's molecules...",
            "feedback": "Explain it to a child.",
        },
    },
    "batch": {
        "summary": "Several items in one update, with config overrides",
        "value": {
            "adapter_id": "alice/assistant",
            "items": [
                {"completion_id": "chatcmpl-0123abcd", "feedback": "Shorter."},
                {"completion_id": "chatcmpl-4567ef01", "feedback": "No emojis."},
            ],
            "config": {"learning_rate": 1e-4, "steps": 2},
        },
    },
    "no_wait": {
        "summary": "Queue the update and answer at once (202 with the job)",
        "value": {"completion_id": "chatcmpl-0123abcd", "feedback": "Shorter.", "wait": False},
    },
}

IdempotencyKey = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        description="1-255 printable ASCII characters without spaces. A retry with the "
        "same key (and body) returns the job already recorded instead of a second update; "
        "the same key with another body is a 409.",
    ),
]
JobId = Annotated[str, Path(max_length=256, description="A job id, `job-...`.")]


# ------------------------------------------------------------------------ records


def job_info(job: FeedbackJob) -> JobInfo:
    """A job as the API shows it: non-finite numbers ``null``, 5xx reasons made public."""
    return JobInfo(
        id=job.id,
        adapter_id=job.adapter_id,
        status=job.status,
        done=job.done,
        accepted=job.accepted,
        feedback_ids=list(job.feedback_ids),
        idempotency_key=job.idempotency_key,
        started=job.started,
        finished=job.finished,
        version=job.version,
        parent_version=job.parent_version,
        metrics=finite(job.metrics),
        timings=finite(job.timings),
        error=public_error(job),
        error_code=job.error_code,
        attempts=job.attempts,
    )


def public_error(job: FeedbackJob) -> str | None:
    """The job's reason, unless it is a server error's (which may name paths or URLs)."""
    if job.error is None or job.error_code is None:
        return job.error
    return public_message(error_for_code(job.error_code, job.error))


def _visible_job(state: ServerState, caller: Principal, job_id: str) -> FeedbackJob:
    """The job, if the caller may see its adapter.

    Raises:
        JobNotFound: Unknown, or of a namespace the key may not use (the same answer).
    """
    job = state.learner.job(job_id)
    if not caller.allows(job.adapter_id):
        raise JobNotFound(f"no feedback job with id {job_id!r}")  # the core's words
    return job


# ----------------------------------------------------------------------- submit


def _core_items(request: FeedbackRequest, state: ServerState, caller: Principal) -> list[Feedback]:
    """Build the core's items, checking the caller may use every adapter involved."""
    items: list[Feedback] = []
    for item in request.all_items():
        if item.completion_id is not None:
            served_by = state.learner.get_completion(item.completion_id).adapter_id
            if served_by is not None:
                caller.require(served_by)
            items.append(CompletionFeedback(completion_id=item.completion_id, text=item.feedback))
        else:
            messages = [m.to_core() for m in item.messages or ()]
            response = item.response or ""  # the schema requires it with messages
            items.append(RawFeedback(messages=messages, response=response, text=item.feedback))
    return items


def _submit(
    request: FeedbackRequest, state: ServerState, caller: Principal, key: str | None
) -> FeedbackJob:
    """Check access and the key, then record the job (the learner validates the rest)."""
    key = check_idempotency_key(key)
    if request.adapter_id is not None:
        caller.require(request.adapter_id)
    items = _core_items(request, state, caller)
    config = request.config.model_dump(exclude_none=True) if request.config else None
    return state.learner.submit_feedback_batch(
        items, adapter_id=request.adapter_id, config=config, idempotency_key=key
    )


def _applied(state: ServerState, job: FeedbackJob) -> FeedbackResponse:
    """The published update of a finished job, or its failure raised (as ``Learner.feedback``)."""
    result = state.learner.result_of(job)
    return FeedbackResponse(
        job_id=job.id,
        adapter_id=result.adapter_id,
        version=result.version,
        parent_version=result.parent_version,
        feedback_ids=list(result.feedback_ids),
        metrics=finite(result.metrics),
        timings=finite(result.timings),
    )


@router.post(
    "/v1/feedback",
    response_model=FeedbackResponse,
    summary="Learn from text feedback; by default returns once the new version serves",
    responses={
        202: {
            "model": JobInfo,
            "description": "`wait` was false: the job is recorded and queued "
            "(follow it at the `Location` header's URL).",
        },
        **QUEUE_FULL_RESPONSE,
    },
)
def feedback(
    request: Annotated[FeedbackRequest, Body(openapi_examples=_FEEDBACK_EXAMPLES)],
    state: State,
    caller: Caller,
    idempotency_key: IdempotencyKey = None,
) -> FeedbackResponse | JSONResponse:
    """Record feedback as a job: one SDPO update of the adapter, published as a new version.

    The adapter is ``adapter_id`` or, by default, the one that served the
    completion. All items of one call must target one adapter. Everything a
    request can be refused for is checked before the job is recorded. With
    ``wait`` (the default) the response arrives once the next chat is served by
    the new version; a failed update answers its error (422 for a diverged
    one). Jobs of one adapter are applied in the order they were accepted.
    """
    job = _submit(request, state, caller, idempotency_key)
    if not request.wait:
        return JSONResponse(
            jsonable_encoder(job_info(job)),
            status_code=202,
            headers={"Location": f"/v1/feedback/{job.id}"},
        )
    return _applied(state, state.learner.wait(job.id))


# ------------------------------------------------------------------------ follow


@router.get("/v1/feedback", response_model=JobList, summary="Feedback jobs, newest first")
def list_jobs(
    state: State,
    caller: Caller,
    adapter_id: Annotated[str | None, Query(max_length=256)] = None,
    status: Annotated[JobStatus | None, Query(description="Only jobs in this state.")] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
) -> JobList:
    """Jobs of one adapter or of every adapter the key may see, newest first."""
    if adapter_id is not None:
        caller.require(adapter_id)
    jobs = state.learner.jobs(adapter_id, status=status, namespaces=caller.namespaces, limit=limit)
    return JobList(data=[job_info(job) for job in jobs])


@router.get(
    "/v1/feedback/events", response_model=FeedbackEventList, summary="Recent feedback events"
)
def feedback_events(
    state: State,
    caller: Caller,
    adapter_id: Annotated[str | None, Query(max_length=256)] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
) -> FeedbackEventList:
    """Feedback events (one per item of a job), newest first, of the adapters the key may see."""
    if adapter_id is not None:
        caller.require(adapter_id)
    events = state.learner.feedback_events(adapter_id, namespaces=caller.namespaces, limit=limit)
    return FeedbackEventList(
        data=[
            FeedbackEventInfo(
                **{**e.to_dict(), "metrics": finite(e.metrics), "timings": finite(e.timings)}
            )
            for e in events
        ]
    )


@router.get("/v1/feedback/{job_id}", response_model=JobInfo, summary="One feedback job")
def get_job(
    job_id: JobId,
    state: State,
    caller: Caller,
    wait: Annotated[
        float | None,
        Query(
            ge=0,
            le=MAX_POLL_SECONDS,
            description="Seconds to wait for the job to finish before answering (long poll); "
            "the answer may still be an unfinished job.",
        ),
    ] = None,
) -> JobInfo:
    """The job as it is now, or once it finishes if that is within ``wait`` seconds."""
    job = _visible_job(state, caller, job_id)
    if wait and not job.done:
        job = state.learner.wait(job_id, timeout=wait)
    return job_info(job)


@router.delete("/v1/feedback/{job_id}", response_model=JobInfo, summary="Cancel a queued job")
def cancel_job(job_id: JobId, state: State, caller: Caller) -> JobInfo:
    """Cancel a job that no worker has started; a running or finished one is a 409."""
    _visible_job(state, caller, job_id)
    return job_info(state.learner.cancel(job_id))

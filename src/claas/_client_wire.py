"""Reading the CLaaS server's JSON into core types, and writing core types as its JSON.

Kept beside :mod:`claas.client` (its only user) so the client module holds the
use cases and this one the wire format.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import httpx

from claas.errors import (
    BackendUnavailable,
    ClaasError,
    Conflict,
    InvalidRequest,
    NotFound,
    PayloadTooLarge,
    PermissionDenied,
    QueueFull,
    error_for_code,
)
from claas.jobs.model import FeedbackJob
from claas.learner_like import MessagesLike
from claas.records import FeedbackEvent
from claas.types import (
    AdapterSummary,
    AdapterVersion,
    ChatMessage,
    Completion,
    CompletionFeedback,
    DistillConfig,
    Feedback,
    messages_from_dicts,
)

AUTH_FAILED = "authentication failed"
"""How the message of a rejected (missing or unknown) API key starts."""

# For bodies without a known code (a proxy's page, a routing 404, a schema 422).
_BY_STATUS: Mapping[int, type[ClaasError]] = {
    401: PermissionDenied,
    403: PermissionDenied,
    404: NotFound,
    409: Conflict,
    413: PayloadTooLarge,
    429: QueueFull,
    503: BackendUnavailable,
}
# The server answers back-pressure as OpenAI does (so its client retries): one wire code
# outside the core's table.
_RATE_LIMIT_CODE = "rate_limit_exceeded"


def error_from(response: httpx.Response) -> ClaasError:
    """The core exception an HTTP error response stands for."""
    try:
        body = response.json()
    except ValueError:
        body = None
    detail = body.get("error") if isinstance(body, Mapping) else None
    if not isinstance(detail, Mapping):
        detail = {}
    status = response.status_code
    message = str(detail.get("message") or f"the server answered HTTP {status}")
    if status == 401:
        message = f"{AUTH_FAILED}: {message}"
    fallback = _BY_STATUS.get(status, InvalidRequest if status < 500 else ClaasError)
    code = detail.get("code")
    if code == _RATE_LIMIT_CODE:
        return QueueFull(message)
    return error_for_code(code if isinstance(code, str) else None, message, default=fallback)


def stream_error(chunk: Mapping[str, Any] | None) -> ClaasError:
    """The exception an ``{"error": ...}`` event (or a stream without events) stands for."""
    if chunk is None:
        return BackendUnavailable("the server ended the stream before the answer")
    detail = chunk["error"] if isinstance(chunk.get("error"), Mapping) else {}
    message = str(detail.get("message") or "the stream failed")
    return error_for_code(detail.get("code"), message, default=ClaasError)


def sse_events(lines: Iterator[str]) -> Iterator[dict[str, Any]]:
    """The JSON payloads of server-sent ``data:`` lines, up to ``[DONE]``."""
    for line in lines:
        if not line.startswith("data:"):
            continue
        payload = line[len("data:") :].strip()
        if payload == "[DONE]":
            return
        yield json.loads(payload)


def floats(values: Mapping[str, Any] | None) -> dict[str, float]:
    """Numbers from JSON, where the server sends ``null`` for a non-finite one (NaN here)."""
    return {k: math.nan if v is None else float(v) for k, v in (values or {}).items()}


def version_from(data: Mapping[str, Any]) -> AdapterVersion:
    return AdapterVersion(
        adapter_id=data["adapter_id"],
        version=data["version"],
        parent=data["parent"],
        created=data["created"],
        base_model=data["base_model"],
        path="",
        lora=dict(data["lora"]),
        distill_config=data["distill_config"],
        feedback_ids=tuple(data["feedback_ids"]),
        metrics=floats(data["metrics"]),
        engine=data["engine"],
        verdict=data.get("verdict"),
    )


def summary_from(info: Mapping[str, Any]) -> AdapterSummary:
    """An adapter's summary from the server's ``AdapterInfo``."""
    live = version_from(info["live"]) if info.get("live") is not None else None
    return AdapterSummary(
        adapter_id=info["id"], live=live, versions=info["versions"], error=info.get("error")
    )


def completion_from(data: Mapping[str, Any]) -> Completion:
    return Completion(
        id=data["id"],
        adapter_id=data["adapter_id"],
        adapter_version=data["adapter_version"],
        model=data["model"],
        messages=tuple(ChatMessage(role=m["role"], content=m["content"]) for m in data["messages"]),
        prompt_ids=tuple(data["prompt_ids"]),
        response_ids=tuple(data["response_ids"]),
        response_logprobs=tuple(logprob(lp) for lp in data["response_logprobs"]),
        text=data["text"],
        raw_text=data["raw_text"],
        finish_reason=data["finish_reason"],
        created=data["created"],
        top_logprobs=tuple(
            tuple((int(token), logprob(lp)) for token, lp in position)
            for position in data["top_logprobs"]
        ),
        thinking=data["thinking"],
    )


def logprob(value: float | None) -> float:
    return -math.inf if value is None else float(value)


def event_from(data: Mapping[str, Any]) -> FeedbackEvent:
    return FeedbackEvent(
        **{**data, "metrics": floats(data["metrics"]), "timings": floats(data["timings"])}
    )


def job_from(data: Mapping[str, Any]) -> FeedbackJob:
    """A job from the server's ``JobInfo`` (a server failure's ``error`` is its public text)."""
    return FeedbackJob(
        id=data["id"],
        adapter_id=data["adapter_id"],
        status=data["status"],
        accepted=data["accepted"],
        feedback_ids=tuple(data["feedback_ids"]),
        idempotency_key=data["idempotency_key"],
        started=data["started"],
        finished=data["finished"],
        version=data["version"],
        parent_version=data["parent_version"],
        metrics=floats(data["metrics"]),
        timings=floats(data["timings"]),
        error=data["error"],
        error_code=data["error_code"],
        attempts=data["attempts"],
    )


# ----------------------------------------------------------------------- encoding


def feedback_body(
    items: Sequence[Feedback],
    *,
    adapter_id: str | None,
    config: DistillConfig | Mapping[str, Any] | None,
) -> dict[str, Any]:
    """The ``POST /v1/feedback`` body of a batch, after the core's config checks.

    Raises:
        InvalidConfig: An unknown or out-of-range override.
        InvalidRequest: No items.
    """
    if isinstance(config, DistillConfig):
        overrides: dict[str, Any] | None = config.to_dict()
    else:
        DistillConfig.from_dict(config)  # the core's checks, before sending
        overrides = dict(config) if config else None
    if not items:
        raise InvalidRequest("no feedback items given")
    body: dict[str, Any] = {"items": [wire_item(item) for item in items]}
    if adapter_id is not None:
        body["adapter_id"] = adapter_id
    if overrides:
        body["config"] = overrides
    return body


def wire_messages(messages: MessagesLike) -> list[dict[str, str]]:
    """The core's message checks, then the JSON form."""
    return [m.to_dict() for m in messages_from_dicts(messages)]


def wire_item(item: Feedback) -> dict[str, Any]:
    if isinstance(item, CompletionFeedback):
        return {"completion_id": item.completion_id, "feedback": item.text}
    return {
        "messages": [m.to_dict() for m in item.messages],
        "response": item.response,
        "feedback": item.text,
    }


def attachment_name(response: httpx.Response, fallback: str) -> str:
    """The file name in Content-Disposition, reduced to a bare name."""
    found = re.search(r'filename="?([^";]+)"?', response.headers.get("content-disposition", ""))
    name = Path(found.group(1)).name if found else ""
    return name if name.endswith(".zip") and not name.startswith(".") else fallback

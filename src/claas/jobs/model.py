"""Feedback jobs as records: states, what a job holds, queue limits.

A job is accepted at once (``queued``), applied later by a worker
(``running``), and ends ``applied`` (with its version), ``failed`` (with the
reason), ``rejected`` (the guard kept the candidate from going live),
``cancelled`` (only a queued job can be) or ``skipped`` (the pre-check
measured too little teacher-student divergence to learn from; no new
version). Its payload holds everything needed to apply it in another process
or after a crash: the feedback items (a
completion id, or the raw messages and response) and the config overrides.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from typing import Any, Literal, get_args

import attrs

from claas.errors import InvalidConfig, InvalidRequest
from claas.types import CompletionFeedback, Feedback, RawFeedback

__all__ = [
    "FINAL_JOB_STATUSES",
    "JOB_STATUSES",
    "FeedbackJob",
    "JobPayload",
    "JobStatus",
    "QueueLimits",
    "check_idempotency_key",
]

JobStatus = Literal["queued", "running", "applied", "failed", "rejected", "cancelled", "skipped"]
JOB_STATUSES: tuple[JobStatus, ...] = get_args(JobStatus)
FINAL_JOB_STATUSES: tuple[JobStatus, ...] = (
    "applied",
    "failed",
    "rejected",
    "cancelled",
    "skipped",
)
MAX_KEY_LENGTH = 255


@attrs.frozen(kw_only=True)
class FeedbackJob:
    """One accepted feedback submission and what became of it.

    Attributes:
        id: The job id (``job-...``).
        adapter_id: The adapter it updates.
        status: ``queued``, ``running``, ``applied``, ``failed``, ``rejected``,
            ``cancelled`` or ``skipped``.
        accepted: Unix time it was accepted.
        feedback_ids: The feedback events it carries (one per item).
        idempotency_key: The client's key, if it gave one.
        started: Unix time a worker began it (the last attempt).
        finished: Unix time it reached a final status.
        version: The version it published (``applied`` only).
        parent_version: The version the update started from.
        metrics: What the update measured (``precheck_divergence``: the
            divergence the pre-check measured, when one ran).
        timings: Seconds per phase (``queue_seconds`` ... ``total_seconds``).
        error: Why it failed, was rejected or cancelled.
        error_code: The :func:`claas.errors.error_code` of the failure.
        attempts: How many times a worker started it (more than one after a crash).
        worker: The id of the worker running it (``running`` only); it fences
            the finish, and is not part of :meth:`to_dict`.
    """

    id: str
    adapter_id: str
    status: JobStatus
    accepted: float
    feedback_ids: tuple[str, ...] = ()
    idempotency_key: str | None = None
    started: float | None = None
    finished: float | None = None
    version: int | None = None
    parent_version: int | None = None
    metrics: Mapping[str, float] = attrs.field(factory=dict)
    timings: Mapping[str, float] = attrs.field(factory=dict)
    error: str | None = None
    error_code: str | None = None
    attempts: int = 0
    worker: str | None = None

    @property
    def done(self) -> bool:
        """Whether the job reached a final status."""
        return self.status in FINAL_JOB_STATUSES

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-ready mapping."""
        data = attrs.asdict(self)
        del data["worker"]
        data["feedback_ids"] = list(self.feedback_ids)
        data["metrics"], data["timings"] = dict(self.metrics), dict(self.timings)
        return data


@attrs.frozen(kw_only=True)
class JobPayload:
    """What a worker needs to apply a job: the items, the target and the overrides."""

    items: tuple[Feedback, ...]
    adapter_id: str | None
    config: Mapping[str, Any] = attrs.field(factory=dict)

    def to_json(self) -> str:
        """Canonical JSON (sorted keys), also the basis of the idempotency check."""
        return json.dumps(
            {
                "items": [_item_dict(item) for item in self.items],
                "adapter_id": self.adapter_id,
                "config": dict(self.config),
            },
            sort_keys=True,
            separators=(",", ":"),
        )

    def digest(self) -> str:
        """A hash of the request body: a reused key with another body is refused."""
        return hashlib.sha256(self.to_json().encode()).hexdigest()

    @classmethod
    def from_json(cls, text: str) -> JobPayload:
        """Read a payload written by :meth:`to_json`."""
        data = json.loads(text)
        return cls(
            items=tuple(_item_from(d) for d in data["items"]),
            adapter_id=data["adapter_id"],
            config=data["config"],
        )


@attrs.frozen(kw_only=True)
class QueueLimits:
    """Back-pressure: how many jobs may wait, per adapter and in all."""

    per_adapter: int = attrs.field(validator=lambda _, a, v: _check_positive(a.name, v))
    total: int = attrs.field(validator=lambda _, a, v: _check_positive(a.name, v))


def _check_positive(name: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InvalidConfig(f"QueueLimits.{name}={value!r}: must be an integer >= 1")


def check_idempotency_key(key: str | None) -> str | None:
    """Return ``key`` if it is a usable idempotency key.

    Raises:
        InvalidRequest: Empty, longer than 255 characters, or not printable ASCII.
    """
    if key is None:
        return None
    if not isinstance(key, str) or not key or len(key) > MAX_KEY_LENGTH:
        raise InvalidRequest(f"an idempotency key is 1-{MAX_KEY_LENGTH} characters")
    if not all(" " < c <= "~" for c in key):
        raise InvalidRequest("an idempotency key is printable ASCII without spaces")
    return key


def _item_dict(item: Feedback) -> dict[str, Any]:
    if isinstance(item, CompletionFeedback):
        return {"completion_id": item.completion_id, "text": item.text}
    return {
        "messages": [m.to_dict() for m in item.messages],
        "response": item.response,
        "text": item.text,
    }


def _item_from(data: Mapping[str, Any]) -> Feedback:
    if "completion_id" in data:
        return CompletionFeedback(completion_id=data["completion_id"], text=data["text"])
    messages: Sequence[Mapping[str, Any]] = data["messages"]
    return RawFeedback(messages=messages, response=data["response"], text=data["text"])

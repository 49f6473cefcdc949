"""What every records backend stores and returns: the records protocol and its records.

A backend keeps the completions CLaaS served, the feedback events and what
became of them, each adapter's version lineage and its rollbacks. The embedded
default is SQLite (:mod:`claas.records.sqlite`); every reader of records goes
through :class:`RecordsBackend`, so another database can stand in.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Literal, Protocol, get_args, runtime_checkable

import attrs

from claas.errors import BackendUnavailable
from claas.followups import AdapterSettings, FollowUp
from claas.types import AdapterVersion, Completion

if TYPE_CHECKING:
    from claas.jobs.model import FeedbackJob, JobStatus, QueueLimits

__all__ = [
    "DONE_CHANNEL",
    "FINAL_STATUSES",
    "JOBS_CHANNEL",
    "DatabaseUnavailable",
    "STATUSES",
    "VERSIONS_CHANNEL",
    "FeedbackEvent",
    "FeedbackStatus",
    "FollowupRecords",
    "JobQueue",
    "LineageEntry",
    "NewFeedback",
    "Notifications",
    "RecordsBackend",
    "RollbackEvent",
]

FeedbackStatus = Literal["queued", "running", "applied", "failed"]
STATUSES: tuple[FeedbackStatus, ...] = get_args(FeedbackStatus)
FINAL_STATUSES: tuple[FeedbackStatus, ...] = ("applied", "failed")


class DatabaseUnavailable(BackendUnavailable):
    """The records database cannot be reached now (HTTP 503); retrying later may work.

    A job whose update meets it is not failed: it stays claimed until its lease
    runs out, and is applied when the database is back.
    """


JOBS_CHANNEL = "claas_jobs"
"""Notified when a job may have become claimable (accepted, requeued, its adapter freed)."""
DONE_CHANNEL = "claas_jobs_done"
"""Notified with a job's id when it reaches a final status."""
VERSIONS_CHANNEL = "claas_versions"
"""Notified with ``"<adapter_id> <version>"`` when a version is recorded."""


@attrs.frozen(kw_only=True)
class FeedbackEvent:
    """One piece of feedback and what became of it.

    Attributes:
        id: The feedback id.
        adapter_id: The adapter it updates.
        completion_id: The completion it is about, if it named one.
        text: The feedback text.
        status: ``queued``, ``running``, ``applied`` or ``failed``.
        parent_version: The version the update started from, once known.
        version: The version the update published (``applied`` only).
        error: Why it failed (``failed`` only).
        metrics: What the update measured.
        timings: Seconds spent per phase.
        created: Unix time it was received.
        finished: Unix time it became ``applied`` or ``failed``.
    """

    id: str
    adapter_id: str
    completion_id: str | None
    text: str
    status: FeedbackStatus
    parent_version: int | None = None
    version: int | None = None
    error: str | None = None
    metrics: Mapping[str, float] = attrs.field(factory=dict)
    timings: Mapping[str, float] = attrs.field(factory=dict)
    created: float = 0.0
    finished: float | None = None

    @property
    def done(self) -> bool:
        """Whether the event reached a final status."""
        return self.status in FINAL_STATUSES

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-ready mapping."""
        return {**attrs.asdict(self), "metrics": dict(self.metrics), "timings": dict(self.timings)}


@attrs.frozen(kw_only=True)
class RollbackEvent:
    """``latest`` of an adapter was moved back from one version to another."""

    adapter_id: str
    from_version: int
    to_version: int
    created: float

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-ready mapping."""
        return attrs.asdict(self)


@attrs.frozen(kw_only=True)
class LineageEntry:
    """One recorded version of an adapter: its parent and the feedback it learned."""

    adapter_id: str
    version: int
    parent: int | None
    created: float
    feedback_ids: tuple[str, ...]
    metrics: Mapping[str, float]


@attrs.frozen(kw_only=True)
class NewFeedback:
    """A feedback event recorded with the job that carries it."""

    feedback_id: str
    completion_id: str | None
    text: str


@runtime_checkable
class JobQueue(Protocol):
    """The feedback-job queue in the records database (:mod:`claas.jobs`).

    Claims are exclusive across processes; an adapter's next job is claimed
    only when none of its jobs is running.
    """

    def add_job(
        self,
        job: FeedbackJob,
        *,
        payload: str,
        body_hash: str,
        feedback: Sequence[NewFeedback],
        limits: QueueLimits,
    ) -> tuple[FeedbackJob, bool]:
        """Record a queued job (or return the one with its idempotency key, ``False``)."""
        ...

    def get_job(self, job_id: str) -> FeedbackJob:
        """One job (``JobNotFound`` if unknown)."""
        ...

    def job_payload(self, job_id: str) -> str:
        """The JSON payload a job was accepted with."""
        ...

    def jobs(
        self,
        adapter_id: str | None = None,
        *,
        status: JobStatus | None = None,
        namespaces: Collection[str] | None = None,
        limit: int = 50,
    ) -> list[FeedbackJob]:
        """Jobs, newest first."""
        ...

    def job_counts(self, adapter_id: str | None = None) -> dict[str, int]:
        """Jobs per status (of one adapter, or of all)."""
        ...

    def claim_jobs(
        self, worker: str, *, lease_seconds: float, max_coalesce: int = 1
    ) -> list[FeedbackJob]:
        """Claim the next claimable job (with coalesced followers), or ``[]``."""
        ...

    def renew_lease(self, job_ids: Sequence[str], worker: str, lease_seconds: float) -> None:
        """A worker's heartbeat on its running jobs."""
        ...

    def holds_lease(self, job_ids: Sequence[str], worker: str) -> bool:
        """Whether ``worker`` still runs all of ``job_ids`` (no other worker took them over)."""
        ...

    def finish_jobs(
        self,
        job_ids: Sequence[str],
        *,
        status: JobStatus,
        version: int | None = None,
        parent_version: int | None = None,
        metrics: Mapping[str, float] | None = None,
        timings: Mapping[str, float] | None = None,
        error: str | None = None,
        error_code: str | None = None,
        worker: str | None = None,
    ) -> list[FeedbackJob]:
        """Move running jobs and their feedback events to a final status.

        With ``worker``, only the jobs that worker still runs (fencing).
        """
        ...

    def cancel_job(self, job_id: str, *, reason: str = ...) -> FeedbackJob:
        """Cancel a queued job (``Conflict`` otherwise)."""
        ...

    def cancel_adapter_jobs(self, adapter_id: str, reason: str) -> list[str]:
        """Cancel an adapter's queued jobs."""
        ...

    def requeue_stale(self, is_alive: Callable[[str], bool]) -> list[str]:
        """Give back running jobs of dead workers or with expired leases."""
        ...


@runtime_checkable
class Notifications(Protocol):
    """A records backend that tells other processes what changed (PostgreSQL's NOTIFY).

    Without it, other processes' changes are seen by polling.
    """

    def subscribe(self, channel: str, callback: Callable[[str], None]) -> None:
        """Call ``callback(payload)`` on each notification of ``channel``, from a thread.

        After a lost connection is re-established every callback is called once
        with ``""``: notifications sent meanwhile are lost, so look again.
        """
        ...


@runtime_checkable
class FollowupRecords(Protocol):
    """Follow-up links and per-adapter settings (schema version 3 of the SQLite records).

    A backend stores each completion's conversation key
    (:func:`claas.followups.conversation_key` of its adapter, messages and
    visible text, ``NULL`` for the base model) in ``add_completion`` and finds
    completions by it here.
    """

    def match_completions(self, adapter_id: str, keys: Sequence[str]) -> dict[str, str]:
        """``{conversation_key: completion_id}`` of the adapter's completions with these keys."""
        ...

    def add_followup(self, followup: FollowUp) -> tuple[FollowUp, bool]:
        """Record a link (``True``), or return the one with its id (``False``)."""
        ...

    def set_followup_job(
        self, followup_id: str, *, job_id: str | None, error: str | None
    ) -> FollowUp:
        """Record the job a follow-up became, or why none was submitted."""
        ...

    def followups(
        self,
        adapter_id: str | None = None,
        *,
        completion_id: str | None = None,
        namespaces: Collection[str] | None = None,
        limit: int = 50,
    ) -> list[FollowUp]:
        """Follow-up links, newest first."""
        ...

    def adapter_settings(self, adapter_id: str) -> AdapterSettings | None:
        """The adapter's stored settings (``None``: never stored)."""
        ...

    def set_adapter_settings(self, adapter_id: str, settings: AdapterSettings) -> None:
        """Store the adapter's settings."""
        ...


@runtime_checkable
class RecordsBackend(JobQueue, FollowupRecords, Protocol):
    """The records database the :class:`~claas.learner.Learner` reads and writes.

    ``namespaces`` arguments filter in the database: ``None`` means every
    namespace, an empty collection none.
    """

    def add_completion(self, completion: Completion) -> None:
        """Record a served completion (``Conflict`` if its id is taken)."""
        ...

    def get_completion(self, completion_id: str) -> Completion:
        """A recorded completion (``CompletionNotFound`` if unknown)."""
        ...

    def add_feedback(
        self,
        *,
        feedback_id: str,
        adapter_id: str,
        completion_id: str | None,
        text: str,
        created: float | None = None,
    ) -> FeedbackEvent:
        """Record feedback as ``queued``."""
        ...

    def update_feedback(
        self,
        feedback_id: str,
        *,
        status: FeedbackStatus,
        version: int | None = None,
        parent_version: int | None = None,
        error: str | None = None,
        metrics: Mapping[str, float] | None = None,
        timings: Mapping[str, float] | None = None,
    ) -> FeedbackEvent:
        """Move feedback to ``status`` (final statuses stay final)."""
        ...

    def get_feedback(self, feedback_id: str) -> FeedbackEvent:
        """One feedback event (``NotFound`` if unknown)."""
        ...

    def feedback_events(
        self,
        adapter_id: str | None = None,
        *,
        namespaces: Collection[str] | None = None,
        limit: int = 50,
    ) -> list[FeedbackEvent]:
        """The newest feedback events first."""
        ...

    def pending_feedback(self, adapter_id: str | None = None) -> list[FeedbackEvent]:
        """``queued`` and ``running`` events, oldest first."""
        ...

    def add_version(self, version: AdapterVersion) -> None:
        """Record a published version."""
        ...

    def lineage(self, adapter_id: str) -> list[LineageEntry]:
        """An adapter's recorded versions, ascending."""
        ...

    def record_rollback(
        self, adapter_id: str, from_version: int, to_version: int, *, created: float | None = None
    ) -> None:
        """Record that ``latest`` moved from one version to another."""
        ...

    def rollbacks(
        self,
        adapter_id: str | None = None,
        *,
        namespaces: Collection[str] | None = None,
        limit: int = 50,
    ) -> list[RollbackEvent]:
        """Rollbacks, newest first."""
        ...

    def delete_adapter(self, adapter_id: str) -> None:
        """Forget an adapter's lineage and rollbacks (completions and feedback stay)."""
        ...

    def counts(self) -> dict[str, int]:
        """Row counts for dashboards and metrics."""
        ...

    def close(self) -> None:
        """Stop using the database."""
        ...

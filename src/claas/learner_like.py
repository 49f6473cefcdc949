"""``LearnerLike``: the use cases shared by the in-process Learner and the HTTP Client.

Code written against this protocol runs unchanged on a
:class:`claas.Learner` (the model in this process) and on a
:class:`claas.Client` (a CLaaS server over HTTP)::

    def teach(claas: LearnerLike) -> int | None:
        claas.init_adapter("me/bot", exist_ok=True)
        answer = claas.chat("me/bot", [{"role": "user", "content": "Hi"}])
        job = claas.submit_feedback(answer.id, "Shorter.")  # queued, returns at once
        return claas.wait(job.id).version

Both return the same core records and raise the same :mod:`claas.errors`.
"""

from __future__ import annotations

import os
from collections.abc import Collection, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from claas.followups import AdapterSettings, FollowUp
from claas.types import (
    AdapterSummary,
    AdapterVersion,
    ChatMessage,
    Completion,
    DistillConfig,
    Feedback,
    FeedbackResult,
    LoraSpec,
)

if TYPE_CHECKING:
    from claas.client import Client
    from claas.jobs.model import FeedbackJob, JobStatus
    from claas.learner import Learner
    from claas.records import FeedbackEvent
    from claas.results import ChatStream, Score

__all__ = ["LearnerLike", "MessagesLike"]

MessagesLike = Sequence[ChatMessage | Mapping[str, object]]
r"""OpenAI-style ``{"role", "content"}`` dicts or :class:`~claas.types.ChatMessage`\ s."""
_LORA = LoraSpec()
"""OpenAI-style ``{"role", "content"}`` dicts, or :class:`~claas.types.ChatMessage`."""


@runtime_checkable
class LearnerLike(Protocol):
    """Chat, learn from feedback and manage adapter versions (see :class:`claas.Learner`)."""

    def init_adapter(
        self,
        adapter_id: str,
        *,
        rank: int = _LORA.rank,
        alpha: float = _LORA.alpha,
        dropout: float = _LORA.dropout,
        target_modules: Sequence[str] = _LORA.target_modules,
        exist_ok: bool = False,
        learn_from_followups: bool | None = None,
    ) -> AdapterVersion:
        """Create an adapter whose version 0 equals the base model."""
        ...

    def configure_adapter(
        self, adapter_id: str, *, learn_from_followups: bool | None = None
    ) -> AdapterSettings:
        """Change an adapter's settings (``None`` keeps a value) and return them all."""
        ...

    def adapter_settings(self, adapter_id: str) -> AdapterSettings:
        """An adapter's settings."""
        ...

    def followups(
        self,
        adapter_id: str | None = None,
        *,
        completion_id: str | None = None,
        namespaces: Collection[str] | None = None,
        limit: int = 50,
    ) -> list[FollowUp]:
        """Recorded follow-ups, newest first."""
        ...

    def adapters(self, namespace: str | None = None) -> list[str]:
        """Ids of the existing adapters (optionally of one namespace)."""
        ...

    def adapter_summaries(self, namespaces: Collection[str] | None = None) -> list[AdapterSummary]:
        """Every adapter (optionally of some namespaces) with its live version."""
        ...

    def adapter_summary(self, adapter_id: str) -> AdapterSummary:
        """One adapter with its live version (``live=None`` and ``error`` if it is damaged)."""
        ...

    def chat(self, adapter_id: str | None, messages: MessagesLike, **sampling: Any) -> Completion:
        """Answer a conversation with the adapter's live version and record it."""
        ...

    def chat_stream(
        self, adapter_id: str | None, messages: MessagesLike, **sampling: Any
    ) -> ChatStream:
        """Like :meth:`chat`, but yield text as it is generated."""
        ...

    def feedback(
        self,
        completion_id: str | None = None,
        text: str | None = None,
        *,
        config: DistillConfig | Mapping[str, Any] | None = None,
        messages: MessagesLike | None = None,
        response: str | None = None,
        adapter_id: str | None = None,
    ) -> FeedbackResult:
        """Learn from text feedback on one response; return once the new version serves."""
        ...

    def feedback_batch(
        self,
        items: Sequence[Feedback],
        *,
        adapter_id: str | None = None,
        config: DistillConfig | Mapping[str, Any] | None = None,
    ) -> FeedbackResult:
        """Learn from several feedback items on one adapter in a single update."""
        ...

    def submit_feedback(
        self,
        completion_id: str | None = None,
        text: str | None = None,
        *,
        config: DistillConfig | Mapping[str, Any] | None = None,
        messages: MessagesLike | None = None,
        response: str | None = None,
        adapter_id: str | None = None,
        idempotency_key: str | None = None,
    ) -> FeedbackJob:
        """Record feedback on one response as a job and return it at once (``queued``)."""
        ...

    def submit_feedback_batch(
        self,
        items: Sequence[Feedback],
        *,
        adapter_id: str | None = None,
        config: DistillConfig | Mapping[str, Any] | None = None,
        idempotency_key: str | None = None,
    ) -> FeedbackJob:
        """Record several items on one adapter as one job (one update); return it at once."""
        ...

    def job(self, job_id: str) -> FeedbackJob:
        """A feedback job as it is now (raises ``JobNotFound``)."""
        ...

    def jobs(
        self,
        adapter_id: str | None = None,
        *,
        status: JobStatus | None = None,
        namespaces: Collection[str] | None = None,
        limit: int = 50,
    ) -> list[FeedbackJob]:
        """Feedback jobs, newest first (optionally of one adapter, state or namespaces)."""
        ...

    def wait(self, job_id: str, timeout: float | None = None) -> FeedbackJob:
        """Block until the job is final or ``timeout`` seconds pass; return it as it then is."""
        ...

    def cancel(self, job_id: str) -> FeedbackJob:
        """Cancel a queued job (a running or finished one raises ``Conflict``)."""
        ...

    def result_of(self, job: FeedbackJob) -> FeedbackResult:
        """The result of an applied job; raises the error of any other state."""
        ...

    def versions(self, adapter_id: str) -> list[AdapterVersion]:
        """Every retained version of an adapter, oldest first."""
        ...

    def current_version(self, adapter_id: str) -> AdapterVersion:
        """The version chats are served by."""
        ...

    def rollback(self, adapter_id: str, version: int, *, force: bool = False) -> AdapterVersion:
        """Serve an older version again (a rejected one needs ``force``)."""
        ...

    def force(self, adapter_id: str, version: int) -> AdapterVersion:
        """Publish a version the guard rejected."""
        ...

    def guard_probes(self, adapter_id: str) -> list[dict[str, Any]]:
        """The adapter's own guard probes, ``{"prompt", "expect"}`` each."""
        ...

    def set_guard_probes(
        self, adapter_id: str, probes: Sequence[Mapping[str, Any]]
    ) -> list[dict[str, Any]]:
        """Replace the adapter's own guard probes."""
        ...

    def export(
        self, adapter_id: str, version: int | None = None, dest: str | os.PathLike[str] = "."
    ) -> Path:
        """Write a zip of one version (default: the live one) and return its path."""
        ...

    def delete_adapter(self, adapter_id: str) -> None:
        """Delete an adapter and all its versions."""
        ...

    def score(self, adapter_id: str | None, messages: MessagesLike, response: str) -> Score:
        """Logprobs of ``response`` as the answer to ``messages`` under the live version."""
        ...

    def feedback_events(
        self,
        adapter_id: str | None = None,
        *,
        namespaces: Collection[str] | None = None,
        limit: int = 50,
    ) -> list[FeedbackEvent]:
        """Recent feedback events, newest first."""
        ...

    def get_completion(self, completion_id: str) -> Completion:
        """A recorded completion (raises ``CompletionNotFound``)."""
        ...

    def close(self) -> None:
        """Release what it holds."""
        ...

    def __enter__(self) -> LearnerLike: ...

    def __exit__(self, *exc: object) -> None: ...


if TYPE_CHECKING:  # mypy proves both implementations satisfy the protocol, signatures included

    def _both_are_learner_like(learner: Learner, client: Client) -> tuple[LearnerLike, ...]:
        return learner, client

"""The Learner: CLaaS's use cases as plain Python calls.

``chat`` serves the adapter's live version and records the exact tokens;
``submit_feedback`` records text feedback on a served completion as a durable
job (:mod:`claas.jobs`) that a worker turns into an SDPO update, published as a
new immutable version; ``feedback`` waits until the next ``chat`` will use it
(read-your-writes). One adapter's updates apply one at a time, in acceptance
order. The store and the records are the learner's own: adapters ask the learner.
"""

from __future__ import annotations

import os
import time
import uuid
import weakref
from collections.abc import Collection, Mapping, Sequence
from pathlib import Path
from typing import Any

from claas._adapter_locks import AdapterLocks
from claas._chat import completion_of, new_chat_id, score_response, stream_of
from claas._cluster import follow_published
from claas._components import Components
from claas._followups import Followups
from claas._guard_use_cases import GuardUseCases
from claas._legacy import replay_events, warn_resume_deprecated
from claas._scratch import sweep_scratch
from claas._updates import Updates
from claas.config import Settings
from claas.errors import AdapterNotFound
from claas.followups import AdapterSettings, FollowUp
from claas.inference.base import Generation, InferenceBackend
from claas.jobs.model import FeedbackJob, JobStatus
from claas.jobs.service import JobListener, JobService, result_of
from claas.learner_like import MessagesLike
from claas.records import FeedbackEvent, LineageEntry, RecordsBackend, RollbackEvent, open_records
from claas.results import ChatStream, Score
from claas.storage import AdapterStore, LocalAdapterStore, summarize, summarize_all
from claas.teacher import ChatTokenizer
from claas.tools import pop_tools
from claas.training.base import TrainingEngine
from claas.types import (
    AdapterSummary,
    AdapterVersion,
    ChatMessage,
    Completion,
    DistillConfig,
    Feedback,
    FeedbackResult,
    LoraSpec,
    SamplingParams,
    feedback_item,
    messages_from_dicts,
    validate_adapter_id,
)

__all__ = ["ChatStream", "Learner", "Score"]

ConfigLike = DistillConfig | Mapping[str, object] | None
_LORA = LoraSpec()


class Learner(GuardUseCases):
    """Chat, learn from feedback, and manage adapter versions.

    Args:
        settings: Installation settings; default ``Settings.load()`` (the
            bundled model, data in ``~/.claas`` or ``$CLAAS_DATA_DIR``).
        inference: A backend to use instead of the one the settings name.
        engine: A training engine to use instead of the one the settings name.
        store: An adapter store instead of the local one under the data dir.
        records: A records database instead of the one under the data dir.
        tokenizer: The base model's tokenizer (for building teacher prompts).
    """

    def __init__(
        self,
        settings: Settings | None = None,
        *,
        inference: InferenceBackend | None = None,
        engine: TrainingEngine | None = None,
        store: AdapterStore | None = None,
        records: RecordsBackend | None = None,
        tokenizer: ChatTokenizer | None = None,
    ) -> None:
        self.settings = settings if settings is not None else Settings.load()
        self.settings.data_dir.mkdir(parents=True, exist_ok=True)
        self._store: AdapterStore = store or LocalAdapterStore(
            self.settings.adapters_dir, keep_versions=self.settings.keep_versions
        )
        self._records: RecordsBackend = records or open_records(self.settings)
        self._parts = Components(
            self.settings, inference=inference, engine=engine, tokenizer=tokenizer
        )
        self._locks = AdapterLocks()
        self._updates = Updates(
            self.settings,
            store=self._store,
            records=self._records,
            parts=self._parts,
            locks=self._locks,
        )
        self._started = time.time()
        self._scratch = self.settings.data_dir / "tmp"
        sweep_scratch(self._scratch)
        self._jobs = JobService(self.settings, self._records, self._updates.run)
        publish = self._updates.publish_quietly
        follow_published(self.settings, self._records, self._store, self._locks, publish)
        self._followups = Followups(self.settings, self._records, self.submit_feedback_batch)
        weakref.finalize(self, self._jobs.stop_soon)  # an unclosed learner's worker ends too
        self._jobs.start_if_pending()  # jobs interrupted by a crash recover on their own

    # -- components, built on first use -------------------------------------------------

    @property
    def inference(self) -> InferenceBackend:
        """The inference backend (built on first use)."""
        return self._parts.inference

    @property
    def engine(self) -> TrainingEngine:
        """The training engine (built on first use)."""
        return self._parts.engine

    @property
    def tokenizer(self) -> ChatTokenizer:
        """The base model's tokenizer."""
        return self._parts.tokenizer

    def queue_depth(self, adapter_id: str | None = None) -> int:
        """Jobs accepted but not finished (queued or running), for one adapter or all."""
        return self._jobs.depth(adapter_id)

    # -- adapters -------------------------------------------------------------------------

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
        """Create an adapter whose version 0 equals the base model.

        ``learn_from_followups``: learn from the user's follow-up messages
        (default: ``settings.followups.learn_from_followups``); an existing
        adapter returned with ``exist_ok`` keeps its own setting.

        Raises:
            InvalidAdapterId: If the id is not ``namespace/name``.
            AdapterExists: If it exists and ``exist_ok`` is false.
            InvalidConfig: If the LoRA shape is invalid.
        """
        validate_adapter_id(adapter_id)
        lora = LoraSpec(rank=rank, alpha=alpha, dropout=dropout, target_modules=target_modules)
        if exist_ok and self._store.exists(adapter_id):
            return self._store.get(adapter_id)
        engine = self.engine
        version = self._store.create(
            adapter_id,
            base_model=self.settings.base_model,
            lora=lora,
            write=lambda out: engine.init_adapter(lora, out),
            engine=engine.name,
        )
        self._records.add_version(version)
        self._followups.configure(adapter_id, learn_from_followups=learn_from_followups)
        return version

    def configure_adapter(
        self, adapter_id: str, *, learn_from_followups: bool | None = None
    ) -> AdapterSettings:
        """Change an adapter's settings (``None`` keeps a value) and return them all.

        Raises:
            AdapterNotFound: If the adapter does not exist.
            InvalidConfig: If a value has the wrong type.
        """
        if not self.has_adapter(adapter_id):
            raise AdapterNotFound(f"adapter {adapter_id!r} does not exist")
        return self._followups.configure(adapter_id, learn_from_followups=learn_from_followups)

    def adapter_settings(self, adapter_id: str) -> AdapterSettings:
        """An adapter's settings (``learn_from_followups``)."""
        return self._followups.settings_of(validate_adapter_id(adapter_id))

    def followups(
        self,
        adapter_id: str | None = None,
        *,
        completion_id: str | None = None,
        namespaces: Collection[str] | None = None,
        limit: int = 50,
    ) -> list[FollowUp]:
        """Recorded follow-ups, newest first (of one adapter, one completion or namespaces)."""
        return self._records.followups(
            adapter_id, completion_id=completion_id, namespaces=namespaces, limit=limit
        )

    def has_adapter(self, adapter_id: str) -> bool:
        """Whether the adapter exists."""
        return self._store.exists(validate_adapter_id(adapter_id))

    def adapters(self, namespace: str | None = None) -> list[str]:
        """Ids of the existing adapters (optionally of one namespace)."""
        return self._store.list_adapters(namespace)

    def adapter_summaries(self, namespaces: Collection[str] | None = None) -> list[AdapterSummary]:
        """Every existing adapter (of these namespaces; ``None``: all) with its live version.

        An adapter deleted while listing is left out; one whose ``LATEST`` is
        damaged is listed with ``live=None`` and the error, not hidden.
        """
        return summarize_all(self._store, namespaces)

    def adapter_summary(self, adapter_id: str) -> AdapterSummary:
        """One adapter with its live version (``live=None`` and ``error`` if ``LATEST`` is damaged).

        Raises:
            AdapterNotFound: If the adapter does not exist.
        """
        return summarize(self._store, validate_adapter_id(adapter_id))

    def versions(self, adapter_id: str) -> list[AdapterVersion]:
        """Every retained version of an adapter, oldest first."""
        return self._store.versions(validate_adapter_id(adapter_id))

    def current_version(self, adapter_id: str) -> AdapterVersion:
        """The version ``latest`` points at (the one chats are served by)."""
        return self._store.get(validate_adapter_id(adapter_id))

    def rollback(self, adapter_id: str, version: int, *, force: bool = False) -> AdapterVersion:
        """Serve an older version again; later feedback builds on it.

        Waits for feedback jobs accepted earlier to finish first. A version the
        guard rejected needs ``force`` (raises ``Conflict`` otherwise).
        """
        validate_adapter_id(adapter_id)
        self._jobs.wait_for_adapter(adapter_id)
        with self._locks.hold(adapter_id):
            previous = self._store.latest_version(adapter_id)
            target = self._store.rollback(adapter_id, version, force=force)
            self._records.record_rollback(adapter_id, previous, target.version)
        self._updates.publish_quietly(target)
        return target

    def rollbacks(
        self,
        adapter_id: str | None = None,
        *,
        namespaces: Collection[str] | None = None,
        limit: int = 50,
    ) -> list[RollbackEvent]:
        """Recent rollbacks, newest first (of one adapter, or of these namespaces)."""
        return self._records.rollbacks(adapter_id, namespaces=namespaces, limit=limit)

    def export(
        self, adapter_id: str, version: int | None = None, dest: str | os.PathLike[str] = "."
    ) -> Path:
        """Write a zip of one version (default: the live one) and return its path."""
        return self._store.export(validate_adapter_id(adapter_id), version, Path(dest))

    def delete_adapter(self, adapter_id: str) -> None:
        """Delete an adapter and all its versions (records of feedback stay).

        Its queued feedback jobs are cancelled; a running one finishes first.
        """
        validate_adapter_id(adapter_id)
        self._records.cancel_adapter_jobs(adapter_id, "the adapter was deleted")
        with self._locks.hold(adapter_id):
            doomed = self._store.versions(adapter_id)
            self._store.delete(adapter_id)
            self._records.delete_adapter(adapter_id)
        self._updates.engine_forget(doomed)
        served = self._parts.built_inference
        if served is not None:
            served.retire(adapter_id)

    # -- chat ----------------------------------------------------------------------------

    def _serving_version(self, adapter_id: str | None) -> AdapterVersion | None:
        if adapter_id is None or adapter_id in ("base", self.settings.base_model):
            return None
        return self._store.get(validate_adapter_id(adapter_id))

    def _serve(
        self, adapter_id: str | None, messages: MessagesLike, sampling: dict[str, object]
    ) -> tuple[tuple[ChatMessage, ...], AdapterVersion | None, dict[str, Any]]:
        """The checked messages, the serving version and the backend's keyword arguments."""
        chat_messages = messages_from_dicts(messages)
        tools = pop_tools(sampling)
        params, version = SamplingParams.from_kwargs(**sampling), self._serving_version(adapter_id)
        self._followups.observe(version.adapter_id if version else None, chat_messages)
        serve = {"adapter": version, "sampling": params, "thinking": self.settings.thinking}
        return chat_messages, version, {**serve, "tools": tools}

    def _completion(
        self,
        completion_id: str,
        version: AdapterVersion | None,
        messages: tuple[ChatMessage, ...],
        generation: Generation,
    ) -> Completion:
        completion = completion_of(completion_id, version, messages, generation, self.settings)
        self._records.add_completion(completion)
        return completion

    def chat(
        self, adapter_id: str | None, messages: MessagesLike, **sampling: object
    ) -> Completion:
        """Answer a conversation with the adapter's live version and record it.

        If the conversation continues a completion served for this adapter, the
        user message after it is recorded as its follow-up (see :meth:`followups`).

        Args:
            adapter_id: ``namespace/name``, or ``None`` for the base model.
            messages: OpenAI-style ``{"role", "content"}`` dicts or ChatMessages.
            **sampling: ``max_tokens``, ``temperature`` (0 = greedy), ``top_p``,
                ``top_k``, ``seed``, ``stop``, ``top_logprobs``; and ``tools``
                (:class:`claas.tools.Tools`) to offer the model.

        Returns:
            The recorded :class:`Completion`; pass ``completion.id`` to ``feedback``.

        Raises:
            AdapterNotFound: If the adapter does not exist.
            InvalidRequest: On malformed messages or sampling options.
            PayloadTooLarge: If the prompt exceeds the configured limit.
        """
        chat_messages, version, serve = self._serve(adapter_id, messages, sampling)
        generation = self.inference.generate(chat_messages, **serve)
        return self._completion(new_chat_id(), version, chat_messages, generation)

    def chat_stream(
        self, adapter_id: str | None, messages: MessagesLike, **sampling: object
    ) -> ChatStream:
        """Like :meth:`chat`, but yield text as it is generated.

        Errors in the request are raised here, before any text is produced.
        """
        chat_messages, version, serve = self._serve(adapter_id, messages, sampling)
        deltas = self.inference.stream(chat_messages, **serve)
        record = lambda i, g: self._completion(i, version, chat_messages, g)  # noqa: E731
        return stream_of(new_chat_id(), version, deltas, record)

    def complete(self, adapter_id: str | None, prompt: str, **sampling: object) -> Completion:
        """Continue a raw text prompt (no chat template) and record it."""
        params = SamplingParams.from_kwargs(**sampling)
        version = self._serving_version(adapter_id)
        generation = self.inference.complete(prompt, adapter=version, sampling=params)
        messages = (ChatMessage(role="user", content=prompt),)
        return self._completion("cmpl-" + uuid.uuid4().hex, version, messages, generation)

    def get_completion(self, completion_id: str) -> Completion:
        """A recorded completion (raises ``CompletionNotFound``)."""
        return self._records.get_completion(completion_id)

    def score(self, adapter_id: str | None, messages: MessagesLike, response: str) -> Score:
        """Logprobs of ``response`` as the answer to ``messages`` under the live version."""
        version = self._serving_version(adapter_id)
        return score_response(
            self.inference, self.tokenizer, version, messages, response, self.settings
        )

    # -- feedback ------------------------------------------------------------------------

    def feedback(
        self,
        completion_id: str | None = None,
        text: str | None = None,
        *,
        config: ConfigLike = None,
        messages: MessagesLike | None = None,
        response: str | None = None,
        adapter_id: str | None = None,
    ) -> FeedbackResult:
        """Learn from text feedback on one response; return once the new version serves.

        Give ``completion_id`` (from :meth:`chat`), or ``messages``, ``response``
        and ``adapter_id`` when the response was not served by CLaaS.

        Raises:
            InvalidRequest: Empty feedback, bad config, missing arguments, or a
                config the configured backends cannot run (``teacher="remote"``
                on a backend that does not score teachers).
            CompletionNotFound: Unknown completion id.
            AdapterNotFound: The adapter does not exist.
            NonFiniteUpdate: The update diverged; nothing was published.
        """
        return self.feedback_batch(
            [feedback_item(completion_id, text, messages, response)],
            adapter_id=adapter_id,
            config=config,
        )

    def feedback_batch(
        self,
        items: Sequence[Feedback],
        *,
        adapter_id: str | None = None,
        config: ConfigLike = None,
    ) -> FeedbackResult:
        """Learn from several feedback items on one adapter in a single update.

        Submits one job and waits for it (read-your-writes); a failed job raises
        the error it failed with.
        """
        job = self.submit_feedback_batch(items, adapter_id=adapter_id, config=config)
        return self.result_of(self.wait(job.id))

    # -- feedback jobs -------------------------------------------------------------------

    def submit_feedback(
        self,
        completion_id: str | None = None,
        text: str | None = None,
        *,
        config: ConfigLike = None,
        messages: MessagesLike | None = None,
        response: str | None = None,
        adapter_id: str | None = None,
        idempotency_key: str | None = None,
    ) -> FeedbackJob:
        """Accept feedback as a durable job and return at once (see :meth:`feedback`).

        Raises:
            InvalidRequest: As :meth:`feedback`, or a malformed idempotency key.
            IdempotencyConflict: The key was used on this adapter with another body.
            QueueFull: Too many jobs are waiting; nothing was recorded.
        """
        item = feedback_item(completion_id, text, messages, response)
        return self.submit_feedback_batch(
            [item], adapter_id=adapter_id, config=config, idempotency_key=idempotency_key
        )

    def submit_feedback_batch(
        self,
        items: Sequence[Feedback],
        *,
        adapter_id: str | None = None,
        config: ConfigLike = None,
        idempotency_key: str | None = None,
    ) -> FeedbackJob:
        """Accept several items as one job (one update); the same key returns the same job."""
        distill = config if isinstance(config, DistillConfig) else DistillConfig.from_dict(config)
        job, created = self._updates.submit(items, adapter_id, distill, idempotency_key)
        if created or not job.done:
            self._jobs.accepted(job)
        return job

    def job(self, job_id: str) -> FeedbackJob:
        """One feedback job (raises ``JobNotFound``)."""
        return self._records.get_job(job_id)

    def jobs(
        self,
        adapter_id: str | None = None,
        *,
        status: JobStatus | None = None,
        namespaces: Collection[str] | None = None,
        limit: int = 50,
    ) -> list[FeedbackJob]:
        """Feedback jobs, newest first (of one adapter or these namespaces, in one state)."""
        return self._records.jobs(adapter_id, status=status, namespaces=namespaces, limit=limit)

    def wait(self, job_id: str, timeout: float | None = None) -> FeedbackJob:
        """Wait until a job is final or ``timeout`` seconds pass; return it as it then is."""
        return self._jobs.wait(job_id, timeout)

    def cancel(self, job_id: str) -> FeedbackJob:
        """Cancel a queued job; a running or finished one raises ``Conflict``."""
        return self._jobs.cancel(job_id)

    def job_counts(self) -> dict[str, int]:
        """How many jobs are in each state."""
        return self._records.job_counts()

    def add_job_listener(self, listener: JobListener) -> None:
        """Call ``listener(job)`` in the worker each time one of its jobs becomes final."""
        self._jobs.add_listener(listener)

    def result_of(self, job: FeedbackJob) -> FeedbackResult:
        """The result of an applied job; raises the error of any other final state."""
        return result_of(job)

    # -- feedback records ----------------------------------------------------------------

    def interrupted_feedback(self, adapter_id: str | None = None) -> list[FeedbackEvent]:
        """Feedback accepted before this learner started that never finished (a crash)."""
        return [
            event
            for event in self._records.pending_feedback(adapter_id)
            if event.created < self._started
        ]

    def resume_interrupted(
        self, adapter_id: str | None = None, *, config: ConfigLike = None
    ) -> list[FeedbackResult]:
        """Deprecated: replay feedback events no job carries (see :mod:`claas._legacy`).

        Jobs interrupted by a crash are re-queued and applied once when a learner starts.
        """
        warn_resume_deprecated()
        return replay_events(
            self.interrupted_feedback(adapter_id),
            self._records,
            lambda e: self.feedback(
                e.completion_id, e.text, config=config, adapter_id=e.adapter_id
            ),
        )

    def feedback_events(
        self,
        adapter_id: str | None = None,
        *,
        namespaces: Collection[str] | None = None,
        limit: int = 50,
    ) -> list[FeedbackEvent]:
        """Recent feedback events, newest first (of one adapter, or of these namespaces)."""
        return self._records.feedback_events(adapter_id, namespaces=namespaces, limit=limit)

    def feedback_event(self, feedback_id: str) -> FeedbackEvent:
        """One feedback event (raises ``NotFound``)."""
        return self._records.get_feedback(feedback_id)

    def lineage(self, adapter_id: str) -> list[LineageEntry]:
        """The adapter's recorded versions with their parents and feedback, ascending."""
        return self._records.lineage(validate_adapter_id(adapter_id))

    def record_counts(self) -> dict[str, int]:
        """Row counts of the records (completions, feedback by status, versions, ...)."""
        return self._records.counts()

    def close(self) -> None:
        """Stop the worker (after the update it is applying), release models and connections."""
        self._jobs.stop()
        self._parts.close()
        self._records.close()

    def __enter__(self) -> Learner:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

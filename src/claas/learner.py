"""The Learner: CLaaS's use cases as plain Python calls.

``chat`` serves the adapter's live version and records the exact tokens;
``feedback`` turns text feedback on a served completion into an SDPO update,
publishes the result as a new immutable version and returns only once the
next ``chat`` will use it (read-your-writes). Updates to one adapter apply one
at a time in the order they were accepted; other adapters are not held up.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import attrs

from claas.config import Settings
from claas.errors import AdapterNotFound, BackendUnavailable, InvalidRequest, PayloadTooLarge
from claas.records import FeedbackEvent, Records
from claas.registry import create_backend, create_engine
from claas.storage import LocalAdapterStore, validate_adapter_id
from claas.teacher import (
    HINDSIGHT_TEMPLATE,
    DistillSample,
    build_sample,
    build_sample_from_text,
    encode_chat,
)
from claas.thinking import visible_text
from claas.types import (
    DEFAULT_TARGET_MODULES,
    AdapterVersion,
    ChatMessage,
    Completion,
    DistillConfig,
    Feedback,
    FeedbackResult,
    LoraSpec,
    SamplingParams,
    messages_from_dicts,
)

__all__ = ["ChatStream", "Learner", "Score"]

MessagesLike = Sequence[ChatMessage | Mapping[str, Any]]
_T = TypeVar("_T")


@attrs.frozen(kw_only=True)
class Score:
    """Per-token logprobs of a fixed response under an adapter version."""

    adapter_id: str | None
    adapter_version: int | None
    token_ids: tuple[int, ...]
    logprobs: tuple[float, ...]

    @property
    def total(self) -> float:
        """Sum of the token logprobs (log-likelihood of the response)."""
        return float(sum(self.logprobs))

    @property
    def mean(self) -> float:
        """Mean token logprob."""
        return self.total / max(len(self.logprobs), 1)


class _Turns:
    """FIFO turns: callers run one at a time in the order they took a ticket."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._issued = 0
        self._serving = 0

    def ticket(self, accept: Callable[[], _T] | None = None) -> tuple[int, _T | None]:
        """Take the next turn; ``accept`` runs atomically with it, so its effects
        (e.g. recorded timestamps) are ordered exactly like the turns."""
        with self._cond:
            accepted = accept() if accept is not None else None
            self._issued += 1
            return self._issued - 1, accepted

    def wait(self, ticket: int) -> None:
        with self._cond:
            self._cond.wait_for(lambda: self._serving == ticket)

    def done(self) -> None:
        with self._cond:
            self._serving += 1
            self._cond.notify_all()

    @property
    def depth(self) -> int:
        with self._cond:
            return self._issued - self._serving


class ChatStream:
    """A streamed chat: iterate for text deltas; ``completion`` is set at the end.

    Iterate it to the end on the thread that created it: the local backend holds
    its model lock from the first token to the last.
    """

    def __init__(self, completion_id: str, adapter_version: int | None, deltas: Iterator[str]):
        self.id = completion_id
        self.adapter_version = adapter_version
        self.completion: Completion | None = None
        self._deltas = deltas

    def __iter__(self) -> Iterator[str]:
        return self._deltas


class Learner:
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
        inference: Any = None,
        engine: Any = None,
        store: Any = None,
        records: Records | None = None,
        tokenizer: Any = None,
    ) -> None:
        self.settings = settings if settings is not None else Settings.load()
        self.settings.data_dir.mkdir(parents=True, exist_ok=True)
        self.store = store or LocalAdapterStore(
            self.settings.adapters_dir, keep_versions=self.settings.keep_versions
        )
        self.records = records or Records(self.settings.db_path)
        self._inference = inference
        self._engine = engine
        self._tokenizer = tokenizer
        self._lock = threading.Lock()
        self._turns: dict[str, _Turns] = {}
        self._started = time.time()
        _sweep_scratch(self.settings.data_dir / "tmp")

    # -- components, built on first use -------------------------------------------------

    @property
    def inference(self) -> Any:
        """The inference backend."""
        if self._inference is None:
            with self._lock:
                if self._inference is None:
                    self._inference = create_backend(self.settings)
        return self._inference

    @property
    def engine(self) -> Any:
        """The training engine."""
        if self._engine is None:
            with self._lock:
                if self._engine is None:
                    self._engine = create_engine(self.settings)
        return self._engine

    @property
    def tokenizer(self) -> Any:
        """The base model's tokenizer."""
        if self._tokenizer is None:
            tokenizer = getattr(self.inference, "tokenizer", None)
            if tokenizer is None:
                from claas.models import load_tokenizer

                tokenizer = load_tokenizer(
                    self.settings.base_model, models_dir=self.settings.models_dir
                )
            self._tokenizer = tokenizer
        return self._tokenizer

    def _take_turn(
        self, adapter_id: str, accept: Callable[[], _T] | None = None
    ) -> tuple[_Turns, int, _T | None]:
        """Queue behind earlier updates of ``adapter_id`` (see :meth:`_leave_turn`)."""
        with self._lock:
            turns = self._turns.setdefault(adapter_id, _Turns())
            ticket, accepted = turns.ticket(accept)
        return turns, ticket, accepted

    def _leave_turn(self, adapter_id: str, turns: _Turns) -> None:
        turns.done()
        with self._lock:
            # Drop idle queues so arbitrary ids cannot grow the map without bound.
            if turns.depth == 0 and self._turns.get(adapter_id) is turns:
                del self._turns[adapter_id]

    def queue_depth(self, adapter_id: str | None = None) -> int:
        """Updates accepted but not finished, for one adapter or all."""
        with self._lock:
            turns = list(self._turns.items())
        return sum(t.depth for a, t in turns if adapter_id is None or a == adapter_id)

    # -- adapters -------------------------------------------------------------------------

    def init_adapter(
        self,
        adapter_id: str,
        *,
        rank: int = 32,
        alpha: float = 64.0,
        dropout: float = 0.0,
        target_modules: Sequence[str] = DEFAULT_TARGET_MODULES,
        exist_ok: bool = False,
    ) -> AdapterVersion:
        """Create an adapter whose version 0 equals the base model.

        Raises:
            InvalidAdapterId: If the id is not ``namespace/name``.
            AdapterExists: If it exists and ``exist_ok`` is false.
            InvalidConfig: If the LoRA shape is invalid.
        """
        validate_adapter_id(adapter_id)
        lora = LoraSpec(rank=rank, alpha=alpha, dropout=dropout, target_modules=target_modules)
        if exist_ok and self.store.exists(adapter_id):
            return self.store.get(adapter_id)
        version = self.store.create(
            adapter_id,
            base_model=self.settings.base_model,
            lora=lora,
            write=lambda out: self.engine.init_adapter(lora, out),
            engine=self.engine.name,
        )
        self.records.add_version(version)
        return version

    def adapters(self, namespace: str | None = None) -> list[str]:
        """Ids of the existing adapters (optionally of one namespace)."""
        return self.store.list_adapters(namespace)

    def versions(self, adapter_id: str) -> list[AdapterVersion]:
        """Every retained version of an adapter, oldest first."""
        return self.store.versions(validate_adapter_id(adapter_id))

    def current_version(self, adapter_id: str) -> AdapterVersion:
        """The version ``latest`` points at (the one chats are served by)."""
        return self.store.get(validate_adapter_id(adapter_id))

    def rollback(self, adapter_id: str, version: int) -> AdapterVersion:
        """Serve an older version again; later feedback builds on it.

        Waits for updates accepted earlier to finish first.
        """
        validate_adapter_id(adapter_id)
        turns, ticket, _ = self._take_turn(adapter_id)
        try:
            turns.wait(ticket)
            previous = self.store.latest_version(adapter_id)
            target = self.store.rollback(adapter_id, version)
            self.records.record_rollback(adapter_id, previous, target.version)
        finally:
            self._leave_turn(adapter_id, turns)
        self._publish_quietly(target)
        return target

    def export(
        self, adapter_id: str, version: int | None = None, dest: str | os.PathLike[str] = "."
    ) -> Path:
        """Write a zip of one version (default: the live one) and return its path."""
        return self.store.export(validate_adapter_id(adapter_id), version, Path(dest))

    def delete_adapter(self, adapter_id: str) -> None:
        """Delete an adapter and all its versions (records of feedback stay)."""
        validate_adapter_id(adapter_id)
        turns, ticket, _ = self._take_turn(adapter_id)
        try:
            turns.wait(ticket)
            doomed = self.store.versions(adapter_id)
            self.store.delete(adapter_id)
            self.records.delete_adapter(adapter_id)
        finally:
            self._leave_turn(adapter_id, turns)
        self._engine_forget(doomed)
        if self._inference is not None:
            self._inference.retire(adapter_id)

    # -- chat ----------------------------------------------------------------------------

    def _serving_version(self, adapter_id: str | None) -> AdapterVersion | None:
        if adapter_id is None or adapter_id in ("base", self.settings.base_model):
            return None
        return self.store.get(validate_adapter_id(adapter_id))

    def _completion(
        self,
        completion_id: str,
        version: AdapterVersion | None,
        messages: tuple[ChatMessage, ...],
        generation: Any,
    ) -> Completion:
        completion = Completion(
            id=completion_id,
            adapter_id=version.adapter_id if version else None,
            adapter_version=version.version if version else None,
            model=self.settings.base_model,
            messages=messages,
            prompt_ids=generation.prompt_ids,
            response_ids=generation.response_ids,
            response_logprobs=generation.response_logprobs,
            text=visible_text(generation.raw_text),
            raw_text=generation.raw_text,
            finish_reason=generation.finish_reason,
            created=time.time(),
            top_logprobs=generation.top_logprobs,
            thinking=self.settings.thinking,
        )
        self.records.add_completion(completion)
        return completion

    def chat(self, adapter_id: str | None, messages: MessagesLike, **sampling: Any) -> Completion:
        """Answer a conversation with the adapter's live version and record it.

        Args:
            adapter_id: ``namespace/name``, or ``None`` for the base model.
            messages: OpenAI-style ``{"role", "content"}`` dicts or ChatMessages.
            **sampling: ``max_tokens``, ``temperature`` (0 = greedy), ``top_p``,
                ``top_k``, ``seed``, ``stop``, ``top_logprobs``.

        Returns:
            The recorded :class:`Completion`; pass ``completion.id`` to ``feedback``.

        Raises:
            AdapterNotFound: If the adapter does not exist.
            InvalidRequest: On malformed messages or sampling options.
            PayloadTooLarge: If the prompt exceeds the configured limit.
        """
        chat_messages = messages_from_dicts(messages)
        params = SamplingParams.from_kwargs(**sampling)
        version = self._serving_version(adapter_id)
        generation = self.inference.generate(
            chat_messages, adapter=version, sampling=params, thinking=self.settings.thinking
        )
        return self._completion(_new_id(), version, chat_messages, generation)

    def chat_stream(
        self, adapter_id: str | None, messages: MessagesLike, **sampling: Any
    ) -> ChatStream:
        """Like :meth:`chat`, but yield text as it is generated.

        Errors in the request are raised here, before any text is produced.
        """
        chat_messages = messages_from_dicts(messages)
        params = SamplingParams.from_kwargs(**sampling)
        version = self._serving_version(adapter_id)
        deltas = self.inference.stream(
            chat_messages, adapter=version, sampling=params, thinking=self.settings.thinking
        )
        first = next(deltas)
        stream = ChatStream(_new_id(), version.version if version else None, iter(()))

        def text() -> Iterator[str]:
            for delta in _chain(first, deltas):
                if delta.generation is not None:
                    stream.completion = self._completion(
                        stream.id, version, chat_messages, delta.generation
                    )
                elif delta.text:
                    yield delta.text

        stream._deltas = text()
        return stream

    def complete(self, adapter_id: str | None, prompt: str, **sampling: Any) -> Completion:
        """Continue a raw text prompt (no chat template) and record it."""
        params = SamplingParams.from_kwargs(**sampling)
        version = self._serving_version(adapter_id)
        generation = self.inference.complete(prompt, adapter=version, sampling=params)
        messages = (ChatMessage(role="user", content=prompt),)
        return self._completion("cmpl-" + uuid.uuid4().hex, version, messages, generation)

    def get_completion(self, completion_id: str) -> Completion:
        """A recorded completion (raises ``CompletionNotFound``)."""
        return self.records.get_completion(completion_id)

    def score(self, adapter_id: str | None, messages: MessagesLike, response: str) -> Score:
        """Logprobs of ``response`` as the answer to ``messages`` under the live version."""
        if not isinstance(response, str) or not response:
            raise InvalidRequest("response must be a non-empty string")
        chat_messages = messages_from_dicts(messages)
        version = self._serving_version(adapter_id)
        prompt_ids = encode_chat(self.tokenizer, chat_messages, thinking=self.settings.thinking)
        response_ids = [int(i) for i in self.tokenizer.encode(response, add_special_tokens=False)]
        logprobs = self.inference.score(prompt_ids, response_ids, adapter=version)
        return Score(
            adapter_id=version.adapter_id if version else None,
            adapter_version=version.version if version else None,
            token_ids=tuple(response_ids),
            logprobs=tuple(logprobs),
        )

    # -- feedback ------------------------------------------------------------------------

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
        """Learn from text feedback on one response; return once the new version serves.

        Give ``completion_id`` (from :meth:`chat`), or ``messages``, ``response``
        and ``adapter_id`` when the response was not served by CLaaS.

        Raises:
            InvalidRequest: Empty feedback, bad config, or missing arguments.
            CompletionNotFound: Unknown completion id.
            AdapterNotFound: The adapter does not exist.
            NonFiniteUpdate: The update diverged; nothing was published.
        """
        item = Feedback(
            text=text if text is not None else "",
            completion_id=completion_id,
            messages=messages_from_dicts(messages) if messages is not None else None,
            response=response,
        )
        return self.feedback_batch([item], adapter_id=adapter_id, config=config)

    def feedback_batch(
        self,
        items: Sequence[Feedback],
        *,
        adapter_id: str | None = None,
        config: DistillConfig | Mapping[str, Any] | None = None,
    ) -> FeedbackResult:
        """Learn from several feedback items on one adapter in a single update."""
        distill = config if isinstance(config, DistillConfig) else DistillConfig.from_dict(config)
        target, samples = self._prepare(items, adapter_id)
        turns, ticket, recorded = self._take_turn(
            target, lambda: [self._record_feedback(target, item) for item in items]
        )
        ids = recorded or []
        accepted = time.perf_counter()
        try:
            turns.wait(ticket)
            return self._apply(target, ids, samples, distill, accepted)
        except BaseException as exc:
            for feedback_id in ids:
                if not self.records.get_feedback(feedback_id).done:
                    self.records.update_feedback(feedback_id, status="failed", error=repr(exc))
            raise
        finally:
            self._leave_turn(target, turns)

    def _prepare(
        self, items: Sequence[Feedback], adapter_id: str | None
    ) -> tuple[str, list[DistillSample]]:
        """Validate every item and build its sample before anything is recorded."""
        if not items:
            raise InvalidRequest("no feedback items given")
        if len(items) > self.settings.max_batch:
            raise PayloadTooLarge(f"{len(items)} items; the limit is {self.settings.max_batch}")
        targets: set[str] = set()
        samples = []
        for item in items:
            if len(item.text) > self.settings.max_feedback_chars:
                raise PayloadTooLarge(
                    f"feedback is {len(item.text)} characters; the limit is "
                    f"{self.settings.max_feedback_chars}"
                )
            target, sample = self._sample(item, adapter_id)
            targets.add(target)
            samples.append(sample)
        if len(targets) != 1:
            raise InvalidRequest(f"one update must target one adapter, got {sorted(targets)}")
        target = targets.pop()
        if not self.store.exists(target):
            raise AdapterNotFound(f"adapter {target!r} does not exist")
        return target, samples

    def _sample(self, item: Feedback, adapter_id: str | None) -> tuple[str, DistillSample]:
        limit = self.settings.max_prompt_tokens + self.settings.max_new_tokens
        template = self.settings.teacher_template or HINDSIGHT_TEMPLATE
        if item.completion_id is not None:
            completion = self.records.get_completion(item.completion_id)
            target = adapter_id or completion.adapter_id
            if target is None:
                raise InvalidRequest(
                    f"completion {completion.id} was served by the base model; "
                    "name the adapter to train with adapter_id"
                )
            sample = build_sample(
                self.tokenizer, completion, item.text, template=template, max_tokens=limit
            )
            return validate_adapter_id(target), sample
        if adapter_id is None:
            raise InvalidRequest("feedback without a completion_id needs an adapter_id")
        assert item.messages is not None and item.response is not None
        sample = build_sample_from_text(
            self.tokenizer,
            item.messages,
            item.response,
            item.text,
            thinking=self.settings.thinking,
            template=template,
            max_tokens=limit,
        )
        return validate_adapter_id(adapter_id), sample

    def _record_feedback(self, adapter_id: str, item: Feedback) -> str:
        feedback_id = "fb-" + uuid.uuid4().hex
        self.records.add_feedback(
            feedback_id=feedback_id,
            adapter_id=adapter_id,
            completion_id=item.completion_id,
            text=item.text,
        )
        return feedback_id

    def _apply(
        self,
        adapter_id: str,
        feedback_ids: list[str],
        samples: list[DistillSample],
        config: DistillConfig,
        accepted: float,
    ) -> FeedbackResult:
        started = time.perf_counter()
        for feedback_id in feedback_ids:
            self.records.update_feedback(feedback_id, status="running")
        parent = self.store.get(adapter_id)
        remote = None
        if config.teacher == "remote":
            remote = self.inference.teacher_topk(samples, k=config.top_k)
        scratch = self.settings.data_dir / "tmp"
        scratch.mkdir(parents=True, exist_ok=True)
        work = Path(tempfile.mkdtemp(prefix="update-", dir=scratch))
        try:
            with self._training_window():
                result = self.engine.distill(
                    samples, parent=parent, config=config, out_dir=work, remote_teacher=remote
                )
            trained = time.perf_counter()
            retained = self.store.versions(adapter_id)
            version = self.store.publish(
                adapter_id,
                parent=parent.version,
                write=lambda out: _move_contents(work, out),
                distill_config=config.to_dict(),
                feedback_ids=feedback_ids,
                metrics=dict(result.metrics),
                engine=self.engine.name,
            )
        finally:
            shutil.rmtree(work, ignore_errors=True)
        saved = time.perf_counter()
        self.records.add_version(version)
        self.engine.on_published(version)
        kept = {v.version for v in self.store.versions(adapter_id)}
        self._engine_forget([v for v in retained if v.version not in kept])
        publish_error = self._publish_quietly(version)
        done = time.perf_counter()
        timings = {
            "queue_seconds": started - accepted,
            "train_seconds": trained - started,
            "save_seconds": saved - trained,
            "publish_seconds": done - saved,
            "total_seconds": done - accepted,
        }
        for feedback_id in feedback_ids:
            self.records.update_feedback(
                feedback_id,
                status="applied",
                version=version.version,
                parent_version=parent.version,
                metrics=dict(result.metrics),
                timings=timings,
                error=publish_error,
            )
        return FeedbackResult(
            feedback_ids=tuple(feedback_ids),
            adapter_id=adapter_id,
            version=version.version,
            parent_version=parent.version,
            metrics=dict(result.metrics),
            timings=timings,
        )

    def _engine_forget(self, versions: list[AdapterVersion]) -> None:
        """Tell the engine which versions the store deleted (retention or delete_adapter)."""
        if not versions:
            return
        forget = getattr(self.engine, "on_deleted", None)  # engines written before the hook
        if forget is not None:
            forget(versions)

    def _training_window(self) -> contextlib.AbstractContextManager[Any]:
        """The serving backend's window around a training step (vLLM may sleep in it)."""
        if not self.settings.vllm_sleep_during_training:
            return contextlib.nullcontext()
        window = getattr(self.inference, "training_window", None)
        return window() if window is not None else contextlib.nullcontext()

    def _publish_quietly(self, version: AdapterVersion) -> str | None:
        """Publish to the backend; a down backend gets the version on its next request."""
        if self._inference is None:
            return None
        try:
            self._inference.publish(version)
        except BackendUnavailable as exc:
            return f"published to the store; serving backend unavailable: {exc}"
        return None

    def interrupted_feedback(self, adapter_id: str | None = None) -> list[FeedbackEvent]:
        """Feedback accepted before this learner started that never finished (a crash)."""
        return [
            event
            for event in self.records.pending_feedback(adapter_id)
            if event.created < self._started
        ]

    def resume_interrupted(
        self,
        adapter_id: str | None = None,
        *,
        config: DistillConfig | Mapping[str, Any] | None = None,
    ) -> list[FeedbackResult]:
        """Apply interrupted feedback again, oldest first.

        Each interrupted event is closed as failed with a pointer to its replay.
        Events without a completion id (raw prompt/response feedback) cannot be
        replayed, since only their text was recorded; they are closed as failed.
        """
        results = []
        for event in self.interrupted_feedback(adapter_id):
            if event.completion_id is None:
                self.records.update_feedback(
                    event.id, status="failed", error="interrupted; raw feedback cannot be replayed"
                )
                continue
            result = self.feedback(
                event.completion_id, event.text, config=config, adapter_id=event.adapter_id
            )
            self.records.update_feedback(
                event.id,
                status="failed",
                error=f"interrupted; replayed as {result.feedback_ids[0]}",
            )
            results.append(result)
        return results

    def feedback_events(
        self, adapter_id: str | None = None, *, limit: int = 50
    ) -> list[FeedbackEvent]:
        """Recent feedback events, newest first."""
        return self.records.feedback_events(adapter_id, limit=limit)

    def close(self) -> None:
        """Release models and connections."""
        for part in (self._inference, self._engine):
            if part is not None:
                part.close()
        self.records.close()

    def __enter__(self) -> Learner:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _new_id() -> str:
    return "chatcmpl-" + uuid.uuid4().hex


def _chain(first: Any, rest: Iterator[Any]) -> Iterator[Any]:
    yield first
    yield from rest


def _sweep_scratch(scratch: Path, max_age: float = 6 * 3600) -> None:
    """Remove update work dirs left by crashed processes (old enough to be nobody's)."""
    if not scratch.is_dir():
        return
    cutoff = time.time() - max_age
    for child in scratch.glob("update-*"):
        if child.stat().st_mtime < cutoff:
            shutil.rmtree(child, ignore_errors=True)


def _move_contents(source: Path, dest: Path) -> None:
    for child in source.iterdir():
        os.replace(child, dest / child.name)

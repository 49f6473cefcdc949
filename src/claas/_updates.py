"""Applying feedback: validate, record, train, save, go live.

One update of one adapter moves through named steps: :meth:`Updates.prepare`
checks everything a request can be refused for and builds the samples before
anything is recorded; :meth:`Updates.apply` records the feedback in turn order,
trains in a scratch directory, publishes the new version to the store, tells
the engine and the serving backend, and closes the feedback events.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Sequence
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path

from claas._components import Components
from claas._scratch import move_contents, update_workdir
from claas._turns import AdapterTurns
from claas.config import Settings
from claas.errors import AdapterNotFound, BackendUnavailable, InvalidRequest, PayloadTooLarge
from claas.inference.base import TeacherScorer, TrainingWindow
from claas.records import RecordsBackend
from claas.storage import AdapterStore
from claas.teacher import HINDSIGHT_TEMPLATE, DistillSample, build_sample, build_sample_from_text
from claas.types import (
    AdapterVersion,
    CompletionFeedback,
    DistillConfig,
    DistillResult,
    Feedback,
    FeedbackResult,
    TeacherTopKLists,
    validate_adapter_id,
)

__all__ = ["Updates"]


class Updates:
    """The feedback-to-version machinery of one learner (see the module docstring)."""

    def __init__(
        self,
        settings: Settings,
        *,
        store: AdapterStore,
        records: RecordsBackend,
        parts: Components,
        turns: AdapterTurns,
    ) -> None:
        self._settings = settings
        self._store = store
        self._records = records
        self._parts = parts
        self._turns = turns
        self._scratch = settings.data_dir / "tmp"

    def apply(
        self, items: Sequence[Feedback], adapter_id: str | None, config: DistillConfig
    ) -> FeedbackResult:
        """Validate, then record and apply ``items`` as one update once it is their turn."""
        scorer = self.teacher_scorer(config)
        target, samples = self.prepare(items, adapter_id)
        accepted = time.perf_counter()
        record = lambda: [self._record_feedback(target, item) for item in items]  # noqa: E731
        with self._turns.turn(target, record) as ids:
            try:
                return self._apply(target, ids, samples, config, scorer, accepted)
            except BaseException as exc:
                self._fail_unfinished(ids, exc)
                raise

    def teacher_scorer(self, config: DistillConfig) -> TeacherScorer | None:
        """The backend that scores a remote teacher, refusing one that cannot."""
        if config.teacher != "remote":
            return None
        backend = self._parts.inference
        if not isinstance(backend, TeacherScorer):
            raise InvalidRequest(
                f"teacher='remote' needs an inference backend that scores teachers "
                f"(TeacherScorer); the {backend.name!r} backend does not. Use teacher='base' "
                "or 'current' (the training engine scores the teacher itself), or serve with "
                "the 'vllm' or 'tinker' backend"
            )
        return backend

    def prepare(
        self, items: Sequence[Feedback], adapter_id: str | None
    ) -> tuple[str, list[DistillSample]]:
        """Validate every item and build its sample before anything is recorded."""
        if not items:
            raise InvalidRequest("no feedback items given")
        if len(items) > self._settings.max_batch:
            raise PayloadTooLarge(f"{len(items)} items; the limit is {self._settings.max_batch}")
        targets: set[str] = set()
        samples = []
        for item in items:
            if len(item.text) > self._settings.max_feedback_chars:
                raise PayloadTooLarge(
                    f"feedback is {len(item.text)} characters; the limit is "
                    f"{self._settings.max_feedback_chars}"
                )
            target, sample = self._sample(item, adapter_id)
            targets.add(target)
            samples.append(sample)
        if len(targets) != 1:
            raise InvalidRequest(f"one update must target one adapter, got {sorted(targets)}")
        target = targets.pop()
        if not self._store.exists(target):
            raise AdapterNotFound(f"adapter {target!r} does not exist")
        return target, samples

    def _sample(self, item: Feedback, adapter_id: str | None) -> tuple[str, DistillSample]:
        limit = self._settings.max_prompt_tokens + self._settings.max_new_tokens
        template = self._settings.teacher_template or HINDSIGHT_TEMPLATE
        if isinstance(item, CompletionFeedback):
            completion = self._records.get_completion(item.completion_id)
            target = adapter_id or completion.adapter_id
            if target is None:
                raise InvalidRequest(
                    f"completion {completion.id} was served by the base model; "
                    "name the adapter to train with adapter_id"
                )
            sample = build_sample(
                self._parts.tokenizer, completion, item.text, template=template, max_tokens=limit
            )
            return validate_adapter_id(target), sample
        if adapter_id is None:
            raise InvalidRequest("feedback without a completion_id needs an adapter_id")
        sample = build_sample_from_text(
            self._parts.tokenizer,
            item.messages,
            item.response,
            item.text,
            thinking=self._settings.thinking,
            template=template,
            max_tokens=limit,
        )
        return validate_adapter_id(adapter_id), sample

    def _record_feedback(self, adapter_id: str, item: Feedback) -> str:
        feedback_id = "fb-" + uuid.uuid4().hex
        self._records.add_feedback(
            feedback_id=feedback_id,
            adapter_id=adapter_id,
            completion_id=item.completion_id if isinstance(item, CompletionFeedback) else None,
            text=item.text,
        )
        return feedback_id

    def _apply(
        self,
        adapter_id: str,
        feedback_ids: list[str],
        samples: list[DistillSample],
        config: DistillConfig,
        scorer: TeacherScorer | None,
        accepted: float,
    ) -> FeedbackResult:
        """Train, save, go live, record: one update, in named steps."""
        started = time.perf_counter()
        for feedback_id in feedback_ids:
            self._records.update_feedback(feedback_id, status="running")
        parent = self._store.get(adapter_id)
        remote = scorer.teacher_topk(samples, k=config.top_k) if scorer is not None else None
        with update_workdir(self._scratch) as work:
            result = self._train(samples, parent, config, work, remote)
            trained = time.perf_counter()
            version, retired = self._save(parent, work, config, feedback_ids, result)
        saved = time.perf_counter()
        publish_error = self._go_live(version, retired)
        done = time.perf_counter()
        timings = {
            "queue_seconds": started - accepted,
            "train_seconds": trained - started,
            "save_seconds": saved - trained,
            "publish_seconds": done - saved,
            "total_seconds": done - accepted,
        }
        for feedback_id in feedback_ids:
            self._records.update_feedback(
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

    def _train(
        self,
        samples: list[DistillSample],
        parent: AdapterVersion,
        config: DistillConfig,
        work: Path,
        remote: Sequence[TeacherTopKLists] | None,
    ) -> DistillResult:
        """Run the engine's update into ``work`` (inside the backend's training window)."""
        with self._training_window():
            return self._parts.engine.distill(
                samples, parent=parent, config=config, out_dir=work, remote_teacher=remote
            )

    def _save(
        self,
        parent: AdapterVersion,
        work: Path,
        config: DistillConfig,
        feedback_ids: list[str],
        result: DistillResult,
    ) -> tuple[AdapterVersion, list[AdapterVersion]]:
        """Publish ``work`` as the next version; return it and the versions retention retired."""
        adapter_id = parent.adapter_id
        retained = self._store.versions(adapter_id)
        version = self._store.publish(
            adapter_id,
            parent=parent.version,
            write=lambda out: move_contents(work, out),
            distill_config=config.to_dict(),
            feedback_ids=feedback_ids,
            metrics=dict(result.metrics),
            engine=self._parts.engine.name,
        )
        self._records.add_version(version)
        kept = {v.version for v in self._store.versions(adapter_id)}
        return version, [v for v in retained if v.version not in kept]

    def _go_live(self, version: AdapterVersion, retired: list[AdapterVersion]) -> str | None:
        """Tell the engine and the serving backend; return why serving lags, if it does."""
        self._parts.engine.on_published(version)
        self.engine_forget(retired)
        return self.publish_quietly(version)

    def _fail_unfinished(self, feedback_ids: list[str], exc: BaseException) -> None:
        for feedback_id in feedback_ids:
            if not self._records.get_feedback(feedback_id).done:
                self._records.update_feedback(feedback_id, status="failed", error=repr(exc))

    def engine_forget(self, versions: list[AdapterVersion]) -> None:
        """Tell the engine which versions the store deleted (retention or delete_adapter)."""
        if versions:
            self._parts.engine.on_deleted(versions)

    def _training_window(self) -> AbstractContextManager[None]:
        """The serving backend's window around a training step (vLLM may sleep in it)."""
        backend = self._parts.built_inference
        if self._settings.vllm.sleep_during_training and isinstance(backend, TrainingWindow):
            return backend.training_window()
        return nullcontext()

    def publish_quietly(self, version: AdapterVersion) -> str | None:
        """Publish to the backend; a down backend gets the version on its next request."""
        if self._parts.built_inference is None:
            return None
        try:
            self._parts.built_inference.publish(version)
        except BackendUnavailable as exc:
            return f"published to the store; serving backend unavailable: {exc}"
        return None

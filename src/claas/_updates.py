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
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path

import attrs

from claas._adapter_locks import AdapterLocks
from claas._components import Components
from claas._guarding import Guarding, Rejected, rejection_message
from claas._precheck import Skipped, precheck
from claas._scratch import move_contents, update_workdir
from claas.config import Settings
from claas.errors import (
    AdapterNotFound,
    BackendUnavailable,
    InvalidRequest,
    PayloadTooLarge,
    error_code,
)
from claas.inference.base import TeacherScorer, TrainingWindow
from claas.jobs._fencing import AlreadyPublished, publish_fence, published_version
from claas.jobs.model import FeedbackJob, JobPayload, QueueLimits, check_idempotency_key
from claas.records import NewFeedback, RecordsBackend
from claas.records.base import DatabaseUnavailable
from claas.storage import AdapterStore
from claas.teacher import (
    FOLLOWUP_TEMPLATE,
    HINDSIGHT_TEMPLATE,
    DistillSample,
    build_sample,
    build_sample_from_text,
)
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
        locks: AdapterLocks,
    ) -> None:
        self._settings = settings
        self._store = store
        self._records = records
        self._parts = parts
        self._locks = locks
        self._scratch = settings.data_dir / "tmp"
        self.guarding = Guarding(settings, store=store, parts=parts)

    def submit(
        self,
        items: Sequence[Feedback],
        adapter_id: str | None,
        config: DistillConfig,
        idempotency_key: str | None,
    ) -> tuple[FeedbackJob, bool]:
        """Validate ``items`` and record them as one queued job (or find its key's job).

        Returns:
            The job and whether it was created (``False``: an earlier job had the key).
        """
        key = check_idempotency_key(idempotency_key)
        self.teacher_scorer(config)
        target, _ = self.prepare(items, adapter_id, hindsight=config.hindsight)
        payload = JobPayload(items=tuple(items), adapter_id=target, config=config.to_dict())
        feedback = [
            NewFeedback(
                feedback_id="fb-" + uuid.uuid4().hex,
                completion_id=item.completion_id if isinstance(item, CompletionFeedback) else None,
                text=item.text,
            )
            for item in items
        ]
        job = FeedbackJob(
            id="job-" + uuid.uuid4().hex,
            adapter_id=target,
            status="queued",
            accepted=time.time(),
            feedback_ids=tuple(f.feedback_id for f in feedback),
            idempotency_key=key,
        )
        return self._records.add_job(
            job,
            payload=payload.to_json(),
            body_hash=payload.digest(),
            feedback=feedback,
            limits=QueueLimits(
                per_adapter=self._settings.jobs.max_queued_per_adapter,
                total=self._settings.jobs.max_queued,
            ),
        )

    def run(self, jobs: Sequence[FeedbackJob]) -> list[FeedbackJob]:
        """Apply claimed jobs of one adapter as one update and record the outcome.

        A job claimed again after a crash whose version the store already holds
        (a version naming its feedback ids) is marked applied, not trained twice.
        The finish names the claiming worker: one that lost its lease publishes
        and finishes nothing (:mod:`claas.jobs._fencing`).
        """
        ids = [job.id for job in jobs]
        feedback_ids = [f for job in jobs for f in job.feedback_ids]
        adapter_id = jobs[0].adapter_id
        worker = jobs[0].worker
        try:
            published = self._published(adapter_id, feedback_ids) if _retried(jobs) else None
            if published is not None:
                raise AlreadyPublished(published)
            with self._locks.hold(adapter_id):
                result, note = self._apply_jobs(jobs, feedback_ids)
        except DatabaseUnavailable:  # not the job's fault: its lease runs out and it is retried
            raise
        except AlreadyPublished as done:  # found before training, or by the fence
            with self._locks.hold(adapter_id):  # a crash may have come before its verdict
                found = self.guarding.conclude(done.version)
            return self._records.finish_jobs(
                ids,
                status="rejected" if found.rejected else "applied",
                version=found.version,
                parent_version=found.parent,
                metrics=dict(found.metrics),
                error=rejection_message(found)
                if found.rejected
                else "recovered after a crash: the version was already published",
                error_code="update_rejected" if found.rejected else None,
                worker=worker,
            )
        except Rejected as exc:  # the candidate is kept as a rejected version
            return self._records.finish_jobs(
                ids,
                status="rejected",
                version=exc.result.version,
                parent_version=exc.result.parent_version,
                metrics=dict(exc.result.metrics),
                timings=dict(exc.result.timings),
                error=str(exc),
                error_code=error_code(exc),
                worker=worker,
            )
        except Exception as exc:  # recorded on the job; the waiter re-raises its class
            return self._records.finish_jobs(
                ids,
                status="failed",
                error=str(exc) or repr(exc),
                error_code=error_code(exc),
                worker=worker,
            )
        if isinstance(result, Skipped):
            return self._records.finish_jobs(
                ids,
                status="skipped",
                parent_version=result.parent_version,
                metrics={"precheck_divergence": result.divergence},
                error=result.reason,
                worker=worker,
            )
        return self._records.finish_jobs(
            ids,
            status="applied",
            version=result.version,
            parent_version=result.parent_version,
            metrics=dict(result.metrics),
            timings=dict(result.timings),
            error=note,
            worker=worker,
        )

    def _apply_jobs(
        self, jobs: Sequence[FeedbackJob], feedback_ids: list[str]
    ) -> tuple[FeedbackResult | Skipped, str | None]:
        payloads = [JobPayload.from_json(self._records.job_payload(job.id)) for job in jobs]
        config = DistillConfig.from_dict(payloads[0].config)
        items = [item for payload in payloads for item in payload.items]
        scorer = self.teacher_scorer(config)
        target, samples = self.prepare(items, jobs[0].adapter_id, hindsight=config.hindsight)
        accepted = min(job.accepted for job in jobs)

        def reference() -> list[DistillSample]:
            neutral = [attrs.evolve(item, text=config.skip_reference) for item in items]
            return self.prepare(neutral, target, hindsight=config.hindsight)[1]

        fence = publish_fence(self._records, self._store, jobs)
        return self._apply(
            target, feedback_ids, samples, config, scorer, accepted, reference, fence
        )

    def _published(self, adapter_id: str, feedback_ids: list[str]) -> AdapterVersion | None:
        """The stored version that already learned ``feedback_ids``, if one does."""
        return published_version(self._store, adapter_id, feedback_ids)

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
        self, items: Sequence[Feedback], adapter_id: str | None, *, hindsight: str = "feedback"
    ) -> tuple[str, list[DistillSample]]:
        """Validate every item and build its sample before anything is recorded.

        ``hindsight``: ``feedback`` shows the text to the teacher as a critique,
        ``followup`` as the user's next message (each with its own template).
        """
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
            target, sample = self._sample(item, adapter_id, self._template(hindsight))
            targets.add(target)
            samples.append(sample)
        if len(targets) != 1:
            raise InvalidRequest(f"one update must target one adapter, got {sorted(targets)}")
        target = targets.pop()
        if not self._store.exists(target):
            raise AdapterNotFound(f"adapter {target!r} does not exist")
        return target, samples

    def _template(self, hindsight: str) -> str:
        if hindsight == "followup":
            return self._settings.followups.followup_template or FOLLOWUP_TEMPLATE
        return self._settings.teacher_template or HINDSIGHT_TEMPLATE

    def _sample(
        self, item: Feedback, adapter_id: str | None, template: str
    ) -> tuple[str, DistillSample]:
        limit = self._settings.max_prompt_tokens + self._settings.max_new_tokens
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

    def _apply(
        self,
        adapter_id: str,
        feedback_ids: list[str],
        samples: list[DistillSample],
        config: DistillConfig,
        scorer: TeacherScorer | None,
        accepted: float,
        reference: Callable[[], list[DistillSample]],
        fence: Callable[[], None] = lambda: None,
    ) -> tuple[FeedbackResult | Skipped, str | None]:
        """Pre-check, train, save, guard, go live: one update, in named steps.

        ``accepted`` is the unix time the first job was accepted; ``fence`` runs
        under the store's lock just before the version is written.

        Returns:
            The result (or why there was nothing to learn) and why serving lags
            behind the store, if it does.

        Raises:
            Rejected: If the guard kept the saved candidate from going live.
        """
        started = time.time()
        parent = self._store.get(adapter_id)
        remote = scorer.teacher_topk(samples, k=config.top_k) if scorer is not None else None
        divergence = precheck(self._parts.engine, samples, parent, config, remote, reference)
        if divergence is not None and divergence < config.skip_below:
            return Skipped(
                adapter_id=adapter_id,
                parent_version=parent.version,
                divergence=divergence,
                threshold=config.skip_below,
            ), None
        with update_workdir(self._scratch) as work:
            result = self._train(samples, parent, config, work, remote)
            trained = time.time()
            retained = self._store.versions(adapter_id)
            version = self._save(parent, work, config, feedback_ids, result, fence)
        saved = time.time()
        self.guarding.prepare(version)
        loaded = time.time()
        version = self.guarding.judge(parent, version)
        judged = time.time()
        publish_error = None if version.rejected else self._go_live(version)
        # Retention runs when a version goes live, so it is read after the verdict.
        kept = {v.version for v in self._store.versions(adapter_id)}
        self.engine_forget([v for v in retained if v.version not in kept])
        done = time.time()
        timings = {
            "queue_seconds": started - accepted,
            "train_seconds": trained - started,
            "save_seconds": saved - trained,
            "load_seconds": loaded - saved,
            "guard_seconds": judged - loaded,
            "publish_seconds": done - judged,
            "total_seconds": done - accepted,
        }
        result_of = FeedbackResult(
            feedback_ids=tuple(feedback_ids),
            adapter_id=adapter_id,
            version=version.version,
            parent_version=parent.version,
            metrics={**_with_precheck(result.metrics, divergence), **_measured(version)},
            timings=timings,
        )
        if version.rejected:
            raise Rejected(rejection_message(version), result_of)
        return result_of, publish_error

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
        fence: Callable[[], None],
    ) -> AdapterVersion:
        """Save ``work`` as the next version (live at once when the guard is off)."""
        adapter_id = parent.adapter_id

        def write(out: Path) -> None:
            fence()  # under the store's adapter lock: no other publish of it runs meanwhile
            move_contents(work, out)

        version = self._store.publish(
            adapter_id,
            parent=parent.version,
            write=write,
            distill_config=config.to_dict(),
            feedback_ids=feedback_ids,
            metrics=dict(result.metrics),
            engine=self._parts.engine.name,
            live=not self.guarding.enabled,
        )
        self._records.add_version(version)
        return version

    def _go_live(self, version: AdapterVersion) -> str | None:
        """Tell the engine and the serving backend; return why serving lags, if it does."""
        self._parts.engine.on_published(version)
        return self.publish_quietly(version)

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


def _with_precheck(metrics: Mapping[str, float], divergence: float | None) -> dict[str, float]:
    found = {} if divergence is None else {"precheck_divergence": divergence}
    return {**metrics, **found}


def _measured(version: AdapterVersion) -> dict[str, float]:
    """What the guard measured of the version (its seconds are in the timings)."""
    measures = (version.verdict or {}).get("measures", {})
    return {k: float(v) for k, v in measures.items() if k != "guard_seconds"}


def _retried(jobs: Sequence[FeedbackJob]) -> bool:
    return any(job.attempts > 1 for job in jobs)

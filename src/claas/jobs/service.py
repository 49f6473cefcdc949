"""One process's side of the job queue: submit, wait, cancel, and its worker.

The :class:`~claas.learner.Learner` delegates its job use cases here. Waiting
is woken at once by this process's worker, and by other processes' through the
database's notifications where it has them (else it polls).
``settings.jobs.worker`` says whether this process applies jobs at all.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence

from claas.config import Settings
from claas.errors import Conflict, error_for_code
from claas.jobs.model import FeedbackJob
from claas.jobs.worker import JobWorker
from claas.records.base import DONE_CHANNEL, Notifications, RecordsBackend
from claas.types import FeedbackResult

__all__ = ["JobListener", "JobService", "raise_for", "result_of"]

log = logging.getLogger("claas.jobs")
JobListener = Callable[[FeedbackJob], None]


class JobService:
    """Submitted jobs of one learner and the worker that applies them.

    Args:
        settings: ``settings.jobs`` sizes the worker.
        records: The records backend holding the queue.
        run: Applies claimed jobs and returns them in their final state.
    """

    def __init__(
        self,
        settings: Settings,
        records: RecordsBackend,
        run: Callable[[Sequence[FeedbackJob]], list[FeedbackJob]],
    ) -> None:
        self._records = records
        self._run = run
        self._listeners: list[JobListener] = []
        self._finished = threading.Condition()
        self._lock = threading.Lock()
        self._worker = JobWorker(
            records,
            self._apply,
            threads=settings.jobs.workers,
            lease_seconds=settings.jobs.lease_seconds,
            max_coalesce=settings.jobs.max_coalesce,
        )
        self._started = False
        self._mode = settings.jobs.worker
        self._wait_poll = 0.5
        self._wakes = 0
        if isinstance(records, Notifications):
            records.subscribe(DONE_CHANNEL, lambda _job_id: self._wake_waiters())
            self._wait_poll = 5.0  # a safety net only: NOTIFY wakes the waiters
        self._max_pending = settings.jobs.max_queued_per_adapter + settings.jobs.max_coalesce

    def start(self) -> None:
        """Start the worker (recovering interrupted jobs first); idempotent.

        Does nothing when ``settings.jobs.worker`` is ``off``.
        """
        if self._mode == "off":
            return
        with self._lock:
            if self._started:
                return
            self._started = True
        self._worker.start()

    def start_if_pending(self) -> None:
        """Start the worker if the queue holds queued or running jobs (a restart).

        An ``eager`` worker (``claas worker``) starts regardless.
        """
        if self._mode == "eager":
            self.start()
            return
        counts = self._records.job_counts()
        if counts["queued"] or counts["running"]:
            self.start()

    def accepted(self, job: FeedbackJob) -> None:
        """A job was recorded: make sure a worker will see it."""
        self.start()
        self._worker.notify()

    def add_listener(self, listener: JobListener) -> None:
        """Call ``listener(job)`` each time this process's worker finishes a job."""
        self._listeners.append(listener)

    def wait(self, job_id: str, timeout: float | None = None) -> FeedbackJob:
        """Block until the job is final or ``timeout`` seconds pass; return it as it is."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            with self._finished:
                seen = self._wakes
            job = self._records.get_job(job_id)
            if job.done:
                return job
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                return job
            with self._finished:  # woken by a worker; the poll is the fallback without NOTIFY
                if self._wakes == seen:  # nothing finished since we looked
                    poll = self._wait_poll
                    self._finished.wait(poll if left is None else min(left, poll))

    def wait_for_adapter(self, adapter_id: str) -> None:
        """Wait until every job of ``adapter_id`` accepted so far is final."""
        bound = self._max_pending  # queued ones are capped by the limit, running by coalescing
        for status in ("running", "queued"):
            for job in self._records.jobs(adapter_id, status=status, limit=bound):
                self.wait(job.id)

    def depth(self, adapter_id: str | None = None) -> int:
        """Jobs queued or running, of one adapter or of all."""
        counts = self._records.job_counts(adapter_id)
        return counts["queued"] + counts["running"]

    def cancel(self, job_id: str) -> FeedbackJob:
        """Cancel a queued job (``Conflict`` if it is running or final)."""
        return self._records.cancel_job(job_id)

    def stop(self) -> None:
        """Stop the worker after the update it is applying."""
        if self._started:
            self._worker.stop()

    def stop_soon(self) -> None:
        """Ask the worker to stop without waiting (its learner was garbage-collected)."""
        self._worker.stop_soon()

    def _apply(self, jobs: Sequence[FeedbackJob]) -> None:
        # A job whose lease another worker took over comes back unfinished: not ours to report.
        finished = [job for job in self._run(jobs) if job.done]
        for job in finished:  # before waking waiters: a response never outruns its metrics
            for listener in self._listeners:
                try:
                    listener(job)
                except Exception:  # a metrics hook must not stop the worker
                    log.exception("job listener %r failed", listener)
        self._wake_waiters()

    def _wake_waiters(self) -> None:
        with self._finished:
            self._wakes += 1
            self._finished.notify_all()


def raise_for(job: FeedbackJob) -> None:
    """Raise the error a failed, rejected or cancelled job ended with."""
    if job.status in ("applied", "skipped"):
        return
    if job.status == "cancelled":
        raise Conflict(f"job {job.id} was cancelled: {job.error}")
    raise error_for_code(job.error_code, job.error or f"job {job.id} {job.status}")


def result_of(job: FeedbackJob) -> FeedbackResult:
    """The result of an applied or skipped job; raises the error of any other state.

    A skipped job published nothing: its ``version`` is the parent it was
    measured against, still live.

    Raises:
        Conflict: The job is not final yet, or was cancelled.
        ClaasError: The class the job failed with (e.g. ``NonFiniteUpdate``).
    """
    if not job.done:
        raise Conflict(f"job {job.id} is still {job.status}")
    raise_for(job)
    version = job.parent_version if job.status == "skipped" else job.version
    if version is None or job.parent_version is None:
        raise Conflict(f"job {job.id} is {job.status} but names no version")
    return FeedbackResult(
        feedback_ids=job.feedback_ids,
        adapter_id=job.adapter_id,
        version=version,
        parent_version=job.parent_version,
        metrics=dict(job.metrics),
        timings=dict(job.timings),
    )

"""Prometheus metrics, exposed with ``prometheus_client``.

Counters and histograms live in the process, in one :class:`CollectorRegistry` per
app (two apps in a process never share or collide); the feedback counters are fed
by the learner's job listener (:meth:`Metrics.observe_job`), called as each job of
this process finishes. The queue depth, the jobs per state and the record counts
are read from the learner at scrape time by :class:`LearnerGauges`. Labels never
carry adapter ids, so one tenant's scrape does not list another tenant's adapters.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram
from prometheus_client.exposition import generate_latest
from prometheus_client.metrics_core import GaugeMetricFamily, Metric

from claas.jobs.model import FINAL_JOB_STATUSES, FeedbackJob

__all__ = [
    "CONTENT_TYPE",
    "JOB_BUCKETS",
    "STEP_BUCKETS",
    "LearnerGauges",
    "Metrics",
    "route_label",
]

CONTENT_TYPE = CONTENT_TYPE_LATEST
STEP_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)
# A job's latency includes its wait in the queue: a longer tail than one step's.
JOB_BUCKETS = (*STEP_BUCKETS, 600.0, 1800.0, 3600.0)
_OUTCOMES = ("applied", "failed")
# A job's final status -> the feedback step outcome it counts as (a cancelled job made none).
_STEP_OUTCOME = {"applied": "applied", "failed": "failed", "rejected": "failed"}
_TOKEN_KINDS = ("prompt", "completion")
_GUARD_OUTCOMES = ("passed", "rejected")
_GUARD_OUTCOME = {"applied": "passed", "rejected": "rejected"}


class LearnerGauges:
    """A collector of the learner's gauges, read each time it is collected.

    Args:
        queue_depth: Returns the number of updates accepted but not finished.
        record_counts: Returns rows in the records database by kind; None leaves
            ``claas_records`` out (the counts span every tenant).
        job_counts: Returns the number of feedback jobs per status; None leaves
            ``claas_jobs`` out (the counts span every tenant).
    """

    def __init__(
        self,
        *,
        queue_depth: Callable[[], int],
        record_counts: Callable[[], Mapping[str, int]] | None = None,
        job_counts: Callable[[], Mapping[str, int]] | None = None,
    ) -> None:
        self._queue_depth = queue_depth
        self._record_counts = record_counts
        self._job_counts = job_counts

    def collect(self) -> Iterator[Metric]:
        """``claas_feedback_queue_depth`` and, if readable, ``claas_records`` and ``claas_jobs``."""
        yield GaugeMetricFamily(
            "claas_feedback_queue_depth",
            "Updates accepted but not finished.",
            value=self._queue_depth(),
        )
        if self._record_counts is not None:
            yield _labelled(
                "claas_records",
                "Rows in the records database, by kind.",
                "kind",
                self._record_counts(),
            )
        if self._job_counts is not None:
            yield _labelled(
                "claas_jobs",
                "Feedback jobs by state (every process's).",
                "state",
                self._job_counts(),
            )


def _labelled(name: str, documentation: str, label: str, counts: Mapping[str, int]) -> Metric:
    """A gauge with one sample per key of ``counts``."""
    family = GaugeMetricFamily(name, documentation, labels=[label])
    for key, count in sorted(counts.items()):
        family.add_metric([key], count)
    return family


class Metrics:
    """The server's counters and step histogram, safe to update from any thread."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self._requests = Counter(
            "claas_http_requests_total",
            "HTTP requests by method, route template and status.",
            ("method", "route", "status"),
            registry=self.registry,
        )
        self._feedback = Counter(
            "claas_feedback_steps_total",
            "Feedback updates by outcome (applied or failed).",
            ("outcome",),
            registry=self.registry,
        )
        self._items = Counter(
            "claas_feedback_items_total", "Feedback items learned from.", registry=self.registry
        )
        self._steps = Histogram(
            "claas_feedback_step_seconds",
            "Seconds from accepting feedback to serving the new version.",
            buckets=STEP_BUCKETS,
            registry=self.registry,
        )
        self._tokens = Counter(
            "claas_tokens_total",
            "Tokens served, by kind (prompt or completion).",
            ("kind",),
            registry=self.registry,
        )
        # Not ``claas_jobs_total``: its family would be ``claas_jobs``, the gauge's name.
        self._jobs = Counter(
            "claas_jobs_finished_total",
            "Feedback jobs this process finished, by final status.",
            ("outcome",),
            registry=self.registry,
        )
        self._job_latency = Histogram(
            "claas_job_latency_seconds",
            "Seconds from accepting a feedback job to its final status.",
            buckets=JOB_BUCKETS,
            registry=self.registry,
        )
        self._guard = Counter(
            "claas_guard_verdicts_total",
            "Candidate versions the guard judged, by outcome (passed or rejected).",
            ("outcome",),
            registry=self.registry,
        )
        self._guard_seconds = Histogram(
            "claas_guard_seconds",
            "Seconds the guard took to judge a candidate version.",
            buckets=STEP_BUCKETS,
            registry=self.registry,
        )
        # Known label values are exported as 0 before the first event, so a rate() over
        # them has a starting point.
        for outcome in _OUTCOMES:
            self._feedback.labels(outcome=outcome)
        for kind in _TOKEN_KINDS:
            self._tokens.labels(kind=kind)
        for status in FINAL_JOB_STATUSES:
            self._jobs.labels(outcome=status)
        for verdict in _GUARD_OUTCOMES:
            self._guard.labels(outcome=verdict)

    def observe_request(self, method: str, route: str, status: int) -> None:
        """Count one HTTP request by method, route template and status."""
        self._requests.labels(method=method, route=route, status=str(status)).inc()

    def observe_feedback(
        self, outcome: str, *, items: int = 0, seconds: float | None = None
    ) -> None:
        """Count one feedback step (``applied`` or ``failed``) and its latency."""
        self._feedback.labels(outcome=outcome).inc()
        self._items.inc(items)
        if seconds is not None and math.isfinite(seconds):
            self._steps.observe(seconds)

    def observe_job(self, job: FeedbackJob) -> None:
        """Count a job that reached a final status: the learner's job listener.

        Its outcome and latency (accepted to finished), and, unless it was
        cancelled, the feedback step it made.
        """
        if not job.done:
            return
        self._jobs.labels(outcome=job.status).inc()
        if job.finished is not None and math.isfinite(job.finished - job.accepted):
            self._job_latency.observe(max(0.0, job.finished - job.accepted))
        self._observe_guard(job)
        step = _STEP_OUTCOME.get(job.status)
        if step is not None:
            items = len(job.feedback_ids) if step == "applied" else 0
            self.observe_feedback(step, items=items, seconds=job.timings.get("total_seconds"))

    def _observe_guard(self, job: FeedbackJob) -> None:
        """Count the guard's verdict on the job's candidate, if the guard judged one."""
        if "guard_probe_score" not in job.metrics or job.status not in _GUARD_OUTCOME:
            return
        self._guard.labels(outcome=_GUARD_OUTCOME[job.status]).inc()
        seconds = job.timings.get("guard_seconds")
        if seconds is not None and math.isfinite(seconds):
            self._guard_seconds.observe(seconds)

    def observe_tokens(self, prompt: int, completion: int) -> None:
        """Count tokens served."""
        self._tokens.labels(kind="prompt").inc(prompt)
        self._tokens.labels(kind="completion").inc(completion)

    def render(self, learner: LearnerGauges) -> bytes:
        """The exposition (:data:`CONTENT_TYPE`): this app's metrics and the learner's."""
        return generate_latest(_Scrape(self.registry, learner))


class _Scrape:
    """One scrape: the app's registry, then the learner's gauges read now."""

    def __init__(self, registry: CollectorRegistry, learner: LearnerGauges) -> None:
        self._registry = registry
        self._learner = learner

    def collect(self) -> Iterator[Metric]:
        for family in self._registry.collect():
            # prometheus_client adds a ``*_created`` timestamp series per counter and
            # histogram child; the exported families are only the documented ones.
            family.samples = [s for s in family.samples if not s.name.endswith("_created")]
            yield family
        yield from self._learner.collect()


def route_label(scope: Mapping[str, Any]) -> str:
    """The matched route's template (``/v1/adapters/{namespace}/{name}``), or ``unmatched``."""
    route = scope.get("route")
    path = getattr(route, "path", None)
    return path if isinstance(path, str) else "unmatched"

"""Prometheus metrics, exposed with ``prometheus_client``.

Counters and the histogram live in the process, in one :class:`CollectorRegistry` per
app (two apps in a process never share or collide); the queue depth and record
counts are read from the learner at scrape time by :class:`LearnerGauges`. Labels
never carry adapter ids, so one tenant's scrape does not list another tenant's
adapters.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram
from prometheus_client.exposition import generate_latest
from prometheus_client.metrics_core import GaugeMetricFamily, Metric

__all__ = ["CONTENT_TYPE", "STEP_BUCKETS", "LearnerGauges", "Metrics", "route_label"]

CONTENT_TYPE = CONTENT_TYPE_LATEST
STEP_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)
_OUTCOMES = ("applied", "failed")
_TOKEN_KINDS = ("prompt", "completion")


class LearnerGauges:
    """A collector of the learner's gauges, read each time it is collected.

    Args:
        queue_depth: Returns the number of updates accepted but not finished.
        record_counts: Returns rows in the records database by kind; None leaves
            ``claas_records`` out (the counts span every tenant).
    """

    def __init__(
        self,
        *,
        queue_depth: Callable[[], int],
        record_counts: Callable[[], Mapping[str, int]] | None = None,
    ) -> None:
        self._queue_depth = queue_depth
        self._record_counts = record_counts

    def collect(self) -> Iterator[Metric]:
        """``claas_feedback_queue_depth`` and, if readable, ``claas_records{kind}``."""
        yield GaugeMetricFamily(
            "claas_feedback_queue_depth",
            "Updates accepted but not finished.",
            value=self._queue_depth(),
        )
        if self._record_counts is None:
            return
        records = GaugeMetricFamily(
            "claas_records", "Rows in the records database, by kind.", labels=["kind"]
        )
        for kind, count in sorted(self._record_counts().items()):
            records.add_metric([kind], count)
        yield records


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
        # Known label values are exported as 0 before the first event, so a rate() over
        # them has a starting point.
        for outcome in _OUTCOMES:
            self._feedback.labels(outcome=outcome)
        for kind in _TOKEN_KINDS:
            self._tokens.labels(kind=kind)

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

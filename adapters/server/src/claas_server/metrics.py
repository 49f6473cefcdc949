"""Prometheus metrics in the text exposition format (version 0.0.4), written by hand.

Counters and the histogram live in the process; the queue depth and record
counts are read from the learner at scrape time. Labels never carry adapter
ids, so one tenant's scrape does not list another tenant's adapters.
"""

from __future__ import annotations

import bisect
import math
import threading
from collections import Counter
from collections.abc import Mapping
from typing import Any

__all__ = ["CONTENT_TYPE", "STEP_BUCKETS", "Metrics"]

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
STEP_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)


def _labels(pairs: Mapping[str, str]) -> str:
    def escape(value: str) -> str:
        return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')

    inner = ",".join(f'{k}="{escape(v)}"' for k, v in pairs.items())
    return "{" + inner + "}" if inner else ""


def _number(value: float) -> str:
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(float(value)) if not float(value).is_integer() else str(int(value))


class _Histogram:
    def __init__(self, buckets: tuple[float, ...]) -> None:
        self.buckets = buckets
        self.counts = [0] * (len(buckets) + 1)
        self.total = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.buckets, value)] += 1
        self.total += value

    def lines(self, name: str) -> list[str]:
        out, running = [], 0
        for bound, count in zip((*self.buckets, math.inf), self.counts, strict=True):
            running += count
            out.append(f'{name}_bucket{{le="{_number(bound)}"}} {running}')
        out.append(f"{name}_sum {_number(self.total)}")
        out.append(f"{name}_count {running}")
        return out


class Metrics:
    """The server's counters, safe to update from any thread."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._requests: Counter[tuple[str, str, str]] = Counter()
        self._feedback: Counter[str] = Counter()
        self._feedback_items = 0
        self._tokens: Counter[str] = Counter()
        self._steps = _Histogram(STEP_BUCKETS)

    def observe_request(self, method: str, route: str, status: int) -> None:
        """Count one HTTP request by method, route template and status."""
        with self._lock:
            self._requests[(method, route, str(status))] += 1

    def observe_feedback(
        self, outcome: str, *, items: int = 0, seconds: float | None = None
    ) -> None:
        """Count one feedback step (``applied`` or ``failed``) and its latency."""
        with self._lock:
            self._feedback[outcome] += 1
            self._feedback_items += items
            if seconds is not None and math.isfinite(seconds):
                self._steps.observe(seconds)

    def observe_tokens(self, prompt: int, completion: int) -> None:
        """Count tokens served."""
        with self._lock:
            self._tokens["prompt"] += prompt
            self._tokens["completion"] += completion

    def render(self, *, queue_depth: int, records: Mapping[str, int] | None = None) -> str:
        """The exposition text."""
        with self._lock:
            requests = dict(self._requests)
            feedback = dict(self._feedback)
            items = self._feedback_items
            tokens = dict(self._tokens)
            steps = self._steps.lines("claas_feedback_step_seconds")
        lines: list[str] = []

        def family(name: str, kind: str, help_: str, samples: list[str]) -> None:
            lines.extend([f"# HELP {name} {help_}", f"# TYPE {name} {kind}", *samples])

        family(
            "claas_http_requests_total",
            "counter",
            "HTTP requests by method, route template and status.",
            [
                f"claas_http_requests_total{_labels({'method': m, 'route': r, 'status': s})} {n}"
                for (m, r, s), n in sorted(requests.items())
            ],
        )
        family(
            "claas_feedback_steps_total",
            "counter",
            "Feedback updates by outcome (applied or failed).",
            [
                f"claas_feedback_steps_total{_labels({'outcome': o})} {feedback.get(o, 0)}"
                for o in ("applied", "failed")
            ],
        )
        family(
            "claas_feedback_items_total",
            "counter",
            "Feedback items learned from.",
            [f"claas_feedback_items_total {items}"],
        )
        family(
            "claas_feedback_step_seconds",
            "histogram",
            "Seconds from accepting feedback to serving the new version.",
            steps,
        )
        family(
            "claas_tokens_total",
            "counter",
            "Tokens served, by kind (prompt or completion).",
            [
                f"claas_tokens_total{_labels({'kind': k})} {tokens.get(k, 0)}"
                for k in ("prompt", "completion")
            ],
        )
        family(
            "claas_feedback_queue_depth",
            "gauge",
            "Updates accepted but not finished.",
            [f"claas_feedback_queue_depth {queue_depth}"],
        )
        if records is not None:
            family(
                "claas_records",
                "gauge",
                "Rows in the records database, by kind.",
                [f"claas_records{_labels({'kind': k})} {v}" for k, v in sorted(records.items())],
            )
        return "\n".join(lines) + "\n"


def route_label(scope: Mapping[str, Any]) -> str:
    """The matched route's template (``/v1/adapters/{namespace}/{name}``), or ``unmatched``."""
    route = scope.get("route")
    path = getattr(route, "path", None)
    return path if isinstance(path, str) else "unmatched"

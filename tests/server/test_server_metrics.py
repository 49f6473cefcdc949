"""The Prometheus exposition: families, types, labels, buckets, scrape-time gauges, isolation."""

from __future__ import annotations

import math
from pathlib import Path

import attrs
import pytest
from fastapi.testclient import TestClient
from metrics_support import families, value
from prometheus_client import CONTENT_TYPE_LATEST
from server_support import fake_learner

from claas.jobs import FINAL_JOB_STATUSES, FeedbackJob
from claas_server import create_app
from claas_server.metrics import JOB_BUCKETS, STEP_BUCKETS, LearnerGauges, Metrics

USER = [{"role": "user", "content": "hello there"}]


def render(
    metrics: Metrics,
    *,
    depth: int = 0,
    records: dict[str, int] | None = None,
    jobs: dict[str, int] | None = None,
) -> str:
    gauges = LearnerGauges(
        queue_depth=lambda: depth,
        record_counts=None if records is None else (lambda: records),
        job_counts=None if jobs is None else (lambda: jobs),
    )
    return metrics.render(gauges).decode()


def finished(
    status: str, *, waited: float = 2.0, items: int = 1, total: float = 1.5
) -> FeedbackJob:
    """A job of ``items`` items that reached ``status`` ``waited`` seconds after acceptance."""
    return FeedbackJob(
        id=f"job-{status}",
        adapter_id="alpha/bot",
        status=status,  # type: ignore[arg-type]
        accepted=1000.0,
        finished=1000.0 + waited,
        feedback_ids=tuple(f"fb-{i}" for i in range(items)),
        timings={"total_seconds": total},
    )


def test_families_types_and_labels() -> None:
    metrics = Metrics()
    metrics.observe_request("POST", "/v1/feedback", 200)
    metrics.observe_feedback("applied", items=2, seconds=0.3)
    metrics.observe_tokens(3, 4)
    metrics.observe_job(finished("applied"))
    found = families(render(metrics, depth=1, records={"versions": 2}, jobs={"queued": 1}))
    assert {name: f.type for name, f in found.items()} == {
        "claas_http_requests": "counter",
        "claas_feedback_steps": "counter",
        "claas_feedback_items": "counter",
        "claas_feedback_step_seconds": "histogram",
        "claas_tokens": "counter",
        "claas_jobs_finished": "counter",
        "claas_job_latency_seconds": "histogram",
        "claas_guard_verdicts": "counter",
        "claas_guard_seconds": "histogram",
        "claas_feedback_queue_depth": "gauge",
        "claas_records": "gauge",
        "claas_jobs": "gauge",
    }
    labels = {name: {k for s in f.samples for k in s.labels} for name, f in found.items()}
    assert labels == {
        "claas_http_requests": {"method", "route", "status"},
        "claas_feedback_steps": {"outcome"},
        "claas_feedback_items": set(),
        "claas_feedback_step_seconds": {"le"},
        "claas_tokens": {"kind"},
        "claas_jobs_finished": {"outcome"},
        "claas_job_latency_seconds": {"le"},
        "claas_guard_verdicts": {"outcome"},
        "claas_guard_seconds": {"le"},
        "claas_feedback_queue_depth": set(),
        "claas_records": {"kind"},
        "claas_jobs": {"state"},
    }
    # Only the documented series: no ``*_created`` timestamps next to the counters.
    names = {s.name for f in found.values() for s in f.samples}
    assert not any(name.endswith("_created") for name in names)


def test_counts_and_histogram_values() -> None:
    metrics = Metrics()
    metrics.observe_request("POST", "/v1/feedback", 200)
    metrics.observe_request("POST", "/v1/feedback", 200)
    metrics.observe_feedback("applied", items=2, seconds=0.3)
    metrics.observe_feedback("failed", seconds=math.nan)  # counted, but no latency
    metrics.observe_tokens(3, 4)
    text = render(metrics)
    labels = {"method": "POST", "route": "/v1/feedback", "status": "200"}
    assert value(text, "claas_http_requests_total", **labels) == 2
    assert value(text, "claas_feedback_steps_total", outcome="applied") == 1
    assert value(text, "claas_feedback_steps_total", outcome="failed") == 1
    assert value(text, "claas_feedback_items_total") == 2
    assert value(text, "claas_tokens_total", kind="prompt") == 3
    assert value(text, "claas_tokens_total", kind="completion") == 4
    assert value(text, "claas_feedback_step_seconds_count") == 1
    assert value(text, "claas_feedback_step_seconds_sum") == 0.3
    histogram = families(text)["claas_feedback_step_seconds"]
    buckets = {float(s.labels["le"]): s.value for s in histogram.samples if "le" in s.labels}
    assert list(buckets) == [*STEP_BUCKETS, math.inf]
    assert buckets == {b: float(b >= 0.3) for b in (*STEP_BUCKETS, math.inf)}


def test_known_label_values_start_at_zero() -> None:
    text = render(Metrics())
    for outcome in ("applied", "failed"):
        assert value(text, "claas_feedback_steps_total", outcome=outcome) == 0
    for kind in ("prompt", "completion"):
        assert value(text, "claas_tokens_total", kind=kind) == 0
    assert families(text)["claas_http_requests"].samples == []
    for status in FINAL_JOB_STATUSES:
        assert value(text, "claas_jobs_finished_total", outcome=status) == 0
    assert value(text, "claas_job_latency_seconds_count") == 0


def test_finished_jobs_feed_outcomes_latency_and_steps() -> None:
    metrics = Metrics()
    metrics.observe_job(finished("applied", waited=2.0, items=3))
    metrics.observe_job(finished("failed", waited=700.0))
    metrics.observe_job(finished("rejected", waited=1.0))
    metrics.observe_job(finished("cancelled", waited=0.5))
    metrics.observe_job(finished("skipped", waited=0.5))
    metrics.observe_job(finished("running"))  # not final: nothing counted
    text = render(metrics)
    for status in FINAL_JOB_STATUSES:
        assert value(text, "claas_jobs_finished_total", outcome=status) == 1
    assert value(text, "claas_job_latency_seconds_count") == 5
    assert value(text, "claas_job_latency_seconds_sum") == 704.0
    latency = families(text)["claas_job_latency_seconds"]
    buckets = {float(s.labels["le"]): s.value for s in latency.samples if "le" in s.labels}
    assert list(buckets) == [*JOB_BUCKETS, math.inf]
    assert buckets[0.5] == 2 and buckets[2.5] == 4 and buckets[600.0] == 4 and buckets[1800.0] == 5
    # A rejected candidate was a step that published nothing; a cancelled job made none.
    assert value(text, "claas_feedback_steps_total", outcome="applied") == 1
    assert value(text, "claas_feedback_steps_total", outcome="failed") == 2
    assert value(text, "claas_feedback_items_total") == 3
    assert value(text, "claas_feedback_step_seconds_count") == 3


def test_guard_verdicts_are_counted_from_judged_jobs() -> None:
    metrics = Metrics()
    assert value(render(metrics), "claas_guard_verdicts_total", outcome="rejected") == 0
    judged = {"metrics": {"guard_probe_score": 1.0}, "timings": {"guard_seconds": 0.2}}
    metrics.observe_job(attrs.evolve(finished("applied"), **judged))
    metrics.observe_job(attrs.evolve(finished("rejected"), **judged))
    metrics.observe_job(attrs.evolve(finished("rejected"), **judged))
    metrics.observe_job(finished("applied"))  # guard off: no verdict
    metrics.observe_job(attrs.evolve(finished("failed"), **judged))  # not judged to the end
    text = render(metrics)
    assert value(text, "claas_guard_verdicts_total", outcome="passed") == 1
    assert value(text, "claas_guard_verdicts_total", outcome="rejected") == 2
    assert value(text, "claas_guard_seconds_count") == 3
    assert value(text, "claas_guard_seconds_sum") == pytest.approx(0.6)


def test_job_states_are_read_at_each_scrape() -> None:
    counts = {"queued": 2, "running": 1, "applied": 0}
    metrics = Metrics()
    first = render(metrics, jobs=counts)
    counts["queued"] = 0
    second = render(metrics, jobs=counts)
    assert value(first, "claas_jobs", state="queued") == 2
    assert value(first, "claas_jobs", state="running") == 1
    assert value(second, "claas_jobs", state="queued") == 0
    assert "claas_jobs" not in families(render(metrics))


def test_learner_gauges_are_read_at_each_scrape() -> None:
    depth, records = [3], {"versions": 2, "feedback": 1}
    gauges = LearnerGauges(queue_depth=lambda: depth[0], record_counts=lambda: records)
    metrics = Metrics()
    first = metrics.render(gauges).decode()
    depth[0], records["versions"] = 0, 5
    second = metrics.render(gauges).decode()
    assert value(first, "claas_feedback_queue_depth") == 3
    assert value(first, "claas_records", kind="versions") == 2
    assert value(second, "claas_feedback_queue_depth") == 0
    assert value(second, "claas_records", kind="versions") == 5
    assert value(second, "claas_records", kind="feedback") == 1


def test_records_are_left_out_without_a_reader() -> None:
    assert "claas_records" not in families(render(Metrics(), depth=1))


def test_two_registries_neither_share_nor_collide() -> None:
    one, two = Metrics(), Metrics()  # a shared registry would raise on the second
    one.observe_feedback("applied", items=1, seconds=1.0)
    assert value(render(one), "claas_feedback_steps_total", outcome="applied") == 1
    assert value(render(two), "claas_feedback_steps_total", outcome="applied") == 0
    assert one.registry is not two.registry


def test_two_apps_in_one_process_count_separately(tmp_path: Path) -> None:
    learners = [fake_learner(tmp_path / name) for name in ("a", "b")]
    try:
        with (
            TestClient(create_app(learner=learners[0])) as a,
            TestClient(create_app(learner=learners[1])) as b,
        ):
            a.post("/v1/adapters", json={"adapter_id": "alpha/bot"})
            body = {"model": "alpha/bot", "messages": USER}
            assert a.post("/v1/chat/completions", json=body).status_code == 200
            scraped_a, scraped_b = a.get("/metrics"), b.get("/metrics")
    finally:
        for learner in learners:
            learner.close()
    assert scraped_a.headers["content-type"] == CONTENT_TYPE_LATEST
    route = {"method": "POST", "route": "/v1/chat/completions", "status": "200"}
    assert value(scraped_a.text, "claas_http_requests_total", **route) == 1
    assert value(scraped_a.text, "claas_tokens_total", kind="prompt") > 0
    assert value(scraped_a.text, "claas_records", kind="versions") == 1
    assert families(scraped_b.text)["claas_http_requests"].samples == []
    assert value(scraped_b.text, "claas_tokens_total", kind="prompt") == 0

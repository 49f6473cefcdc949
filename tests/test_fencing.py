"""A worker that lost its lease publishes and finishes nothing: fencing, on both backends.

Real records (SQLite and PostgreSQL, the ``database`` fixture) and a real
adapter store; the lease is made to run out by claiming with a tiny one.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from claas.jobs._fencing import AlreadyPublished, LeaseLost, publish_fence
from claas.jobs.model import FeedbackJob, QueueLimits
from claas.records import NewFeedback, Records, RecordsBackend
from claas.storage.local import LocalAdapterStore
from claas.types import LoraSpec

ADAPTER = "fence/a"
LIMITS = QueueLimits(per_adapter=10, total=10)


@pytest.fixture
def records(database: str | None, tmp_path: Path) -> RecordsBackend:
    if database is None:
        return Records(tmp_path / "records.sqlite3")
    from claas.records.postgres import PostgresRecords

    return PostgresRecords(database)


def _add(records: RecordsBackend, n: int) -> FeedbackJob:
    job = FeedbackJob(
        id=f"job-{n}", adapter_id=ADAPTER, status="queued", accepted=0.0, feedback_ids=(f"fb-{n}",)
    )
    added, created = records.add_job(
        job,
        payload=json.dumps({"config": {}}),
        body_hash=f"h{n}",
        feedback=[NewFeedback(feedback_id=f"fb-{n}", completion_id=None, text="t")],
        limits=LIMITS,
    )
    assert created
    return added


def _take_over(records: RecordsBackend) -> tuple[FeedbackJob, FeedbackJob]:
    """Worker A claims with a lease that runs out; B takes the job over."""
    _add(records, 1)
    (first,) = records.claim_jobs("host:1:a", lease_seconds=0.05)
    time.sleep(0.1)
    assert records.holds_lease(["job-1"], "host:1:a")  # expired, but nobody took it over
    assert records.requeue_stale(lambda worker: True) == ["job-1"]  # expired, though alive
    (second,) = records.claim_jobs("host:2:b", lease_seconds=30)
    return first, second


def test_a_finish_by_a_worker_whose_lease_was_taken_over_changes_nothing(
    records: RecordsBackend,
) -> None:
    first, second = _take_over(records)
    assert (first.worker, second.worker, second.attempts) == ("host:1:a", "host:2:b", 2)
    assert not records.holds_lease(["job-1"], "host:1:a")
    assert records.holds_lease(["job-1"], "host:2:b")
    (stale,) = records.finish_jobs(["job-1"], status="applied", version=7, worker="host:1:a")
    assert (stale.status, stale.version) == ("running", None)
    assert records.get_feedback("fb-1").status == "running"
    (done,) = records.finish_jobs(["job-1"], status="applied", version=1, worker="host:2:b")
    assert (done.status, done.version, done.worker) == ("applied", 1, None)
    assert records.get_feedback("fb-1").version == 1


def test_the_publish_fence_refuses_a_lost_lease_and_an_already_learned_feedback(
    records: RecordsBackend, tmp_path: Path
) -> None:
    store = LocalAdapterStore(tmp_path / "adapters")
    store.create(ADAPTER, base_model="m", lora=LoraSpec(), write=lambda out: None)
    first, second = _take_over(records)
    with pytest.raises(LeaseLost):
        publish_fence(records, store, [first])()
    fence = publish_fence(records, store, [second])
    fence()  # B holds the lease and nothing learned fb-1 yet
    store.publish(ADAPTER, parent=0, write=lambda out: None, feedback_ids=["fb-1"])
    with pytest.raises(AlreadyPublished) as found:
        fence()
    assert found.value.version.version == 1

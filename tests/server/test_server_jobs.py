"""Feedback as jobs over HTTP: 202 and polling, idempotency keys, cancel, back-pressure."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from server_support import snapshot

from claas import Learner, Settings
from claas.errors import NonFiniteUpdate
from claas.testing import FakeInference, FakeTokenizer, FakeTrainer
from claas_server import create_app

USER = [{"role": "user", "content": "hello there"}]
RAW = {"adapter_id": "alpha/bot", "messages": USER, "response": "r", "feedback": "Shorter."}
JOB_FIELDS = {
    "id",
    "object",
    "adapter_id",
    "status",
    "done",
    "accepted",
    "feedback_ids",
    "idempotency_key",
    "started",
    "finished",
    "version",
    "parent_version",
    "metrics",
    "timings",
    "error",
    "error_code",
    "attempts",
}


class GatedTrainer(FakeTrainer):
    """A fake engine whose updates wait until the test opens the gate."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.gate = threading.Event()

    def distill(self, *args: Any, **kwargs: Any) -> Any:
        assert self.gate.wait(30), "the test never opened the gate"
        return super().distill(*args, **kwargs)


def _learner(data_dir: Path, engine: FakeTrainer, **settings: Any) -> Learner:
    return Learner(
        Settings(data_dir=data_dir).evolve(**settings),
        inference=FakeInference(),
        engine=engine,
        tokenizer=FakeTokenizer(),
    )


@pytest.fixture
def gate(tmp_path: Path) -> Iterator[tuple[TestClient, Learner, GatedTrainer]]:
    """An app whose updates block until ``trainer.gate`` is set; one job may queue per adapter."""
    trainer = GatedTrainer()
    learner = _learner(tmp_path / "gated", trainer, jobs_max_queued_per_adapter=1)
    learner.init_adapter("alpha/bot")
    try:
        with TestClient(create_app(learner=learner)) as client:
            yield client, learner, trainer
    finally:
        trainer.gate.set()
        learner.close()


@pytest.fixture
def bot(client: TestClient) -> TestClient:
    assert client.post("/v1/adapters", json={"adapter_id": "alpha/bot"}).status_code == 201
    return client


def _running(learner: Learner, job_id: str) -> None:
    deadline = time.monotonic() + 10
    while learner.job(job_id).status != "running":
        assert time.monotonic() < deadline, learner.job(job_id)
        time.sleep(0.01)


def test_no_wait_answers_202_then_the_job_is_polled_to_its_version(bot: TestClient) -> None:
    queued = bot.post("/v1/feedback", json={**RAW, "wait": False})
    assert queued.status_code == 202, queued.text
    job = queued.json()
    assert set(job) == JOB_FIELDS
    assert (job["object"], job["adapter_id"], job["idempotency_key"]) == (
        "feedback.job",
        "alpha/bot",
        None,
    )
    assert job["status"] in ("queued", "running", "applied") and len(job["feedback_ids"]) == 1
    assert queued.headers["location"] == f"/v1/feedback/{job['id']}"

    done = bot.get(queued.headers["location"], params={"wait": 30}).json()
    assert (done["status"], done["done"], done["version"], done["parent_version"]) == (
        "applied",
        True,
        1,
        0,
    )
    assert done["metrics"]["distill_loss"] == pytest.approx(0.1)
    assert done["finished"] >= done["accepted"] and done["attempts"] == 1
    assert bot.get("/v1/adapters/alpha/bot").json()["live_version"] == 1
    events = bot.get("/v1/feedback/events").json()["data"]
    assert [e["id"] for e in events] == done["feedback_ids"]


def test_waiting_feedback_names_its_job(bot: TestClient) -> None:
    result = bot.post("/v1/feedback", json=RAW).json()
    assert (result["object"], result["version"]) == ("feedback.result", 1)
    job = bot.get(f"/v1/feedback/{result['job_id']}").json()
    assert (job["status"], job["version"], job["feedback_ids"]) == (
        "applied",
        1,
        result["feedback_ids"],
    )


def test_jobs_are_listed_newest_first_and_filtered(bot: TestClient) -> None:
    bot.post("/v1/adapters", json={"adapter_id": "alpha/other"})
    first = bot.post("/v1/feedback", json=RAW).json()["job_id"]
    second = bot.post("/v1/feedback", json={**RAW, "adapter_id": "alpha/other"}).json()["job_id"]
    listed = bot.get("/v1/feedback").json()
    assert listed["object"] == "list"
    assert [j["id"] for j in listed["data"]] == [second, first]
    only = bot.get("/v1/feedback", params={"adapter_id": "alpha/bot"}).json()["data"]
    assert [j["id"] for j in only] == [first]
    assert bot.get("/v1/feedback", params={"status": "queued"}).json()["data"] == []
    applied = bot.get("/v1/feedback", params={"status": "applied", "limit": 1}).json()["data"]
    assert [j["id"] for j in applied] == [second]
    assert bot.get("/v1/feedback", params={"status": "lost"}).status_code == 422
    assert bot.get("/v1/feedback", params={"limit": 0}).status_code == 422


def test_an_idempotency_key_makes_a_retry_safe(bot: TestClient, fake: Learner) -> None:
    key = {"Idempotency-Key": "retry-0123"}
    first = bot.post("/v1/feedback", json={**RAW, "wait": False}, headers=key)
    assert first.status_code == 202 and first.json()["idempotency_key"] == "retry-0123"
    again = bot.post("/v1/feedback", json=RAW, headers=key)
    assert again.status_code == 200 and again.json()["job_id"] == first.json()["id"]
    later = bot.post("/v1/feedback", json={**RAW, "wait": False}, headers=key)
    assert later.json()["id"] == first.json()["id"] and later.json()["status"] == "applied"
    assert [v.version for v in fake.versions("alpha/bot")] == [0, 1]  # trained once

    other = bot.post("/v1/feedback", json={**RAW, "feedback": "Longer."}, headers=key)
    assert other.status_code == 409, other.text
    assert other.json()["error"]["code"] == "idempotency_conflict"
    assert [v.version for v in fake.versions("alpha/bot")] == [0, 1]


@pytest.mark.parametrize("key", [b"", b"has space", b"x" * 256, b"tab\there", b"cl\xe9"])
def test_a_malformed_idempotency_key_is_400(bot: TestClient, fake: Learner, key: bytes) -> None:
    before = snapshot(fake)
    response = bot.post("/v1/feedback", json=RAW, headers={b"Idempotency-Key": key})
    assert response.status_code == 400, response.text
    assert response.json()["error"]["type"] == "invalid_request_error"
    assert snapshot(fake) == before
    assert bot.get("/v1/feedback").json()["data"] == []


def test_a_failed_job_is_polled_with_its_reason(tmp_path: Path) -> None:
    learner = _learner(tmp_path / "nan", FakeTrainer(fail_with=NonFiniteUpdate("loss is nan")))
    learner.init_adapter("alpha/bot")
    try:
        with TestClient(create_app(learner=learner)) as client:
            queued = client.post("/v1/feedback", json={**RAW, "wait": False})
            assert queued.status_code == 202
            job = client.get(queued.headers["location"], params={"wait": 30}).json()
            waited = client.post("/v1/feedback", json=RAW)
    finally:
        learner.close()
    assert (job["status"], job["error_code"], job["version"]) == (
        "failed",
        "non_finite_update",
        None,
    )
    assert "loss is nan" in job["error"]
    assert waited.status_code == 422 and waited.json()["error"]["code"] == "non_finite_update"


def test_cancel_a_queued_job_not_a_running_one(
    gate: tuple[TestClient, Learner, GatedTrainer],
) -> None:
    client, learner, trainer = gate
    running = client.post("/v1/feedback", json={**RAW, "wait": False}).json()["id"]
    _running(learner, running)
    queued = client.post("/v1/feedback", json={**RAW, "feedback": "2", "wait": False}).json()
    assert queued["status"] == "queued"

    polled = client.get(f"/v1/feedback/{running}", params={"wait": 0.2})
    assert polled.status_code == 200 and polled.json()["status"] == "running"  # not done yet

    cancelled = client.delete(f"/v1/feedback/{queued['id']}")
    assert cancelled.status_code == 200, cancelled.text
    assert (cancelled.json()["status"], cancelled.json()["done"]) == ("cancelled", True)
    busy = client.delete(f"/v1/feedback/{running}")
    assert busy.status_code == 409 and busy.json()["error"]["type"] == "conflict_error"

    trainer.gate.set()
    assert client.get(f"/v1/feedback/{running}", params={"wait": 30}).json()["version"] == 1
    assert client.delete(f"/v1/feedback/{running}").status_code == 409  # finished
    assert [v.version for v in learner.versions("alpha/bot")] == [0, 1]
    assert learner.job(queued["id"]).status == "cancelled"


def test_a_full_queue_is_429_with_retry_after(
    gate: tuple[TestClient, Learner, GatedTrainer],
) -> None:
    client, learner, trainer = gate
    running = client.post("/v1/feedback", json={**RAW, "wait": False}).json()["id"]
    _running(learner, running)
    assert client.post("/v1/feedback", json={**RAW, "wait": False}).status_code == 202
    before = learner.job_counts()

    refused = client.post("/v1/feedback", json={**RAW, "feedback": "3"})
    assert refused.status_code == 429, refused.text
    assert int(refused.headers["retry-after"]) > 0
    error = refused.json()["error"]
    assert (error["type"], error["code"]) == ("requests", "rate_limit_exceeded")
    assert "max_queued_per_adapter" in error["message"]
    assert learner.job_counts() == before  # nothing recorded
    trainer.gate.set()


def test_job_routes_refuse_malformed_requests(bot: TestClient) -> None:
    unknown = bot.get("/v1/feedback/job-unknown")
    assert unknown.status_code == 404 and unknown.json()["error"]["code"] == "job_not_found"
    assert bot.delete("/v1/feedback/job-unknown").status_code == 404
    assert bot.get("/v1/feedback/job-unknown", params={"wait": 61}).status_code == 422
    assert bot.get("/v1/feedback/job-unknown", params={"wait": -1}).status_code == 422
    assert bot.get("/v1/feedback/" + "j" * 300).status_code == 422
    bad_wait = bot.post("/v1/feedback", json={**RAW, "wait": "no"})
    assert bad_wait.status_code == 422  # strict: a string is not a boolean

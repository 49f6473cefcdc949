"""Feedback jobs over HTTP: 202 jobs, idempotency keys, back-pressure, cancel, crashes.

The app runs on the fakes (real records, no model; every test on SQLite and on
a real PostgreSQL server, the ``database`` fixture): in process with
``TestClient``, on a uvicorn thread where requests must overlap, and as a real
server process on loopback where the test SIGKILLs it (``jobs_support``).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from jobs_support import (
    RAW,
    CountingTrainer,
    Q,
    assert_applied_once,
    assert_store_complete,
    jobs_learner,
    server_process,
    server_support,
    wait_until,
)

from claas import Learner
from claas_server import create_app

Http = httpx.Client | TestClient
pytestmark = pytest.mark.usefixtures("database")
API_KEYS, auth, serving, snapshot = (
    server_support.API_KEYS,
    server_support.auth,
    server_support.serving,
    server_support.snapshot,
)
KEY_ADMIN, KEY_ALPHA, KEY_BETA = (
    server_support.KEY_ADMIN,
    server_support.KEY_ALPHA,
    server_support.KEY_BETA,
)


def _chat(http: Http, adapter: str, headers: dict[str, str] | None = None) -> str:
    answer = http.post(
        "/v1/chat/completions", json={"model": adapter, "messages": Q}, headers=headers
    )
    assert answer.status_code == 200, answer.text
    return str(answer.json()["id"])


def _create(http: Http, adapter: str, headers: dict[str, str] | None = None) -> None:
    created = http.post("/v1/adapters", json={"adapter_id": adapter}, headers=headers)
    assert created.status_code == 201, created.text


def _submit(
    http: Http, body: dict[str, Any], key: str | None = None, *, new: bool = True, **headers: str
) -> Any:
    """POST a feedback with ``wait: false``; it must be accepted; return the job.

    A ``new`` job is queued or running; a repeated key may name one already done.
    """
    if key is not None:
        headers["Idempotency-Key"] = key
    answer = http.post("/v1/feedback", json={**body, "wait": False}, headers=headers)
    assert answer.status_code in ((202,) if new else (200, 202)), answer.text
    job = answer.json()
    assert job["object"] == "feedback.job" and job["id"].startswith("job-")
    if new:
        assert job["status"] in ("queued", "running"), job
    return job


def _wait_job(http: Http, job_id: str, timeout: float = 30.0, **headers: str) -> Any:
    """Poll ``GET /v1/feedback/{id}?wait=`` until the job is final."""
    deadline = time.monotonic() + timeout
    while True:
        answer = http.get(f"/v1/feedback/{job_id}", params={"wait": 5}, headers=headers)
        assert answer.status_code == 200, answer.text
        job = answer.json()
        if job["done"]:
            return job
        assert time.monotonic() < deadline, f"job {job_id} not done in {timeout}s: {job}"


@pytest.fixture
def slow(tmp_path: Path) -> Iterator[Learner]:
    """A fake learner whose updates take 0.4 s, with a short queue per adapter."""
    learner = jobs_learner(
        tmp_path / "slow", CountingTrainer(delay=0.4), jobs={"max_queued_per_adapter": 3}
    )
    learner.init_adapter("t/a")
    yield learner
    learner.close()


@pytest.fixture
def http(slow: Learner) -> Iterator[TestClient]:
    with TestClient(create_app(learner=slow)) as client:
        yield client


# --------------------------------------------------------------------- the routes


def test_wait_false_answers_a_job_to_poll(http: TestClient, slow: Learner) -> None:
    completion = _chat(http, "t/a")
    job = _submit(http, {"completion_id": completion, "feedback": "shorter"})
    assert job["adapter_id"] == "t/a" and len(job["feedback_ids"]) == 1 and not job["done"]
    now = http.get(f"/v1/feedback/{job['id']}")
    assert now.status_code == 200 and now.json()["id"] == job["id"]
    done = _wait_job(http, job["id"])
    assert done["status"] == "applied" and done["version"] == 1 and done["error"] is None
    listed = http.get("/v1/feedback", params={"adapter_id": "t/a"}).json()
    assert listed["object"] == "list" and [j["id"] for j in listed["data"]] == [job["id"]]
    assert (
        http.get("/v1/feedback", params={"status": "applied"}).json()["data"][0]["id"]
        == (job["id"])
    )
    assert http.get("/v1/feedback", params={"status": "queued"}).json()["data"] == []
    assert http.get("/v1/feedback", params={"status": "nonsense"}).status_code == 422
    events = http.get("/v1/feedback/events", params={"adapter_id": "t/a"}).json()["data"]
    assert [e["id"] for e in events] == done["feedback_ids"] and events[0]["version"] == 1
    waited = http.post("/v1/feedback", json={"completion_id": completion, "feedback": "again"})
    assert waited.status_code == 200, waited.text  # wait defaults to true: the result
    assert waited.json()["version"] == 2 and waited.json()["parent_version"] == 1


def test_raw_feedback_job(http: TestClient) -> None:
    job = _submit(http, {"adapter_id": "t/a", "feedback": "friendlier", **RAW})
    assert _wait_job(http, job["id"])["status"] == "applied"


# --------------------------------------------------------------------- idempotency


def test_same_key_three_times_gives_one_update(tmp_path: Path) -> None:
    engine = CountingTrainer(delay=0.5)
    with (
        jobs_learner(tmp_path / "d", engine) as learner,
        serving(create_app(learner=learner)) as url,
    ):
        http = httpx.Client(base_url=url, timeout=30)
        learner.init_adapter("t/a")
        body = {"completion_id": _chat(http, "t/a"), "feedback": "shorter"}
        headers = {"Idempotency-Key": "order-42"}
        answers: list[httpx.Response] = []

        def send() -> None:
            answers.append(http.post("/v1/feedback", json=body, headers=headers))

        first = threading.Thread(target=send)
        first.start()
        wait_until(lambda: learner.jobs(status="running") != [], what="the first to run")
        second = threading.Thread(target=send)  # while the first is still training
        second.start()
        first.join(30)
        second.join(30)
        send()  # once it is done
        assert [a.status_code for a in answers] == [200, 200, 200], [a.text for a in answers]
        assert answers[0].json() == answers[1].json() == answers[2].json()
        assert answers[0].json()["version"] == 1
        job = _submit(
            http, body, key="order-42", new=False
        )  # the same key without waiting: the same job
        assert job["feedback_ids"] == answers[0].json()["feedback_ids"]
        assert len(engine.calls) == 1
        assert sum(learner.job_counts().values()) == 1
        assert [v.version for v in learner.versions("t/a")] == [0, 1]
        http.close()


def test_reused_key_with_another_body_is_409_and_records_nothing(
    http: TestClient, slow: Learner
) -> None:
    completion = _chat(http, "t/a")
    job = _submit(http, {"completion_id": completion, "feedback": "a"}, key="k-1")
    before = (snapshot(slow), slow.job_counts())
    for body in (
        {"completion_id": completion, "feedback": "b"},
        {"completion_id": completion, "feedback": "a", "config": {"steps": 2}},
        {"adapter_id": "t/a", "feedback": "a", **RAW},
    ):
        answer = http.post(
            "/v1/feedback", json={**body, "wait": False}, headers={"Idempotency-Key": "k-1"}
        )
        assert answer.status_code == 409, answer.text
        assert answer.json()["error"]["code"] == "idempotency_conflict"
    _wait_job(http, job["id"])
    after = (snapshot(slow), slow.job_counts())
    assert after[0]["records"]["feedback"] == before[0]["records"]["feedback"]
    assert sum(after[1].values()) == sum(before[1].values()) == 1


# ------------------------------------------------------------------ back-pressure


def test_a_full_queue_is_429_with_retry_after(http: TestClient, slow: Learner) -> None:
    body = {"completion_id": _chat(http, "t/a"), "feedback": "x", "wait": False}
    codes = []
    for _ in range(10):
        before = (slow.job_counts(), slow.record_counts())
        answer = http.post("/v1/feedback", json=body)
        codes.append(answer.status_code)
        if answer.status_code == 429:
            break
    assert codes[-1] == 429, codes
    assert set(codes[:-1]) == {202} and len(codes) - 1 >= 3  # 3 waiting (+ the running ones)
    assert int(answer.headers["Retry-After"]) > 0
    assert answer.json()["error"]["code"] == "rate_limit_exceeded"
    after = (slow.job_counts(), slow.record_counts())
    assert sum(after[0].values()) == sum(before[0].values())
    assert after[1]["feedback"] == before[1]["feedback"]


def test_cancel_queued_and_refuse_running(http: TestClient, slow: Learner) -> None:
    body = {"completion_id": _chat(http, "t/a"), "feedback": "x"}
    jobs = [_submit(http, {**body, "feedback": f"x{i}"}) for i in range(3)]
    wait_until(lambda: slow.job(jobs[0]["id"]).status == "running", what="the first to run")
    cancelled = http.delete(f"/v1/feedback/{jobs[2]['id']}")
    assert cancelled.status_code == 200, cancelled.text
    assert cancelled.json()["status"] == "cancelled" and cancelled.json()["done"]
    refused = http.delete(f"/v1/feedback/{jobs[0]['id']}")
    assert refused.status_code == 409, refused.text
    assert refused.json()["error"]["type"] == "conflict_error"
    final = [_wait_job(http, j["id"]) for j in jobs]
    assert [j["status"] for j in final] == ["applied", "applied", "cancelled"]
    assert http.delete(f"/v1/feedback/{jobs[2]['id']}").status_code == 409
    assert [v.version for v in slow.versions("t/a")] == [0, 1, 2]
    assert_applied_once(slow, [slow.job(j["id"]) for j in jobs])


# ------------------------------------------------------------------------ hostile


@pytest.fixture
def keyed(tmp_path: Path) -> Iterator[tuple[TestClient, Learner]]:
    learner = jobs_learner(tmp_path / "keyed", api_keys=API_KEYS)
    with TestClient(create_app(learner=learner)) as client:
        yield client, learner
    learner.close()


def test_jobs_of_unknown_ids_and_other_tenants_are_404(
    keyed: tuple[TestClient, Learner],
) -> None:
    http, learner = keyed
    alpha, beta = auth(KEY_ALPHA), auth(KEY_BETA)
    _create(http, "alpha/bot", alpha)
    _create(http, "beta/bot", beta)
    body = {"completion_id": _chat(http, "alpha/bot", alpha), "feedback": "x"}
    job = _submit(http, body, key="same-key", **alpha)
    _wait_job(http, job["id"], **alpha)
    before = (snapshot(learner), learner.job_counts())
    for job_id in (job["id"], "job-" + "0" * 32, "nonsense", "job-%00", "fb-1"):
        for headers in [beta] if job_id == job["id"] else [alpha, beta]:
            for method, params in (("GET", None), ("GET", {"wait": 1}), ("DELETE", None)):
                answer = http.request(
                    method, f"/v1/feedback/{job_id}", params=params, headers=headers
                )
                assert answer.status_code == 404, (method, job_id, answer.text)
    assert http.get(f"/v1/feedback/{job['id']}", headers=auth(KEY_ADMIN)).status_code == 200
    assert http.get("/v1/feedback", headers=beta).json()["data"] == []
    assert (
        http.get("/v1/feedback", params={"adapter_id": "alpha/bot"}, headers=beta).status_code
        == 403
    )
    assert http.get(f"/v1/feedback/{job['id']}").status_code == 401
    assert (snapshot(learner), learner.job_counts()) == before
    # beta's own job with alpha's key is beta's: keys do not reach across tenants
    raw = {"adapter_id": "beta/bot", "feedback": "x", **RAW}
    assert _submit(http, raw, key="same-key", **beta)["id"] != job["id"]


@pytest.mark.parametrize(
    "key",
    [
        "",
        "has space",
        "x" * 256,
        "x" * 8000,
        "ключ".encode(),
        b"caf\xe9",
    ],
    ids=["empty", "space", "256", "8000", "utf8", "latin1"],
)
def test_malformed_and_huge_keys_are_400(http: TestClient, slow: Learner, key: str | bytes) -> None:
    body = {"completion_id": _chat(http, "t/a"), "feedback": "x", "wait": False}
    before = (snapshot(slow), slow.job_counts())
    answer = http.post("/v1/feedback", json=body, headers={"Idempotency-Key": key})  # type: ignore[dict-item,arg-type]
    assert answer.status_code == 400, answer.text
    assert answer.json()["error"]["type"] == "invalid_request_error"
    assert (snapshot(slow), slow.job_counts()) == before
    assert _submit(http, {**body, "wait": False}, key="x" * 255)["id"]


@pytest.mark.parametrize("wait", ["garbage", "-1", "1e999", "nan", ""])
def test_wait_garbage_is_422(http: TestClient, slow: Learner, wait: str) -> None:
    job = _submit(http, {"completion_id": _chat(http, "t/a"), "feedback": "x"})
    answer = http.get(f"/v1/feedback/{job['id']}", params={"wait": wait})
    assert answer.status_code == 422, answer.text
    before = (snapshot(slow), slow.job_counts())
    body = {"completion_id": _chat(http, "t/a"), "feedback": "x", "wait": wait or "garbage"}
    assert http.post("/v1/feedback", json=body).status_code == 422
    assert sum(slow.job_counts().values()) == sum(before[1].values())


# ------------------------------------------------------------- a SIGKILLed server

KILL_POINTS = {
    # name: (environment of the first server, whether the test releases the held update)
    "right after submit": ({}, False),
    "during the first update": ({"CLAAS_TEST_KILL_AT": "train:1"}, True),
    "during the third update": ({"CLAAS_TEST_KILL_AT": "train:3"}, True),
    "version saved, job not marked": ({"CLAAS_TEST_KILL_AT": "saved:1"}, True),
    "second version saved, job not marked": ({"CLAAS_TEST_KILL_AT": "saved:2"}, True),
    # The guard is on: a kill between the candidate's save and its verdict leaves it
    # unjudged (saved:N above); this one leaves a passing verdict whose LATEST never moved.
    "verdict written, version not live": ({"CLAAS_TEST_KILL_AT": "verdict:2"}, True),
}


def _submit_mix(http: Http) -> list[tuple[dict[str, Any], Any]]:
    """Six jobs on two adapters, raw feedback (no completion id) among them: (body, job)."""
    for adapter in ("crash/a", "crash/b"):
        _create(http, adapter)
    sent = []
    for i in range(6):
        adapter = ("crash/a", "crash/b")[i % 2]
        if i % 3 == 2:
            body = {"adapter_id": adapter, "feedback": f"raw {i}", **RAW}
        else:
            body = {"completion_id": _chat(http, adapter), "feedback": f"fb {i}"}
        sent.append((body, _submit(http, body, key=f"crash-{i}")))
    return sent


@pytest.mark.parametrize("point", list(KILL_POINTS))
def test_a_sigkilled_server_applies_every_job_once_after_restart(
    tmp_path: Path, point: str
) -> None:
    data = tmp_path / "data"
    hold = tmp_path / "go"
    env, release = KILL_POINTS[point]
    with server_process(data, CLAAS_TEST_HOLD=str(hold), **env) as first:
        http = httpx.Client(base_url=first.url, timeout=30)
        sent = _submit_mix(http)
        submitted = [job for _, job in sent]
        wait_until(
            lambda: any(
                http.get(f"/v1/feedback/{j['id']}").json()["status"] == "running" for j in submitted
            ),
            what="one job to run",
        )
        if release:
            hold.touch()
            first.process.wait(timeout=30)  # it kills itself at the point
            assert first.process.returncode == -9, first.log()
        http.close()
    hold.touch()
    started = time.monotonic()
    with server_process(data) as second:
        http = httpx.Client(base_url=second.url, timeout=30)
        final = [_wait_job(http, j["id"], timeout=60) for j in submitted]
        recovery = time.monotonic() - started
        # the same keys again: the same jobs, nothing trained again
        again = [
            _submit(http, body, key=f"crash-{i}", new=False) for i, (body, _) in enumerate(sent)
        ]
        http.close()
    assert [j["status"] for j in final] == ["applied"] * 6, [
        (j["status"], j["error"]) for j in final
    ]
    assert [j["id"] for j in again] == [j["id"] for j in submitted]
    with jobs_learner(data) as learner:
        jobs = [learner.job(j["id"]) for j in submitted]
        assert_applied_once(learner, jobs)
        for adapter in ("crash/a", "crash/b"):
            assert_store_complete(learner, adapter)
            mine = sorted((j for j in jobs if j.adapter_id == adapter), key=lambda j: j.accepted)
            assert [j.version for j in mine] == [1, 2, 3]  # in acceptance order, nothing retrained
            assert [v.version for v in learner.versions(adapter)] == [0, 1, 2, 3]
            # each update started from the one before: a recovered version did go live
            assert [v.parent for v in learner.versions(adapter)] == [None, 0, 1, 2]
        assert {j.status for j in learner.jobs(limit=100)} == {"applied"}
        assert len(learner.jobs(limit=100)) == 6
        events = {e.id: e for e in learner.feedback_events(limit=100)}
        for job in jobs:
            assert all(events[f].status == "applied" for f in job.feedback_ids), job
            assert all(events[f].version == job.version for f in job.feedback_ids), job
        if "update" in point or "submit" in point:  # the running job was started twice
            assert max(j.attempts for j in jobs) == 2, [j.attempts for j in jobs]
    print(f"{point}: recovered in {recovery:.1f} s")

"""Feedback jobs in the core: submit returns at once, a worker applies each job once.

Most tests run on the fakes (real store and records, no model); one variant
of the concurrency test runs the bundled model (``slow``). Every test runs on
SQLite and on a real PostgreSQL server (the ``database`` fixture).
"""

from __future__ import annotations

import random
import subprocess
import sys
import threading
import time
from collections import defaultdict
from pathlib import Path

import pytest
from jobs_support import (
    RAW,
    CountingTrainer,
    Q,
    assert_applied_once,
    assert_store_complete,
    db_settings,
    jobs_learner,
    version_feedback,
    wait_until,
)

from claas import (
    Conflict,
    IdempotencyConflict,
    InvalidRequest,
    JobNotFound,
    Learner,
    NonFiniteUpdate,
    QueueFull,
)
from claas.jobs.model import JOB_STATUSES, FeedbackJob
from claas.testing import FakeInference, FakeTokenizer, FakeTrainer

ADAPTERS = ("t/a", "t/b", "t/c", "t/d")
pytestmark = pytest.mark.usefixtures("database")


def _submit_from_threads(
    learner: Learner,
    adapters: tuple[str, ...],
    total: int,
    threads: int,
    *,
    raw_every: int = 0,
    **sampling: int,
) -> tuple[list[FeedbackJob], list[BaseException]]:
    """``total`` jobs spread over ``adapters``, submitted by ``threads`` threads at once.

    While they run, a poller reads every job it knows of, the listings and the
    counts; anything any of them raises is returned with the jobs.
    """
    per_adapter = total // len(adapters)
    answers = {a: [learner.chat(a, Q, **sampling) for _ in range(per_adapter)] for a in adapters}
    work = [(a, answer.id, f"fb {i}") for a in adapters for i, answer in enumerate(answers[a])]
    random.Random(7).shuffle(work)
    jobs: list[FeedbackJob] = []
    errors: list[BaseException] = []
    lock = threading.Lock()
    start = threading.Barrier(threads + 1)
    finished = threading.Event()

    def submitter(share: list[tuple[str, str, str]]) -> None:
        start.wait()
        for n, (adapter, completion_id, text) in enumerate(share):
            try:
                if raw_every and n % raw_every == 0:
                    job = learner.submit_feedback(text=text, adapter_id=adapter, **RAW)
                else:
                    job = learner.submit_feedback(completion_id, text)
            except BaseException as exc:  # collected and re-raised by the test
                errors.append(exc)
                continue
            assert job.status in JOB_STATUSES
            with lock:
                jobs.append(job)

    def poller() -> None:
        while not finished.is_set():
            with lock:
                known = [job.id for job in jobs]
            try:
                for job_id in known:
                    assert learner.job(job_id).id == job_id
                learner.jobs(limit=100)
                counts = learner.job_counts()
                assert set(counts) == set(JOB_STATUSES)
            except BaseException as exc:
                errors.append(exc)
                return
            time.sleep(0.005)

    workers = [threading.Thread(target=submitter, args=(work[i::threads],)) for i in range(threads)]
    watcher = threading.Thread(target=poller)
    for thread in [*workers, watcher]:
        thread.start()
    start.wait()
    for thread in workers:
        thread.join(timeout=60)
    for job in list(jobs):
        learner.wait(job.id, timeout=60)
    finished.set()
    watcher.join(timeout=10)
    return [learner.job(job.id) for job in jobs], errors


def _assert_in_acceptance_order(learner: Learner, jobs: list[FeedbackJob]) -> None:
    """Each adapter's versions follow its jobs in the order they were accepted."""
    by_adapter: dict[str, list[FeedbackJob]] = defaultdict(list)
    for job in jobs:
        by_adapter[job.adapter_id].append(job)
    for adapter, mine in by_adapter.items():
        listed = list(reversed(learner.jobs(adapter, limit=100)))  # newest first -> oldest first
        assert {j.id for j in listed} == {j.id for j in mine}
        versions = version_feedback(learner, adapter)
        assert sorted(versions) == list(range(len(mine) + 1))
        assert [versions[v] for v in range(1, len(mine) + 1)] == [j.feedback_ids for j in listed]
        assert [j.version for j in listed] == list(range(1, len(mine) + 1))
        assert [j.parent_version for j in listed] == list(range(len(mine)))


def _assert_accepted_times_follow_order(learner: Learner, jobs: list[FeedbackJob]) -> None:
    """``accepted`` grows along the order the jobs are listed (and applied) in."""
    for adapter in {job.adapter_id for job in jobs}:
        accepted = [j.accepted for j in reversed(learner.jobs(adapter, limit=100))]
        assert accepted == sorted(accepted), f"{adapter}: accepted times out of listing order"


def test_concurrent_submits_apply_once_in_acceptance_order(tmp_path: Path) -> None:
    engine = CountingTrainer(delay=0.02)
    with jobs_learner(tmp_path / "data", engine) as learner:
        for adapter in ADAPTERS:
            learner.init_adapter(adapter)
        jobs, errors = _submit_from_threads(learner, ADAPTERS, total=20, threads=8, raw_every=3)
        assert errors == []
        assert len(jobs) == 20 and len({j.id for j in jobs}) == 20
        assert all(j.id.startswith("job-") for j in jobs)
        assert [j.status for j in jobs] == ["applied"] * 20, [(j.status, j.error) for j in jobs]
        assert len(engine.calls) == 20
        assert max(engine.max_active.values()) == 1  # never two updates of one adapter at once
        assert_applied_once(learner, jobs)
        _assert_in_acceptance_order(learner, jobs)
        counts = learner.job_counts()
        assert counts["applied"] == 20 and sum(counts.values()) == 20
        assert learner.jobs(status="queued") == [] and learner.jobs(status="running") == []
        _assert_accepted_times_follow_order(learner, jobs)


@pytest.mark.slow
def test_concurrent_submits_on_the_real_model(tmp_path: Path, models_dir: Path) -> None:
    settings = db_settings(tmp_path / "data", model_cache_dir=models_dir)
    with Learner(settings) as learner:
        adapters = ("real/a", "real/b")
        for adapter in adapters:
            learner.init_adapter(adapter, rank=4, alpha=8)
        jobs, errors = _submit_from_threads(
            learner, adapters, total=4, threads=4, raw_every=2, max_tokens=6, seed=1
        )
        assert errors == []
        assert [j.status for j in jobs] == ["applied"] * 4, [(j.status, j.error) for j in jobs]
        assert_applied_once(learner, jobs)
        _assert_in_acceptance_order(learner, jobs)
        for job in jobs:
            result = learner.result_of(job)
            assert result.version == job.version and result.feedback_ids == job.feedback_ids
        _assert_accepted_times_follow_order(learner, jobs)


def test_submit_returns_at_once_and_feedback_waits(tmp_path: Path) -> None:
    with jobs_learner(tmp_path / "data", CountingTrainer(delay=0.5)) as learner:
        learner.init_adapter("t/a")
        answer = learner.chat("t/a", Q)
        started = time.perf_counter()
        job = learner.submit_feedback(answer.id, "shorter")
        assert time.perf_counter() - started < 0.4
        assert job.status in ("queued", "running") and not job.done
        assert job.adapter_id == "t/a" and len(job.feedback_ids) == 1
        assert learner.wait(job.id, timeout=0.01).done is False
        done = learner.wait(job.id, timeout=10)
        assert done.status == "applied" and done.version == 1 and done.attempts == 1
        assert done.accepted <= (done.started or 0) <= (done.finished or 0)
        result = learner.result_of(done)
        assert result.version == 1 and result.feedback_ids == done.feedback_ids
        assert learner.feedback_event(done.feedback_ids[0]).status == "applied"
        second = learner.feedback(learner.chat("t/a", Q).id, "again")  # submit, then wait
        assert second.version == 2 and second.parent_version == 1


def test_failed_job_keeps_its_reason_and_feedback_raises_it(tmp_path: Path) -> None:
    engine = CountingTrainer(fail_with=NonFiniteUpdate("loss is nan"))
    with jobs_learner(tmp_path / "data", engine) as learner:
        learner.init_adapter("t/f")
        job = learner.wait(learner.submit_feedback(learner.chat("t/f", Q).id, "x").id, timeout=10)
        assert job.status == "failed" and job.version is None
        assert "nan" in (job.error or "") and job.error_code == "non_finite_update"
        with pytest.raises(NonFiniteUpdate, match="nan"):
            learner.feedback(learner.chat("t/f", Q).id, "x")
        assert [v.version for v in learner.versions("t/f")] == [0]
        assert learner.job_counts()["failed"] == 2


def test_job_listener_hears_each_final_status_once(tmp_path: Path) -> None:
    heard: list[FeedbackJob] = []
    with jobs_learner(tmp_path / "data", CountingTrainer(delay=0.01)) as learner:
        learner.add_job_listener(heard.append)
        learner.init_adapter("t/a")
        ids = [learner.submit_feedback(learner.chat("t/a", Q).id, f"x{i}").id for i in range(3)]
        for job_id in ids:
            learner.wait(job_id, timeout=10)
        wait_until(lambda: len(heard) >= 3, what="three listener calls")
        time.sleep(0.05)
        assert sorted(j.id for j in heard) == sorted(ids)
        assert all(j.done and j.status == "applied" for j in heard)


# ------------------------------------------------------------------ idempotency


def test_same_key_three_times_is_one_update(tmp_path: Path) -> None:
    engine = CountingTrainer(delay=0.3)
    with jobs_learner(tmp_path / "data", engine) as learner:
        learner.init_adapter("t/a")
        answer = learner.chat("t/a", Q)
        first = learner.submit_feedback(answer.id, "shorter", idempotency_key="key-1")
        wait_until(lambda: learner.job(first.id).status == "running", what="the job to run")
        second = learner.submit_feedback(answer.id, "shorter", idempotency_key="key-1")
        learner.wait(first.id, timeout=10)
        third = learner.submit_feedback(answer.id, "shorter", idempotency_key="key-1")
        assert first.id == second.id == third.id
        assert second.status == "running" and third.status == "applied"
        assert first.feedback_ids == second.feedback_ids == third.feedback_ids
        results = [learner.result_of(learner.job(j.id)) for j in (first, second, third)]
        assert results[0] == results[1] == results[2]
        assert len(engine.calls) == 1
        assert [v.version for v in learner.versions("t/a")] == [0, 1]
        assert sum(learner.job_counts().values()) == 1
        assert learner.record_counts()["feedback"] == 1


def test_same_key_with_another_body_is_refused_and_records_nothing(tmp_path: Path) -> None:
    with jobs_learner(tmp_path / "data") as learner:
        learner.init_adapter("t/a")
        answer = learner.chat("t/a", Q)
        job = learner.wait(learner.submit_feedback(answer.id, "a", idempotency_key="k").id, 10)
        before = (learner.job_counts(), learner.record_counts())
        for kwargs in (
            {"completion_id": answer.id, "text": "b"},
            {"completion_id": answer.id, "text": "a", "config": {"steps": 2}},
            {"text": "a", "adapter_id": "t/a", **RAW},
        ):
            with pytest.raises(IdempotencyConflict):
                learner.submit_feedback(**kwargs, idempotency_key="k")  # type: ignore[arg-type]
        assert (learner.job_counts(), learner.record_counts()) == before
        assert learner.job(job.id).status == "applied"


def test_keys_are_scoped_to_the_adapter(tmp_path: Path) -> None:
    with jobs_learner(tmp_path / "data") as learner:
        learner.init_adapter("t/a")
        learner.init_adapter("u/b")
        a = learner.submit_feedback(learner.chat("t/a", Q).id, "x", idempotency_key="shared")
        b = learner.submit_feedback(learner.chat("u/b", Q).id, "x", idempotency_key="shared")
        assert a.id != b.id
        assert learner.wait(b.id, 10).status == "applied"


@pytest.mark.parametrize("key", ["", "has space", "tab\tkey", "ключ", "x" * 256, "a\nb"])
def test_bad_keys_are_refused_and_record_nothing(tmp_path: Path, key: str) -> None:
    with jobs_learner(tmp_path / "data") as learner:
        learner.init_adapter("t/a")
        answer = learner.chat("t/a", Q)
        before = (learner.job_counts(), learner.record_counts())
        with pytest.raises(InvalidRequest):
            learner.submit_feedback(answer.id, "x", idempotency_key=key)
        assert (learner.job_counts(), learner.record_counts()) == before
        assert learner.submit_feedback(answer.id, "x", idempotency_key="x" * 255).id


# ------------------------------------------------------------ queue and cancel


def test_a_full_queue_refuses_and_records_nothing(tmp_path: Path) -> None:
    gate = threading.Event()  # nothing finishes, so the queue only grows
    engine = CountingTrainer(gate=gate)
    with jobs_learner(
        tmp_path / "data", engine, jobs={"max_queued_per_adapter": 2, "max_queued": 3}
    ) as learner:
        for adapter in ("t/a", "t/b", "t/c"):
            learner.init_adapter(adapter)
        answers = [learner.chat("t/a", Q) for _ in range(5)]
        running = learner.submit_feedback(answers[0].id, "x")
        wait_until(lambda: learner.job(running.id).status == "running", what="the first to run")
        accepted = []
        with pytest.raises(QueueFull):
            for answer in answers[1:]:
                accepted.append(learner.submit_feedback(answer.id, "x"))
        assert len(accepted) == 2  # a running job does not count as waiting
        before = (learner.job_counts(), learner.record_counts())
        with pytest.raises(QueueFull):
            learner.submit_feedback(answers[-1].id, "x")
        after = (learner.job_counts(), learner.record_counts())
        assert sum(after[0].values()) == sum(before[0].values())
        assert after[1]["feedback"] == before[1]["feedback"]
        learner.submit_feedback(learner.chat("t/b", Q).id, "x")  # another adapter still fits
        with pytest.raises(QueueFull):  # unless the whole queue is full (3 waiting)
            learner.submit_feedback(learner.chat("t/c", Q).id, "x")
        assert learner.job_counts()["queued"] == 3
        gate.set()


def test_cancel_a_queued_job_never_applies_it(tmp_path: Path) -> None:
    engine = CountingTrainer(delay=0.4)
    with jobs_learner(tmp_path / "data", engine) as learner:
        learner.init_adapter("t/a")
        jobs = [learner.submit_feedback(learner.chat("t/a", Q).id, f"x{i}") for i in range(3)]
        wait_until(lambda: learner.job(jobs[0].id).status == "running", what="first to run")
        cancelled = learner.cancel(jobs[2].id)
        assert cancelled.status == "cancelled" and cancelled.done
        with pytest.raises(Conflict):
            learner.cancel(jobs[0].id)  # running: refused, nothing changes
        assert learner.job(jobs[0].id).status == "running"
        final = [learner.wait(j.id, timeout=10) for j in jobs]
        assert [j.status for j in final] == ["applied", "applied", "cancelled"]
        with pytest.raises(Conflict):
            learner.cancel(jobs[0].id)  # finished
        with pytest.raises(Conflict):
            learner.cancel(jobs[2].id)  # already cancelled
        time.sleep(0.5)
        assert learner.job(jobs[2].id).status == "cancelled"
        assert len(engine.calls) == 2
        assert_applied_once(learner, final)
        assert learner.job_counts()["cancelled"] == 1


def test_unknown_jobs_are_not_found(fake_learner: Learner) -> None:
    for call in (fake_learner.job, fake_learner.cancel, fake_learner.wait):
        with pytest.raises(JobNotFound):
            call("job-0000")
    assert fake_learner.jobs() == []
    assert fake_learner.job_counts() == dict.fromkeys(JOB_STATUSES, 0)


def test_jobs_filter_by_adapter_status_and_namespace(tmp_path: Path) -> None:
    with jobs_learner(tmp_path / "data") as learner:
        for adapter in ("t/a", "u/b"):
            learner.init_adapter(adapter)
        ids = [
            learner.wait(learner.submit_feedback(learner.chat(a, Q).id, "x").id, 10).id
            for a in ("t/a", "u/b", "t/a")
        ]
        assert [j.id for j in learner.jobs()] == ids[::-1]
        assert [j.id for j in learner.jobs("t/a")] == [ids[2], ids[0]]
        assert [j.id for j in learner.jobs(namespaces={"u"})] == [ids[1]]
        assert learner.jobs(namespaces=set()) == []
        assert len(learner.jobs(status="applied")) == 3 and learner.jobs(status="failed") == []
        assert len(learner.jobs(limit=1)) == 1


def test_queued_jobs_of_one_adapter_coalesce_into_one_version(tmp_path: Path) -> None:
    """max_coalesce=3: jobs waiting behind a running one become one update, one version."""
    settings = db_settings(tmp_path / "data", jobs={"max_coalesce": 3})
    engine = FakeTrainer(delay=0.5)
    with Learner(
        settings, inference=FakeInference(), engine=engine, tokenizer=FakeTokenizer()
    ) as learner:
        learner.init_adapter("t/co")
        answers = [learner.chat("t/co", [{"role": "user", "content": f"q{i}"}]) for i in range(5)]
        first = learner.submit_feedback(answers[0].id, "a")
        while learner.job(first.id).status == "queued":
            time.sleep(0.01)
        rest = [learner.submit_feedback(a.id, f"b{i}") for i, a in enumerate(answers[1:])]
        done = [learner.wait(job.id, timeout=30) for job in (first, *rest)]
    assert [job.status for job in done] == ["applied"] * 5
    assert [job.version for job in done] == [1, 2, 2, 2, 3]  # three coalesced, then the last
    assert len(engine.calls) == 3 and len(engine.calls[1]["batch"]) == 3
    assert len({job.version for job in done}) == 3


_TWO_PROCESS_SCRIPT = """
import sys, time
from pathlib import Path
from claas import Learner, Settings
from claas.testing import FakeInference, FakeTokenizer, FakeTrainer

data_dir, tag = Path(sys.argv[1]), sys.argv[2]
learner = Learner(Settings.load(data_dir=data_dir), inference=FakeInference(),
                  engine=FakeTrainer(delay=0.05), tokenizer=FakeTokenizer())
jobs = []
for i in range(6):
    adapter = "t/one" if i % 2 else "t/two"
    answer = learner.chat(adapter, [{"role": "user", "content": f"{tag} {i}"}])
    jobs.append(learner.submit_feedback(answer.id, f"{tag} feedback {i}"))
for job in jobs:
    assert learner.wait(job.id, timeout=120).status == "applied", learner.job(job.id)
learner.close()
print("ok")
"""


def test_two_processes_share_one_queue_and_apply_each_job_once(tmp_path: Path) -> None:
    """Two learners in two processes on one data dir and database: one queue, one update at once."""
    data_dir = tmp_path / "data"
    with Learner(db_settings(data_dir), inference=FakeInference(), engine=FakeTrainer(),
                 tokenizer=FakeTokenizer()) as setup:  # fmt: skip
        setup.init_adapter("t/one")
        setup.init_adapter("t/two")
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _TWO_PROCESS_SCRIPT, str(data_dir), tag],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for tag in ("a", "b")
    ]
    try:
        outputs = [proc.communicate(timeout=180) for proc in procs]
    finally:
        for proc in procs:
            proc.kill()
    assert [out.strip() for out, _ in outputs] == ["ok", "ok"], outputs
    with Learner(db_settings(data_dir), inference=FakeInference(), engine=FakeTrainer(),
                 tokenizer=FakeTokenizer()) as check:  # fmt: skip
        jobs = check.jobs(limit=100)
        assert len(jobs) == 12 and {j.status for j in jobs} == {"applied"}
        assert_applied_once(check, jobs)
        for adapter in ("t/one", "t/two"):
            mine = sorted((j for j in jobs if j.adapter_id == adapter), key=lambda j: j.accepted)
            assert [j.version for j in mine] == list(range(1, 7))  # acceptance order
            assert_store_complete(check, adapter)

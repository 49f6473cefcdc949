"""Many API servers and many workers on one PostgreSQL database and one adapter directory.

Every process is the real ``claas`` command (``serve --no-worker``, ``worker``)
started by the test on loopback, with a real PostgreSQL server the test session
runs. The 40-feedback test uses the in-memory fake engine slowed to 0.3 s an
update (``tests/cluster_support.py``): the real model on two shared cores
would need tens of minutes for 40 updates; the model variant runs the real
embedded model with fewer feedbacks.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from cluster_support import Process, processes, wait_healthy
from jobs_support import (
    Q,
    assert_applied_once,
    assert_store_complete,
    free_port,
    jobs_learner,
    version_feedback,
)
from postgres_server import PostgresServer

pytestmark = pytest.mark.slow


def _env(data_dir: Path, url: str, **extra: str) -> dict[str, str]:
    return {
        "CLAAS_DATA_DIR": str(data_dir),
        "CLAAS_DATABASE_URL": url,
        "CLAAS_INFERENCE_BACKEND": "fake",
        "CLAAS_TRAINING_ENGINE": "slowfake",
        "CLAAS_JOBS_LEASE_SECONDS": "3",
        **extra,
    }


def _start_api(started: list[Process], env: dict[str, str], data_dir: Path) -> str:
    port = free_port()
    args = ["serve", "--no-worker", "--port", str(port), "--log-level", "warning"]
    server = Process(args, env, data_dir / f"api-{port}.log")
    started.append(server)
    url = f"http://127.0.0.1:{port}"
    wait_healthy(url, server)
    return url


def _start_worker(started: list[Process], env: dict[str, str], data_dir: Path) -> Process:
    worker = Process(["worker", "--concurrency", "1"], env, data_dir / f"w-{len(started)}.log")
    started.append(worker)
    deadline = time.monotonic() + 240
    while "applying feedback jobs" not in worker.log():  # its learner is open
        assert worker.process.poll() is None and time.monotonic() < deadline, worker.log()
        time.sleep(0.1)
    return worker


def _retrying(call: Callable[[], httpx.Response], seen: list[httpx.Response]) -> httpx.Response:
    """Repeat a request the server answered 503 (database down), as its Retry-After says."""
    deadline = time.monotonic() + 120
    while True:
        answer = call()
        if answer.status_code != 503:
            return answer
        seen.append(answer)
        assert time.monotonic() < deadline, "no answer but 503 for 120 s"
        time.sleep(0.2)


class Client:
    """One client thread's session: chat on one server, feedback on the other, check."""

    def __init__(self, servers: list[str], retried: list[httpx.Response], turn: int) -> None:
        self.http = httpx.Client(timeout=180)
        self.servers = servers
        self.retried = retried
        self.turn = turn

    def chat(self, server: str, adapter: str, **sampling: Any) -> dict[str, Any]:
        answer = _retrying(
            lambda: self.http.post(
                f"{server}/v1/chat/completions",
                json={"model": adapter, "messages": Q, **sampling},
            ),
            self.retried,
        )
        assert answer.status_code == 200, answer.text
        return dict(answer.json())

    def feedback_round(self, adapter: str, text: str, **sampling: Any) -> tuple[str, int, int]:
        """Chat, feedback with wait=true, chat again elsewhere: (job, version, served)."""
        self.turn += 1  # alternate: chat on one server, feedback on the other, then swap
        asked = self.servers[self.turn % len(self.servers)]
        told = self.servers[(self.turn + 1) % len(self.servers)]
        completion = self.chat(asked, adapter, **sampling)
        body = {"completion_id": completion["id"], "feedback": text, "wait": True}
        answer = _retrying(
            lambda: self.http.post(
                f"{told}/v1/feedback", json=body, headers={"Idempotency-Key": text}
            ),
            self.retried,
        )
        assert answer.status_code == 200, answer.text
        result = answer.json()
        served = self.chat(asked, adapter, **sampling)  # the other server than the feedback's
        return result["job_id"], int(result["version"]), int(served["adapter_version"])


def _run_clients(
    servers: list[str], adapters: list[str], per_adapter: int, threads: int, **sampling: Any
) -> tuple[list[tuple[str, int, int]], list[BaseException], list[httpx.Response]]:
    results: list[tuple[str, int, int]] = []
    errors: list[BaseException] = []
    retried: list[httpx.Response] = []
    guard = threading.Lock()

    def work(index: int) -> None:
        client = Client(servers, retried, turn=index)
        adapter = adapters[index % len(adapters)]
        mine = per_adapter * len(adapters) // threads
        try:
            for round_ in range(mine):
                got = client.feedback_round(adapter, f"t{index}-r{round_}", **sampling)
                with guard:
                    results.append(got)
        except BaseException as exc:  # surfaced by the caller's assert
            errors.append(exc)
        finally:
            client.http.close()

    pool = [threading.Thread(target=work, args=(i,)) for i in range(threads)]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join()
    return results, errors, retried


def _running_worker_pid(url: str) -> int | None:
    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT worker FROM jobs WHERE status = 'running' LIMIT 1").fetchone()
    return None if row is None else int(row[0].split(":")[1])


def _check_cluster(data_dir: Path, url: str, adapters: list[str], total: int) -> None:
    """Exactly once, version chains in acceptance order, LATEST complete."""
    with jobs_learner(data_dir, database_url=url) as learner:
        jobs = learner.jobs(limit=500)
        assert len(jobs) == total and {j.status for j in jobs} == {"applied"}, [
            (j.status, j.error) for j in jobs if j.status != "applied"
        ]
        assert_applied_once(learner, jobs)
        for adapter in adapters:
            mine = sorted((j for j in jobs if j.adapter_id == adapter), key=lambda j: j.accepted)
            assert [j.version for j in mine] == list(range(1, len(mine) + 1))
            assert list(version_feedback(learner, adapter)) == list(range(len(mine) + 1))
            assert_store_complete(learner, adapter)


def _create_adapters(server: str, adapters: list[str]) -> None:
    for adapter in adapters:
        created = httpx.post(f"{server}/v1/adapters", json={"adapter_id": adapter}, timeout=60)
        assert created.status_code == 201, created.text


def test_two_api_servers_two_workers_one_killed_apply_each_feedback_once(
    postgres: PostgresServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """8 threads, 40 feedbacks, 4 adapters, alternating servers; one worker SIGKILLed."""
    monkeypatch.delenv("CLAAS_DATABASE_URL", raising=False)
    url, data_dir = postgres.new_database(), tmp_path / "shared"
    data_dir.mkdir()
    env = _env(data_dir, url)
    adapters = [f"c/a{i}" for i in range(4)]
    with processes() as started:
        servers = [_start_api(started, env, data_dir) for _ in range(2)]
        workers = [_start_worker(started, env, data_dir) for _ in range(2)]
        _create_adapters(servers[0], adapters)
        killed: list[int] = []

        def kill_one_mid_update() -> None:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and not killed:
                pid = _running_worker_pid(url)
                if pid in {w.pid for w in workers}:
                    os.kill(pid, signal.SIGKILL)
                    killed.append(pid)
                time.sleep(0.05)

        killer = threading.Timer(2.0, kill_one_mid_update)
        killer.start()
        results, errors, _ = _run_clients(servers, adapters, per_adapter=10, threads=8)
        killer.join()
        assert errors == [], errors
        assert len(killed) == 1, "no worker was caught mid-update"
        survivor = next(w for w in workers if w.pid not in killed)
        assert survivor.process.poll() is None, survivor.log()
        assert survivor.stop() == 0, survivor.log()  # SIGTERM: a graceful stop
    assert len(results) == 40 and len({job for job, _, _ in results}) == 40
    for job, version, served in results:  # read-your-writes on the other API server
        assert served >= version, (job, version, served)
    _check_cluster(data_dir, url, adapters, 40)


def test_a_database_restart_answers_503_with_retry_after_and_loses_no_job(
    postgres: PostgresServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("CLAAS_DATABASE_URL", raising=False)
    url, data_dir = postgres.new_database(), tmp_path / "shared"
    data_dir.mkdir()
    env = _env(data_dir, url)
    adapters = ["r/a", "r/b"]
    with processes() as started:
        servers = [_start_api(started, env, data_dir) for _ in range(2)]
        _start_worker(started, env, data_dir)
        _create_adapters(servers[0], adapters)
        outcome: dict[str, Any] = {}

        def clients() -> None:
            outcome["run"] = _run_clients(servers, adapters, per_adapter=6, threads=4)

        running = threading.Thread(target=clients)
        running.start()
        time.sleep(2.0)
        postgres.stop()
        try:
            down = httpx.post(
                f"{servers[1]}/v1/chat/completions",
                json={"model": adapters[0], "messages": Q},
                timeout=60,
            )
        finally:
            postgres.start()
        assert down.status_code == 503, down.text
        assert int(down.headers["Retry-After"]) > 0
        assert down.json()["error"]["type"] == "service_unavailable_error"
        running.join(timeout=240)
        assert not running.is_alive()
    results, errors, retried = outcome["run"]
    assert errors == [], errors
    assert all(r.status_code == 503 and "Retry-After" in r.headers for r in retried), [
        (r.status_code, r.text) for r in retried if r.status_code != 503
    ]
    assert len(results) == 12
    for job, version, served in results:
        assert served >= version, (job, version, served)
    _check_cluster(data_dir, url, adapters, 12)


def test_the_real_model_across_two_api_servers_and_a_worker(
    postgres: PostgresServer, tmp_path: Path, models_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The embedded model: a chat on either server after wait=true is the new version."""
    monkeypatch.delenv("CLAAS_DATABASE_URL", raising=False)
    url, data_dir = postgres.new_database(), tmp_path / "shared"
    data_dir.mkdir()
    env = {
        **_env(data_dir, url),
        "CLAAS_INFERENCE_BACKEND": "local",
        "CLAAS_TRAINING_ENGINE": "local",
        "CLAAS_MODEL_CACHE_DIR": str(models_dir),
        "CLAAS_JOBS_LEASE_SECONDS": "30",
    }
    adapters = ["m/a", "m/b"]
    with processes() as started:
        servers = [_start_api(started, env, data_dir) for _ in range(2)]
        worker = _start_worker(started, env, data_dir)
        _create_adapters(servers[0], adapters)
        results, errors, _ = _run_clients(
            servers, adapters, per_adapter=2, threads=2, max_tokens=6, seed=1
        )
        assert errors == [], errors
        assert worker.stop() == 0, worker.log()
    assert len(results) == 4
    for job, version, served in results:
        assert served == version, (job, version, served)  # one client per adapter: exactly it
    with jobs_learner(data_dir, database_url=url) as learner:
        jobs = learner.jobs(limit=10)
        assert len(jobs) == 4 and {j.status for j in jobs} == {"applied"}
        assert_applied_once(learner, jobs)
        for adapter in adapters:
            assert [v.version for v in learner.versions(adapter)] == [0, 1, 2]

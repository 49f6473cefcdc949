"""The cluster: API servers and ``claas worker`` processes on one PostgreSQL database.

A PostgreSQL server is started for the run (as the tests start one,
``tests/postgres_server.py``). Two measurements, in one child process:

* **The database path.** Two API servers without a worker, one on SQLite and
  one on PostgreSQL, each with one adapter: a chat (``max_tokens=4``, so the
  recording is a visible part of it) and a submit (``wait=false``) alternate
  between them. The ratios are PostgreSQL's median over SQLite's; the queued
  jobs are cancelled afterwards.
* **Throughput.** The PostgreSQL API server and one ``claas worker`` (embedded
  model, this CPU) apply a burst of jobs over four adapters; a second worker
  joins and a burst of the same size is applied again. On a small shared CPU
  two workers share the same cores, so the figure is about overhead: two must
  not be slower than one (``time per job, 2 workers / 1 worker``).
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import _measure as m
from _servers import ROOT, claas_server

__all__ = ["run"]

SCRIPT = Path(__file__)
ADAPTERS = tuple(f"bench/cluster-{i}" for i in range(4))
LATENCY_ADAPTER = "bench/cluster-latency"
QUESTION = [{"role": "user", "content": "Explain briefly why the sky is blue."}]
FEEDBACK = "Too long. Answer in one short sentence."


def _postgres_server_class() -> Any:
    path = ROOT / "tests" / "postgres_server.py"
    spec = importlib.util.spec_from_file_location("claas_bench_postgres_server", path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@contextlib.contextmanager
def _worker(env: dict[str, str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    """One ``claas worker`` process; SIGTERM (a graceful stop) at the end."""
    out = log.open("wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "claas_cli", "worker"],
        env={**os.environ, **env},
        stdout=out,
        stderr=subprocess.STDOUT,
    )
    try:
        yield process
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(120)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        out.close()


class _Client:
    def __init__(self, url: str) -> None:
        import httpx

        self.http = httpx.Client(base_url=url, timeout=900.0)
        self.completions: dict[str, str] = {}

    def ok(self, answer: Any, status: int = 200) -> Any:
        if answer.status_code != status:
            raise RuntimeError(f"{answer.request.url}: {answer.status_code} {answer.text[:300]}")
        return answer.json()

    def create(self, adapter: str) -> None:
        self.ok(self.http.post("/v1/adapters", json={"adapter_id": adapter}), 201)
        self.completions[adapter] = self.chat(adapter)[0]

    def chat(self, adapter: str) -> tuple[str, float]:
        body = {"model": adapter, "messages": QUESTION, "max_tokens": 4, "temperature": 0}
        started = time.perf_counter()
        answer = self.ok(self.http.post("/v1/chat/completions", json=body))
        return answer["id"], time.perf_counter() - started

    def submit(self, adapter: str) -> tuple[str, float]:
        body = {"completion_id": self.completions[adapter], "feedback": FEEDBACK, "wait": False}
        started = time.perf_counter()
        job = self.ok(self.http.post("/v1/feedback", json=body), 202)
        return job["id"], time.perf_counter() - started

    def wait(self, job_id: str) -> None:
        job = {"done": False}
        while not job["done"]:
            job = self.ok(self.http.get(f"/v1/feedback/{job_id}", params={"wait": 60}))
        if job["status"] != "applied":
            raise RuntimeError(f"job {job_id} ended {job['status']}: {job['error']}")

    def burst(self, count: int) -> float:
        """Jobs per minute of ``count`` jobs over the adapters, submit of the first to the last."""
        started = time.perf_counter()
        ids = [self.submit(ADAPTERS[i % len(ADAPTERS)])[0] for i in range(count)]
        for job_id in ids:
            self.wait(job_id)
        return 60.0 * count / (time.perf_counter() - started)


def measure_cluster(*, rounds: int, jobs: int, models_dir: str | None) -> dict[str, Any]:
    """Child: the database path, then throughput with one and two workers."""
    pg = _postgres_server_class()
    tmp = Path(tempfile.mkdtemp(prefix="claas-bench-cluster-"))
    server = pg.PostgresServer(pg.find_bindir())
    server.start()
    try:
        url = server.new_database()
        models_dir = models_dir or str(tmp / "models")  # every process converts the model once
        (tmp / "sqlite").mkdir()
        (tmp / "shared").mkdir()
        off = {"CLAAS_JOBS_WORKER": "off"}
        shared = {"CLAAS_DATABASE_URL": url, "CLAAS_DATA_DIR": str(tmp / "shared")}
        if models_dir:
            shared["CLAAS_MODEL_CACHE_DIR"] = models_dir
        with (
            claas_server(tmp / "sqlite", models_dir, env=off) as lite_url,
            claas_server(tmp / "shared", models_dir, env={**off, **shared}) as pg_url,
        ):
            lite, post = _Client(lite_url), _Client(pg_url)
            for client in (lite, post):
                client.create(LATENCY_ADAPTER)
            queued: list[tuple[_Client, str]] = []

            def step(client: _Client, what: str) -> float:
                if what == "chat":
                    return client.chat(LATENCY_ADAPTER)[1]
                job_id, seconds = client.submit(LATENCY_ADAPTER)
                queued.append((client, job_id))
                return seconds

            series = m.interleave(
                rounds,
                {
                    "chat_sqlite": lambda: step(lite, "chat"),
                    "chat_pg": lambda: step(post, "chat"),
                    "submit_sqlite": lambda: step(lite, "submit"),
                    "submit_pg": lambda: step(post, "submit"),
                },
            )
            for client, job_id in queued:  # the PostgreSQL server's, before a worker starts
                if client is post:
                    post.ok(post.http.delete(f"/v1/feedback/{job_id}"))
            for adapter in ADAPTERS:
                post.create(adapter)
            try:
                one, two = _throughput(post, shared, tmp, jobs)
            except RuntimeError as exc:  # the API shows a 5xx job's reason only in the database
                raise RuntimeError(f"{exc}; failed jobs: {_failures(url)}") from exc
    finally:
        server.close()
        shutil.rmtree(tmp, ignore_errors=True)
    return {**series, "one_worker": one, "two_workers": two}


def _throughput(post: _Client, shared: dict[str, str], tmp: Path, jobs: int) -> tuple[float, float]:
    """Jobs per minute with one worker, then with two."""
    with _worker(shared, tmp / "worker-1.log"):
        for adapter in ADAPTERS:  # the worker's first loads: model, LoRA, engine state
            post.wait(post.submit(adapter)[0])
        one = post.burst(jobs)
        with _worker(shared, tmp / "worker-2.log"):
            for adapter in ADAPTERS:  # the second worker's first loads, shared out
                post.wait(post.submit(adapter)[0])
            two = post.burst(jobs)
    return one, two


def _failures(url: str) -> list[tuple[str, str]]:
    import psycopg

    with psycopg.connect(url) as conn:
        rows = conn.execute("SELECT id, error FROM jobs WHERE status = 'failed'").fetchall()
    return [(str(job_id), str(error)) for job_id, error in rows]


def _rows(result: dict[str, Any], jobs: int) -> list[m.Row]:
    one, two = result["one_worker"], result["two_workers"]
    rows = [
        m.Row(
            name="cluster: time per job, 2 workers / 1 worker",
            measured=f"{two:.3g} jobs/min with 2",
            reference=f"{one:.3g} jobs/min with 1",
            ratio=one / two,
            goal=m.at_most(1.1),
            note=f"bursts of {jobs} jobs over {len(ADAPTERS)} adapters, embedded model",
        )
    ]
    for what, label in (("submit", "submit (wait=false)"), ("chat", "chat (4 tokens)")):
        pg, lite = result[f"{what}_pg"], result[f"{what}_sqlite"]
        added = (m.median(pg) - m.median(lite)) * 1000
        rows.append(
            m.Row(
                name=f"cluster: {label}, PostgreSQL / SQLite",
                measured=f"{m.median(pg) * 1000:.3g} ms",
                reference=f"{m.median(lite) * 1000:.3g} ms",
                ratio=m.median_ratio(pg, lite),
                note=f"{added:+.3g} ms added by the database path, {len(pg)} rounds",
            )
        )
    return rows


def run(options: Any) -> list[m.Row]:
    """The cluster rows (or the reason they were skipped)."""
    names = ["cluster: workers", "cluster: submit", "cluster: chat"]
    pg = _postgres_server_class()
    if pg.find_bindir() is None:
        return m.skipped_rows(names, "PostgreSQL is not installed (no initdb)")
    print(
        f"[cluster] {options.cluster_rounds} latency rounds, bursts of {options.cluster_jobs}",
        file=sys.stderr,
    )
    args = {
        "rounds": options.cluster_rounds,
        "jobs": options.cluster_jobs,
        "models_dir": options.models_dir,
    }
    try:
        result = m.run_child(SCRIPT, "measure_cluster", args)
    except RuntimeError as exc:
        return m.skipped_rows(names, f"failed: {str(exc)[-300:]}")
    return _rows(result, options.cluster_jobs)


if __name__ == "__main__":
    m.child_main({"measure_cluster": measure_cluster})

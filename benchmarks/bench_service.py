"""The feedback service under load: N adapters on one server, feedback as jobs.

One CLaaS server (embedded model, local inference and training, this CPU) holds
``N = 4`` adapters, each with one served answer. Each round measures, in turns,
one feedback alone (``wait: true``, the adapters taken in rotation) and N
feedbacks sent at once, one per adapter. The updates share one CPU, so the
best the service can do is N times one alone; the goal bounds what the job
queue adds on top (``together / (N x alone)``).

Then jobs are submitted without waiting (``wait: false``) as fast as one client
can, round-robin over the adapters: each submit's latency is compared with one
chat's (the same chat, idle server), and each job's time from accepted to
applied (its own record) is reported for that load.
"""

from __future__ import annotations

import math
import shutil
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import _measure as m
from _servers import claas_server

__all__ = ["run"]

SCRIPT = Path(__file__)
ADAPTERS = tuple(f"bench/service-{i}" for i in range(4))
QUESTION = [{"role": "user", "content": "Explain briefly why the sky is blue."}]
FEEDBACK = "Too long. Answer in one short sentence."
CHAT_TOKENS = 32


def _percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (with few values p99 is the largest)."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


class _Bench:
    """The measuring client of one server."""

    def __init__(self, url: str) -> None:
        import httpx

        self.http = httpx.Client(base_url=url, timeout=900.0)
        self.completions: dict[str, str] = {}
        self._turn = 0

    def _ok(self, answer: Any, status: int = 200) -> Any:
        if answer.status_code != status:
            raise RuntimeError(f"{answer.request.url}: {answer.status_code} {answer.text[:300]}")
        return answer.json()

    def chat(self, adapter: str) -> tuple[str, float]:
        started = time.perf_counter()
        body = {"model": adapter, "messages": QUESTION, "max_tokens": CHAT_TOKENS}
        answer = self._ok(self.http.post("/v1/chat/completions", json={**body, "temperature": 0}))
        return answer["id"], time.perf_counter() - started

    def setup(self) -> None:
        for adapter in ADAPTERS:
            self._ok(self.http.post("/v1/adapters", json={"adapter_id": adapter}), 201)
            self.completions[adapter] = self.chat(adapter)[0]
        for adapter in ADAPTERS:  # first loads: LoRA injection, engine state
            self.feedback(adapter)

    def feedback(self, adapter: str) -> float:
        started = time.perf_counter()
        body = {"completion_id": self.completions[adapter], "feedback": FEEDBACK, "wait": True}
        self._ok(self.http.post("/v1/feedback", json=body))
        return time.perf_counter() - started

    def alone(self) -> float:
        self._turn += 1
        return self.feedback(ADAPTERS[self._turn % len(ADAPTERS)])

    def together(self) -> float:
        started = time.perf_counter()
        with ThreadPoolExecutor(len(ADAPTERS)) as pool:
            list(pool.map(self.feedback, ADAPTERS))
        return time.perf_counter() - started

    def submit_burst(self, count: int) -> tuple[list[float], list[float], float]:
        """``count`` jobs without waiting; (submit latencies, accepted->applied, wall time)."""
        latencies, ids = [], []
        started = time.perf_counter()
        for i in range(count):
            adapter = ADAPTERS[i % len(ADAPTERS)]
            body = {"completion_id": self.completions[adapter], "feedback": FEEDBACK}
            sent = time.perf_counter()
            job = self._ok(self.http.post("/v1/feedback", json={**body, "wait": False}), 202)
            latencies.append(time.perf_counter() - sent)
            ids.append(job["id"])
        applied = []
        for job_id in ids:
            job = {"done": False}
            while not job["done"]:  # the server holds a long poll for at most a minute
                job = self._ok(self.http.get(f"/v1/feedback/{job_id}", params={"wait": 60}))
            if job["status"] != "applied":
                raise RuntimeError(f"job {job_id} ended {job['status']}: {job['error']}")
            applied.append(job["finished"] - job["accepted"])
        return latencies, applied, time.perf_counter() - started


def measure_service(
    *, rounds: int, submits: int, threads: int | None, models_dir: str | None
) -> dict[str, Any]:
    """Child: start a server, then the rounds and the burst (see the module docstring)."""
    tmp = Path(tempfile.mkdtemp(prefix="claas-bench-service-"))
    try:
        with claas_server(tmp, models_dir, threads=threads) as url:
            bench = _Bench(url)
            bench.setup()
            series = m.interleave(rounds, {"alone": bench.alone, "together": bench.together})
            chats = [bench.chat(ADAPTERS[i % len(ADAPTERS)])[1] for i in range(5)]
            submit, applied, wall = bench.submit_burst(submits)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return {**series, "chat": chats, "submit": submit, "applied": applied, "burst": wall}


def _rows(result: dict[str, Any], submits: int) -> list[m.Row]:
    n = len(ADAPTERS)
    alone, together, chat = result["alone"], result["together"], m.median(result["chat"])
    submit, applied = result["submit"], result["applied"]
    rows = [
        m.Row(
            name=f"service: {n} feedbacks at once / {n} x one alone",
            measured=f"{m.median(together):.3g} s for {n}",
            reference=f"{n} x {m.median(alone):.3g} s",
            ratio=m.median_ratio(together, [n * a for a in alone]),
            goal=m.at_most(1.1),
            note=f"wait=true, one per adapter, {len(alone)} rounds interleaved",
        )
    ]
    for label, q in (("p50", 0.5), ("p99", 0.99)):
        value = _percentile(submit, q)
        rows.append(
            m.Row(
                name=f"service: submit (wait=false) {label} / one chat",
                measured=f"{value * 1000:.3g} ms",
                reference=f"{chat * 1000:.3g} ms chat ({CHAT_TOKENS} tokens)",
                ratio=value / chat,
                goal=m.at_most(0.05),
                note=(
                    f"{submits} submits back to back over {n} adapters while they train"
                    if label == "p50"
                    else ""
                ),
            )
        )
    p50, p99 = _percentile(applied, 0.5), _percentile(applied, 0.99)
    rows.append(
        m.Row(
            name="service: accepted->applied per job under that load (p50)",
            measured=f"p50 {p50:.3g} s, p99 {p99:.3g} s",
            reference=f"{m.median(alone):.3g} s one alone",
            ratio=p50 / m.median(alone),
            note=f"the burst of {submits} jobs took {result['burst']:.3g} s to apply",
        )
    )
    return rows


def run(options: Any) -> list[m.Row]:
    """The service rows (or the reason they were skipped)."""
    names = ["service: feedbacks at once", "service: submit", "service: accepted->applied"]
    print(
        f"[service] {len(ADAPTERS)} adapters, {options.service_rounds} rounds, "
        f"{options.service_submits} submits",
        file=sys.stderr,
    )
    args = {
        "rounds": options.service_rounds,
        "submits": options.service_submits,
        "threads": options.threads,
        "models_dir": options.models_dir,
    }
    try:
        result = m.run_child(SCRIPT, "measure_service", args)
    except RuntimeError as exc:
        return m.skipped_rows(names, f"failed: {str(exc)[-300:]}")
    return _rows(result, options.service_submits)


if __name__ == "__main__":
    m.child_main({"measure_service": measure_service})

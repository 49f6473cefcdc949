"""Helpers of the feedback-job tests: fake learners, checks, a real server process.

Run as a script (``python tests/jobs_support.py DATA_DIR PORT``) it serves the
app on the in-memory fakes, with its settings from ``CLAAS_*`` variables, so a
test can SIGKILL it at a chosen point and start it again on the same data:

* ``CLAAS_TEST_TRAIN_DELAY``: seconds each fake update sleeps;
* ``CLAAS_TEST_HOLD``: a path; every update waits until it exists (so a test
  can queue jobs behind a running one, then let them go);
* ``CLAAS_TEST_KILL_AT``: ``train:N`` kills the process during the N-th update
  (after the engine was called), ``saved:N`` right after the N-th new version is
  saved to the store, before anything else learns of it (the job is not yet
  marked applied).
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import defaultdict
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import httpx

from claas import Learner, Settings
from claas.jobs.model import FeedbackJob
from claas.storage._guard_files import write_verdict
from claas.storage.local import LocalAdapterStore
from claas.testing import FAKE_WEIGHTS, FakeInference, FakeTokenizer, FakeTrainer

ROOT = Path(__file__).resolve().parents[1]


def _server_support() -> Any:
    """``tests/server/server_support.py`` (keys, ``serving``), shared with the server tests."""
    path = Path(__file__).parent / "server" / "server_support.py"
    spec = importlib.util.spec_from_file_location("claas_jobs_server_support", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


server_support = _server_support()
Q = [{"role": "user", "content": "hello"}]
RAW: dict[str, Any] = {"messages": Q, "response": "Hello! How can I help you today?"}


class CountingTrainer(FakeTrainer):
    """A fake engine that notes how many updates of one adapter overlap; ``gate`` holds them."""

    def __init__(
        self, *, delay: float = 0.0, gate: threading.Event | None = None, **kwargs: Any
    ) -> None:
        super().__init__(delay=delay, **kwargs)
        self.gate = gate  # each update waits until it is set
        self.active: dict[str, int] = defaultdict(int)
        self.max_active: dict[str, int] = defaultdict(int)
        self._count_lock = threading.Lock()

    def distill(self, samples: Any, *, parent: Any, **kwargs: Any) -> Any:
        adapter = parent.adapter_id
        with self._count_lock:
            self.active[adapter] += 1
            self.max_active[adapter] = max(self.max_active[adapter], self.active[adapter])
        try:
            if self.gate is not None:
                self.gate.wait(timeout=60)
            return super().distill(samples, parent=parent, **kwargs)
        finally:
            with self._count_lock:
                self.active[adapter] -= 1


def db_settings(data_dir: Path, **settings: Any) -> Settings:
    """Settings on ``data_dir`` and the test's records database (``CLAAS_DATABASE_URL``)."""
    url = os.environ.get("CLAAS_DATABASE_URL")
    return Settings(data_dir=data_dir, database_url=url).evolve(**settings)


def jobs_learner(data_dir: Path, engine: FakeTrainer | None = None, **settings: Any) -> Learner:
    """A learner on the fakes with its data in ``data_dir`` (``jobs={...}`` sets the queue)."""
    return Learner(
        db_settings(data_dir, **settings),
        inference=FakeInference(),
        engine=engine if engine is not None else CountingTrainer(),
        tokenizer=FakeTokenizer(),
    )


def wait_until(predicate: Any, timeout: float = 10.0, what: str = "condition") -> None:
    """Poll ``predicate`` until true; AssertionError after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.01)


def version_feedback(learner: Learner, adapter_id: str) -> dict[int, tuple[str, ...]]:
    """Version number -> the feedback ids it was trained on (v0 has none)."""
    return {v.version: tuple(v.feedback_ids) for v in learner.versions(adapter_id)}


def assert_applied_once(learner: Learner, jobs: Iterable[FeedbackJob]) -> None:
    """Every applied job's feedback is in exactly its version, and no feedback id twice."""
    jobs = list(jobs)
    seen: dict[str, tuple[str, int]] = {}
    for adapter in {job.adapter_id for job in jobs}:
        for version, ids in version_feedback(learner, adapter).items():
            for feedback_id in ids:
                assert feedback_id not in seen, (
                    f"{feedback_id} in {adapter} v{version} and {seen[feedback_id]}"
                )
                seen[feedback_id] = (adapter, version)
    for job in jobs:
        placed = {seen.get(f) for f in job.feedback_ids}
        if job.status == "applied":
            assert placed == {(job.adapter_id, job.version)}, (job, placed)
        else:
            assert placed == {None}, f"{job.status} job {job.id} reached a version: {placed}"


def assert_store_complete(learner: Learner, adapter_id: str) -> None:
    """LATEST names the newest version and every version's files are whole."""
    versions = learner.versions(adapter_id)
    live = learner.current_version(adapter_id)
    assert live.version == max(v.version for v in versions)
    for version in versions:
        path = Path(version.path)
        manifest = json.loads((path / "manifest.json").read_text())
        assert manifest["version"] == version.version
        assert json.loads((path / FAKE_WEIGHTS).read_text())["updates"] >= 0


# ---------------------------------------------------------------- a server process


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class ServerProcess:
    """The app on the fakes in a subprocess on loopback; killed by pid."""

    def __init__(self, data_dir: Path, *, env: dict[str, str] | None = None) -> None:
        self.data_dir = data_dir
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        data_dir.mkdir(parents=True, exist_ok=True)
        self.log_path = data_dir / f"server-{self.port}.log"
        self._log = self.log_path.open("wb")
        self.process = subprocess.Popen(
            [sys.executable, str(Path(__file__)), str(data_dir), str(self.port)],
            env={**os.environ, "CLAAS_DATA_DIR": str(data_dir), **(env or {})},
            stdout=self._log,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
        )

    def wait_ready(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            if self.process.poll() is not None:
                raise AssertionError(f"server exited {self.process.returncode}: {self.log()}")
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(f"{self.url}/health", timeout=2.0).status_code == 200:
                    return
            if time.monotonic() > deadline:
                raise AssertionError(f"server not ready in {timeout}s: {self.log()}")
            time.sleep(0.05)

    def kill(self) -> None:
        """SIGKILL the server (no shutdown code runs) and reap it."""
        if self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=30)
        self._log.close()

    def log(self) -> str:
        self._log.flush()
        return self.log_path.read_text(errors="replace")[-3000:]


@contextlib.contextmanager
def server_process(data_dir: Path, **env: str) -> Iterator[ServerProcess]:
    """A started, ready server; SIGKILLed on exit whatever happened."""
    server = ServerProcess(data_dir, env=env)
    try:
        server.wait_ready()
        yield server
    finally:
        server.kill()


# ----------------------------------------------------------------- the server script


def _kill_point() -> tuple[str, int]:
    spec = os.environ.get("CLAAS_TEST_KILL_AT", "")
    if not spec:
        return ("", 0)
    where, _, count = spec.partition(":")
    return (where, int(count))


class _KillingTrainer(FakeTrainer):
    def __init__(self, *, delay: float, kill_at: tuple[str, int]) -> None:
        super().__init__(delay=delay)
        self._kill_at = kill_at

    def distill(self, samples: Sequence[Any], **kwargs: Any) -> Any:
        hold = os.environ.get("CLAAS_TEST_HOLD")
        while hold and not Path(hold).exists():
            time.sleep(0.01)
        if self._kill_at[0] == "train" and len(self.calls) + 1 >= self._kill_at[1]:
            print("killing during training", flush=True)
            os.kill(os.getpid(), signal.SIGKILL)
        return super().distill(samples, **kwargs)


class _KillingStore(LocalAdapterStore):
    def __init__(self, *args: Any, kill_at: tuple[str, int], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._kill_at = kill_at
        self._published = 0
        self._judged = 0

    def publish(self, *args: Any, **kwargs: Any) -> Any:
        result = super().publish(*args, **kwargs)
        self._published += 1
        if self._kill_at == ("saved", self._published):
            print("killing after the version was saved", flush=True)
            os.kill(os.getpid(), signal.SIGKILL)
        return result

    def judge(self, adapter_id: str, version: int, verdict: Any, *, go_live: bool) -> Any:
        self._judged += 1
        if self._kill_at == ("verdict", self._judged):  # verdict on disk, LATEST not yet moved
            write_verdict(Path(self.get(adapter_id, version).path), verdict)
            print("killing after the verdict was written", flush=True)
            os.kill(os.getpid(), signal.SIGKILL)
        return super().judge(adapter_id, version, verdict, go_live=go_live)


def _serve(data_dir: str, port: int) -> None:
    import uvicorn

    from claas_server import create_app

    settings = Settings.load(data_dir=data_dir)
    kill_at = _kill_point()
    learner = Learner(
        settings,
        inference=FakeInference(),
        engine=_KillingTrainer(
            delay=float(os.environ.get("CLAAS_TEST_TRAIN_DELAY", "0")), kill_at=kill_at
        ),
        tokenizer=FakeTokenizer(),
        store=_KillingStore(
            settings.adapters_dir, keep_versions=settings.keep_versions, kill_at=kill_at
        ),
    )
    uvicorn.run(create_app(learner=learner), host="127.0.0.1", port=port, log_level="warning")


if __name__ == "__main__":
    _serve(sys.argv[1], int(sys.argv[2]))

"""Processes of the cluster tests: the real ``claas`` command line, and what drives it.

Run as a script (``python tests/cluster_support.py <claas arguments>``) it is
the ``claas`` command with one more training engine registered, ``slowfake``:
the in-memory fake trainer taking ``CLAAS_TEST_TRAIN_DELAY`` seconds per update
(default 0.3), so that a test can SIGKILL a worker in the middle of one. The
real engine is what the model variant of the test runs.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = Path(__file__).resolve()


class Process:
    """One ``claas`` process on loopback, its output in a log file; stopped by pid."""

    def __init__(self, args: list[str], env: dict[str, str], log_path: Path) -> None:
        self.args = args
        self.log_path = log_path
        self._log = log_path.open("wb")
        self.process = subprocess.Popen(
            [sys.executable, str(SCRIPT), *args],
            env={**os.environ, **env},
            stdout=self._log,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
        )

    @property
    def pid(self) -> int:
        return self.process.pid

    def log(self) -> str:
        self._log.flush()
        return self.log_path.read_text(errors="replace")[-4000:]

    def signal(self, signum: int) -> None:
        if self.process.poll() is None:
            os.kill(self.process.pid, signum)

    def stop(self, timeout: float = 60.0) -> int:
        """SIGTERM, then SIGKILL if it does not exit within ``timeout``; return its code."""
        self.signal(signal.SIGTERM)
        try:
            code = self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.signal(signal.SIGKILL)
            code = self.process.wait(timeout=30)
        self._log.close()
        return code


def wait_healthy(url: str, process: Process, timeout: float = 240.0) -> None:
    """Wait until ``GET url/health`` answers 200 (AssertionError if the process exits)."""
    deadline = time.monotonic() + timeout
    while True:
        if process.process.poll() is not None:
            raise AssertionError(f"{process.args} exited: {process.log()}")
        with contextlib.suppress(httpx.TransportError):
            if httpx.get(f"{url}/health", timeout=5.0).status_code == 200:
                return
        if time.monotonic() > deadline:
            raise AssertionError(f"{url} not healthy in {timeout}s: {process.log()}")
        time.sleep(0.1)


@contextlib.contextmanager
def processes() -> Iterator[list[Process]]:
    """A list to start processes into; each is stopped (SIGTERM, then SIGKILL) at the end."""
    started: list[Process] = []
    try:
        yield started
    finally:
        for process in started:
            process.stop(timeout=30)


def _main() -> None:
    from claas.registry import register_engine
    from claas.testing import FakeTrainer
    from claas_cli.app import main

    delay = float(os.environ.get("CLAAS_TEST_TRAIN_DELAY", "0.3"))
    register_engine("slowfake", lambda settings: FakeTrainer(delay=delay))
    sys.argv = ["claas", *sys.argv[1:]]
    main()


if __name__ == "__main__":
    _main()

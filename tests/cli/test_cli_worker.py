"""``claas worker`` as a process beside an API-only learner, on one SQLite data dir.

The PostgreSQL deployment (two ``serve --no-worker``, two workers, a SIGKILL)
is ``tests/test_cluster.py``; this is the command's own contract, on the fakes.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from claas import Learner, Settings
from claas.testing import FakeInference, FakeTokenizer, FakeTrainer


def test_a_worker_process_applies_what_an_api_only_learner_accepts_and_stops_on_sigterm(
    data_dir: Path, fake_env: dict[str, str], tmp_path: Path
) -> None:
    settings = Settings(data_dir=data_dir).evolve(jobs={"worker": "off"})
    with Learner(
        settings, inference=FakeInference(), engine=FakeTrainer(), tokenizer=FakeTokenizer()
    ) as api:
        api.init_adapter("w/a")
        answer = api.chat("w/a", [{"role": "user", "content": "hi"}])
        job = api.submit_feedback(answer.id, "shorter")
        time.sleep(0.5)
        assert api.job(job.id).status == "queued"  # this learner applies nothing
        log = (tmp_path / "worker.log").open("wb")
        worker = subprocess.Popen(
            [sys.executable, "-m", "claas_cli", "worker", "--concurrency", "2"],
            env={**os.environ, **fake_env},
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            done = api.wait(job.id, timeout=60)
            assert done.status == "applied" and done.version == 1, done
            assert api.current_version("w/a").version == 1
        finally:
            worker.send_signal(signal.SIGTERM)
            code = worker.wait(timeout=60)
            log.close()
    output = (tmp_path / "worker.log").read_text()
    assert code == 0, output
    assert "applying feedback jobs (2 at once)" in output and "stopped" in output

"""A learner process SIGKILLed mid-update never leaves a torn version behind."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from safetensors.torch import load_file

from claas import Learner, Settings

WORKER = textwrap.dedent(
    """
    import sys
    from claas import Learner, Settings
    # "Answer with one word." repeated may be rejected by the guard; this test is
    # about torn versions, so every update goes live (guard_mode="off").
    settings = Settings(data_dir=sys.argv[1], model_cache_dir=sys.argv[2])
    settings = settings.evolve(guard_mode="off")
    learner = Learner(settings)
    question = [{"role": "user", "content": "Name a planet."}]
    print("ready", flush=True)
    for seed in range(1000):
        answer = learner.chat("crash/test", question, max_tokens=6, seed=seed)
        result = learner.feedback(answer.id, "Answer with one word.")
        print("version", result.version, flush=True)
    """
)


def _wait_for_line(process: subprocess.Popen[str], prefix: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    assert process.stdout is not None
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if line.startswith(prefix):
            return
        if not line and process.poll() is not None:
            raise AssertionError(f"worker exited early with {process.returncode}")
    raise AssertionError(f"worker did not print {prefix!r} in {timeout}s")


def test_sigkill_during_updates_leaves_complete_versions(settings: Settings) -> None:
    settings = settings.evolve(guard_mode="off")
    with Learner(settings) as learner:
        learner.init_adapter("crash/test", rank=4, alpha=8)
    rng = random.Random(1234)
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1] / "src")}
    for _ in range(2):
        process = subprocess.Popen(
            [sys.executable, "-c", WORKER, str(settings.data_dir), str(settings.models_dir)],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            env=env,
        )
        try:
            _wait_for_line(process, "version", timeout=300)
            time.sleep(rng.uniform(0.0, 1.5))
        finally:
            process.send_signal(signal.SIGKILL)
            process.wait()

    with Learner(settings) as learner:
        # The job a kill interrupted recovers on its own: re-queued and applied once.
        for job in learner.jobs("crash/test", limit=1000):
            assert learner.wait(job.id, timeout=300).status == "applied", job
        jobs = learner.jobs("crash/test", limit=1000)
        versions = learner.versions("crash/test")
        assert len(versions) >= 3
        learned = [f for v in versions for f in v.feedback_ids]
        assert len(learned) == len(set(learned))  # no feedback trained twice
        for job in jobs:
            (made,) = [v for v in versions if set(job.feedback_ids) & set(v.feedback_ids)]
            assert made.version == job.version
        for version in versions:
            path = Path(version.path)
            manifest = json.loads((path / "manifest.json").read_text())
            assert manifest["version"] == version.version
            assert load_file(str(path / "adapter_model.safetensors"))
            json.loads((path / "adapter_config.json").read_text())
        live = learner.current_version("crash/test")
        assert live.version == versions[-1].version
        answer = learner.chat("crash/test", [{"role": "user", "content": "Hi"}], max_tokens=4)
        assert answer.adapter_version == live.version
        result = learner.feedback(answer.id, "Answer with one word.")
        assert result.version == max(v.version for v in versions) + 1

"""The plugin's command logic under Node's test runner, against a real CLaaS server.

The server runs on the library's fakes (no model); the transcript the commands
read is given to them as data. The gateway scenario is in ``test_openclaw_gateway``.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from loopback import serving
from openclaw_support import PLUGIN_DIR, find_install

from claas import Learner, Settings
from claas.testing import FakeInference, FakeTokenizer, FakeTrainer
from claas_server import create_app

pytestmark = pytest.mark.openclaw

KEY = "sk-plugin-test-0123456789"
ADAPTER = "alice/assistant"


def test_plugin_commands(tmp_path: Path) -> None:
    install = find_install()
    if install is None:
        pytest.skip("OpenClaw is not installed: run `nox -s openclaw`")
    learner = Learner(
        Settings(data_dir=tmp_path).evolve(api_keys={KEY: ("alice",)}),
        inference=FakeInference(),
        engine=FakeTrainer(),
        tokenizer=FakeTokenizer(),
    )
    learner.init_adapter(ADAPTER)
    question = [{"role": "user", "content": "Hi"}]
    ids = [learner.chat(ADAPTER, question).id for _ in range(2)]
    try:
        with serving(create_app(learner=learner)) as url:
            env = {
                "PATH": f"{install.node.parent}:/usr/bin:/bin",
                "HOME": str(tmp_path),
                "CLAAS_URL": url,
                "CLAAS_API_KEY": KEY,
                "CLAAS_ADAPTER": ADAPTER,
                "CLAAS_COMPLETIONS": ",".join(ids),
            }
            done = subprocess.run(
                [str(install.node), "--test", "test/commands.test.js"],
                cwd=PLUGIN_DIR,
                env=env,
                capture_output=True,
                text=True,
                timeout=120,
                check=False,
            )
        assert done.returncode == 0, done.stdout + done.stderr
        jobs = learner.jobs(ADAPTER)
        assert len(jobs) == 1 and len(jobs[0].feedback_ids) == 2
        assert {learner.feedback_event(i).completion_id for i in jobs[0].feedback_ids} == set(ids)
    finally:
        learner.close()

"""CLaaS behind a real OpenClaw gateway, with the plugin's commands in the chat.

One scenario, because the gateway takes seconds to start: a user message through
the gateway's OpenAI endpoint is answered by CLaaS on the embedded model;
``/feedback`` (over the gateway's WebSocket ``chat.send``, as a chat client sends
it) queues a job on that answer; the next answer is served by the new version;
``/adapter``, ``/feedback-status`` and ``/rollback`` answer in the chat; and an
adapter that no longer exists is a chat reply, not a crash. The timings printed
(``-s``) are the gateway's start, each answer and the update on OpenClaw's
system prompt.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from loopback import serving
from openclaw_support import Gateway, find_install, free_port, gateway_config

from claas import Learner, Settings
from claas.config import ServerSettings
from claas_server import create_app

pytestmark = [pytest.mark.openclaw, pytest.mark.slow]

ADAPTER = "alice/assistant"
KEY = "sk-openclaw-test-0123456789"
USER = "bob"
SESSION = f"agent:main:openai-user:{USER}"  # the gateway's session for the HTTP `user`
MODELS_DIR = Path(
    os.environ.get("CLAAS_TEST_MODELS_DIR", Path.home() / ".cache" / "claas-test-models")
)
# SmolLM2-135M reads 8192 positions. OpenClaw's shortened system prompt is about
# 2,000 of its tokens; the feedback sample (teacher prompt + answer) must fit
# max_prompt_tokens + max_new_tokens.
CONTEXT = 8192
MAX_ANSWER = 32


@pytest.fixture(scope="module")
def learner(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Learner]:
    MODELS_DIR.mkdir(parents=True, exist_ok=True)
    settings = Settings(
        data_dir=tmp_path_factory.mktemp("claas-data"),
        model_cache_dir=MODELS_DIR,
        max_prompt_tokens=CONTEXT - 1024,
        max_new_tokens=1024,
        server=ServerSettings(api_keys={KEY: ("alice",)}),
    )
    learner = Learner(settings)
    learner.init_adapter(ADAPTER)
    yield learner
    learner.close()


@pytest.fixture(scope="module")
def gateway(learner: Learner, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    install = find_install()
    if install is None:
        pytest.skip("OpenClaw is not installed: run `nox -s openclaw`")
    home = tmp_path_factory.mktemp("openclaw-home")
    with serving(create_app(learner=learner)) as claas_url:
        config = gateway_config(
            port=free_port(),
            token="gateway-token-" + os.urandom(12).hex(),
            claas_url=claas_url,
            claas_key=KEY,
            adapter_id=ADAPTER,
            workspace=home / "workspace",
            context_window=CONTEXT,
            max_tokens=MAX_ANSWER,
            plugin_config={"claasUrl": claas_url},
        )
        gateway = Gateway(install, home, config, {"CLAAS_API_KEY": KEY})
        try:
            print(f"\ngateway ready in {gateway.start():.1f} s")
            yield gateway
            print(f"gateway resident memory at the end: {gateway.rss_mb():.0f} MB")
        finally:
            gateway.stop()
    assert gateway.process is not None and gateway.process.poll() is not None


def _last_answer(gateway: Gateway) -> dict[str, Any]:
    answers = [m for m in gateway.history(SESSION) if m.get("role") == "assistant"]
    assert answers, gateway.log()
    return answers[-1]


def _ask(gateway: Gateway, learner: Learner, text: str) -> tuple[str, Any]:
    started = time.monotonic()
    body = gateway.chat(USER, text)
    answer = body["choices"][0]["message"]["content"]
    completion = learner.get_completion(_last_answer(gateway)["responseId"])
    print(
        f"answer in {time.monotonic() - started:.1f} s by v{completion.adapter_version}: "
        f"{len(completion.prompt_ids)} prompt tokens "
        f"({len(completion.messages[0].content)} chars of system prompt)"
    )
    return answer, completion


def test_feedback_in_the_chat_teaches_the_adapter(gateway: Gateway, learner: Learner) -> None:
    answer, first = _ask(gateway, learner, "What is the capital of France?")
    assert answer.strip()
    assert (first.adapter_id, first.adapter_version) == (ADAPTER, 0)
    assert first.messages[0].role == "system" and "OpenClaw" in first.messages[0].content
    assert first.text.strip() and first.text.strip()[:20] in answer

    reply = gateway.command(SESSION, "/feedback Shorter, please.")
    match = re.search(r"queued as (job-\S+) for alice/assistant", reply)
    assert match, reply
    job = learner.job(match.group(1))
    assert [learner.feedback_event(i).completion_id for i in job.feedback_ids] == [first.id]
    assert job.idempotency_key is not None and job.idempotency_key.startswith("openclaw-")
    job = learner.wait(job.id, timeout=900)
    assert job.status == "applied", job.error
    print(f"update on the OpenClaw prompt: {job.timings}")

    _, second = _ask(gateway, learner, "And of Italy?")
    assert (second.adapter_id, second.adapter_version) == (ADAPTER, 1)

    assert "serves version 1" in gateway.command(SESSION, "/adapter")
    assert f"{job.id} on {ADAPTER}: applied, version 1" in gateway.command(
        SESSION, "/feedback-status"
    )
    assert "now serves version 0" in gateway.command(SESSION, "/rollback")
    assert learner.current_version(ADAPTER).version == 0


def test_an_unknown_adapter_is_a_chat_reply(gateway: Gateway, learner: Learner) -> None:
    learner.delete_adapter(ADAPTER)
    reply = gateway.command(SESSION, "/adapter")
    assert reply == f"CLaaS: read {ADAPTER}: adapter '{ADAPTER}' does not exist", reply
    reply = gateway.command(SESSION, "/feedback Even shorter.")
    assert reply.startswith("CLaaS") and "does not exist" in reply, reply
    assert gateway.process is not None and gateway.process.poll() is None, gateway.log()

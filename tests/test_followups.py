"""Follow-ups on the in-memory fakes: exact matching, links, one job per follow-up, skips."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from claas import AdapterNotFound, AdapterSettings, InvalidConfig, Learner, Settings
from claas.records import Records
from claas.testing import FakeInference, FakeTokenizer, FakeTrainer

TOO_LONG = "That's too long. One sentence, please."


def _learner(tmp_path: Path, *, engine: FakeTrainer | None = None, **settings: object) -> Learner:
    return Learner(
        Settings.load(None, data_dir=tmp_path / "data", **settings),
        inference=FakeInference(),
        engine=engine or FakeTrainer(),
        tokenizer=FakeTokenizer(),
    )


@pytest.fixture
def fake(tmp_path: Path) -> Iterator[Learner]:
    learner = _learner(tmp_path)
    yield learner
    learner.close()


def _continue(first: list[dict[str, str]], answer: str, follow_up: str) -> list[dict[str, str]]:
    turns = [{"role": "assistant", "content": answer}, {"role": "user", "content": follow_up}]
    return [*first, *turns]


def test_a_resent_conversation_links_once_and_makes_one_job(fake: Learner) -> None:
    fake.init_adapter("t/a", learn_from_followups=True)
    question = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "sky?"}]
    answer = fake.chat("t/a", question)
    conversation = _continue(question, answer.text, TOO_LONG)
    for _ in range(3):
        fake.chat("t/a", conversation)
    links = fake.followups("t/a")
    assert [(f.completion_id, f.text) for f in links] == [(answer.id, TOO_LONG)]
    assert links[0].job_id is not None and links[0].error is None
    jobs = fake.jobs("t/a")
    assert [j.id for j in jobs] == [links[0].job_id]
    assert jobs[0].idempotency_key == f"followup-{links[0].id}"
    done = fake.wait(jobs[0].id, timeout=30)
    assert done.status == "applied" and done.version == 1
    assert done.metrics["precheck_divergence"] == 1.0  # the fake's fixed value, over the bar
    assert fake.followups(completion_id=answer.id) == links


def test_the_link_is_recorded_with_learning_off_and_makes_no_job(fake: Learner) -> None:
    fake.init_adapter("t/off")
    assert fake.adapter_settings("t/off") == AdapterSettings(learn_from_followups=False)
    question = [{"role": "user", "content": "sky?"}]
    answer = fake.chat("t/off", question)
    fake.chat("t/off", _continue(question, answer.text, "Thanks. Next question."))
    (link,) = fake.followups("t/off")
    assert link.completion_id == answer.id and link.job_id is None
    assert fake.jobs("t/off") == []


def test_an_edited_assistant_turn_matches_nothing(fake: Learner) -> None:
    fake.init_adapter("t/e", learn_from_followups=True)
    question = [{"role": "user", "content": "sky?"}]
    answer = fake.chat("t/e", question)
    fake.chat("t/e", _continue(question, answer.text + " (edited)", TOO_LONG))
    fake.chat("t/e", _continue([{"role": "user", "content": "sea?"}], answer.text, TOO_LONG))
    assert fake.followups("t/e") == [] and fake.jobs("t/e") == []


def test_another_tenants_completion_is_never_matched(fake: Learner) -> None:
    fake.init_adapter("acme/bot", learn_from_followups=True)
    fake.init_adapter("evil/bot", learn_from_followups=True)
    question = [{"role": "user", "content": "sky?"}]
    theirs = fake.chat("acme/bot", question)
    fake.chat("evil/bot", _continue(question, theirs.text, TOO_LONG))
    assert fake.followups() == [] and fake.jobs() == []


def test_only_turns_followed_by_a_user_message_and_earlier_turns_too(fake: Learner) -> None:
    fake.init_adapter("t/m")
    q1 = [{"role": "user", "content": "one?"}]
    a1 = fake.chat("t/m", q1)
    q2 = _continue(q1, a1.text, "two?")
    a2 = fake.chat("t/m", q2)
    fake.chat("t/m", _continue(q2, a2.text, "three?"))
    assert {(f.completion_id, f.text) for f in fake.followups("t/m")} == {
        (a1.id, "two?"),
        (a2.id, "three?"),
    }


def test_configure_adapter_and_the_settings_default(tmp_path: Path) -> None:
    learner = _learner(tmp_path, learn_from_followups=True)
    try:
        learner.init_adapter("t/d")
        assert learner.adapter_settings("t/d").learn_from_followups is True
        changed = learner.configure_adapter("t/d", learn_from_followups=False)
        assert changed == learner.adapter_settings("t/d") == AdapterSettings()
        assert learner.configure_adapter("t/d") == changed  # None keeps the value
        with pytest.raises(AdapterNotFound):
            learner.configure_adapter("t/none", learn_from_followups=True)
        with pytest.raises(InvalidConfig):
            learner.configure_adapter("t/d", learn_from_followups="yes")  # type: ignore[arg-type]
        assert learner.adapter_settings("t/d") == AdapterSettings()
    finally:
        learner.close()


def test_a_follow_up_under_the_skip_threshold_is_skipped(tmp_path: Path) -> None:
    engine = FakeTrainer(divergence=0.001)
    learner = _learner(tmp_path, engine=engine, followup_skip_below=0.01)
    try:
        learner.init_adapter("t/s", learn_from_followups=True)
        question = [{"role": "user", "content": "sky?"}]
        answer = learner.chat("t/s", question)
        learner.chat("t/s", _continue(question, answer.text, "Thanks. Next question."))
        (job,) = learner.jobs("t/s")
        job = learner.wait(job.id, timeout=30)
        assert job.status == "skipped" and job.done
        assert job.version is None and job.parent_version == 0
        assert job.metrics == {"precheck_divergence": 0.001}
        assert "skip_below=0.01" in (job.error or "")
        assert engine.calls == []  # nothing trained
        assert learner.current_version("t/s").version == 0
        assert learner.result_of(job).version == 0
        (event,) = learner.feedback_events("t/s")
        assert event.status == "applied" and event.version is None
    finally:
        learner.close()


def test_explicit_feedback_is_not_prechecked(tmp_path: Path) -> None:
    engine = FakeTrainer(divergence=0.0)
    learner = _learner(tmp_path, engine=engine)
    try:
        learner.init_adapter("t/x", learn_from_followups=True)
        answer = learner.chat("t/x", [{"role": "user", "content": "sky?"}])
        result = learner.feedback(answer.id, "shorter")
        assert result.version == 1 and "precheck_divergence" not in result.metrics
    finally:
        learner.close()


def test_follow_up_jobs_use_the_follow_up_template(fake: Learner) -> None:
    fake.init_adapter("t/tpl", learn_from_followups=True)
    question = [{"role": "user", "content": "sky?"}]
    answer = fake.chat("t/tpl", question)
    fake.chat("t/tpl", _continue(question, answer.text, TOO_LONG))
    (job,) = fake.jobs("t/tpl")
    fake.wait(job.id, timeout=30)
    engine = fake.engine
    assert isinstance(engine, FakeTrainer)
    (call,) = engine.calls
    assert call["config"].hindsight == "followup"
    teacher_text = FakeTokenizer().decode(list(call["batch"][0].teacher_ids))
    assert "the user's next message was" in str(teacher_text)


def test_a_refused_follow_up_job_is_recorded_on_the_link(tmp_path: Path) -> None:
    learner = _learner(tmp_path, max_feedback_chars=10)
    try:
        learner.init_adapter("t/r", learn_from_followups=True)
        question = [{"role": "user", "content": "sky?"}]
        answer = learner.chat("t/r", question)
        reply = learner.chat("t/r", _continue(question, answer.text, TOO_LONG))
        assert reply.text  # the chat itself is served
        (link,) = learner.followups("t/r")
        assert link.job_id is None and (link.error or "").startswith("PayloadTooLarge")
    finally:
        learner.close()


def test_schema_v2_databases_migrate_to_v3(tmp_path: Path) -> None:
    import sqlite3

    from claas.records.sqlite import _MIGRATIONS, _SCHEMA

    path = tmp_path / "old.db"
    conn = sqlite3.connect(path)
    for statement in (*_SCHEMA, *_MIGRATIONS[2]):
        conn.execute(statement)
    conn.execute("CREATE TABLE schema_version (version INTEGER NOT NULL)")
    conn.execute("INSERT INTO schema_version VALUES (2)")
    conn.commit()
    conn.close()
    records = Records(path)
    assert records.followups() == [] and records.adapter_settings("t/a") is None
    conn = sqlite3.connect(path)
    assert conn.execute("SELECT version FROM schema_version").fetchone() == (3,)
    conn.close()

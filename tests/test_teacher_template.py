"""A custom hindsight template (``Settings.teacher_template``) reaches the teacher."""

from __future__ import annotations

from pathlib import Path

import pytest

from claas import InvalidConfig, Learner, Settings
from claas.testing import FakeInference, FakeTokenizer, FakeTrainer

TEMPLATE = "{content}\n\n(Reviewer note: {feedback})"


def _learner(tmp_path: Path, template: str | None) -> tuple[Learner, FakeTrainer]:
    trainer = FakeTrainer()
    learner = Learner(
        Settings(data_dir=tmp_path / "data", teacher_template=template),
        inference=FakeInference(),
        engine=trainer,
        tokenizer=FakeTokenizer(),
    )
    learner.init_adapter("t/a")
    return learner, trainer


def _teacher_prompt(trainer: FakeTrainer) -> str:
    sample = trainer.calls[-1]["batch"][0]
    return FakeTokenizer().decode(sample.teacher_ids[: sample.teacher_prompt_len])


@pytest.mark.parametrize("raw", [False, True])
def test_the_teacher_sees_the_custom_template(tmp_path: Path, raw: bool) -> None:
    learner, trainer = _learner(tmp_path, TEMPLATE)
    question = [{"role": "user", "content": "Why is the sky blue?"}]
    if raw:
        learner.feedback(text="Shorter.", messages=question, response="Because.", adapter_id="t/a")
    else:
        learner.feedback(learner.chat("t/a", question).id, "Shorter.")
    prompt = _teacher_prompt(trainer)
    assert "Why is the sky blue?\n\n(Reviewer note: Shorter.)" in prompt
    assert "Hindsight feedback" not in prompt
    learner.close()


def test_no_template_means_the_builtin_one(tmp_path: Path) -> None:
    learner, trainer = _learner(tmp_path, None)
    answer = learner.chat("t/a", [{"role": "user", "content": "Hi"}])
    learner.feedback(answer.id, "Shorter.")
    assert "[Hindsight feedback from the user" in _teacher_prompt(trainer)
    learner.close()


@pytest.mark.parametrize(
    "template",
    [
        "{content} only",  # no feedback field
        "{feedback} only",  # the user's turn would be lost
        "{content} {feedback} {extra}",
        "{content} {feedback} {0}",
        "{content} {feedback} {",
        "{content.upper} {feedback}",
        "{{content}} {{feedback}}",  # escaped braces are text, not fields
    ],
)
def test_a_bad_template_is_refused_by_name(template: str) -> None:
    with pytest.raises(InvalidConfig, match="teacher_template"):
        Settings(teacher_template=template)


def test_the_template_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CLAAS_TEACHER_TEMPLATE", TEMPLATE)
    assert Settings.load().teacher_template == TEMPLATE
    monkeypatch.setenv("CLAAS_TEACHER_TEMPLATE", "")
    assert Settings.load().teacher_template is None

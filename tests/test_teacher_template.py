"""A custom hindsight template (``Settings.teacher_template``) reaches the teacher."""

from __future__ import annotations

from pathlib import Path

import pytest

from claas import InvalidConfig, InvalidRequest, Learner, Settings
from claas.teacher import teacher_messages
from claas.testing import FakeInference, FakeTokenizer, FakeTrainer
from claas.types import ChatMessage

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
        "{content} {feedback} {response} {answer}",
        "{response} {feedback}",  # the user's turn would be lost
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


@pytest.mark.parametrize("raw", [False, True])
def test_a_template_with_the_response_shows_the_teacher_the_answer(
    tmp_path: Path, raw: bool
) -> None:
    template = '{content}\n\n(You answered "{response}"; the user said: {feedback})'
    learner, trainer = _learner(tmp_path, template)
    question = [{"role": "user", "content": "Why is the sky blue?"}]
    if raw:
        answer = "Because of Rayleigh scattering."
        learner.feedback(text="Shorter.", messages=question, response=answer, adapter_id="t/a")
    else:
        completion = learner.chat("t/a", question)
        answer = completion.text
        learner.feedback(completion.id, "Shorter.")
    prompt = _teacher_prompt(trainer)
    assert f'Why is the sky blue?\n\n(You answered "{answer}"; the user said: Shorter.)' in prompt
    learner.close()


def test_teacher_messages_needs_the_answer_for_a_template_that_shows_it() -> None:
    question = [ChatMessage(role="user", content="Hi")]
    with pytest.raises(InvalidRequest, match="response"):
        teacher_messages(question, "Shorter.", template="{content} {feedback} {response}")
    shown = teacher_messages(
        question, "Shorter.", template="{content} | {response} | {feedback}", response="Hello!"
    )
    assert shown[-1].content == "Hi | Hello! | Shorter."
    flat = Settings().evolve(followup_template="{content} {response} {feedback}")
    assert flat.followups.followup_template == "{content} {response} {feedback}"

"""Teacher/student sequences with the real SmolLM2 tokenizer and chat template."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from claas import InvalidRequest, PayloadTooLarge
from claas.models import load_tokenizer
from claas.teacher import (
    build_sample,
    build_sample_from_text,
    encode_chat,
    teacher_messages,
)
from claas.types import ChatMessage, Completion

FEEDBACK = "Way too long. Answer in one short sentence."


@pytest.fixture(scope="module")
def tokenizer(models_dir: Path) -> Any:
    return load_tokenizer("bundled:smollm2-135m-instruct", models_dir=models_dir)


def _completion(tokenizer: Any, messages: tuple[ChatMessage, ...], answer: str) -> Completion:
    prompt = encode_chat(tokenizer, messages)
    response = [*tokenizer.encode(answer, add_special_tokens=False), tokenizer.eos_token_id]
    return Completion(
        id="chatcmpl-test",
        adapter_id="a/b",
        adapter_version=0,
        model="bundled:smollm2-135m-instruct",
        messages=messages,
        prompt_ids=tuple(prompt),
        response_ids=tuple(response),
        response_logprobs=tuple(-1.0 for _ in response),
        text=answer,
    )


def _opener(tokenizer: Any) -> list[int]:
    return tokenizer.encode("<|im_start|>assistant\n", add_special_tokens=False)


@pytest.mark.parametrize("with_system", [False, True])
def test_sequences_align_on_the_response(tokenizer: Any, with_system: bool) -> None:
    messages: tuple[ChatMessage, ...] = (ChatMessage("user", "Why is the sky blue?"),)
    if with_system:
        messages = (ChatMessage("system", "You are a terse physicist."), *messages)
    completion = _completion(tokenizer, messages, "Because of Rayleigh scattering of sunlight.")
    sample = build_sample(tokenizer, completion, FEEDBACK)

    response = list(completion.response_ids)
    assert list(sample.student_ids[sample.student_prompt_len :]) == response
    assert list(sample.teacher_ids[sample.teacher_prompt_len :]) == response
    assert list(sample.student_ids[: sample.student_prompt_len]) == list(completion.prompt_ids)

    teacher_text = tokenizer.decode(sample.teacher_ids[: sample.teacher_prompt_len])
    student_text = tokenizer.decode(sample.student_ids[: sample.student_prompt_len])
    assert FEEDBACK in teacher_text and FEEDBACK not in student_text
    system = "You are a terse physicist." if with_system else "You are a helpful AI assistant"
    assert system in teacher_text and system in student_text
    opener = _opener(tokenizer)
    for ids, prompt_len in (
        (sample.student_ids, sample.student_prompt_len),
        (sample.teacher_ids, sample.teacher_prompt_len),
    ):
        assert list(ids[prompt_len - len(opener) : prompt_len]) == opener
    assert sample.old_logprobs == completion.response_logprobs


def test_feedback_goes_to_the_last_user_turn() -> None:
    messages = (
        ChatMessage("user", "first"),
        ChatMessage("assistant", "reply"),
        ChatMessage("user", "second"),
    )
    hinted = teacher_messages(messages, "be brief")
    assert hinted[0] == messages[0] and hinted[1] == messages[1]
    assert hinted[2].content.startswith("second") and "be brief" in hinted[2].content


@pytest.mark.parametrize("feedback", ["", "   ", "\n\t"])
def test_empty_feedback_is_rejected(tokenizer: Any, feedback: str) -> None:
    completion = _completion(tokenizer, (ChatMessage("user", "hi"),), "hello")
    with pytest.raises(InvalidRequest, match="feedback"):
        build_sample(tokenizer, completion, feedback)


def test_raw_text_sample_appends_end_of_turn(tokenizer: Any) -> None:
    messages = (ChatMessage("user", "What is 2+2?"),)
    sample = build_sample_from_text(tokenizer, messages, "It is 4.", "Just say the number.")
    assert sample.response_ids[-1] == tokenizer.eos_token_id
    assert sample.old_logprobs is None
    assert tokenizer.decode(sample.response_ids, skip_special_tokens=True) == "It is 4."
    with pytest.raises(InvalidRequest, match="response"):
        build_sample_from_text(tokenizer, messages, "  ", "x")


def test_too_long_sample_is_rejected(tokenizer: Any) -> None:
    completion = _completion(tokenizer, (ChatMessage("user", "hi"),), "hello " * 50)
    with pytest.raises(PayloadTooLarge):
        build_sample(tokenizer, completion, FEEDBACK, max_tokens=40)


def test_no_user_turn_is_rejected() -> None:
    with pytest.raises(InvalidRequest, match="no user turn"):
        teacher_messages((ChatMessage("system", "s"),), "x")

"""Building the student and teacher token sequences of one SDPO sample.

The student sequence is the prompt exactly as served followed by the response
exactly as sampled. The teacher sees the same conversation (same system
prompt, same chat template, generation prompt included) with the feedback
appended to the last user turn as a clearly marked hindsight block, and then
the student's response token ids verbatim: nothing is re-tokenized, so both
sequences score the very same response tokens.

This module tokenizes but never calls a model.
"""

from __future__ import annotations

import string
from collections.abc import Sequence
from typing import Any, Protocol

import attrs

from claas.errors import InvalidRequest, PayloadTooLarge
from claas.thinking import chat_template_kwargs
from claas.tools import Tools
from claas.types import ChatMessage, Completion

__all__ = [
    "FOLLOWUP_TEMPLATE",
    "HINDSIGHT_TEMPLATE",
    "ChatTokenizer",
    "DistillSample",
    "build_sample",
    "build_sample_from_text",
    "encode_chat",
    "shows_response",
    "teacher_messages",
]

HINDSIGHT_TEMPLATE = (
    "{content}\n\n"
    "[Hindsight feedback from the user about your answer to this message: {feedback}\n"
    "Write the answer so that it fully follows this feedback.]"
)
# A follow-up is what the user said next, not a critique addressed to the model:
# the teacher is told so, and asked for the answer that reply shows was wanted.
FOLLOWUP_TEMPLATE = (
    "{content}\n\n"
    "[Hindsight: after your answer to this message, the user's next message was: {feedback}\n"
    "It is not written as feedback; it is how the user reacted. If it shows what they "
    "wanted instead, write the answer that gives them that.]"
)


class ChatTokenizer(Protocol):
    """The slice of a Hugging Face tokenizer this module uses."""

    @property
    def eos_token_id(self) -> Any: ...

    def apply_chat_template(self, conversation: Any, **kwargs: Any) -> Any: ...

    def encode(self, text: str, **kwargs: Any) -> list[int]: ...

    def decode(self, token_ids: Any, /, skip_special_tokens: bool = ...) -> str | list[str]: ...


@attrs.frozen(kw_only=True)
class DistillSample:
    """Token sequences of one (response, feedback) pair.

    Attributes:
        student_ids: Prompt as served + response ids, length ``Ps + T``.
        teacher_ids: Hindsight prompt + the same response ids, length ``Pt + T``.
        student_prompt_len: ``Ps``.
        teacher_prompt_len: ``Pt``.
        response_ids: The ``T`` response ids (identical tail of both sequences).
        old_logprobs: Logprobs the response was sampled with (``T``), if known.
        feedback: The feedback text.
    """

    student_ids: tuple[int, ...]
    teacher_ids: tuple[int, ...]
    student_prompt_len: int
    teacher_prompt_len: int
    response_ids: tuple[int, ...]
    old_logprobs: tuple[float, ...] | None
    feedback: str

    @property
    def response_len(self) -> int:
        """Number of response tokens ``T``."""
        return len(self.response_ids)


def _check_feedback(feedback: str) -> str:
    if not isinstance(feedback, str) or not feedback.strip():
        raise InvalidRequest("feedback text must be a non-empty string")
    return feedback.strip()


def teacher_messages(
    messages: Sequence[ChatMessage],
    feedback: str,
    *,
    template: str = HINDSIGHT_TEMPLATE,
    response: str | None = None,
) -> tuple[ChatMessage, ...]:
    """The conversation the teacher sees: the feedback appended to the last user turn.

    Args:
        messages: The conversation the answer was given in.
        feedback: What the user said about the answer.
        template: The hindsight template; its optional ``{response}`` field is the
            answer the feedback is about, as the user saw it.
        response: That answer (needed by a template with ``{response}``).

    Raises:
        InvalidRequest: If the feedback is empty, there is no user turn, or the
            template shows the answer and none was given.
    """
    feedback = _check_feedback(feedback)
    last_user = max((i for i, m in enumerate(messages) if m.role == "user"), default=None)
    if last_user is None:
        raise InvalidRequest("the conversation has no user turn to attach feedback to")
    if response is None and shows_response(template):
        raise InvalidRequest("this teacher template shows the answer ({response}): pass response")
    turn = messages[last_user]
    hinted = ChatMessage(
        role="user",
        content=template.format(content=turn.content, feedback=feedback, response=response),
    )
    return (*messages[:last_user], hinted, *messages[last_user + 1 :])


def shows_response(template: str) -> bool:
    """Whether a hindsight template has the ``{response}`` field (the answer judged)."""
    return any(name == "response" for _, name, _, _ in string.Formatter().parse(template))


def encode_chat(
    tokenizer: ChatTokenizer,
    messages: Sequence[ChatMessage],
    *,
    thinking: bool = False,
    tools: Tools | None = None,
) -> list[int]:
    """Token ids of a conversation with the assistant generation prompt appended.

    ``tools`` (when offered) are rendered by the chat template, as it lays them out.
    """
    extra = {"tools": list(tools.definitions)} if tools is not None and tools.offered else {}
    encoded = tokenizer.apply_chat_template(
        [m.to_dict() for m in messages],
        add_generation_prompt=True,
        tokenize=True,
        return_dict=True,
        **chat_template_kwargs(thinking),
        **extra,
    )
    return [int(i) for i in encoded["input_ids"]]


def build_sample(
    tokenizer: ChatTokenizer,
    completion: Completion,
    feedback: str,
    *,
    template: str = HINDSIGHT_TEMPLATE,
    max_tokens: int | None = None,
) -> DistillSample:
    """Build the sample for feedback on a served completion.

    The student prompt is ``completion.prompt_ids`` as recorded; the teacher
    prompt is rendered with the same thinking flag the completion was served with.

    Raises:
        InvalidRequest: On empty feedback or a completion with no response tokens.
        PayloadTooLarge: If the teacher sequence exceeds ``max_tokens``.
    """
    if not completion.response_ids:
        raise InvalidRequest(f"completion {completion.id} has no response tokens to learn from")
    hinted = teacher_messages(
        completion.messages, feedback, template=template, response=completion.text
    )
    teacher_prompt = encode_chat(tokenizer, hinted, thinking=completion.thinking)
    return _assemble(
        list(completion.prompt_ids),
        teacher_prompt,
        list(completion.response_ids),
        list(completion.response_logprobs),
        feedback.strip(),
        max_tokens,
    )


def build_sample_from_text(
    tokenizer: ChatTokenizer,
    messages: Sequence[ChatMessage],
    response: str,
    feedback: str,
    *,
    thinking: bool = False,
    template: str = HINDSIGHT_TEMPLATE,
    max_tokens: int | None = None,
) -> DistillSample:
    """Build a sample when the caller has the texts but no completion id.

    The response is tokenized once and the end-of-turn token appended, so the
    update also teaches where the answer ends. No sampling logprobs are known,
    so no importance weight applies.
    """
    if not isinstance(response, str) or not response.strip():
        raise InvalidRequest("response text must be a non-empty string")
    feedback = _check_feedback(feedback)
    response_ids = [int(i) for i in tokenizer.encode(response, add_special_tokens=False)]
    if tokenizer.eos_token_id is not None:
        response_ids.append(int(tokenizer.eos_token_id))
    student_prompt = encode_chat(tokenizer, messages, thinking=thinking)
    hinted = teacher_messages(messages, feedback, template=template, response=response)
    teacher_prompt = encode_chat(tokenizer, hinted, thinking=thinking)
    return _assemble(student_prompt, teacher_prompt, response_ids, None, feedback, max_tokens)


def _assemble(
    student_prompt: list[int],
    teacher_prompt: list[int],
    response: list[int],
    old_logprobs: list[float] | None,
    feedback: str,
    max_tokens: int | None,
) -> DistillSample:
    total = len(teacher_prompt) + len(response)
    if max_tokens is not None and max(total, len(student_prompt) + len(response)) > max_tokens:
        raise PayloadTooLarge(
            f"the feedback sample is {total} tokens long; the limit is {max_tokens}"
        )
    return DistillSample(
        student_ids=(*student_prompt, *response),
        teacher_ids=(*teacher_prompt, *response),
        student_prompt_len=len(student_prompt),
        teacher_prompt_len=len(teacher_prompt),
        response_ids=tuple(response),
        old_logprobs=tuple(old_logprobs) if old_logprobs is not None else None,
        feedback=feedback,
    )

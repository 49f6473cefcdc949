"""Building the record of a served completion from a backend's generation, and scoring."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from typing import TypeVar

from claas.config import Settings
from claas.errors import InvalidRequest
from claas.inference.base import Generation, InferenceBackend, StreamDelta
from claas.learner_like import MessagesLike
from claas.results import ChatStream, Score
from claas.teacher import ChatTokenizer, encode_chat
from claas.thinking import visible_text
from claas.types import AdapterVersion, ChatMessage, Completion, messages_from_dicts

__all__ = ["chain", "completion_of", "new_chat_id", "score_response", "stream_of"]

_D = TypeVar("_D")


def completion_of(
    completion_id: str,
    version: AdapterVersion | None,
    messages: tuple[ChatMessage, ...],
    generation: Generation,
    settings: Settings,
) -> Completion:
    """The :class:`Completion` to record: exact tokens, visible text, serving version."""
    return Completion(
        id=completion_id,
        adapter_id=version.adapter_id if version else None,
        adapter_version=version.version if version else None,
        model=settings.base_model,
        messages=messages,
        prompt_ids=generation.prompt_ids,
        response_ids=generation.response_ids,
        response_logprobs=generation.response_logprobs,
        text=visible_text(generation.raw_text),
        raw_text=generation.raw_text,
        finish_reason=generation.finish_reason,
        created=time.time(),
        top_logprobs=generation.top_logprobs,
        thinking=settings.thinking,
        tool_calls=generation.tool_calls,
    )


def score_response(
    inference: InferenceBackend,
    tokenizer: ChatTokenizer,
    version: AdapterVersion | None,
    messages: MessagesLike,
    response: str,
    settings: Settings,
) -> Score:
    """Logprobs of ``response`` answering ``messages`` under ``version`` (``Learner.score``)."""
    if not isinstance(response, str) or not response:
        raise InvalidRequest("response must be a non-empty string")
    chat_messages = messages_from_dicts(messages)
    prompt_ids = encode_chat(tokenizer, chat_messages, thinking=settings.thinking)
    response_ids = [int(i) for i in tokenizer.encode(response, add_special_tokens=False)]
    logprobs = inference.score(prompt_ids, response_ids, adapter=version)
    return Score(
        adapter_id=version.adapter_id if version else None,
        adapter_version=version.version if version else None,
        token_ids=tuple(response_ids),
        logprobs=tuple(logprobs),
    )


def stream_of(
    completion_id: str,
    version: AdapterVersion | None,
    deltas: Iterator[StreamDelta],
    record: Callable[[str, Generation], Completion],
) -> ChatStream:
    """The :class:`ChatStream` over a backend's deltas (``Learner.chat_stream``).

    The first delta is taken here, so request errors raise before any text; the
    final generation is recorded with ``record(completion_id, generation)``.
    """
    first = next(deltas)
    stream = ChatStream(completion_id, version.version if version else None, iter(()))

    def text() -> Iterator[str]:
        for delta in chain(first, deltas):
            if delta.generation is not None:
                stream.completion = record(stream.id, delta.generation)
            elif delta.text:
                yield delta.text

    stream._deltas = text()
    return stream


def new_chat_id() -> str:
    """A fresh OpenAI-style chat completion id."""
    return "chatcmpl-" + uuid.uuid4().hex


def chain(first: _D, rest: Iterator[_D]) -> Iterator[_D]:
    """``first``, then everything ``rest`` yields."""
    yield first
    yield from rest

"""Building the record of a served completion from a backend's generation."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from typing import TypeVar

from claas.config import Settings
from claas.inference.base import Generation
from claas.thinking import visible_text
from claas.types import AdapterVersion, ChatMessage, Completion

__all__ = ["chain", "completion_of", "new_chat_id"]

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
    )


def new_chat_id() -> str:
    """A fresh OpenAI-style chat completion id."""
    return "chatcmpl-" + uuid.uuid4().hex


def chain(first: _D, rest: Iterator[_D]) -> Iterator[_D]:
    """``first``, then everything ``rest`` yields."""
    yield first
    yield from rest

"""The inference seam: what every serving backend provides, and what some can also do.

A backend generates responses for an adapter version (or the bare base model)
and returns the exact prompt ids, response ids and the logprob of each sampled
token under the serving policy. It also scores fixed responses and makes new
adapter versions servable (``publish``).

Optional capabilities are protocols of their own, checked once where they are
needed (``isinstance(backend, TeacherScorer)``): :class:`TeacherScorer` scores
teacher top-K logprobs for ``DistillConfig(teacher="remote")`` (vLLM, Tinker);
:class:`TrainingWindow` lets the server free memory around a training step
(vLLM's sleep mode); :class:`HasTokenizer` shares a loaded tokenizer.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Protocol, runtime_checkable

import attrs

from claas.config import Settings
from claas.errors import InvalidRequest, PayloadTooLarge
from claas.tools import ToolCall, Tools
from claas.types import AdapterVersion, ChatMessage, SamplingParams, TeacherTopKLists

if TYPE_CHECKING:
    from claas.teacher import ChatTokenizer, DistillSample

__all__ = [
    "Generation",
    "HasTokenizer",
    "InferenceBackend",
    "StreamDelta",
    "TeacherScorer",
    "TeacherTopKLists",
    "TrainingWindow",
    "check_generation_limits",
    "check_score_limits",
]


def check_generation_limits(
    settings: Settings, sampling: SamplingParams, prompt_ids: Sequence[int] | None = None
) -> None:
    """Refuse a request over the configured limits (``prompt_ids`` when the backend has them).

    Raises:
        PayloadTooLarge: The prompt is longer than ``Settings.max_prompt_tokens``.
        InvalidRequest: ``max_tokens`` exceeds ``Settings.max_new_tokens``.
    """
    if prompt_ids is not None and len(prompt_ids) > settings.max_prompt_tokens:
        raise PayloadTooLarge(
            f"the prompt is {len(prompt_ids)} tokens; the limit is "
            f"{settings.max_prompt_tokens} (Settings.max_prompt_tokens)"
        )
    if sampling.max_tokens > settings.max_new_tokens:
        raise InvalidRequest(
            f"max_tokens={sampling.max_tokens} exceeds the limit "
            f"{settings.max_new_tokens} (Settings.max_new_tokens)"
        )


def check_score_limits(
    settings: Settings, prompt_ids: Sequence[int], response_ids: Sequence[int]
) -> None:
    """Refuse an empty or over-long sequence to score."""
    if not response_ids:
        raise InvalidRequest("nothing to score: the response has no tokens")
    if len(prompt_ids) + len(response_ids) > settings.max_prompt_tokens * 2:
        raise PayloadTooLarge("the sequence to score is too long")


@attrs.frozen(kw_only=True)
class Generation:
    """The raw result of one generation.

    Attributes:
        prompt_ids: Prompt token ids exactly as served.
        response_ids: Sampled token ids (end-of-turn token included when hit).
        response_logprobs: Logprob of each sampled token (untempered policy).
        raw_text: Decoded response, thinking included, stop sequence removed.
        finish_reason: ``stop`` or ``length``.
        top_logprobs: Per token, ``((id, logprob), ...)`` alternatives if asked.
        tool_calls: The tool calls a backend with a tool-call parser (vLLM) found
            in the response; their tokens are in ``response_ids`` all the same.
    """

    prompt_ids: tuple[int, ...]
    response_ids: tuple[int, ...]
    response_logprobs: tuple[float, ...]
    raw_text: str
    finish_reason: str
    top_logprobs: tuple[tuple[tuple[int, float], ...], ...] = ()
    tool_calls: tuple[ToolCall, ...] = ()


@attrs.frozen(kw_only=True)
class StreamDelta:
    """One step of a streamed generation.

    ``text`` is the newly visible raw text; the final delta carries the whole
    ``generation`` and an empty ``text``.
    """

    text: str
    token_ids: tuple[int, ...] = ()
    logprobs: tuple[float, ...] = ()
    generation: Generation | None = None


@runtime_checkable
class InferenceBackend(Protocol):
    """Serves chats for adapter versions; implemented by local, vLLM, Tinker and fakes."""

    name: str

    def generate(
        self,
        messages: Sequence[ChatMessage],
        *,
        adapter: AdapterVersion | None,
        sampling: SamplingParams,
        thinking: bool = False,
        tools: Tools | None = None,
    ) -> Generation:
        """Generate one response for ``messages`` with ``adapter`` (None = base model).

        ``tools`` are offered to the model; a backend or chat template that cannot
        take them raises ``ToolsUnsupported``.
        """
        ...

    def stream(
        self,
        messages: Sequence[ChatMessage],
        *,
        adapter: AdapterVersion | None,
        sampling: SamplingParams,
        thinking: bool = False,
        tools: Tools | None = None,
    ) -> Iterator[StreamDelta]:
        """Generate token by token; the last delta carries the full ``Generation``."""
        ...

    def complete(
        self, prompt: str, *, adapter: AdapterVersion | None, sampling: SamplingParams
    ) -> Generation:
        """Continue a raw text prompt (no chat template)."""
        ...

    def score(
        self,
        prompt_ids: Sequence[int],
        response_ids: Sequence[int],
        *,
        adapter: AdapterVersion | None,
    ) -> list[float]:
        """Logprob of each response token given the prompt, under ``adapter``."""
        ...

    def publish(self, version: AdapterVersion) -> None:
        """Make ``version`` servable; return only once it answers requests."""
        ...

    def retire(self, adapter_id: str) -> None:
        """Forget every loaded version of an adapter (it was deleted)."""
        ...

    def close(self) -> None:
        """Release resources."""
        ...


@runtime_checkable
class TeacherScorer(Protocol):
    """A backend that scores the teacher for ``teacher="remote"`` updates."""

    def teacher_topk(self, samples: Sequence[DistillSample], *, k: int) -> list[TeacherTopKLists]:
        """Top-``k`` teacher logprobs at each response position of every sample."""
        ...


@runtime_checkable
class TrainingWindow(Protocol):
    """A backend that wants to know when a training step runs beside it."""

    def training_window(self) -> AbstractContextManager[None]:
        """A context around one training step (vLLM may sleep in it to free memory)."""
        ...


@runtime_checkable
class HasTokenizer(Protocol):
    """A backend that holds the base model's tokenizer (so it is loaded once)."""

    @property
    def tokenizer(self) -> ChatTokenizer:
        """The base model's tokenizer."""
        ...

"""What the use cases return beyond the core records: a score and a chat stream.

Shared by :class:`~claas.learner.Learner` and :class:`~claas.client.Client`,
so code written against one runs against the other.
"""

from __future__ import annotations

from collections.abc import Iterator

import attrs

from claas.types import Completion

__all__ = ["ChatStream", "Score"]


@attrs.frozen(kw_only=True)
class Score:
    """Per-token logprobs of a fixed response under an adapter version."""

    adapter_id: str | None
    adapter_version: int | None
    token_ids: tuple[int, ...]
    logprobs: tuple[float, ...]

    @property
    def total(self) -> float:
        """Sum of the token logprobs (log-likelihood of the response)."""
        return float(sum(self.logprobs))

    @property
    def mean(self) -> float:
        """Mean token logprob."""
        return self.total / max(len(self.logprobs), 1)


class ChatStream:
    """A streamed chat: iterate for text deltas; ``completion`` is set at the end.

    Iterate it to the end on the thread that created it: the local backend holds
    its model lock from the first token to the last.
    """

    def __init__(self, completion_id: str, adapter_version: int | None, deltas: Iterator[str]):
        self.id = completion_id
        self.adapter_version = adapter_version
        self.completion: Completion | None = None
        self._deltas = deltas

    def __iter__(self) -> Iterator[str]:
        return self._deltas

"""What the eval drives: an embedded :class:`~claas.Learner` or a remote server.

:class:`LearnerTarget` drives any :class:`~claas.LearnerLike`: the Learner in
this process, or a :class:`~claas.Client` of a server
(:class:`~claas.eval.remote.RemoteTarget`). It satisfies :class:`EvalTarget`, a
deliberately small surface (chat, feedback, score and version bookkeeping), so
the loop cannot tell the two apart.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping, Sequence
from typing import Any, Protocol, runtime_checkable

import attrs

from claas.errors import AdapterNotFound, Conflict
from claas.learner import Learner
from claas.learner_like import LearnerLike
from claas.types import CompletionFeedback

__all__ = ["EvalTarget", "LearnerTarget", "Sample"]


@attrs.frozen(kw_only=True)
class Sample:
    """One response as the eval sees it.

    Attributes:
        completion_id: The id feedback refers to.
        text: The response shown to a user.
        n_tokens: Response length in tokens (end-of-turn token included if hit).
        logprobs: Logprob of each sampled token.
        top_logprobs: Per token, the logprobs of the most likely alternatives
            (empty when the target does not report them).
        version: The adapter version that answered.
    """

    completion_id: str
    text: str
    n_tokens: int
    logprobs: tuple[float, ...] = ()
    top_logprobs: tuple[tuple[float, ...], ...] = ()
    version: int | None = None


@runtime_checkable
class EvalTarget(Protocol):
    """The operations the eval loop needs from CLaaS."""

    def reset_adapter(
        self, adapter_id: str, *, seed: int, learn_from_followups: bool = False
    ) -> int:
        """Delete ``adapter_id`` if it exists, create it afresh, return its version."""
        ...

    def current_version(self, adapter_id: str) -> int:
        """The version the adapter now serves (raises ``AdapterNotFound``)."""
        ...

    def rollback(self, adapter_id: str, version: int) -> None:
        """Serve ``version`` again; later feedback builds on it."""
        ...

    def chat(
        self,
        adapter_id: str,
        prompt: str,
        *,
        max_tokens: int,
        temperature: float,
        seed: int | None,
        top_logprobs: int = 0,
    ) -> Sample:
        """Answer one user prompt with the adapter's live version."""
        ...

    def feedback(
        self, adapter_id: str, completion_ids: Sequence[str], text: str, config: Mapping[str, Any]
    ) -> tuple[int, dict[str, float]]:
        """Apply ``text`` to the completions as one update; return (version, metrics)."""
        ...

    def follow_up(
        self, adapter_id: str, prompt: str, answer: Sample, text: str
    ) -> tuple[str, int, dict[str, float]]:
        """Send the conversation on with ``text`` as the user's next message; wait for its job.

        Returns:
            The job's final status, the version then live, and the job's metrics.
        """
        ...

    def score(self, adapter_id: str, prompt: str, response: str) -> list[float]:
        """Per-token logprobs of ``response`` to ``prompt`` under the live version."""
        ...

    def close(self) -> None:
        """Release what the target holds."""
        ...


def _user(prompt: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": prompt}]


class LearnerTarget:
    """Drive a :class:`~claas.Learner` (the embedded model by default) or a Client.

    Args:
        learner: The learner to drive, in process or a :class:`~claas.Client`.
        lora: LoRA shape of the adapters the eval creates (``rank``, ``alpha``...).
        owns_learner: Close the learner when the target is closed.
    """

    def __init__(
        self,
        learner: LearnerLike,
        *,
        lora: Mapping[str, Any] | None = None,
        owns_learner: bool = False,
    ) -> None:
        self.learner = learner
        self.lora = dict(lora or {})
        self._owns = owns_learner

    def reset_adapter(
        self, adapter_id: str, *, seed: int, learn_from_followups: bool = False
    ) -> int:
        """Recreate the adapter (learning from follow-ups if asked).

        With the local engine in this process its LoRA A matrices are drawn
        from ``seed``; a server draws them itself, so ``seed`` is not sent.
        """
        with contextlib.suppress(AdapterNotFound):
            self.learner.delete_adapter(adapter_id)
        if isinstance(self.learner, Learner) and self.learner.engine.name == "local":
            import torch

            torch.manual_seed(seed)
        created = self.learner.init_adapter(
            adapter_id, learn_from_followups=learn_from_followups, **self.lora
        )
        return created.version

    def current_version(self, adapter_id: str) -> int:
        """The live version of the adapter."""
        return self.learner.current_version(adapter_id).version

    def rollback(self, adapter_id: str, version: int) -> None:
        """Serve an older version again."""
        self.learner.rollback(adapter_id, version)

    def chat(
        self,
        adapter_id: str,
        prompt: str,
        *,
        max_tokens: int,
        temperature: float,
        seed: int | None,
        top_logprobs: int = 0,
    ) -> Sample:
        """Answer ``prompt`` and keep the exact tokens and logprobs."""
        completion = self.learner.chat(
            adapter_id,
            _user(prompt),
            max_tokens=max_tokens,
            temperature=temperature,
            seed=seed,
            top_logprobs=top_logprobs,
        )
        return Sample(
            completion_id=completion.id,
            text=completion.text,
            n_tokens=len(completion.response_ids),
            logprobs=completion.response_logprobs,
            top_logprobs=tuple(
                tuple(lp for _, lp in position) for position in completion.top_logprobs
            ),
            version=completion.adapter_version,
        )

    def feedback(
        self, adapter_id: str, completion_ids: Sequence[str], text: str, config: Mapping[str, Any]
    ) -> tuple[int, dict[str, float]]:
        """One update from the same feedback on every completion."""
        items = [CompletionFeedback(completion_id=cid, text=text) for cid in completion_ids]
        result = self.learner.feedback_batch(items, adapter_id=adapter_id, config=config)
        return result.version, {k: float(v) for k, v in result.metrics.items()}

    def follow_up(
        self, adapter_id: str, prompt: str, answer: Sample, text: str
    ) -> tuple[str, int, dict[str, float]]:
        """Continue the conversation (a short reply is generated), then wait for its job."""
        conversation = [
            *_user(prompt),
            {"role": "assistant", "content": answer.text},
            {"role": "user", "content": text},
        ]
        self.learner.chat(adapter_id, conversation, max_tokens=4, temperature=0)
        links = self.learner.followups(adapter_id, completion_id=answer.completion_id, limit=1)
        if not links or links[0].job_id is None:
            reason = links[0].error if links else "the follow-up was not recognised"
            raise Conflict(f"no feedback job for the follow-up to {answer.completion_id}: {reason}")
        job = self.learner.wait(links[0].job_id)
        version = self.learner.current_version(adapter_id).version
        return job.status, version, {k: float(v) for k, v in job.metrics.items()}

    def score(self, adapter_id: str, prompt: str, response: str) -> list[float]:
        """Teacher-forced logprobs of ``response``."""
        return list(self.learner.score(adapter_id, _user(prompt), response).logprobs)

    def close(self) -> None:
        """Close the learner (or client) if this target owns it."""
        if self._owns:
            self.learner.close()

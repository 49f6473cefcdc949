"""The guard's batched answers on the real model: as one at a time, and checked first.

Batched greedy answers and scores (a shared prompt prefix run once, the LM head
only where logits are read) must equal one-at-a-time decoding and scoring; checking
a candidate against its parent's answers must give exactly the answers full greedy
decoding gives, and decode only the probes whose answers changed.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pytest

from claas import DistillConfig, Learner, Settings
from claas.guard.gate import Gate
from claas.guard.probes import GUARD_PROBES
from claas.inference.local import LocalInference
from claas.teacher import encode_chat
from claas.types import ChatMessage, SamplingParams

pytestmark = pytest.mark.slow

SKY = [{"role": "user", "content": "Why is the sky blue?"}]


class CountingInference(LocalInference):
    """Local inference that counts the prompts it decodes token by token."""

    decoded = 0

    def answer_batch(
        self, prompts: Sequence[Sequence[int]], *, adapter: Any, max_tokens: int
    ) -> list[tuple[list[int], list[float]]]:
        self.decoded += len(prompts)
        return super().answer_batch(prompts, adapter=adapter, max_tokens=max_tokens)


def test_batched_answers_and_scores_are_the_one_at_a_time_ones(settings: Settings) -> None:
    inference = LocalInference(settings)
    tokenizer = inference.tokenizer
    chats = [[ChatMessage(role="user", content=p.prompt)] for p in GUARD_PROBES]
    prompts = [encode_chat(tokenizer, chat) for chat in chats]
    batched = inference.answer_batch(prompts, adapter=None, max_tokens=12)
    greedy = SamplingParams(temperature=0.0, max_tokens=12, seed=0)
    for chat, (ids, logprobs) in zip(chats, batched, strict=True):
        alone = inference.generate(chat, adapter=None, sampling=greedy)
        assert ids == list(alone.response_ids)
        assert logprobs == pytest.approx(list(alone.response_logprobs), abs=2e-3)
    pairs = [(p, ids) for p, (ids, _) in zip(prompts, batched, strict=True)]
    scored = inference.score_batch(pairs, adapter=None)
    for (prompt, ids), row in zip(pairs, scored, strict=True):
        assert row == pytest.approx(inference.score(prompt, ids, adapter=None), abs=2e-3)
    agreed = inference.greedy_agreement(pairs, adapter=None)
    assert [n for _, n in agreed] == [len(ids) for _, ids in pairs]  # its own greedy answers
    inference.close()


def test_checked_answers_are_the_decoded_ones_and_unchanged_ones_are_not_decoded(
    settings: Settings,
) -> None:
    settings = settings.evolve(guard_mode="off")
    inference = CountingInference(settings)
    with Learner(settings, inference=inference) as learner:
        learner.init_adapter("guard/check")
        answer = learner.chat("guard/check", SKY, temperature=0.7, max_tokens=48, seed=0)
        # A large step, so that some probe answers change and others may not.
        learner.feedback(
            answer.id, "Answer in three words.", config=DistillConfig(learning_rate=2e-3)
        )
        parent, candidate = learner.versions("guard/check")[-2:]
        tokenizer = learner.tokenizer
        gate = Gate(settings)
        known = gate._ask(inference, tokenizer, parent, GUARD_PROBES)
        inference.decoded = 0
        checked = gate._ask(inference, tokenizer, candidate, GUARD_PROBES, known=known)
        decoded_when_checked = inference.decoded
        full = gate._ask(inference, tokenizer, candidate, GUARD_PROBES)
        assert checked.answers.texts == full.answers.texts
        assert checked.tokens == full.tokens
        assert checked.answers.anchor_logprob == pytest.approx(
            full.answers.anchor_logprob, abs=1e-3
        )
        changed = sum(a != b for a, b in zip(known.tokens, full.tokens, strict=True))
        print(f"{changed} of {len(GUARD_PROBES)} probe answers changed")
        assert decoded_when_checked == changed, (decoded_when_checked, changed)
        # Asked again with its own answers known, nothing is decoded.
        inference.decoded = 0
        again = gate._ask(inference, tokenizer, candidate, GUARD_PROBES, known=full)
        assert inference.decoded == 0
        assert again.answers.texts == full.answers.texts

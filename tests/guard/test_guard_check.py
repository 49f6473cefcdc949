"""The guard's batched answers on the real model: as one at a time, and from drafts.

Batched greedy answers and scores (a shared prompt prefix run once, the LM head
only where logits are read) must equal one-at-a-time decoding and scoring; answering
a candidate from its parent's answers as drafts must give exactly the answers full
greedy decoding gives, and decode on only the probes whose answers changed.

Those equalities are checked in float32. In bfloat16 (the checks' precision on a
CPU with native bfloat16) a different batch shape can round a logit differently
and flip a near-tie, so there the batched answers equal a bfloat16-held model's
answers to the same batch, and chats stay float32.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pytest
import torch

import claas.inference._batch_decode as batch_decode
from claas import DistillConfig, Learner, Settings
from claas.guard.gate import Gate
from claas.guard.probes import GUARD_PROBES
from claas.inference.local import LocalInference
from claas.precision import AutocastChoice
from claas.teacher import encode_chat
from claas.types import ChatMessage, SamplingParams

pytestmark = pytest.mark.slow

SKY = [{"role": "user", "content": "Why is the sky blue?"}]


class DecodeCounter:
    """Counts the rows decoded token by token (from scratch or after their drafts)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.decoded = 0
        original = batch_decode.decode_on

        def counting(model: Any, cache: Any, mask: Any, rows: Sequence[Any], **kw: Any) -> Any:
            self.decoded += len(rows)
            return original(model, cache, mask, rows, **kw)

        monkeypatch.setattr(batch_decode, "decode_on", counting)


def test_batched_answers_and_scores_are_the_one_at_a_time_ones(settings: Settings) -> None:
    # In float32 throughout, so that only batching differs from one-at-a-time decoding.
    inference = LocalInference(settings.evolve(autocast=False))
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
    # Its own answers as drafts are kept as they are; empty drafts are decoded in full.
    drafts = [ids for _, ids in pairs]
    assert inference.answer_batch_from_drafts(prompts, drafts, adapter=None, max_tokens=12) == [
        (ids, pytest.approx(lps, abs=2e-3)) for ids, lps in batched
    ]
    empty = inference.answer_batch_from_drafts(
        prompts, [[]] * len(prompts), adapter=None, max_tokens=12
    )
    assert [ids for ids, _ in empty] == drafts
    inference.close()


def test_bfloat16_checks_use_copies_and_leave_chats_in_float32(settings: Settings) -> None:
    chats = [[ChatMessage(role="user", content=p.prompt)] for p in GUARD_PROBES]
    inference = LocalInference(settings.evolve(autocast=False))
    # As ``autocast="auto"`` resolves it on a CPU with native bfloat16 (on any CPU here).
    inference.check_autocast = AutocastChoice(True, "test")
    prompts = [encode_chat(inference.tokenizer, chat) for chat in chats]
    greedy = SamplingParams(temperature=0.0, max_tokens=12, seed=0)
    chat_before = inference.generate(chats[0], adapter=None, sampling=greedy)
    checked = inference.answer_batch(prompts, adapter=None, max_tokens=12)
    chat_after = inference.generate(chats[0], adapter=None, sampling=greedy)
    assert chat_after.response_ids == chat_before.response_ids
    assert chat_after.response_logprobs == chat_before.response_logprobs
    held = {p.dtype for p in inference._base().parameters()}
    assert held == {torch.float32}  # the copies were swapped out again
    # The same answers as a model that holds its weights in bfloat16.
    bfloat16 = LocalInference(settings.evolve(autocast=True))
    assert bfloat16.answer_batch(prompts, adapter=None, max_tokens=12) == checked
    inference.close()
    bfloat16.close()


def test_answers_from_drafts_are_the_decoded_ones_and_kept_drafts_are_not_decoded(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    # float32: in bfloat16 a near-tie can flip between batch shapes (see the module doc).
    settings = settings.evolve(guard_mode="off", autocast=False)
    inference = LocalInference(settings)
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
        counter = DecodeCounter(monkeypatch)
        drafted = gate._ask(inference, tokenizer, candidate, GUARD_PROBES, known=known)
        decoded_from_drafts = counter.decoded
        full = gate._ask(inference, tokenizer, candidate, GUARD_PROBES)
        assert drafted.answers.texts == full.answers.texts
        assert drafted.tokens == full.tokens
        assert drafted.answers.anchor_logprob == pytest.approx(
            full.answers.anchor_logprob, abs=2e-3
        )
        changed = sum(a != b for a, b in zip(known.tokens, full.tokens, strict=True))
        print(f"{changed} of {len(GUARD_PROBES)} probe answers changed")
        assert 0 < changed < len(GUARD_PROBES)  # both paths were taken
        assert decoded_from_drafts <= changed, (decoded_from_drafts, changed)
        # Asked again with its own answers as drafts, nothing is decoded.
        counter.decoded = 0
        again = gate._ask(inference, tokenizer, candidate, GUARD_PROBES, known=full)
        assert counter.decoded == 0
        assert again.tokens == full.tokens


def test_after_a_restart_a_parent_is_checked_against_its_recorded_answers(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = settings.evolve(autocast=False)  # exact equalities: see the module doc
    with Learner(settings) as learner:
        learner.init_adapter("guard/restart")
        answer = learner.chat("guard/restart", SKY, temperature=0.7, max_tokens=48, seed=0)
        learner.feedback(answer.id, "Way too long. Answer in one short sentence.")
    # A new process: the live version 1 is known only from the store, with its verdict.
    inference = LocalInference(settings)
    with Learner(settings, inference=inference) as learner:
        parent = learner.current_version("guard/restart")
        assert parent.version == 1 and parent.verdict is not None and parent.verdict["passed"]
        tokenizer = learner.tokenizer
        counter = DecodeCounter(monkeypatch)
        drafted = Gate(settings)._asked(inference, tokenizer, parent, GUARD_PROBES)
        decoded_from_record = counter.decoded
        full = Gate(settings)._ask(inference, tokenizer, parent, GUARD_PROBES)
        assert drafted.tokens == full.tokens
        assert drafted.answers.texts == full.answers.texts
        recorded = parent.verdict["answers"]
        assert tuple(recorded[p.prompt] for p in GUARD_PROBES) == full.answers.texts
        # Asked from scratch, every probe is decoded; from its record, none need be.
        assert counter.decoded - decoded_from_record == len(GUARD_PROBES)
        assert decoded_from_record == 0, decoded_from_record

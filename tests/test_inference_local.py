"""Local generation with the real bundled model."""

from __future__ import annotations

import pytest

from claas import InvalidRequest, Learner, PayloadTooLarge
from claas.types import ChatMessage, SamplingParams

QUESTION = [{"role": "user", "content": "What is the capital of France?"}]


def test_greedy_answer_is_correct_and_stops_on_end_of_turn(shared_learner: Learner) -> None:
    completion = shared_learner.chat(None, QUESTION, temperature=0, max_tokens=40)
    assert "Paris" in completion.text
    assert completion.finish_reason == "stop"
    assert completion.response_ids[-1] == shared_learner.tokenizer.eos_token_id
    assert len(completion.response_logprobs) == len(completion.response_ids)
    assert all(lp <= 0 for lp in completion.response_logprobs)


def test_length_limit_and_seeded_sampling(shared_learner: Learner) -> None:
    one = shared_learner.chat(None, QUESTION, temperature=1.0, max_tokens=6, seed=7)
    two = shared_learner.chat(None, QUESTION, temperature=1.0, max_tokens=6, seed=7)
    assert one.response_ids == two.response_ids
    assert one.id != two.id
    long = shared_learner.chat(
        None, [{"role": "user", "content": "Write a long story."}], temperature=0, max_tokens=5
    )
    assert long.finish_reason == "length" and len(long.response_ids) == 5


def test_recorded_logprobs_equal_teacher_forced_scores(shared_learner: Learner) -> None:
    completion = shared_learner.chat(None, QUESTION, temperature=0.8, max_tokens=12, seed=3)
    scored = shared_learner.inference.score(
        completion.prompt_ids, completion.response_ids, adapter=None
    )
    assert scored == pytest.approx(list(completion.response_logprobs), abs=2e-3)


def test_stream_text_equals_completion_text(shared_learner: Learner) -> None:
    stream = shared_learner.chat_stream(None, QUESTION, temperature=0, max_tokens=20)
    text = "".join(stream)
    assert stream.completion is not None
    assert text == stream.completion.text
    assert shared_learner.get_completion(stream.id) == stream.completion


def test_stop_strings_and_top_logprobs(shared_learner: Learner) -> None:
    completion = shared_learner.chat(
        None, QUESTION, temperature=0, max_tokens=30, stop=["France"], top_logprobs=3
    )
    assert "France" not in completion.text
    assert completion.finish_reason == "stop"
    assert all(len(alts) == 3 for alts in completion.top_logprobs)


def test_limits_are_enforced(shared_learner: Learner) -> None:
    with pytest.raises(InvalidRequest, match="max_tokens"):
        shared_learner.chat(None, QUESTION, max_tokens=10**6)
    huge = [{"role": "user", "content": "word " * 6000}]
    with pytest.raises(PayloadTooLarge, match="prompt"):
        shared_learner.chat(None, huge, max_tokens=4)


def test_raw_completion(shared_learner: Learner) -> None:
    completion = shared_learner.complete(
        None, "The capital of France is", temperature=0, max_tokens=4
    )
    assert completion.id.startswith("cmpl-")
    assert "Paris" in completion.text


def test_generate_protocol_directly(shared_learner: Learner) -> None:
    generation = shared_learner.inference.generate(
        (ChatMessage("user", "Say hi."),), adapter=None, sampling=SamplingParams(max_tokens=4)
    )
    assert 1 <= len(generation.response_ids) <= 4


def test_decoding_runs_the_lm_head_on_the_last_position_only(shared_learner: Learner) -> None:
    head = shared_learner.inference._base().get_output_embeddings()
    positions: list[int] = []
    hook = head.register_forward_hook(lambda _m, args, _out: positions.append(args[0].shape[1]))
    try:
        completion = shared_learner.chat(None, QUESTION, temperature=0, max_tokens=4)
    finally:
        hook.remove()
    assert len(completion.prompt_ids) > 1
    assert positions == [1] * len(completion.response_ids)  # the prompt's own logits are not made

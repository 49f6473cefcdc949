"""Batched greedy answers from drafts equal plain batched greedy decoding, on every path.

A small randomly initialised Llama (the bundled model's architecture, built in the
test, in float64 so that batching cannot flip a near-tie) runs each path of
:func:`greedy_from_drafts`: drafts kept whole, empty drafts, drafts the model leaves
part-way (decoded on from the scoring pass's cache), drafts that stop short of the
length limit without an end of turn, and prompts of different lengths behind a
shared prefix; guesses from known answers (prompt lookup) change no answer and
save passes; the packed scoring pass's own attention gives what its 4-D mask gives.
"""

from __future__ import annotations

import pytest
import torch
from tiny_llama import VOCAB, tiny_llama
from transformers import LlamaForCausalLM

from claas.inference._batch_decode import greedy_batch, greedy_from_drafts, score_batch
from claas.inference._packed_attention import install_packed_attention
from claas.inference._settled import settled_at

PAD = 0
SHARED = list(range(10, 22))  # longer than the shortest prefix worth its own pass


@pytest.fixture(scope="module")
def model() -> LlamaForCausalLM:
    return tiny_llama(seed=0).double()


def _prompts() -> list[list[int]]:
    tails = [[30, 31, 32], [40, 41, 42, 43, 44, 45], [50], [60, 61, 62, 63]]
    return [[*SHARED, *tail] for tail in tails]


def _eos(model: LlamaForCausalLM, prompts: list[list[int]]) -> frozenset[int]:
    """An end-of-turn id that one row's greedy answer reaches early, so both stops occur."""
    free = greedy_batch(
        model, prompts, max_tokens=10, eos_ids=frozenset(), pad_id=PAD, device="cpu"
    )
    return frozenset({free[1][0][3]})


Answers = list[tuple[list[int], list[float]]]


def _answers(
    model: LlamaForCausalLM,
    prompts: list[list[int]],
    drafts: list[list[int]],
    eos: frozenset[int],
    max_tokens: int = 10,
) -> Answers:
    return greedy_from_drafts(
        model, prompts, drafts, max_tokens=max_tokens, eos_ids=eos, device="cpu"
    )


def _changed_at(ids: list[int], index: int) -> list[int]:
    return [*ids[:index], (ids[index] + 1) % VOCAB, *ids[index + 1 :]]


def _same(got: Answers, want: Answers) -> None:
    assert [ids for ids, _ in got] == [ids for ids, _ in want]
    for (_, lp_got), (_, lp_want) in zip(got, want, strict=True):
        assert lp_got == pytest.approx(lp_want, abs=1e-9)


def test_every_kind_of_draft_gives_the_greedy_answer(model: LlamaForCausalLM) -> None:
    prompts = _prompts()
    eos = _eos(model, prompts)
    want = greedy_batch(model, prompts, max_tokens=10, eos_ids=eos, pad_id=PAD, device="cpu")
    assert any(ids[-1] in eos for ids, _ in want)  # one row stops at its end of turn
    assert any(len(ids) == 10 for ids, _ in want)  # and one at the length limit
    truth = [ids for ids, _ in want]
    _same(_answers(model, prompts, truth, eos), want)  # kept whole
    _same(_answers(model, prompts, [[] for _ in prompts], eos), want)  # nothing to check
    departed = [_changed_at(ids, len(ids) // 2) for ids in truth]
    _same(_answers(model, prompts, departed, eos), want)  # left half-way
    short = [ids[: len(ids) // 2] for ids in truth]  # all agreed, no end of turn, under the limit
    _same(_answers(model, prompts, short, eos), want)
    mixed = [truth[0], [], departed[2], short[3]]
    _same(_answers(model, prompts, mixed, eos), want)


def test_a_lower_limit_cuts_each_row_at_its_own_length(model: LlamaForCausalLM) -> None:
    prompts = _prompts()
    eos = _eos(model, prompts)
    want = greedy_batch(model, prompts, max_tokens=4, eos_ids=eos, pad_id=PAD, device="cpu")
    long = greedy_batch(model, prompts, max_tokens=10, eos_ids=eos, pad_id=PAD, device="cpu")
    drafts = [_changed_at(ids, min(1, len(ids) - 1)) for ids, _ in long]
    got = _answers(model, prompts, drafts, eos, max_tokens=4)
    _same(got, want)
    assert all(len(ids) <= 4 for ids, _ in got)


def test_settled_rules_cut_each_answer_where_the_full_answer_would_be_cut(
    model: LlamaForCausalLM,
) -> None:
    prompts = _prompts()
    eos = _eos(model, prompts)
    full = greedy_batch(model, prompts, max_tokens=10, eos_ids=eos, pad_id=PAD, device="cpu")
    truth = [ids for ids, _ in full]
    # Row 0 settles at its 6th token, row 1 at its 2nd (a token it reaches), row 2
    # never, row 3 has no rule: rows 2 and 3 are answered in full.
    marks = {0: truth[0][5], 1: truth[1][1]}
    rules = [
        (lambda ids, mark=marks[0]: mark in ids[5:6]),
        (lambda ids, mark=marks[1]: ids[-1] == mark),
        (lambda ids: False),
        None,
    ]
    cuts = [settled_at(ids, rule) for ids, rule in zip(truth, rules, strict=True)]
    assert cuts[0] == 6 and cuts[1] is not None and cuts[1] <= 2 and cuts[2:] == [None, None]
    want = [ids[:cut] if cut else ids for ids, cut in zip(truth, cuts, strict=True)]
    departed = [_changed_at(ids, len(ids) // 2) for ids in truth]
    short = [ids[: len(ids) // 2] for ids in truth]
    for drafts in (truth, [[] for _ in prompts], departed, short):
        got = greedy_from_drafts(
            model, prompts, drafts, max_tokens=10, eos_ids=eos, device="cpu", settled=rules
        )
        assert [ids for ids, _ in got] == want
        for (_, lp_got), (_, lp_full) in zip(got, full, strict=True):
            assert lp_got == pytest.approx(lp_full[: len(lp_got)], abs=1e-9)


def test_batched_scores_are_each_pair_scored_alone(model: LlamaForCausalLM) -> None:
    prompts = _prompts()
    responses = [[70, 71], [72], [73, 74, 75, 76], []]
    pairs = list(zip(prompts, responses, strict=True))
    batched = score_batch(model, pairs, device="cpu")
    for pair, row in zip(pairs, batched, strict=True):
        assert row == pytest.approx(score_batch(model, [pair], device="cpu")[0])
        assert len(row) == len(pair[1])


class PassCounter:
    """The model, counting its forward passes."""

    def __init__(self, model: LlamaForCausalLM) -> None:
        self.model = model
        self.passes = 0

    def __call__(self, **kwargs: object) -> object:
        self.passes += 1
        return self.model(**kwargs)

    def get_base_model(self) -> LlamaForCausalLM:  # what the cache-keyword lookup reads
        return self.model

    @property
    def config(self) -> object:  # which attention, hence which mask form
        return self.model.config


def test_guesses_from_known_answers_keep_the_answer_and_save_passes(
    model: LlamaForCausalLM,
) -> None:
    prompts = _prompts()
    eos = _eos(model, prompts)
    want = greedy_batch(model, prompts, max_tokens=10, eos_ids=eos, pad_id=PAD, device="cpu")
    truth = [ids for ids, _ in want]
    # Drafts wrong at every token: the answers must be decoded after their first.
    wrong = [[(t + 3) % VOCAB for t in ids] for ids in truth]
    plain, guessing = PassCounter(model), PassCounter(model)
    alone = greedy_from_drafts(plain, prompts, wrong, max_tokens=10, eos_ids=eos, device="cpu")
    # Known earlier answers, one of them the true one (a version the answer returns
    # to) after a wrong one: guessing from them must not change the answer.
    known = [[w[1:], t] for w, t in zip(wrong, truth, strict=True)]
    guessed = greedy_from_drafts(
        guessing,
        prompts,
        wrong,
        max_tokens=10,
        eos_ids=eos,
        device="cpu",
        lookup=known,
    )
    _same(alone, want)
    _same(guessed, want)
    longest = max(len(ids) for ids in truth)
    assert plain.passes >= longest  # one decoding pass per token after the first
    assert guessing.passes <= 3, guessing.passes  # the scoring pass and one or two guesses


def test_packed_attention_gives_what_the_packed_mask_gives(model: LlamaForCausalLM) -> None:
    packed = tiny_llama(seed=0).double()
    assert install_packed_attention(packed)
    prompts = _prompts()
    prompts[2] = [99 % VOCAB, *prompts[2]]  # no shared prefix for this call
    eos = _eos(model, prompts)
    truth = [ids for ids, _ in _answers(model, _prompts(), [[] for _ in prompts], eos)]
    pairs = list(zip(_prompts(), truth, strict=True))
    for rows in (pairs, list(zip(prompts, truth, strict=True))):  # with and without a prefix
        want = score_batch(model, rows, device="cpu")
        got = score_batch(packed, rows, device="cpu")
        for got_row, want_row in zip(got, want, strict=True):
            assert got_row == pytest.approx(want_row, abs=1e-9)
    departed = [_changed_at(ids, len(ids) // 2) for ids in truth]
    _same(_answers(packed, _prompts(), departed, eos), _answers(model, _prompts(), departed, eos))
    # Chats and every other pass go through transformers' own attention.
    ids = torch.tensor([_prompts()[1]])
    assert torch.equal(packed(input_ids=ids).logits, model(input_ids=ids).logits)


def test_an_eager_attention_model_scores_the_packed_pass_as_sdpa_does(
    model: LlamaForCausalLM,
) -> None:
    eager = tiny_llama(seed=0).double()
    eager.set_attn_implementation("eager")
    prompts = _prompts()
    eos = _eos(model, prompts)
    truth = [ids for ids, _ in _answers(model, prompts, [[] for _ in prompts], eos)]
    pairs = list(zip(prompts, truth, strict=True))
    want = score_batch(model, pairs, device="cpu")
    for got_row, want_row in zip(score_batch(eager, pairs, device="cpu"), want, strict=True):
        assert got_row == pytest.approx(want_row, abs=1e-9)

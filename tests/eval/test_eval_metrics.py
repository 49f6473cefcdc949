"""The eval's metric math: entropy, self-similarity, margins, alerts."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from claas.eval.metrics import (
    check_alerts,
    jaccard,
    logprob_margin,
    mean,
    mean_token_entropy,
    ngrams,
    repetition,
    self_similarity,
    topk_entropy,
)

logits = st.lists(st.floats(-20, 20, allow_nan=False), min_size=1, max_size=30)


def log_softmax(values: list[float]) -> list[float]:
    top = max(values)
    norm = top + math.log(sum(math.exp(v - top) for v in values))
    return [v - norm for v in values]


def full_entropy(logprobs: list[float]) -> float:
    return -sum(math.exp(lp) * lp for lp in logprobs)


def test_uniform_distribution_has_entropy_log_k() -> None:
    assert topk_entropy([math.log(1 / 8)] * 8) == pytest.approx(math.log(8))


def test_a_certain_token_has_zero_entropy() -> None:
    assert topk_entropy([0.0, -math.inf, -math.inf]) == pytest.approx(0.0)
    assert topk_entropy([]) == 0.0


def test_missing_mass_counts_as_one_tail_atom() -> None:
    # Two tokens of 0.25 each and a tail of 0.5.
    expected = -(2 * 0.25 * math.log(0.25) + 0.5 * math.log(0.5))
    assert topk_entropy([math.log(0.25)] * 2) == pytest.approx(expected)


@given(logits)
def test_full_support_gives_the_exact_entropy(values: list[float]) -> None:
    logprobs = log_softmax(values)
    assert topk_entropy(logprobs) == pytest.approx(full_entropy(logprobs), abs=1e-9)


@given(logits, st.integers(1, 30))
def test_topk_entropy_is_a_bounded_lower_bound(values: list[float], k: int) -> None:
    logprobs = sorted(log_softmax(values), reverse=True)
    truncated = topk_entropy(logprobs[:k])
    assert 0.0 <= truncated <= full_entropy(logprobs) + 1e-9
    assert truncated <= math.log(min(k, len(logprobs)) + 1) + 1e-9


def test_mean_token_entropy_averages_positions() -> None:
    positions = [[0.0], [math.log(0.5), math.log(0.5)]]
    assert mean_token_entropy(positions) == pytest.approx(math.log(2) / 2)
    assert math.isnan(mean_token_entropy([]))


def test_ngrams_and_jaccard() -> None:
    assert ngrams("The cat sat", 2) == {("the", "cat"), ("cat", "sat")}
    assert ngrams("Hi", 2) == {("hi",)}
    assert ngrams("", 2) == set()
    assert jaccard(set(), set()) == 1.0
    assert jaccard({("a",)}, {("b",)}) == 0.0
    with pytest.raises(ValueError):
        ngrams("x", 0)


def test_self_similarity_examples() -> None:
    assert self_similarity(["Paris is nice", "Paris is nice", "paris IS nice!"]) == 1.0
    assert self_similarity(["red green blue", "one two three"]) == 0.0
    # Bigrams {a b, b c} vs {a b, b d}: one shared of three.
    assert self_similarity(["a b c", "a b d"]) == pytest.approx(1 / 3)
    assert math.isnan(self_similarity(["alone"]))


@given(st.lists(st.text(max_size=40), min_size=2, max_size=6))
def test_self_similarity_lies_in_the_unit_interval(texts: list[str]) -> None:
    value = self_similarity(texts)
    assert 0.0 <= value <= 1.0
    assert self_similarity([texts[0]] * 3) == 1.0


def test_repetition_examples() -> None:
    loop = "The answer to your question is: " * 6
    assert repetition(loop) > 0.7
    assert repetition("Air scatters blue light more than red, so the sky looks blue.") == 0.0
    assert repetition("Too short") == 0.0
    # Eight words, five 4-grams, the last two repeat the first two.
    assert repetition("a b c d a b c d") == pytest.approx(1 / 5)
    with pytest.raises(ValueError):
        repetition("x", n=0)


@given(st.lists(st.sampled_from(["a", "b", "c", "d", "e"]), max_size=60), st.integers(1, 5))
def test_repetition_lies_in_the_unit_interval(words: list[str], n: int) -> None:
    value = repetition(" ".join(words), n=n)
    assert 0.0 <= value < 1.0
    if len(set(words)) == len(words):
        assert value == 0.0


@given(
    st.lists(st.floats(-10, 0), min_size=1, max_size=20),
    st.lists(st.floats(-10, 0), min_size=1, max_size=20),
)
def test_margin_is_antisymmetric(good: list[float], bad: list[float]) -> None:
    total, per_token = logprob_margin(good, bad)
    back_total, back_per_token = logprob_margin(bad, good)
    assert total == pytest.approx(-back_total, abs=1e-9)
    assert per_token == pytest.approx(-back_per_token, abs=1e-9)


def test_margin_examples() -> None:
    total, per_token = logprob_margin([-1.0, -1.0], [-0.5, -0.5, -0.5, -0.5])
    assert total == pytest.approx(0.0)
    assert per_token == pytest.approx(-0.5)
    with pytest.raises(ValueError):
        logprob_margin([], [-1.0])


def test_mean_of_nothing_is_nan_not_zero() -> None:
    assert math.isnan(mean([]))
    assert mean([1, 2, 3]) == 2.0


THRESHOLDS = {
    "entropy_drop": 0.5,
    "max_self_similarity": 0.5,
    "max_repetition": 0.5,
    "max_logprob_drift": 0.5,
    "max_capability_drop": 0.25,
}
BASELINE = {"entropy": 1.0, "capability": 0.9, "self_similarity": 0.1, "logprob_drift": 0.0}


def test_no_alerts_when_healthy() -> None:
    step = {
        "entropy": 0.8,
        "capability": 0.8,
        "self_similarity": 0.2,
        "repetition": 0.1,
        "logprob_drift": -0.1,
    }
    assert check_alerts(step, BASELINE, THRESHOLDS) == []


def test_each_threshold_raises_its_alert() -> None:
    step = {
        "entropy": 0.4,
        "capability": 0.5,
        "self_similarity": 0.9,
        "repetition": 0.6,
        "logprob_drift": -0.8,
    }
    alerts = check_alerts(step, BASELINE, THRESHOLDS)
    assert len(alerts) == 5
    assert any("entropy" in a for a in alerts) and any("forgetting" in a for a in alerts)


def test_unmeasured_or_disabled_metrics_raise_nothing() -> None:
    step = {"entropy": None, "capability": None, "self_similarity": None, "logprob_drift": None}
    assert check_alerts(step, BASELINE, THRESHOLDS) == []
    bad = {
        "entropy": 0.0,
        "capability": 0.0,
        "self_similarity": 1.0,
        "repetition": 1.0,
        "logprob_drift": 9.0,
    }
    assert check_alerts(bad, BASELINE, {k: None for k in THRESHOLDS}) == []

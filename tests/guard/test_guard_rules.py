"""The guard's rules on plain text: degenerate-answer signals, thresholds and modes."""

from __future__ import annotations

import attrs
import pytest
from hypothesis import given
from hypothesis import strategies as st

from claas.config import GuardSettings, Settings
from claas.errors import InvalidConfig
from claas.guard import (
    GUARD_PROBES,
    Answers,
    decide,
    degenerate_flags,
    is_looping,
    is_stub,
    repetition,
    shared_answers,
    user_probe,
)

PROMPTS = tuple(p.prompt for p in GUARD_PROBES)
GOOD = (
    "The capital of France is Paris.",
    "2 + 2 is 4.",
    "A week has 7 days.",
    "Water is H2O.",
    "The capital of Japan is Tokyo.",
    "William Shakespeare wrote it.",
    "The opposite of hot is cold.",
    "I ate an apple today.",
)


def answers(texts: tuple[str, ...], *, anchor: float | None = None) -> Answers:
    return Answers(
        prompts=PROMPTS,
        kinds=tuple(p.kind for p in GUARD_PROBES),
        texts=texts,
        passed=tuple(bool(p.check(t)) for p, t in zip(GUARD_PROBES, texts, strict=True)),
        anchor_logprob=anchor,
    )


def with_lost(count: int) -> tuple[str, ...]:
    return tuple(f"I am not sure about question number {i}." if i < count else t
                 for i, t in enumerate(GOOD))  # fmt: skip


@pytest.mark.parametrize(
    "text", ["", "   ", "...", "?!", "The answer to this question is:", "Here it is..."]
)
def test_empty_and_lead_in_answers_are_stubs(text: str) -> None:
    assert is_stub(text)


@pytest.mark.parametrize("text", ["Paris.", "4", "The capital of France is Paris."])
def test_short_real_answers_are_not_stubs(text: str) -> None:
    assert not is_stub(text)


def test_a_repeated_word_or_phrase_is_a_loop() -> None:
    assert is_looping("banana " * 12)
    assert is_looping("the sky is blue and " * 4)
    assert not is_looping("The capital of France is Paris, a city on the Seine river.")
    assert not is_looping("no no no")  # too short to call


@given(st.lists(st.sampled_from(["a", "b", "c", "d"]), min_size=0, max_size=40))
def test_repetition_is_a_fraction(words: list[str]) -> None:
    assert 0.0 <= repetition(" ".join(words)) < 1.0


def test_one_answer_to_different_questions_is_shared() -> None:
    assert shared_answers(["Banana.", "banana", "Paris."]) == [True, True, False]
    assert degenerate_flags(["", "banana " * 10, "x y", "X y!", "Paris."]) == [
        "stub",
        "loop",
        "shared",
        "shared",
        None,
    ]


def test_an_unchanged_candidate_passes() -> None:
    verdict = decide(answers(GOOD), answers(GOOD), GuardSettings())
    assert verdict.passed and verdict.reasons == ()
    assert verdict.measures["guard_probe_score"] == 1.0
    assert verdict.answers[PROMPTS[0]] == GOOD[0]


def test_losing_more_probes_than_allowed_rejects_and_names_them() -> None:
    guard = GuardSettings(max_probe_drop=0.25)
    assert decide(answers(GOOD), answers(with_lost(2)), guard).passed  # 2 of 8 = 0.25
    verdict = decide(answers(GOOD), answers(with_lost(3)), guard)
    assert not verdict.passed
    assert "lost 3 of 8 capability probes" in verdict.reasons[0]
    assert PROMPTS[0] in verdict.reasons[0]


def test_strict_mode_allows_no_lost_probe_and_checks_drift() -> None:
    strict = GuardSettings(mode="strict", max_drift=1.0)
    assert not decide(answers(GOOD), answers(with_lost(1)), strict).passed
    parent = answers(GOOD, anchor=-0.5)
    assert decide(parent, answers(GOOD, anchor=-1.4), strict).passed
    drifted = decide(parent, answers(GOOD, anchor=-2.0), strict)
    assert not drifted.passed and "1.50 nats per token" in drifted.reasons[0]
    # Outside strict mode drift is measured, not judged.
    loose = decide(parent, answers(GOOD, anchor=-2.0), GuardSettings())
    assert loose.passed and loose.measures["guard_drift"] == pytest.approx(1.5)


def test_probes_the_parent_already_failed_do_not_count() -> None:
    parent = answers(with_lost(4))
    assert decide(parent, answers(with_lost(5)), GuardSettings(max_probe_drop=0.25)).passed


def test_degenerate_answers_reject_unless_the_parent_was_as_bad() -> None:
    stubs = ("The answer is:",) * 3 + GOOD[3:]
    verdict = decide(answers(GOOD), answers(stubs), GuardSettings(max_probe_drop=1.0))
    assert not verdict.passed
    assert "3 of 8 answers degenerate" in verdict.reasons[-1]
    assert decide(answers(stubs), answers(stubs), GuardSettings()).passed


def test_a_lost_user_probe_rejects() -> None:
    probes = (*GUARD_PROBES, user_probe({"prompt": "Who is our CEO?", "expect": ["Ada"]}))
    base = Answers(
        prompts=tuple(p.prompt for p in probes),
        kinds=tuple(p.kind for p in probes),
        texts=(*GOOD, "Our CEO is Ada."),
        passed=(True,) * len(probes),
    )
    lost = attrs.evolve(base, texts=(*GOOD, "I don't know."), passed=(*base.passed[:-1], False))
    verdict = decide(base, lost, GuardSettings())
    assert not verdict.passed and "Who is our CEO?" in verdict.reasons[0]


def test_guard_settings_are_validated_and_on_by_default() -> None:
    assert Settings().guard.mode == "probes"
    assert Settings.load(guard_mode="strict", guard_max_drift=2).guard.max_drift == 2
    with pytest.raises(InvalidConfig, match=r"guard\.mode"):
        GuardSettings(mode="loose")  # type: ignore[arg-type]
    with pytest.raises(InvalidConfig, match=r"guard\.max_probe_drop"):
        GuardSettings(max_probe_drop=1.5)
    with pytest.raises(InvalidConfig, match=r"guard\.max_drift"):
        GuardSettings(max_drift=0)

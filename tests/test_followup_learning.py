"""The simulated user of issue 18, on the embedded model: no ``feedback`` call anywhere.

Sixteen short conversations. After each answer longer than one sentence the
user writes a follow-up and moves on to the next question; the adapter learns
from follow-ups, so each such follow-up becomes a feedback job through the
normal queue. Held-out questions (never asked in a conversation) are answered
greedily before and after.

- "That's too long. One sentence, please." must make held-out answers at least
  50% shorter.
- The control, "Thanks. Next question.", must change their length by less
  than 15%, and most of its jobs must be skipped by the pre-check (few versions).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from claas import Learner, Settings
from claas.demo import TRAINING
from claas.eval.verifiers import count_sentences

pytestmark = pytest.mark.slow

QUESTIONS = TRAINING  # the demo's training questions; the held-out ones are its own
HELD_OUT = (
    "Why is the sky blue?",
    "How do vaccines work?",
    "What causes earthquakes?",
    "How do airplanes stay in the air?",
)
TOO_LONG = "That's too long. One sentence, please."
NEUTRAL = "Thanks. Next question."
ANSWER_TOKENS = 64  # conversation answers: enough to be longer than one sentence
HELD_OUT_TOKENS = 120  # as the eval harness measures: a lower cap would hide long answers


def _held_out_tokens(learner: Learner, adapter: str) -> int:
    """Total tokens of the greedy held-out answers under the live version."""
    answers = [
        learner.chat(
            adapter, [{"role": "user", "content": q}], max_tokens=HELD_OUT_TOKENS, temperature=0
        )
        for q in HELD_OUT
    ]
    return sum(len(a.response_ids) for a in answers)


# Both simulations start from a fresh adapter, whose version 0 answers as the base model
# does: its held-out answers are asked once per base model, not once per simulation.
_BASE_HELD_OUT: dict[str, int] = {}


def _base_held_out_tokens(learner: Learner, adapter: str) -> int:
    assert learner.current_version(adapter).version == 0
    base = learner.settings.base_model
    if base not in _BASE_HELD_OUT:
        _BASE_HELD_OUT[base] = _held_out_tokens(learner, adapter)
    return _BASE_HELD_OUT[base]


def simulate_user(learner: Learner, adapter: str, follow_up: str) -> dict[str, float]:
    """Run the 16 conversations; return held-out lengths, jobs and their outcomes."""
    before = _base_held_out_tokens(learner, adapter)
    for i, question in enumerate(QUESTIONS):
        asked = [{"role": "user", "content": question}]
        answer = learner.chat(adapter, asked, max_tokens=ANSWER_TOKENS, temperature=0.7, seed=i)
        if count_sentences(answer.text) > 1:
            turns = [
                {"role": "assistant", "content": answer.text},
                {"role": "user", "content": follow_up},
            ]
            learner.chat(adapter, [*asked, *turns], max_tokens=4, temperature=0)  # then moves on
    jobs = [learner.wait(job.id, timeout=900) for job in learner.jobs(adapter, limit=100)]
    after = _held_out_tokens(learner, adapter)
    statuses = [job.status for job in jobs]
    return {
        "before": before,
        "after": after,
        "ratio": after / before,
        "jobs": len(jobs),
        "applied": statuses.count("applied"),
        "skipped": statuses.count("skipped"),
        "versions": learner.current_version(adapter).version,
        "followups": len(learner.followups(adapter, limit=100)),
    }


@pytest.fixture
def learner_on_followups(tmp_path: Path, models_dir: Path) -> Iterator[Learner]:
    settings = Settings.load(
        None,
        data_dir=tmp_path / "data",
        model_cache_dir=models_dir,
        learn_from_followups=True,
    )
    learner = Learner(settings)
    yield learner
    learner.close()


def test_too_long_follow_ups_make_held_out_answers_half_as_long(
    learner_on_followups: Learner,
) -> None:
    learner = learner_on_followups
    learner.init_adapter("sim/concise")
    result = simulate_user(learner, "sim/concise", TOO_LONG)
    print("too long:", result)
    assert result["followups"] == result["jobs"] >= 8
    # The guard may keep an update from going live (rejected); none may fail.
    allowed = ("applied", "skipped", "rejected")
    assert all(job.status in allowed for job in learner.jobs("sim/concise"))
    assert result["ratio"] <= 0.5, result


def test_neutral_follow_ups_change_little_and_mostly_skip(learner_on_followups: Learner) -> None:
    learner = learner_on_followups
    learner.init_adapter("sim/neutral")
    result = simulate_user(learner, "sim/neutral", NEUTRAL)
    print("neutral:", result)
    assert result["followups"] == result["jobs"] >= 8
    assert result["skipped"] > result["jobs"] / 2, result
    assert abs(result["ratio"] - 1) < 0.15, result

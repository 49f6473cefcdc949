"""Capability probes: their checks, and scoring a target's answers."""

from __future__ import annotations

from typing import Any

import pytest

from claas.eval.probes import CAPABILITY_PROBES, Probe, at_least, contains, in_order, run_probes
from claas.eval.targets import Sample

# Answers the bundled model gave at baseline (greedy), or close to them.
GOOD_ANSWERS = {
    "What is the capital of France?": "The capital of France is Paris.",
    "What is 2 + 2?": "The answer to this classic math problem is 4.",
    "How many days are in a week?": "A week is approximately 7 days.",
    "What is the chemical symbol for water?": "The chemical symbol for water is H2O.",
    "What is the capital of Japan?": "The capital of Japan is Tokyo.",
    "What is the capital of Germany?": "The capital of Germany is Berlin.",
    "Who wrote Romeo and Juliet?": "Romeo and Juliet by William Shakespeare.",
    "What is the opposite of hot?": "The opposite of hot is cold.",
    "What is the boiling point of water in Celsius?": "It is approximately 100.0 degrees.",
    "How do you say hello in French?": "Bonjour is a French word for hello.",
    "Name the first month of the year.": "The first month of the year is January.",
    "Write a sentence that contains the word apple.": "The apple is a delicious treat.",
    "Count from 1 to 5.": "1. 1\n2. 2\n3. 3\n4. 4\n5. 5",
    "List three colors.": "1. Red\n2. Blue\n3. Green",
}


class ScriptedTarget:
    """Answers each prompt from a table (only ``chat`` is needed by the probes)."""

    def __init__(self, answers: dict[str, str]) -> None:
        self.answers = answers
        self.asked: list[dict[str, Any]] = []

    def chat(self, adapter_id: str, prompt: str, **options: Any) -> Sample:
        self.asked.append({"adapter": adapter_id, "prompt": prompt, **options})
        text = self.answers.get(prompt, "I do not know.")
        return Sample(completion_id=f"c{len(self.asked)}", text=text, n_tokens=len(text.split()))


def test_checks() -> None:
    assert contains("Paris")("paris, of course")
    assert not contains("Paris")("Parisian cafes")
    assert contains("4", "four")("It is four.") and not contains("4")("It is 42.")
    assert in_order("1", "2", "3")("1, 2 and 3") and not in_order("1", "2", "3")("3, 2, 1")
    assert not in_order("1", "2")("12")
    assert at_least(2, ("red", "blue", "green"))("Red or green") and not at_least(2, ("red",))(
        "red red"
    )


def test_every_probe_accepts_a_right_answer_and_rejects_a_wrong_one() -> None:
    assert {p.prompt for p in CAPABILITY_PROBES} == set(GOOD_ANSWERS)
    for probe in CAPABILITY_PROBES:
        assert probe.check(GOOD_ANSWERS[probe.prompt]), probe.prompt
        assert not probe.check("I do not know."), probe.prompt


def test_probe_set_has_both_kinds() -> None:
    kinds = [p.kind for p in CAPABILITY_PROBES]
    assert kinds.count("knowledge") >= 10 and kinds.count("instruction") >= 3


def test_run_probes_scores_by_kind() -> None:
    answers = dict(GOOD_ANSWERS)
    answers["List three colors."] = "Blue."
    answers["What is the capital of France?"] = "Lyon."
    target = ScriptedTarget(answers)
    result = run_probes(target, "ns/a", max_tokens=12)  # type: ignore[arg-type]
    knowledge = sum(p.kind == "knowledge" for p in CAPABILITY_PROBES)
    assert result.score == pytest.approx((len(CAPABILITY_PROBES) - 2) / len(CAPABILITY_PROBES))
    assert result.knowledge == pytest.approx((knowledge - 1) / knowledge)
    assert result.instruction == pytest.approx(2 / 3)
    assert [f["prompt"] for f in result.failed] == [
        "What is the capital of France?",
        "List three colors.",
    ]
    # Greedy and capped, every time.
    assert {(a["temperature"], a["max_tokens"], a["adapter"]) for a in target.asked} == {
        (0.0, 12, "ns/a")
    }


def test_custom_probes_and_an_empty_set() -> None:
    probes = [Probe(prompt="Say yes.", check=contains("yes"), kind="instruction")]
    result = run_probes(ScriptedTarget({"Say yes.": "Yes!"}), "ns/a", probes)  # type: ignore[arg-type]
    assert (result.score, result.knowledge, result.instruction) == (1.0, None, 1.0)
    with pytest.raises(ValueError):
        run_probes(ScriptedTarget({}), "ns/a", [])  # type: ignore[arg-type]

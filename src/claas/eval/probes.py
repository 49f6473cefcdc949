"""Capability probes: fixed questions with checkable answers, to detect forgetting.

Two kinds: ``knowledge`` (a fact the answer must contain) and ``instruction``
(a simple instruction whose result a rule can check). The set was chosen so
that the bundled SmolLM2-135M-Instruct answers most of it right before any
feedback (greedy, 48 tokens); a drop after feedback is forgetting, not noise.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence

import attrs

from claas.eval.metrics import mean
from claas.eval.targets import EvalTarget

__all__ = ["CAPABILITY_PROBES", "Probe", "ProbeResult", "contains", "in_order", "run_probes"]

COLORS = (
    "red",
    "orange",
    "yellow",
    "green",
    "blue",
    "purple",
    "violet",
    "indigo",
    "pink",
    "black",
    "white",
    "brown",
    "gray",
    "grey",
)


def contains(*answers: str) -> Callable[[str], bool]:
    """A check passing when any of ``answers`` occurs as a whole word (case-insensitive)."""
    patterns = [re.compile(rf"(?<!\w){re.escape(a)}(?!\w)", re.IGNORECASE) for a in answers]
    return lambda text: any(p.search(text) for p in patterns)


def in_order(*items: str) -> Callable[[str], bool]:
    """A check passing when every item occurs as a whole word, in the given order."""
    pattern = re.compile(
        r"(?<!\w)" + r"(?!\w).*?(?<!\w)".join(re.escape(i) for i in items) + r"(?!\w)",
        re.DOTALL | re.IGNORECASE,
    )
    return lambda text: pattern.search(text) is not None


def at_least(count: int, words: Sequence[str]) -> Callable[[str], bool]:
    """A check passing when ``count`` distinct ``words`` occur (whole words)."""
    checks = [contains(w) for w in words]
    return lambda text: sum(check(text) for check in checks) >= count


@attrs.frozen(kw_only=True)
class Probe:
    """One capability question and its check."""

    prompt: str
    check: Callable[[str], bool]
    kind: str = "knowledge"


@attrs.frozen(kw_only=True)
class ProbeResult:
    """How an adapter did on the probes.

    Attributes:
        score: Fraction of all probes passed.
        knowledge: Fraction of knowledge probes passed (``None`` if none ran).
        instruction: Fraction of instruction probes passed (``None`` if none ran).
        answers: The answers, in probe order.
        passed: Whether each answer passed.
    """

    score: float
    knowledge: float | None
    instruction: float | None
    answers: tuple[str, ...]
    passed: tuple[bool, ...]
    prompts: tuple[str, ...]

    @property
    def failed(self) -> list[dict[str, str]]:
        """The prompts that failed, with their answers."""
        return [
            {"prompt": p, "answer": a}
            for p, a, ok in zip(self.prompts, self.answers, self.passed, strict=True)
            if not ok
        ]


CAPABILITY_PROBES: tuple[Probe, ...] = (
    Probe(prompt="What is the capital of France?", check=contains("Paris")),
    Probe(prompt="What is 2 + 2?", check=contains("4", "four")),
    Probe(prompt="How many days are in a week?", check=contains("7", "seven")),
    Probe(prompt="What is the chemical symbol for water?", check=contains("H2O")),
    Probe(prompt="What is the capital of Japan?", check=contains("Tokyo")),
    Probe(prompt="What is the capital of Germany?", check=contains("Berlin")),
    Probe(prompt="Who wrote Romeo and Juliet?", check=contains("Shakespeare")),
    Probe(prompt="What is the opposite of hot?", check=contains("cold")),
    Probe(prompt="What is the boiling point of water in Celsius?", check=contains("100", "100.0")),
    Probe(prompt="How do you say hello in French?", check=contains("bonjour")),
    Probe(prompt="Name the first month of the year.", check=contains("January")),
    Probe(
        prompt="Write a sentence that contains the word apple.",
        check=contains("apple"),
        kind="instruction",
    ),
    Probe(prompt="Count from 1 to 5.", check=in_order("1", "2", "3", "4", "5"), kind="instruction"),
    Probe(prompt="List three colors.", check=at_least(3, COLORS), kind="instruction"),
)


def _fraction(flags: list[bool]) -> float | None:
    return mean(float(f) for f in flags) if flags else None


def run_probes(
    target: EvalTarget,
    adapter_id: str,
    probes: Sequence[Probe] = CAPABILITY_PROBES,
    *,
    max_tokens: int = 48,
) -> ProbeResult:
    """Ask every probe greedily and check the answers.

    Args:
        target: What answers.
        adapter_id: The adapter under test.
        probes: The probes (default: :data:`CAPABILITY_PROBES`).
        max_tokens: Answer length cap.

    Raises:
        ValueError: If no probes are given.
    """
    if not probes:
        raise ValueError("no capability probes given")
    answers = [
        target.chat(adapter_id, probe.prompt, max_tokens=max_tokens, temperature=0.0, seed=0).text
        for probe in probes
    ]
    passed = [bool(probe.check(answer)) for probe, answer in zip(probes, answers, strict=True)]
    kinds = [p.kind for p in probes]
    return ProbeResult(
        score=sum(passed) / len(passed),
        knowledge=_fraction([ok for k, ok in zip(kinds, passed, strict=True) if k == "knowledge"]),
        instruction=_fraction(
            [ok for k, ok in zip(kinds, passed, strict=True) if k == "instruction"]
        ),
        answers=tuple(answers),
        passed=tuple(passed),
        prompts=tuple(p.prompt for p in probes),
    )

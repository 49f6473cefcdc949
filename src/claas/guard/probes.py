"""Capability probes: fixed questions with checkable answers, to detect forgetting.

Two kinds: ``knowledge`` (a fact the answer must contain) and ``instruction``
(a simple instruction whose result a rule can check). The set was chosen so
that the bundled SmolLM2-135M-Instruct answers most of it right before any
feedback (greedy, 48 tokens); a drop after feedback is forgetting, not noise.
The guard asks :data:`GUARD_PROBES`, a short subset answered right in few
tokens; the eval harness (:mod:`claas.eval.probes`) asks all of them.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import attrs

__all__ = [
    "CAPABILITY_PROBES",
    "GUARD_PROBES",
    "Probe",
    "at_least",
    "contains",
    "in_order",
    "names",
    "user_probe",
]

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


def _any_word(words: Sequence[str], ending: str) -> Callable[[str], bool]:
    """A check passing when any of ``words`` starts a word and is followed by ``ending``."""
    patterns = [re.compile(rf"(?<!\w){re.escape(w)}{ending}", re.IGNORECASE) for w in words]
    return lambda text: any(p.search(text) for p in patterns)


def contains(*answers: str) -> Callable[[str], bool]:
    """A check passing when any of ``answers`` occurs as a whole word (case-insensitive)."""
    return _any_word(answers, r"(?!\w)")


def names(*stems: str) -> Callable[[str], bool]:
    """A check passing when any of ``stems`` starts a word (case-insensitive).

    For key facts: ``names("scatter")`` passes "scattering" and "scatters" too.
    """
    return _any_word([s.strip() for s in stems], "")


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


# Short facts and one instruction, each answered right by the bundled model
# within 12 greedy tokens, and all different questions (so one answer to all of
# them is a collapse, not a coincidence).
GUARD_PROBES: tuple[Probe, ...] = tuple(
    CAPABILITY_PROBES[i]
    for i in (
        0,  # capital of France
        1,  # 2 + 2
        2,  # days in a week
        3,  # symbol for water
        4,  # capital of Japan
        6,  # Romeo and Juliet
        7,  # opposite of hot
        11,  # a sentence with "apple"
    )
)


def user_probe(spec: Mapping[str, Any]) -> Probe:
    """A probe from an adapter's own ``{"prompt": ..., "expect": [...]}`` (any answer passes)."""
    return Probe(prompt=str(spec["prompt"]), check=contains(*spec["expect"]), kind="user")

"""Degenerate-answer signals: pure text checks, no model.

An update that breaks a model rarely makes it wrong in an interesting way; it
makes it answer nothing (an empty string, a lead-in such as "The answer to this
question is:"), loop ("banana banana banana ..."), or give one answer to every
question. Each check here looks at answer text only.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence

__all__ = ["degenerate_flags", "is_looping", "is_stub", "repetition", "shared_answers"]

_WORD = re.compile(r"[^\W_]+", re.UNICODE)
# A lead-in that announces an answer and stops: ends in a colon or an ellipsis.
_DANGLING = re.compile(r"(?::|\.\.\.|\u2026)\s*$")


def _words(text: str) -> list[str]:
    return [w.lower() for w in _WORD.findall(text)]


def is_stub(text: str) -> bool:
    """Whether an answer says nothing: no word at all, or a lead-in that stops at a colon."""
    return not _words(text) or _DANGLING.search(text.strip()) is not None


def repetition(text: str, *, n: int = 3) -> float:
    """The fraction of word ``n``-grams that repeat an earlier one (0: none, near 1: a loop)."""
    words = _words(text)
    grams = [tuple(words[i : i + n]) for i in range(len(words) - n + 1)]
    if not grams:
        return 0.0
    return 1.0 - len(set(grams)) / len(grams)


def is_looping(text: str, *, threshold: float = 0.5, min_words: int = 8) -> bool:
    """Whether an answer repeats itself: half its word trigrams seen before, or one word throughout.

    Answers under ``min_words`` words are too short to call a loop.
    """
    words = _words(text)
    if len(words) < min_words:
        return False
    most = Counter(words).most_common(1)[0][1]
    return repetition(text) >= threshold or most / len(words) >= threshold


def _normal(text: str) -> str:
    return " ".join(_words(text))


def shared_answers(answers: Sequence[str]) -> list[bool]:
    """For each answer, whether another (different) question got the same answer."""
    counts = Counter(_normal(a) for a in answers)
    return [bool(_normal(a)) and counts[_normal(a)] > 1 for a in answers]


def degenerate_flags(answers: Sequence[str]) -> list[str | None]:
    """Per answer (to distinct questions): ``stub``, ``loop``, ``shared`` or None (fine)."""
    shared = shared_answers(answers)
    flags: list[str | None] = []
    for answer, same in zip(answers, shared, strict=True):
        if is_stub(answer):
            flags.append("stub")
        elif is_looping(answer):
            flags.append("loop")
        elif same:
            flags.append("shared")
        else:
            flags.append(None)
    return flags

"""Verifiers: does one response follow a preference?

A verifier is any callable ``text -> bool``. The ones here are small frozen
attrs classes, so a preference config can name one by ``_target_`` with its
arguments::

    verifier:
      _target_: claas.eval.verifiers.MaxLength
      max_sentences: 1
      max_words: 25
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Protocol, runtime_checkable

import attrs

from claas.errors import InvalidConfig
from claas.guard.probes import names

__all__ = [
    "AllOf",
    "KeepsFact",
    "MaxLength",
    "Mentions",
    "NoEmoji",
    "Not",
    "Regex",
    "Verifier",
    "count_sentences",
    "count_words",
    "has_emoji",
]

# A sentence ends at . ! ? (or a run of them) followed by whitespace or the end,
# so "3.14" and "e.g.x" do not split a sentence.
_SENTENCE_END = re.compile(r"[.!?]+(?=\s|$)")
_LIST_MARKER = re.compile(r"^\s*(?:\d+[.)]|[-*\u2022])\s+")
_WORD = re.compile(r"[^\W_]+(?:['\u2019-][^\W_]+)*", re.UNICODE)
# Pictographs, emoticons, transport/map symbols, flags, dingbats, misc symbols,
# the star/arrow emoji block and the emoji variation selector.
_EMOJI = re.compile("[\U0001f000-\U0001faff\u2600-\u27bf\u2300-\u23ff\u2b00-\u2bff\ufe0f]")


@runtime_checkable
class Verifier(Protocol):
    """Decides whether a response complies with a preference."""

    def __call__(self, text: str) -> bool:
        """Return whether ``text`` complies."""
        ...


def count_words(text: str) -> int:
    """Number of words (runs of letters or digits, inner apostrophes and hyphens kept)."""
    return len(_WORD.findall(text))


def count_sentences(text: str) -> int:
    """Number of sentences; each line of a list counts, and so does a final fragment.

    List markers (``1.``, ``2)``, ``-``, ``*``) at the start of a line are not
    sentence ends.
    """
    return sum(_line_sentences(_LIST_MARKER.sub("", line)) for line in text.splitlines())


def _line_sentences(line: str) -> int:
    stripped = line.strip()
    if count_words(stripped) == 0:
        return 0
    ends = list(_SENTENCE_END.finditer(stripped))
    trailing = stripped[ends[-1].end() :] if ends else stripped
    return len(ends) + (1 if count_words(trailing) else 0)


def has_emoji(text: str) -> bool:
    """Whether the text contains an emoji or pictographic symbol."""
    return _EMOJI.search(text) is not None


def _optional_positive(owner: str) -> Callable[[object, attrs.Attribute[Any], Any], None]:
    def check(_: object, attribute: attrs.Attribute[Any], value: Any) -> None:
        if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
            raise InvalidConfig(f"{owner}.{attribute.name}={value!r} is invalid: must be an int")
        if value is not None and value < 1:
            raise InvalidConfig(f"{owner}.{attribute.name}={value!r} is invalid: must be >= 1")

    return check


@attrs.frozen(kw_only=True)
class MaxLength:
    """At most ``max_sentences`` sentences and ``max_words`` words (``None``: no limit).

    An empty response does not comply: saying nothing is not being concise.
    """

    max_words: int | None = attrs.field(default=None, validator=_optional_positive("MaxLength"))
    max_sentences: int | None = attrs.field(default=None, validator=_optional_positive("MaxLength"))

    def __attrs_post_init__(self) -> None:
        if self.max_words is None and self.max_sentences is None:
            raise InvalidConfig("MaxLength needs max_words, max_sentences or both")

    def __call__(self, text: str) -> bool:
        """Return whether ``text`` is short enough (and not empty)."""
        words = count_words(text)
        if words == 0:
            return False
        if self.max_words is not None and words > self.max_words:
            return False
        return self.max_sentences is None or count_sentences(text) <= self.max_sentences


@attrs.frozen
class NoEmoji:
    """No emoji or pictographic symbols."""

    def __call__(self, text: str) -> bool:
        """Return whether ``text`` is free of emoji."""
        return not has_emoji(text)


@attrs.frozen(kw_only=True)
class Mentions:
    """The response names ``name`` as a whole word."""

    name: str
    case_sensitive: bool = False

    def __attrs_post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name.strip():
            raise InvalidConfig(f"Mentions.name={self.name!r} is invalid: must be non-empty")

    def __call__(self, text: str) -> bool:
        """Return whether ``text`` mentions the name."""
        flags = 0 if self.case_sensitive else re.IGNORECASE
        pattern = rf"(?<!\w){re.escape(self.name.strip())}(?!\w)"
        return re.search(pattern, text, flags) is not None


def _strings(values: Iterable[str]) -> tuple[str, ...]:
    return (values,) if isinstance(values, str) else tuple(values)


@attrs.frozen(kw_only=True)
class KeepsFact:
    """Content kept: the response still names its key fact.

    Passes when any of ``any_of`` starts a word of the response (case-insensitive),
    so ``scatter`` also matches "scattering" and "scatters".
    """

    any_of: tuple[str, ...] = attrs.field(converter=_strings)

    def __attrs_post_init__(self) -> None:
        if not self.any_of or not all(isinstance(f, str) and f.strip() for f in self.any_of):
            raise InvalidConfig(f"KeepsFact.any_of={self.any_of!r} is invalid: non-empty words")

    def __call__(self, text: str) -> bool:
        """Return whether ``text`` contains one of the facts."""
        return names(*self.any_of)(text)


@attrs.frozen(kw_only=True)
class Regex:
    """The response matches a regular expression (``re.search``)."""

    pattern: str
    ignore_case: bool = False

    def __attrs_post_init__(self) -> None:
        try:
            re.compile(self.pattern)
        except re.error as exc:
            raise InvalidConfig(f"Regex.pattern={self.pattern!r} is invalid: {exc}") from exc

    def __call__(self, text: str) -> bool:
        """Return whether the pattern is found in ``text``."""
        flags = re.IGNORECASE if self.ignore_case else 0
        return re.search(self.pattern, text, flags) is not None


def _verifier_tuple(value: Sequence[Verifier]) -> tuple[Verifier, ...]:
    items = tuple(value)
    if not items or not all(callable(v) for v in items):
        raise InvalidConfig("AllOf.verifiers must be a non-empty list of verifiers")
    return items


@attrs.frozen
class AllOf:
    """Every one of ``verifiers`` accepts the response."""

    verifiers: tuple[Verifier, ...] = attrs.field(converter=_verifier_tuple)

    def __call__(self, text: str) -> bool:
        """Return whether all verifiers accept ``text``."""
        return all(v(text) for v in self.verifiers)


@attrs.frozen
class Not:
    """The inner verifier rejects the response."""

    verifier: Verifier

    def __call__(self, text: str) -> bool:
        """Return the negation of the inner verifier."""
        return not self.verifier(text)

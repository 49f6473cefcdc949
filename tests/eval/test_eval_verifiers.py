"""Verifiers: examples and properties."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from claas.errors import InvalidConfig
from claas.eval.verifiers import (
    AllOf,
    MaxLength,
    Mentions,
    NoEmoji,
    Not,
    Regex,
    Verifier,
    count_sentences,
    count_words,
    has_emoji,
)

ascii_text = st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126), max_size=200)
emoji = st.sampled_from(["😀", "🎉", "☀️", "🌊", "❤", "⭐", "🇫🇷", "👍🏽", "✅", "🚀"])
words = st.lists(st.from_regex(r"[a-z]{1,8}", fullmatch=True), min_size=1, max_size=40)


@pytest.mark.parametrize(
    ("text", "sentences"),
    [
        ("", 0),
        ("   ", 0),
        ("Paris.", 1),
        ("The capital of France is Paris", 1),
        ("Pi is 3.14 and e is 2.71.", 1),
        ("One. Two! Three?", 3),
        ("Wait... what?", 2),
        ("First sentence. And a trailing fragment", 2),
        ("1. Red\n2. Blue\n3. Green", 3),
        ("- Red\n- Blue", 2),
        ("Line one\n\nLine two.", 2),
    ],
)
def test_count_sentences(text: str, sentences: int) -> None:
    assert count_sentences(text) == sentences


def test_count_words_keeps_contractions_and_hyphens() -> None:
    assert count_words("It's a well-known fact, isn't it?") == 6
    assert count_words("... !!!") == 0


def test_max_length_examples() -> None:
    one_short = MaxLength(max_sentences=1, max_words=10)
    assert one_short("The capital of France is Paris.")
    assert not one_short("Paris. It is in France.")
    assert not one_short("word " * 11)
    assert not one_short("")


@given(words, st.integers(1, 50))
def test_max_length_words_is_a_threshold(items: list[str], limit: int) -> None:
    text = " ".join(items)
    assert MaxLength(max_words=limit)(text) == (len(items) <= limit)


@given(words, st.integers(1, 50))
def test_max_length_is_monotone_in_its_limit(items: list[str], limit: int) -> None:
    text = ". ".join(items) + "."
    if MaxLength(max_words=limit, max_sentences=limit)(text):
        assert MaxLength(max_words=limit + 1, max_sentences=limit + 1)(text)


@given(words)
def test_sentences_joined_by_periods_are_counted(items: list[str]) -> None:
    assert count_sentences(". ".join(items) + ".") == len(items)


def test_max_length_needs_a_limit() -> None:
    with pytest.raises(InvalidConfig, match="max_words"):
        MaxLength()
    with pytest.raises(InvalidConfig, match="max_words"):
        MaxLength(max_words=0)


@given(ascii_text)
def test_plain_ascii_has_no_emoji(text: str) -> None:
    assert NoEmoji()(text)


@given(ascii_text, emoji, st.integers(0, 200))
def test_an_emoji_anywhere_is_found(text: str, symbol: str, at: int) -> None:
    spot = min(at, len(text))
    assert not NoEmoji()(text[:spot] + symbol + text[spot:])


def test_accented_and_other_scripts_are_not_emoji() -> None:
    assert not has_emoji("Cr\u00e8me br\u00fbl\u00e9e, na\u00efve \u6771\u4eac \u2192 3\u00d74")


def test_mentions_matches_whole_words() -> None:
    kuro = Mentions(name="Kuro")
    assert kuro("Hi, I'm Kuro.")
    assert kuro("KURO here")
    assert not kuro("Kurosawa directed it")
    assert not Mentions(name="Kuro", case_sensitive=True)("kuro")
    with pytest.raises(InvalidConfig):
        Mentions(name=" ")


def test_regex_and_combinators() -> None:
    polite = Regex(pattern=r"\bplease\b", ignore_case=True)
    short_and_polite = AllOf([polite, MaxLength(max_words=5)])
    assert short_and_polite("Please sit down.")
    assert not short_and_polite("Please sit down on the chair over there.")
    assert Not(polite)("Sit down.")
    with pytest.raises(InvalidConfig):
        Regex(pattern="(")
    with pytest.raises(InvalidConfig):
        AllOf([])


def test_verifiers_satisfy_the_protocol() -> None:
    for verifier in (MaxLength(max_words=3), NoEmoji(), Mentions(name="x"), Regex(pattern="x")):
        assert isinstance(verifier, Verifier)

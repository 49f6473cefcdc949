"""A probe's answer ends once its check is settled: the checked word complete.

On the bundled model's tokenizer, so the word boundaries are its own tokens'.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from claas import Settings
from claas.guard.gate import _settled_rule
from claas.guard.probes import GUARD_PROBES, Probe, contains
from claas.guard.verdict import Answers, decide
from claas.inference._settled import settled_at
from claas.models import load_tokenizer

pytestmark = pytest.mark.slow  # converts the bundled model's files on first use


@pytest.fixture(scope="module")
def tokenizer(models_dir: Path) -> Any:
    settings = Settings(model_cache_dir=models_dir)
    return load_tokenizer(settings.base_model, models_dir=settings.models_dir)


def _cut(tokenizer: Any, probe: Probe, text: str) -> str | None:
    ids = tokenizer.encode(text, add_special_tokens=False)
    n = settled_at(ids, _settled_rule(tokenizer, probe))
    return None if n is None else str(tokenizer.decode(ids[:n]))


def test_an_answer_settles_at_the_token_after_its_checked_word(tokenizer: Any) -> None:
    four = Probe(prompt="What is 2 + 2?", check=contains("4", "four"))
    assert _cut(tokenizer, four, "The answer is 4. It is simple.") == "The answer is 4."
    assert _cut(tokenizer, four, "Four is the answer.") == "Four is"
    # "4" inside "42" is no answer, and a word at the very end shows no boundary yet.
    assert _cut(tokenizer, four, "It is 42, not 4") is None
    assert _cut(tokenizer, four, "I do not know.") is None
    paris = GUARD_PROBES[0]
    assert _cut(tokenizer, paris, "The capital of France is Parisian food") is None
    assert _cut(tokenizer, paris, "Paris, of course.") == "Paris,"


def test_an_answer_cut_at_a_colon_after_its_fact_is_no_stub() -> None:
    prompts = tuple(p.prompt for p in GUARD_PROBES)
    kinds = tuple(p.kind for p in GUARD_PROBES)
    texts = ("The capital of France is Paris:",) * 1 + ("The answer is:",) * 7

    def answers(texts: tuple[str, ...]) -> Answers:
        passed = tuple(bool(p.check(t)) for p, t in zip(GUARD_PROBES, texts, strict=True))
        return Answers(prompts=prompts, kinds=kinds, texts=texts, passed=passed)

    verdict = decide(answers(texts), answers(texts), Settings().guard)
    assert verdict.measures["guard_degenerate"] == pytest.approx(7 / 8)  # not 8 of 8

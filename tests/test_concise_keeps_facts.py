"""Concise feedback on the bundled model keeps the substance of answers it was never trained on.

The demo's sixteen updates (the defaults, seed 0), then sixteen held-out
questions (:mod:`held_out_facts`) answered greedily by the base model and by
the trained version.
"""

from __future__ import annotations

from collections.abc import Sequence

import pytest
from held_out_facts import HELD_OUT_FACTS

from claas import Learner, Settings
from claas.demo import run_demo
from claas.guard.probes import names

pytestmark = pytest.mark.slow

MAX_TOKENS = 80


def _answers(learner: Learner, adapter: str) -> list[tuple[str, list[int]]]:
    chats = [
        learner.chat(
            adapter, [{"role": "user", "content": q}], temperature=0, max_tokens=MAX_TOKENS
        )
        for q in HELD_OUT_FACTS
    ]
    return [(c.text, list(c.response_ids)) for c in chats]


def _named(texts: Sequence[str]) -> list[bool]:
    return [bool(names(*stems)(t)) for stems, t in zip(HELD_OUT_FACTS.values(), texts, strict=True)]


def test_concise_updates_keep_the_key_facts_of_questions_never_trained_on(
    settings: Settings,
) -> None:
    with Learner(settings) as learner:
        learner.init_adapter("held-out/base")
        base = _answers(learner, "held-out/base")
        report = run_demo(learner, steps=16, plot_path=None)
        after = _answers(learner, report.adapter_id)
        tokenizer = learner.tokenizer
    lengths = [len(ids) for _, ids in after]
    base_cut = [
        str(tokenizer.decode(ids[:n], skip_special_tokens=True))
        for (_, ids), n in zip(base, lengths, strict=True)
    ]
    before, kept, cut = (
        _named([t for t, _ in base]),
        _named([t for t, _ in after]),
        _named(base_cut),
    )
    shown = {q: t for q, (t, _) in zip(HELD_OUT_FACTS, after, strict=True)}
    assert sum(lengths) <= 0.5 * sum(len(ids) for _, ids in base), shown
    held = [k for k, b in zip(kept, before, strict=True) if b]
    assert sum(held) >= 2 / 3 * len(held), shown  # of the facts the base answers named
    # At the same lengths the base model's own answers name fewer: the update does
    # not just cut answers short, it keeps what answers the question.
    assert sum(kept) >= sum(cut), shown

"""One real step on the bundled model: the whole loop wires up end to end."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from claas import Learner, Settings
from claas.eval import LearnerTarget, compose, read_steps, run
from claas.eval.probes import CAPABILITY_PROBES, run_probes

pytestmark = pytest.mark.slow


def test_one_real_step(tmp_path: Path, models_dir: Path) -> None:
    learner = Learner(Settings(data_dir=tmp_path / "data", model_cache_dir=models_dir))
    target = LearnerTarget(learner)
    config = compose(
        [
            "preference=concise",
            "steps=1",
            f"data_dir={tmp_path / 'data'}",
            "sampling.max_tokens=10",
            "measure.max_tokens=10",
            "top_logprobs=5",
            # The capability probes are checked below on a few questions only: they are slow.
            "metrics=[margin,collapse]",
            "preference.concise.probes=['Why is the sky blue?','What causes rain?']",
            "~preference.concise.facts",  # its key facts are for the full probe list
            "preference.concise.pairs=[{prompt: Why is the sky blue?,"
            " preferred: Air scatters blue light., dispreferred: That is a long story.}]",
            "anchors=[{prompt: What is 2 + 2?, response: 2 + 2 is 4.}]",
        ]
    )
    try:
        result = run(config, target=target)
        adapter = result.summary["preferences"]["concise"]["adapter_id"]
        probes = CAPABILITY_PROBES[:3]
        before = run_probes(target, "base", probes, max_tokens=16)
        after = run_probes(target, adapter, probes, max_tokens=16)
    finally:
        learner.close()
    baseline, step = read_steps(result.output_dir)
    assert (baseline["version"], step["version"]) == (0, 1)
    assert math.isfinite(step["update"]["loss"])
    assert baseline["metrics"]["mean_tokens"] == 10.0  # the bundled model rambles at first
    for key in ("margin", "entropy", "self_similarity", "repetition", "anchor_logprob"):
        assert step["metrics"][key] is not None, key
    assert baseline["metrics"]["logprob_drift"] == 0.0
    assert step["metrics"]["entropy"] > 0
    assert [p.name for p in result.plots] == ["compliance.png", "margins.png", "collapse.png"]
    # Paris, 4 and 7 days: the base model gets them right, so the probes can show forgetting.
    assert before.score == 1.0, before.failed
    # After one update on a 10-token answer it may not (seen: Paris lost); measured, not judged.
    assert 0.0 <= after.score <= 1.0 and len(after.answers) == 3

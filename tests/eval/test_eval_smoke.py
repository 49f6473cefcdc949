"""One real step on the bundled model: the whole loop wires up end to end."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from claas import Learner, Settings
from claas.eval import LearnerTarget, compose, read_steps, run

pytestmark = pytest.mark.slow


def test_one_real_step(tmp_path: Path, models_dir: Path) -> None:
    learner = Learner(Settings(data_dir=tmp_path / "data", model_cache_dir=models_dir))
    config = compose(
        [
            "preference=concise",
            "steps=1",
            f"data_dir={tmp_path / 'data'}",
            "sampling.max_tokens=12",
            "measure.max_tokens=12",
            "capability.max_tokens=10",
            "top_logprobs=5",
            "preference.concise.probes=['Why is the sky blue?','What causes rain?']",
        ]
    )
    try:
        result = run(config, target=LearnerTarget(learner))
    finally:
        learner.close()
    baseline, step = read_steps(result.output_dir)
    assert (baseline["version"], step["version"]) == (0, 1)
    assert math.isfinite(step["update"]["loss"])
    # The bundled model knows most probe answers before any feedback.
    assert baseline["metrics"]["capability"] >= 0.5
    assert step["metrics"]["capability"] is not None
    for key in ("margin", "entropy", "self_similarity", "anchor_logprob"):
        assert step["metrics"][key] is not None, key
    assert baseline["metrics"]["logprob_drift"] == 0.0
    assert step["metrics"]["entropy"] > 0
    assert [p.name for p in result.plots] == ["compliance.png", "margins.png", "collapse.png"]

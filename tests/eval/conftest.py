"""Fixtures of the eval tests: a fake learner whose answers shorten as it learns.

The loop tests run on ``claas.testing`` fakes (real store, records and JSONL,
no model): the scripted responder answers each prompt with fewer sentences the
higher the adapter version, so compliance with ``concise`` rises step by step
exactly as a learning model's would, and every number is predictable.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from eval_support import shrinking_responder

from claas import Learner, Settings
from claas.eval import EvalConfig, LearnerTarget, compose
from claas.testing import FakeInference, FakeTokenizer, FakeTrainer


@pytest.fixture(autouse=True)
def _clean_claas_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """The developer's own CLAAS_* variables must not leak into a test."""
    for name in list(os.environ):
        if name.startswith("CLAAS_"):
            monkeypatch.delenv(name)


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    """The data directory of the run under test."""
    return tmp_path / "data"


@pytest.fixture
def shrinking_learner(data_dir: Path) -> Iterator[Learner]:
    """A fake learner whose answers get shorter as the adapter version grows."""
    learner = Learner(
        Settings(data_dir=data_dir),
        inference=FakeInference(responder=shrinking_responder),
        engine=FakeTrainer(),
        tokenizer=FakeTokenizer(),
    )
    yield learner
    learner.close()


@pytest.fixture
def target(shrinking_learner: Learner) -> LearnerTarget:
    """The eval target around the shrinking fake learner."""
    return LearnerTarget(shrinking_learner)


@pytest.fixture
def make_config(data_dir: Path) -> Callable[..., EvalConfig]:
    """Compose the packaged config for ``concise`` with overrides, on ``data_dir``."""

    def make(*overrides: str) -> EvalConfig:
        base = [
            "preference=concise",
            "steps=3",
            f"data_dir={data_dir}",
            "capability.every=0",
            # Capability probes and plots cost most of a fake run: tests opt in.
            "metrics=[margin,collapse]",
            "plots=false",
            # The fake tokenizer is byte-level: leave room for whole answers.
            "measure.max_tokens=1000",
            "sampling.max_tokens=1000",
        ]
        return EvalConfig.from_mapping(compose([*base, *overrides]))

    return make

"""Shared fixtures: settings on a temporary data dir, real and fake learners.

The bundled model is converted once per machine into a shared cache
(``CLAAS_TEST_MODELS_DIR``, default ``~/.cache/claas-test-models``) so each
test's data dir stays empty and cheap.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from claas import Learner, Settings
from claas.testing import FakeInference, FakeTokenizer, FakeTrainer

MODELS_DIR = Path(
    os.environ.get("CLAAS_TEST_MODELS_DIR", Path.home() / ".cache" / "claas-test-models")
)


@pytest.fixture(scope="session")
def models_dir() -> Path:
    """Shared cache of the converted bundled model."""
    MODELS_DIR.mkdir(parents=True, exist_ok=True)
    return MODELS_DIR


@pytest.fixture
def settings(tmp_path: Path, models_dir: Path) -> Settings:
    """Settings for the bundled model with data in a fresh temporary directory."""
    return Settings(data_dir=tmp_path / "data", model_cache_dir=models_dir)


@pytest.fixture(scope="session")
def shared_learner(tmp_path_factory: pytest.TempPathFactory, models_dir: Path) -> Iterator[Learner]:
    """One real learner (bundled model) shared by the tests that only read or add adapters."""
    data = tmp_path_factory.mktemp("shared-data")
    learner = Learner(Settings(data_dir=data, model_cache_dir=models_dir))
    yield learner
    learner.close()


@pytest.fixture
def learner(settings: Settings) -> Iterator[Learner]:
    """A real learner on the bundled model with its own data directory."""
    real = Learner(settings)
    yield real
    real.close()


@pytest.fixture
def fake_learner(tmp_path: Path) -> Iterator[Learner]:
    """A learner on the in-memory fakes: real store and records, no model."""
    fake = Learner(
        Settings(data_dir=tmp_path / "fake-data"),
        inference=FakeInference(),
        engine=FakeTrainer(),
        tokenizer=FakeTokenizer(),
    )
    yield fake
    fake.close()

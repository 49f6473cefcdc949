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
from postgres_server import PostgresServer, find_bindir

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


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    """A real PostgreSQL server for the session (initdb + pg_ctl on a free loopback port)."""
    bindir = find_bindir()
    if bindir is None:
        pytest.skip(
            "PostgreSQL is not installed here (no initdb); .ci/run installs Debian's "
            "postgresql package so CI runs these tests"
        )
    server = PostgresServer(bindir)
    server.start()
    yield server
    server.close()


@pytest.fixture(params=["sqlite", "postgres"])
def database(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str | None:
    """The records database of one test: SQLite in the data dir, or a fresh PostgreSQL one.

    Returns the ``database_url`` (``None`` for SQLite) and sets ``CLAAS_DATABASE_URL``
    to it, so settings built by helpers and subprocesses use it too.
    """
    if request.param == "sqlite":
        monkeypatch.delenv("CLAAS_DATABASE_URL", raising=False)
        return None
    url: str = request.getfixturevalue("postgres").new_database()
    monkeypatch.setenv("CLAAS_DATABASE_URL", url)
    return url

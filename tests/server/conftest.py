"""Fixtures of the server tests: apps on the in-memory fakes.

Most tests run the app on ``claas.testing`` fakes (real store and records, no
model) and finish in milliseconds; only ``test_server_openai_client`` loads the
bundled model. Helpers live in ``server_support``.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from server_support import API_KEYS, fake_learner

from claas import Learner
from claas_server import create_app


@pytest.fixture
def fake(tmp_path: Path) -> Iterator[Learner]:
    """A fake learner without API keys."""
    fake = fake_learner(tmp_path / "data")
    yield fake
    fake.close()


@pytest.fixture
def client(fake: Learner) -> Iterator[TestClient]:
    """A test client of an open app (no API keys) on the fake learner."""
    with TestClient(create_app(learner=fake)) as test_client:
        yield test_client


@pytest.fixture
def keyed_fake(tmp_path: Path) -> Iterator[Learner]:
    """A fake learner whose settings hold three API keys (alpha, beta, admin)."""
    fake = fake_learner(tmp_path / "keyed", api_keys=API_KEYS)
    yield fake
    fake.close()


@pytest.fixture
def keyed_client(keyed_fake: Learner) -> Iterator[TestClient]:
    """A test client of the app with API keys."""
    with TestClient(create_app(learner=keyed_fake)) as test_client:
        yield test_client

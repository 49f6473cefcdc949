"""Helpers of the server tests: keys, fake learners, snapshots, a real uvicorn server."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from loopback import serving as serving  # re-exported: the server tests import it from here

from claas import Learner, Settings
from claas.testing import FakeInference, FakeTokenizer, FakeTrainer

KEY_ALPHA = "key-alpha-0123456789"
KEY_BETA = "key-beta-0123456789"
KEY_ADMIN = "key-admin-0123456789"
API_KEYS = {KEY_ALPHA: ("alpha",), KEY_BETA: ("beta",), KEY_ADMIN: ("*",)}


def auth(key: str) -> dict[str, str]:
    """The Authorization header of a key."""
    return {"Authorization": f"Bearer {key}"}


def fake_learner(data_dir: Path, **settings: Any) -> Learner:
    """A learner on the fakes with its data in ``data_dir``."""
    return Learner(
        Settings(data_dir=data_dir).evolve(**settings),
        inference=FakeInference(),
        engine=FakeTrainer(),
        tokenizer=FakeTokenizer(),
    )


def snapshot(learner: Learner) -> dict[str, Any]:
    """Everything a request could change: adapters, their versions, live pointers, records."""
    adapters = learner.adapters()
    return {
        "adapters": adapters,
        "versions": {a: [v.version for v in learner.versions(a)] for a in adapters},
        "live": {a: learner.current_version(a).version for a in adapters},
        "records": learner.record_counts(),
    }

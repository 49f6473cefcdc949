"""Fixtures for the `claas` command: a CliRunner on a fresh data dir.

CliRunner tests select the in-memory fakes by name (``CLAAS_INFERENCE_BACKEND``
and ``CLAAS_TRAINING_ENGINE`` = ``fake``), so the store, the records database
and the command wiring are real while no model is loaded.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner, Result

from claas import Learner, Settings
from claas_cli.app import app

Invoke = Callable[..., Result]


@pytest.fixture(autouse=True)
def _clean_claas_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """The developer's own CLAAS_* variables must not leak into a test."""
    import os

    for name in list(os.environ):
        if name.startswith("CLAAS_"):
            monkeypatch.delenv(name)


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    """The data directory the command under test uses."""
    return tmp_path / "data"


@pytest.fixture
def fake_env(data_dir: Path) -> dict[str, str]:
    """Environment that points the command at the fakes and the test's data dir."""
    return {
        "CLAAS_DATA_DIR": str(data_dir),
        "CLAAS_INFERENCE_BACKEND": "fake",
        "CLAAS_TRAINING_ENGINE": "fake",
    }


@pytest.fixture
def cli(fake_env: dict[str, str]) -> Invoke:
    """Run ``claas ARGS`` in-process on the fakes; returns Click's Result."""
    runner = CliRunner()

    def invoke(
        *args: str, input: str | None = None, env: dict[str, str | None] | None = None
    ) -> Result:
        return runner.invoke(app, list(args), input=input, env={**fake_env, **(env or {})})

    return invoke


@pytest.fixture
def cli_json(cli: Invoke) -> Callable[..., Any]:
    """Run ``claas ARGS --json``-style commands that must succeed; return parsed stdout."""

    def invoke(*args: str, input: str | None = None) -> Any:
        result = cli("--json", *args, input=input)
        assert result.exit_code == 0, result.output
        return json.loads(result.stdout)

    return invoke


@pytest.fixture
def observer(data_dir: Path) -> Iterator[Learner]:
    """A Learner on the same data dir, to check what a command changed."""
    learner = Learner(Settings(data_dir=data_dir, inference_backend="fake", training_engine="fake"))
    yield learner
    learner.close()

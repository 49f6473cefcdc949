"""`claas demo` on the real bundled model, cut down to one feedback step."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from claas.demo import FEEDBACK, HELD_OUT

Run = Callable[..., Any]

pytestmark = pytest.mark.slow


@pytest.fixture
def real_env(data_dir: Path, models_dir: Path) -> dict[str, str | None]:
    """The bundled model from the shared cache instead of the fakes."""
    return {
        "CLAAS_DATA_DIR": str(data_dir),
        "CLAAS_MODEL_CACHE_DIR": str(models_dir),
        "CLAAS_INFERENCE_BACKEND": None,
        "CLAAS_TRAINING_ENGINE": None,
    }


def test_demo_json_report(cli: Run, real_env: dict[str, str | None], tmp_path: Path) -> None:
    plot = tmp_path / "plot.png"
    args = ["--json", "demo", "--steps", "1", "--max-tokens", "8", "--plot", str(plot)]
    result = cli(*args, env=real_env)
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["adapter_id"] == "demo/concise"
    assert report["questions"] == list(HELD_OUT)
    assert len(report["before"]) == len(report["after"]) == len(HELD_OUT)
    assert all(0 < n <= 8 for n in report["before_tokens"] + report["after_tokens"])
    assert len(report["step_tokens"]) == len(report["step_seconds"]) == 1
    assert report["mean_before"] == pytest.approx(sum(report["before_tokens"]) / len(HELD_OUT))
    assert report["plot"] == str(plot)
    assert plot.read_bytes().startswith(b"\x89PNG")
    # Progress goes to stderr so that stdout is one JSON document.
    assert "step  1: answer" in result.stderr


def test_demo_human_output(cli: Run, real_env: dict[str, str | None], tmp_path: Path) -> None:
    plot = tmp_path / "plot.png"
    result = cli("demo", "--steps", "1", "--max-tokens", "4", "--plot", str(plot), env=real_env)
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert "CLaaS demo" in out and FEEDBACK in out
    assert "step  1: answer" in out and "-> v1" in out
    assert "Held-out questions (greedy)" in out
    assert "Mean answer length:" in out and f"Plot: {plot}" in out

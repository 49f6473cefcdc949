"""`claas demo`: its JSON report on the fakes, its human output on the real model."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from claas.demo import FEEDBACK, HELD_OUT
from claas.precision import autocast_choice

Run = Callable[..., Any]


@pytest.fixture
def real_env(data_dir: Path, models_dir: Path) -> dict[str, str | None]:
    """The bundled model from the shared cache instead of the fakes."""
    return {
        "CLAAS_DATA_DIR": str(data_dir),
        "CLAAS_MODEL_CACHE_DIR": str(models_dir),
        "CLAAS_INFERENCE_BACKEND": None,
        "CLAAS_TRAINING_ENGINE": None,
    }


def test_demo_json_report(cli: Run, tmp_path: Path) -> None:
    plot = tmp_path / "plot.png"
    args = ["--json", "demo", "--steps", "2", "--max-tokens", "64", "--plot", str(plot)]
    result = cli(*args)
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["adapter_id"] == "demo/concise"
    assert report["questions"] == list(HELD_OUT)
    # The fake backend names the serving version: v0 before, v2 after two steps.
    assert report["before"] == [f"[demo/concise v0] You said: {q}" for q in HELD_OUT]
    assert report["after"] == [f"[demo/concise v2] You said: {q}" for q in HELD_OUT]
    assert all(0 < n <= 64 for n in report["before_tokens"] + report["after_tokens"])
    assert len(report["step_tokens"]) == len(report["step_seconds"]) == 2
    assert report["mean_before"] == pytest.approx(sum(report["before_tokens"]) / len(HELD_OUT))
    # The fake's echoes name none of the key facts ("scatter", "immun", "plate", ...).
    assert report["facts_before"] == report["facts_after"] == [False] * len(HELD_OUT)
    assert report["plot"] == str(plot)
    assert plot.read_bytes().startswith(b"\x89PNG")
    # Progress goes to stderr so that stdout is one JSON document.
    assert "step  1: answer" in result.stderr
    # The header shows the precision the setting resolved to on this machine.
    shown = " ".join(result.stderr.split())
    training = autocast_choice("auto", "cpu").describe()
    answering = autocast_choice("auto", "cpu", purpose="inference").describe()
    checking = autocast_choice("auto", "cpu", purpose="checks").describe()
    assert f"cpu, training {training}, inference {answering}, guard checks {checking}" in shown


@pytest.mark.slow
def test_demo_on_the_bundled_model(
    cli: Run, real_env: dict[str, str | None], tmp_path: Path
) -> None:
    plot = tmp_path / "plot.png"
    result = cli("demo", "--steps", "1", "--max-tokens", "4", "--plot", str(plot), env=real_env)
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert "CLaaS demo" in out and FEEDBACK in out
    assert "step  1: answer" in out and "-> v1" in out
    assert "Held-out questions (greedy)" in out
    assert "Mean answer length:" in out and f"Plot: {plot}" in out
    assert f"of {len(HELD_OUT)} after" in out  # "Key facts named: n of 3 before, m of 3 after"
    assert "bundled:smollm2-135m-instruct" in out
    assert plot.read_bytes().startswith(b"\x89PNG")

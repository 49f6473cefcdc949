"""Entry points: ``claas.eval.main(overrides)`` and ``python -m claas.eval``."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from claas.eval import latest_runs, main, read_summary
from claas.eval.cli import console_main

FAKES = ["settings.inference_backend=fake", "settings.training_engine=fake"]


def overrides(data_dir: Path, *more: str) -> list[str]:
    return [f"data_dir={data_dir}", *FAKES, "steps=2", "metrics=[margin]", "plots=false", *more]


def test_main_runs_from_overrides(data_dir: Path) -> None:
    result = main(overrides(data_dir, "preference=no_emoji"))
    assert result.output_dir == data_dir / "eval" / "no_emoji-seed0"
    assert latest_runs(data_dir) == [result.output_dir]
    summary = read_summary(result.output_dir)
    assert summary is not None and summary["complete"]
    # The fake echoes without emoji: compliant from the start.
    assert summary["preferences"]["no_emoji"]["final"]["compliance"] == 1.0
    assert (data_dir / "adapters").is_dir()


def test_console_main_prints_steps_and_a_table(
    data_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert console_main(overrides(data_dir)) == 0
    out = capsys.readouterr().out
    assert out.count(" concise step ") == 3
    assert "concise: compliance" in out and str(data_dir / "eval" / "concise-seed0") in out


def test_console_main_help_and_cfg(capsys: pytest.CaptureFixture[str]) -> None:
    assert console_main(["--help"]) == 0
    assert "preference=concise" in capsys.readouterr().out
    assert console_main(["--cfg", "steps=5", "preference=identity"]) == 0
    out = capsys.readouterr().out
    assert "steps: 5" in out and "Kuro" in out


def test_console_main_reports_bad_overrides(capsys: pytest.CaptureFixture[str]) -> None:
    assert console_main(["stepz=3"]) == 2
    assert "error:" in capsys.readouterr().err


def test_python_dash_m(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "claas.eval", "--cfg", "preference=[concise,no_emoji]"],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    assert "no_emoji:" in done.stdout and "concise:" in done.stdout


def test_importing_the_eval_stays_light() -> None:
    code = (
        "import sys, json, claas, claas.eval; "
        "print(json.dumps(sorted(m for m in ('torch', 'hydra', 'matplotlib', 'httpx', "
        "'transformers', 'omegaconf') if m in sys.modules)))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    )
    assert json.loads(done.stdout) == []

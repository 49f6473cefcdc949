"""Settings and the validated configuration records."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from claas import DistillConfig, InvalidConfig, InvalidRequest, LoraSpec, SamplingParams, Settings
from claas.config import ServerSettings, TinkerSettings, VllmSettings
from claas.types import ChatMessage, messages_from_dicts


def test_distill_defaults_follow_facts() -> None:
    config = DistillConfig()
    assert (config.alpha, config.top_k, config.add_tail) == (0.5, 100, True)
    assert config.max_grad_norm == 1.0 and config.adam_betas == (0.9, 0.999)
    assert config.teacher == "base" and config.kl_beta == 0.0


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("learning_rate", 0.0),
        ("learning_rate", float("nan")),
        ("learning_rate", float("inf")),
        ("alpha", 1.5),
        ("alpha", -0.1),
        ("top_k", 0),
        ("top_k", 2.5),
        ("loss", "mse"),
        ("teacher", "oracle"),
        ("is_clip", -1.0),
        ("steps", 0),
        ("adam_betas", (0.9,)),
        ("adam_betas", (0.9, 1.0)),
    ],
)
def test_bad_distill_values_name_the_field(field: str, value: object) -> None:
    with pytest.raises(InvalidConfig, match=field):
        DistillConfig(**{field: value})


def test_from_dict_rejects_unknown_keys_and_merges() -> None:
    with pytest.raises(InvalidConfig, match="lr"):
        DistillConfig.from_dict({"lr": 1e-3})
    merged = DistillConfig().merged({"learning_rate": 1e-3, "steps": 2})
    assert merged.learning_rate == 1e-3 and merged.steps == 2
    assert DistillConfig.from_dict(merged.to_dict()) == merged


@given(st.floats(min_value=0.0, max_value=1.0), st.integers(min_value=1, max_value=4096))
def test_valid_configs_round_trip(alpha: float, top_k: int) -> None:
    config = DistillConfig(alpha=alpha, top_k=top_k)
    assert DistillConfig.from_dict(config.to_dict()) == config


def test_lora_spec_validation() -> None:
    assert LoraSpec().target_modules[0] == "q_proj"
    with pytest.raises(InvalidConfig, match="rank"):
        LoraSpec(rank=0)
    with pytest.raises(InvalidConfig, match="target_modules"):
        LoraSpec(target_modules=("q_proj", "../x"))


def test_sampling_params() -> None:
    assert SamplingParams(temperature=0).greedy
    assert SamplingParams.from_kwargs(stop="END").stop == ("END",)
    with pytest.raises(InvalidRequest, match="unknown sampling"):
        SamplingParams.from_kwargs(beam_width=3)
    with pytest.raises(InvalidConfig, match="max_tokens"):
        SamplingParams(max_tokens=0)
    with pytest.raises(InvalidConfig, match="top_p"):
        SamplingParams(top_p=0.0)


def test_messages_validation() -> None:
    msgs = messages_from_dicts(
        [{"role": "system", "content": "s"}, {"role": "user", "content": "q"}]
    )
    assert msgs[1] == ChatMessage("user", "q")
    for bad in ([], "hello", [{"role": "robot", "content": "x"}], [{"content": "x"}]):
        with pytest.raises(InvalidRequest):
            messages_from_dicts(bad)  # type: ignore[arg-type]
    with pytest.raises(InvalidRequest, match="last message"):
        messages_from_dicts(
            [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]
        )
    with pytest.raises(InvalidRequest, match="string"):
        messages_from_dicts([{"role": "user", "content": 5}])


def test_settings_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CLAAS_DATA_DIR", raising=False)
    settings = Settings()
    assert settings.data_dir == Path.home() / ".claas"
    assert settings.base_model == "bundled:smollm2-135m-instruct"
    assert settings.inference_backend == "local" and settings.training_engine == "local"
    assert settings.db_path == settings.data_dir / "claas.db"


def test_settings_layers_file_env_and_arguments(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "claas.toml"
    config.write_text('[claas]\nkeep_versions = 3\nmax_batch = 7\ndevice = "cpu"\n')
    monkeypatch.setenv("CLAAS_DATA_DIR", str(tmp_path / "env-data"))
    monkeypatch.setenv("CLAAS_MAX_BATCH", "9")
    monkeypatch.setenv("CLAAS_AUTOCAST", "true")
    monkeypatch.setenv("CLAAS_API_KEYS", "secret-key-1=team-a|team-b,secret-key-2=*")
    settings = Settings.load(config, keep_versions=5)
    assert settings.data_dir == tmp_path / "env-data"
    assert settings.keep_versions == 5  # argument beats file
    assert settings.max_batch == 9  # env beats file
    assert settings.autocast is True and settings.device == "cpu"
    keys = settings.server.api_keys
    assert keys == {"secret-key-1": ("team-a", "team-b"), "secret-key-2": ("*",)}


@pytest.mark.parametrize(
    ("name", "value"),
    [("CLAAS_KEEP_VERSIONS", "zero"), ("CLAAS_AUTOCAST", "maybe"), ("CLAAS_DEVICE", "tpu")],
)
def test_bad_env_values_are_rejected(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str
) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(InvalidConfig):
        Settings.load()


def test_unknown_setting_and_unreadable_file(tmp_path: Path) -> None:
    with pytest.raises(InvalidConfig, match="unknown setting"):
        Settings.from_mapping({"colour": "blue"})
    with pytest.raises(InvalidConfig, match="cannot read"):
        Settings.load(tmp_path / "missing.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("this is = = not toml")
    with pytest.raises(InvalidConfig, match="cannot read"):
        Settings.load(bad)


def test_empty_optional_env_values_mean_unset(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CLAAS_MODEL_CACHE_DIR", "")
    monkeypatch.setenv("CLAAS_VLLM_URL", "")
    settings = Settings.load()
    assert settings.model_cache_dir is None and settings.vllm.url is None
    assert settings.models_dir == settings.data_dir / "models"


@pytest.mark.parametrize(
    ("backend", "engine", "field"),
    [
        ("local", "tinker", "training_engine"),
        ("vllm", "tinker", "training_engine"),
        ("tinker", "local", "inference_backend"),
        ("tinker", "modal", "inference_backend"),
    ],
)
def test_tinker_versions_are_served_only_by_tinker(backend: str, engine: str, field: str) -> None:
    with pytest.raises(InvalidConfig, match=f"Settings.{field}=.*tinker"):
        Settings(inference_backend=backend, training_engine=engine)


@pytest.mark.parametrize(
    ("backend", "engine"),
    [
        ("tinker", "tinker"),
        ("vllm", "modal"),
        ("local", "local"),
        ("fake", "tinker"),
        ("mine", "tinker"),
    ],
)
def test_compatible_or_third_party_pairs_are_accepted(backend: str, engine: str) -> None:
    settings = Settings(inference_backend=backend, training_engine=engine)
    assert (settings.inference_backend, settings.training_engine) == (backend, engine)


def test_sections_take_flat_env_names(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CLAAS_VLLM_URL", "http://vllm.test:8000")
    monkeypatch.setenv("CLAAS_VLLM_MAX_LORAS", "2")
    monkeypatch.setenv("CLAAS_VLLM_SLEEP_DURING_TRAINING", "on")
    monkeypatch.setenv("CLAAS_TINKER_LOSS", "cross_entropy")
    monkeypatch.setenv("CLAAS_MODAL_APP", "claas-test")
    monkeypatch.setenv("CLAAS_MAX_REQUEST_BYTES", "5000")
    settings = Settings.load()
    assert settings.vllm == VllmSettings(
        url="http://vllm.test:8000", max_loras=2, sleep_during_training=True
    )
    assert settings.tinker.loss == "cross_entropy" and settings.modal.app == "claas-test"
    assert settings.server.max_request_bytes == 5000


def test_toml_takes_flat_keys_and_section_tables(tmp_path: Path) -> None:
    config = tmp_path / "claas.toml"
    config.write_text(
        '[claas]\nvllm_url = "http://a.test"\nallow_remote_without_keys = true\n'
        '[claas.vllm]\nmax_loras = 3\n[claas.tinker]\nloss = "cross_entropy"\n'
        '[claas.api_keys]\n"secret-key-1" = ["team"]\n'
    )
    settings = Settings.load(config)
    assert (settings.vllm.url, settings.vllm.max_loras) == ("http://a.test", 3)
    assert settings.tinker.loss == "cross_entropy"
    assert settings.server == ServerSettings(
        api_keys={"secret-key-1": ("team",)}, allow_remote_without_keys=True
    )
    top_level = tmp_path / "top.toml"
    top_level.write_text('[server]\nmax_request_bytes = 10\n[modal]\napp = "mine"\n')
    loaded = Settings.load(top_level)
    assert loaded.server.max_request_bytes == 10 and loaded.modal.app == "mine"


def test_flat_and_nested_arguments(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CLAAS_VLLM_TIMEOUT", "5")
    settings = Settings.load(vllm_url="http://b.test", vllm={"max_loras": 7})
    assert settings.vllm == VllmSettings(url="http://b.test", max_loras=7, timeout=5.0)
    changed = settings.evolve(vllm_max_loras=1, tinker=TinkerSettings(loss="cross_entropy"))
    assert changed.vllm.max_loras == 1 and changed.vllm.url == "http://b.test"
    assert changed.tinker.loss == "cross_entropy"
    replaced = settings.evolve(vllm=VllmSettings())
    assert replaced.vllm == VllmSettings()
    with pytest.raises(InvalidConfig, match="given twice"):
        Settings.load(vllm_url="http://b.test", vllm={"url": "http://c.test"})


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"vllm_max_loras": 0}, r"Settings\.vllm\.max_loras=0 is invalid: must be an integer"),
        ({"vllm_timeout": "soon"}, r"Settings\.vllm\.timeout='soon' is invalid: must be a number"),
        ({"vllm": {"timeout": -1.0}}, r"Settings\.vllm\.timeout=-1\.0 is invalid"),
        ({"vllm_url": "vllm.test"}, r"Settings\.vllm\.url='vllm\.test' is invalid: must be"),
        ({"tinker_loss": "mse"}, r"Settings\.tinker\.loss='mse' is invalid: must be one of"),
        ({"modal_app": ""}, r"Settings\.modal\.app='' is invalid"),
        ({"max_request_bytes": "0"}, r"Settings\.server\.max_request_bytes=0 is invalid"),
        ({"api_keys": {"short": ["a"]}}, r"Settings\.server\.api_keys='<hidden>' is invalid"),
        ({"vllm": {"colour": "blue"}}, r"unknown setting\(s\) \['colour'\] in \[vllm\]"),
        ({"vllm": "http://x"}, r"Settings\.vllm='http://x' is invalid"),
        ({"vllm_colour": "blue"}, r"unknown setting\(s\) \['vllm_colour'\]"),
    ],
)
def test_section_errors_name_field_value_and_rule(values: dict[str, object], message: str) -> None:
    with pytest.raises(InvalidConfig, match=message):
        Settings.from_mapping(values)


def test_constructor_takes_records_only() -> None:
    with pytest.raises(InvalidConfig, match=r"Settings\.vllm=.*must be a VllmSettings"):
        Settings(vllm={"url": "http://x.test"})  # type: ignore[arg-type]
    secret = Settings(vllm=VllmSettings(api_key="sk-hidden"), server=ServerSettings())
    assert "sk-hidden" not in repr(secret)
